//! Retention policy: which generations to keep, as a pure plan (borg/rsnapshot semantics).
//!
//! Rules are applied in the order last, daily, weekly, monthly, yearly. Each walks the
//! generations newest first and keeps the newest one of every period (UTC day, ISO week,
//! month, year) it has not kept already, until it has kept N; if it runs out of periods
//! first, it also keeps the oldest generation. A generation kept by an earlier rule does
//! not count towards a later one. The newest generation is always kept. A policy with no
//! rule set keeps everything.

use super::generation::{civil_from_days, Generation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
}

impl Retention {
    pub fn is_unset(&self) -> bool {
        *self == Retention::default()
    }

    /// Fields set in `over` win over `self`.
    pub fn overridden_by(self, over: Retention) -> Retention {
        Retention {
            keep_last: over.keep_last.or(self.keep_last),
            keep_daily: over.keep_daily.or(self.keep_daily),
            keep_weekly: over.keep_weekly.or(self.keep_weekly),
            keep_monthly: over.keep_monthly.or(self.keep_monthly),
            keep_yearly: over.keep_yearly.or(self.keep_yearly),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Last,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Kept by a rule, as its n-th pick (1-based); `oldest` when kept as the fallback.
    Rule { rule: Rule, n: u32, oldest: bool },
    Newest,
    NoPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    /// `None` means prune.
    pub keep: Option<Reason>,
}

fn period(rule: Rule, t: i64) -> i64 {
    let days = t.div_euclid(86400);
    match rule {
        Rule::Last => t, // every generation is its own period
        Rule::Daily => days,
        Rule::Weekly => {
            let (year, week) = iso_week(days);
            year * 100 + week as i64
        }
        Rule::Monthly => {
            let (y, m, _) = civil_from_days(days);
            y * 100 + m as i64
        }
        Rule::Yearly => civil_from_days(days).0,
    }
}

/// ISO-8601 (year, week) of a day counted from 1970-01-01 (a Thursday).
pub fn iso_week(days: i64) -> (i64, u32) {
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let jan1 = super::generation::days_from_civil(year, 1, 1);
    (year, ((thursday - jan1) / 7 + 1) as u32)
}

/// Decides, for generations oldest first, which to keep. Pure: same input, same plan.
pub fn plan(gens: &[Generation], policy: &Retention) -> Vec<Decision> {
    let mut keep: Vec<Option<Reason>> = vec![None; gens.len()];
    if policy.is_unset() {
        return gens.iter().map(|g| Decision { name: g.name.clone(), keep: Some(Reason::NoPolicy) }).collect();
    }
    let rules = [
        (Rule::Last, policy.keep_last),
        (Rule::Daily, policy.keep_daily),
        (Rule::Weekly, policy.keep_weekly),
        (Rule::Monthly, policy.keep_monthly),
        (Rule::Yearly, policy.keep_yearly),
    ];
    for (rule, n) in rules {
        let Some(n) = n.filter(|&n| n > 0) else { continue };
        let mut kept = 0u32;
        let mut last_period = None;
        let mut oldest_seen = None;
        for i in (0..gens.len()).rev() {
            let p = period(rule, gens[i].time);
            oldest_seen = Some(i);
            if last_period == Some(p) && rule != Rule::Last {
                continue;
            }
            last_period = Some(p);
            if keep[i].is_none() {
                kept += 1;
                keep[i] = Some(Reason::Rule { rule, n: kept, oldest: false });
                if kept == n {
                    break;
                }
            }
        }
        if kept < n {
            if let Some(i) = oldest_seen {
                if keep[i].is_none() {
                    keep[i] = Some(Reason::Rule { rule, n: kept + 1, oldest: true });
                }
            }
        }
    }
    if let Some(last) = keep.last_mut() {
        if last.is_none() {
            *last = Some(Reason::Newest);
        }
    }
    gens.iter().zip(keep).map(|(g, keep)| Decision { name: g.name.clone(), keep }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::generation::{days_from_civil, name_for};
    use std::path::PathBuf;

    fn gen_at(y: i64, m: u32, d: u32, h: i64) -> Generation {
        let time = days_from_civil(y, m, d) * 86400 + h * 3600;
        Generation { name: name_for(time, 1), path: PathBuf::new(), time, seq: 1 }
    }

    fn kept(gens: &[Generation], policy: Retention) -> Vec<String> {
        plan(gens, &policy).into_iter().filter(|d| d.keep.is_some()).map(|d| d.name[..13].to_string()).collect()
    }

    #[test]
    fn iso_weeks() {
        assert_eq!(iso_week(days_from_civil(2021, 1, 3)), (2020, 53));
        assert_eq!(iso_week(days_from_civil(2021, 1, 4)), (2021, 1));
        assert_eq!(iso_week(days_from_civil(2026, 11, 21)), (2026, 47));
        assert_eq!(iso_week(days_from_civil(2024, 12, 30)), (2025, 1));
    }

    #[test]
    fn keep_last_and_newest() {
        let gens: Vec<_> = (1..=5).map(|d| gen_at(2026, 1, d, 0)).collect();
        assert_eq!(kept(&gens, Retention { keep_last: Some(2), ..Default::default() }), ["2026-01-04T00", "2026-01-05T00"]);
        // Every rule zero still keeps the newest.
        assert_eq!(kept(&gens, Retention { keep_last: Some(0), ..Default::default() }), ["2026-01-05T00"]);
        assert_eq!(kept(&gens, Retention::default()).len(), 5);
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let gens = vec![gen_at(2026, 1, 1, 1), gen_at(2026, 1, 1, 20), gen_at(2026, 1, 2, 3), gen_at(2026, 1, 2, 9), gen_at(2026, 1, 3, 5)];
        assert_eq!(
            kept(&gens, Retention { keep_daily: Some(2), ..Default::default() }),
            ["2026-01-02T09", "2026-01-03T05"]
        );
        // Fewer periods than asked: the oldest generation is kept too (borg's rule).
        assert_eq!(
            kept(&gens, Retention { keep_daily: Some(7), ..Default::default() }),
            ["2026-01-01T01", "2026-01-01T20", "2026-01-02T09", "2026-01-03T05"]
        );
    }

    #[test]
    fn rules_do_not_double_count() {
        // One a day for 60 days; last=3 takes the newest three, daily=2 the two days before.
        let gens: Vec<_> = (0..60).map(|i| {
            let time = days_from_civil(2026, 1, 1) * 86400 + i * 86400;
            Generation { name: name_for(time, 1), path: PathBuf::new(), time, seq: 1 }
        }).collect();
        let k = kept(&gens, Retention { keep_last: Some(3), keep_daily: Some(2), keep_monthly: Some(2), ..Default::default() });
        // Monthly finds only two months left (Feb is already covered): Jan, then the oldest.
        assert_eq!(k, ["2026-01-01T00", "2026-01-31T00", "2026-02-25T00", "2026-02-26T00", "2026-02-27T00", "2026-02-28T00", "2026-03-01T00"]);
    }
}
