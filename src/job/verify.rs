//! A verify job: generations checked against their manifests, reported per generation.

use super::event::{Estimate, Event, JobKind, Meter, Observer, Step, VerifyOutcome};
use super::{JobError, Stop};
use crate::backup::{self as engine, verify};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct VerifyJob {
    pub root: PathBuf,
    /// One generation (name, unique prefix or `latest`); all when `None`.
    pub generation: Option<String>,
    /// Sizes and times only.
    pub quick: bool,
    pub threads: usize,
}

#[derive(Debug)]
pub struct VerifyRun {
    pub report: verify::VerifyReport,
    pub seconds: f64,
    pub outcome: VerifyOutcome,
}

impl VerifyJob {
    pub fn run(&self, obs: &mut dyn Observer, stop: &Stop) -> Result<VerifyRun, JobError> {
        let started = Instant::now();
        let opts = verify::VerifyOptions {
            root: self.root.clone(),
            generation: self.generation.clone(),
            quick: self.quick,
            threads: self.threads,
            stop: stop.clone(),
        };
        // Which generations, and their recorded sizes as the estimate.
        let all = engine::list_generations(&self.root).unwrap_or_default();
        let chosen: Vec<_> = match &self.generation {
            Some(g) => engine::pick_generation(&self.root, Some(g)).ok().into_iter().filter_map(|g| all.iter().find(|(a, _)| a.name == g.name)).collect(),
            None => all.iter().collect(),
        };
        let estimate = chosen.iter().try_fold(Estimate { files: 0, bytes: 0 }, |e, (_, i)| {
            i.as_ref().map(|i| Estimate { files: e.files + i.files, bytes: e.bytes + i.bytes })
        });
        let of = chosen.len();
        obs.event(&Event::Started { job: JobKind::Verify, estimate });
        obs.event(&Event::Step { step: Step::Verifying });
        let mut meter = Meter::new(estimate);
        let mut index = 0;
        let mut problems = 0;
        let report = verify::verify_observed(&opts, &mut |g, so_far| {
            index += 1;
            let found = so_far.problems.len() - problems;
            problems = so_far.problems.len();
            if let Some(p) = meter.tick(so_far.files, so_far.bytes, 0, so_far.bytes_read, true) {
                obs.event(&Event::Progress(p));
            }
            obs.event(&Event::Verified { generation: g.name.clone(), index, of: of.max(index), problems: found });
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let outcome = VerifyOutcome {
            generations: report.generations.len(),
            files: report.files,
            bytes: report.bytes,
            bytes_read: report.bytes_read,
            problems: report.problems.len(),
            seconds,
        };
        obs.event(&Event::VerifyFinished(outcome.clone()));
        Ok(VerifyRun { report, seconds, outcome })
    }
}
