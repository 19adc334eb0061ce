//! The progress bar on a terminal, drawn from a job's events: files, bytes, rate and (when
//! the previous generation gives an estimate of the total) ETA. Silent when not enabled.

use crate::job::event::{Event, Step};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct Progress {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled, bar: None }
    }

    /// `expected` bytes (the previous generation's) is a fair guess of the total.
    fn start(&mut self, expected: Option<u64>) {
        let bar = match expected {
            Some(bytes) if bytes > 0 => {
                let b = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr_with_hz(4));
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {msg} {bytes}/~{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            }
            _ => {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
                b.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b
            }
        };
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    pub fn event(&mut self, ev: &Event) {
        if !self.enabled {
            return;
        }
        match ev {
            Event::Started { estimate, .. } => {
                self.finish();
                self.start(estimate.map(|e| e.bytes));
            }
            Event::Progress(p) => {
                if let Some(b) = &self.bar {
                    if b.length().is_some_and(|l| p.bytes > l) {
                        b.set_length(p.bytes);
                    }
                    b.set_position(p.bytes);
                    b.set_message(format!("{} files ({} new)", p.files, p.new_files));
                }
            }
            // The copy is over: what follows is quick or prints its own lines.
            Event::Step { step } if *step != Step::Copying => self.finish(),
            _ => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
