//! Which crash states to check: a pure plan from the log's index.
//!
//! A power cut leaves on the disk everything before the last completed flush (or FUA write),
//! plus any subset of the writes that had completed since (a disk cache loses them in no
//! particular order). So the states are:
//! - **mark** states: the log up to each mark (`pre-STEP` / `post-STEP`, added by the test
//!   around each step): the disk as it was when a step began or had just said it was done;
//! - **flush** states: the log up to each flush or FUA entry;
//! - **random** states: the log up to a flush, plus a random subset of the writes logged
//!   after it and before the next one (the rest lost).
//!
//! Each state stands for an instant (`cut`, an index in the log), which places it in a step.

use crate::log::Log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Mark,
    Flush,
    Random,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mark => "mark",
            Kind::Flush => "flush",
            Kind::Random => "random",
        }
    }
}

/// Where an instant falls relative to the test's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub step: String,
    /// `before` (at the step's pre mark), `during`, or `after` (at or past its post mark).
    pub phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub kind: Kind,
    /// Entries [0, prefix) are on the disk.
    pub prefix: usize,
    /// Entries after `prefix` that the cache kept (log order).
    pub extra: Vec<usize>,
    /// Writes after `prefix` up to the cut that were lost.
    pub dropped: usize,
    /// The instant this state stands for (an entry index).
    pub cut: usize,
    pub context: Context,
    /// Gets the expensive checks too.
    pub deep: bool,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Total states to check (marks always count).
    pub states: usize,
    /// Of which random ones (fewer if the budget is short; more if flush points run out).
    pub random: usize,
    /// Non-mark states that also get the expensive checks (post marks always do).
    pub deep: usize,
    pub seed: u64,
}

/// splitmix64: small, seedable, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n) (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The step context of each instant, from the marks.
pub struct Steps {
    /// (mark index, step, is_post)
    marks: Vec<(usize, String, bool)>,
}

impl Steps {
    pub fn new(log: &Log) -> Steps {
        let marks = log
            .marks()
            .into_iter()
            .filter_map(|(i, m)| {
                if let Some(s) = m.strip_prefix("pre-") {
                    Some((i, s.to_string(), false))
                } else {
                    m.strip_prefix("post-").map(|s| (i, s.to_string(), true))
                }
            })
            .collect();
        Steps { marks }
    }

    pub fn context(&self, cut: usize) -> Context {
        let last = self.marks.iter().rev().find(|(i, _, _)| *i <= cut);
        match last {
            None => Context { step: "start".into(), phase: "after" },
            Some((i, s, post)) => {
                let phase = match (post, *i == cut) {
                    (true, _) => "after",
                    (false, true) => "before",
                    (false, false) => "during",
                };
                Context { step: s.clone(), phase }
            }
        }
    }

    pub fn mark_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.marks.iter().map(|(i, _, _)| *i)
    }
}

/// A stretch of the log after a durable point: its writes may be lost in any subset.
struct Segment {
    prefix: usize,
    writes: Vec<usize>,
}

/// Evenly spaced picks of `k` out of `n` items, first and last included.
fn spread(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    if k == 0 {
        return Vec::new();
    }
    if k == 1 {
        return vec![n / 2];
    }
    let mut v: Vec<usize> = (0..k).map(|j| j * (n - 1) / (k - 1)).collect();
    v.dedup();
    v
}

/// Shares `budget` among groups of the given sizes: each non-empty group at least one
/// (while the budget lasts), the rest in proportion to size.
fn allocate(sizes: &[usize], budget: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let mut out = vec![0; sizes.len()];
    if total <= budget {
        return sizes.to_vec();
    }
    let mut left = budget;
    for (o, &s) in out.iter_mut().zip(sizes) {
        if s > 0 && left > 0 {
            *o = 1;
            left -= 1;
        }
    }
    let rest_total: usize = sizes.iter().zip(&out).map(|(s, o)| s - o).sum();
    if rest_total > 0 {
        let shares: Vec<usize> = sizes.iter().zip(&out).map(|(s, o)| (s - o) * left / rest_total).collect();
        for (o, sh) in out.iter_mut().zip(&shares) {
            *o += sh;
        }
        left -= shares.iter().sum::<usize>();
        // Leftovers from rounding go to the groups with the most unpicked.
        while left > 0 {
            let Some((g, _)) = sizes.iter().zip(&out).enumerate().map(|(g, (s, o))| (g, s - o)).filter(|&(_, r)| r > 0).max_by_key(|&(_, r)| r) else {
                break;
            };
            out[g] += 1;
            left -= 1;
        }
    }
    out
}

/// Plans the states to check, in replay order (prefix ascending).
pub fn plan(log: &Log, o: &PlanOptions) -> Vec<State> {
    let entries = &log.entries;
    let steps = Steps::new(log);
    // Device-changing entries before each position: equal counts mean equal images.
    let mut changes = vec![0usize; entries.len() + 1];
    for (i, e) in entries.iter().enumerate() {
        changes[i + 1] = changes[i] + e.changes_device() as usize;
    }

    let mut marks: Vec<State> = steps
        .mark_indices()
        .map(|m| State { kind: Kind::Mark, prefix: m, extra: vec![], dropped: 0, cut: m, context: steps.context(m), deep: false })
        .collect();
    for s in marks.iter_mut() {
        s.deep = s.context.phase == "after";
    }
    let mark_images: std::collections::HashSet<usize> = marks.iter().map(|s| changes[s.prefix]).collect();

    // Durable points, and the segments of losable writes between them.
    let mut flush = Vec::new();
    let mut segments = Vec::new();
    let mut seg = Segment { prefix: 0, writes: Vec::new() };
    let mut last_image = None;
    for (i, e) in entries.iter().enumerate() {
        if e.is_barrier() {
            let prefix = if e.self_durable() { i + 1 } else { i };
            let mut writes = std::mem::take(&mut seg.writes);
            if !e.self_durable() {
                // A flush carrying data: what came before is durable, its own data is not.
                writes.retain(|&w| w < i);
            }
            if !writes.is_empty() {
                segments.push(Segment { prefix: seg.prefix, writes });
            }
            seg = Segment { prefix, writes: if e.self_durable() { vec![] } else { vec![i] } };
            let image = changes[prefix];
            if !mark_images.contains(&image) && last_image != Some(image) {
                flush.push(State { kind: Kind::Flush, prefix, extra: vec![], dropped: 0, cut: i, context: steps.context(i), deep: false });
            }
            last_image = Some(image);
        } else if e.changes_device() {
            seg.writes.push(i);
        }
    }
    if !seg.writes.is_empty() {
        segments.push(seg);
    }

    let budget = o.states.saturating_sub(marks.len());
    let mut random_n = o.random.min(budget);
    let flush_budget = budget - random_n;
    if flush.len() < flush_budget {
        random_n = budget - flush.len();
    }
    let flush = pick_stratified(flush, flush_budget, |s| s.context.clone());
    let random = random_states(&segments, &steps, random_n, o.seed);

    let mut all: Vec<State> = marks.into_iter().chain(flush).chain(random).collect();
    all.sort_by(|a, b| (a.prefix, a.kind, &a.extra).cmp(&(b.prefix, b.kind, &b.extra)));
    all.dedup_by(|b, a| a.prefix == b.prefix && a.extra == b.extra && a.kind == b.kind);

    // Deep checks: every post mark, plus `deep` others spread over the log.
    let others: Vec<usize> = (0..all.len()).filter(|&i| !all[i].deep).collect();
    for j in spread(others.len(), o.deep) {
        all[others[j]].deep = true;
    }
    all
}

/// Keeps `budget` of `states`, shared among their contexts, evenly spaced within each.
fn pick_stratified(states: Vec<State>, budget: usize, key: impl Fn(&State) -> Context) -> Vec<State> {
    if states.len() <= budget {
        return states;
    }
    let mut groups: Vec<(Context, Vec<State>)> = Vec::new();
    for s in states {
        let k = key(&s);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(s),
            None => groups.push((k, vec![s])),
        }
    }
    let sizes: Vec<usize> = groups.iter().map(|(_, v)| v.len()).collect();
    let shares = allocate(&sizes, budget);
    let mut out = Vec::new();
    for ((_, v), k) in groups.into_iter().zip(shares) {
        let picks = spread(v.len(), k);
        out.extend(v.into_iter().enumerate().filter(|(i, _)| picks.contains(i)).map(|(_, s)| s));
    }
    out
}

/// `n` random states: a segment (shared evenly among steps, then by size), a cut in it, and
/// a random subset of the writes before the cut, at least one of them lost.
fn random_states(segments: &[Segment], steps: &Steps, n: usize, seed: u64) -> Vec<State> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<State> = Vec::new();
    if segments.is_empty() || n == 0 {
        return out;
    }
    // Segments by the step their first write falls in.
    let mut by_step: Vec<(Context, Vec<usize>)> = Vec::new();
    for (si, s) in segments.iter().enumerate() {
        let c = steps.context(s.writes[0]);
        match by_step.iter_mut().find(|(k, _)| *k == c) {
            Some((_, v)) => v.push(si),
            None => by_step.push((c, vec![si])),
        }
    }
    let total_writes: usize = segments.iter().map(|s| s.writes.len()).sum();
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        // Half the draws spread over steps, half over writes (big steps get more).
        let si = if rng.below(2) == 0 {
            let (_, v) = &by_step[rng.below(by_step.len())];
            v[rng.below(v.len())]
        } else {
            let mut w = rng.below(total_writes);
            let mut si = 0;
            while w >= segments[si].writes.len() {
                w -= segments[si].writes.len();
                si += 1;
            }
            si
        };
        let s = &segments[si];
        let upto = 1 + rng.below(s.writes.len());
        let mut extra: Vec<usize> = s.writes[..upto].iter().copied().filter(|_| rng.below(2) == 0).collect();
        if extra.len() == upto {
            extra.remove(rng.below(upto));
        }
        let cut = s.writes[upto - 1];
        let st = State { kind: Kind::Random, prefix: s.prefix, dropped: upto - extra.len(), extra, cut, context: steps.context(cut), deep: false };
        if !out.iter().any(|o| o.prefix == st.prefix && o.extra == st.extra) {
            out.push(st);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::synth::LogBuilder;
    use crate::log::FUA;

    fn opts(states: usize, random: usize, deep: usize) -> PlanOptions {
        PlanOptions { states, random, deep, seed: 7 }
    }

    /// pre-a, 3 writes, flush, 2 writes, flush, post-a, pre-b, write, FUA, write, flush, post-b.
    fn sample() -> Log {
        let mut b = LogBuilder::new(512);
        b.mark("pre-a").fill(0, 1, 1, 0).fill(1, 1, 2, 0).fill(2, 1, 3, 0).flush();
        b.fill(3, 1, 4, 0).fill(4, 1, 5, 0).flush().mark("post-a");
        b.mark("pre-b").fill(5, 1, 6, 0).fill(6, 1, 7, FUA).fill(7, 1, 8, 0).flush().mark("post-b");
        Log::open(b.file(), 16 * 512).unwrap()
    }

    #[test]
    fn contexts_follow_the_marks() {
        let log = sample();
        let s = Steps::new(&log);
        assert_eq!(s.context(0), Context { step: "a".into(), phase: "before" });
        assert_eq!(s.context(3), Context { step: "a".into(), phase: "during" });
        assert_eq!(s.context(8), Context { step: "a".into(), phase: "after" });
        assert_eq!(s.context(9), Context { step: "b".into(), phase: "before" });
        assert_eq!(s.context(12), Context { step: "b".into(), phase: "during" });
    }

    #[test]
    fn every_mark_and_durable_point_when_the_budget_allows() {
        let log = sample();
        let p = plan(&log, &opts(100, 0, 0));
        let marks: Vec<usize> = p.iter().filter(|s| s.kind == Kind::Mark).map(|s| s.prefix).collect();
        assert_eq!(marks, vec![0, 8, 9, 14]);
        // Flushes at 4 and 7 and the FUA at 11 (its own write durable: prefix 12); the flush
        // at 13 makes the same image as the post-b mark, so it is not checked twice; the
        // flush at 7 likewise equals post-a and pre-b.
        let flush: Vec<usize> = p.iter().filter(|s| s.kind == Kind::Flush).map(|s| s.prefix).collect();
        assert_eq!(flush, vec![5, 12]);
        // Leftover budget goes to random states, all within segments, none duplicated.
        let random: Vec<&State> = p.iter().filter(|s| s.kind == Kind::Random).collect();
        assert!(!random.is_empty());
        for s in &random {
            assert!(s.dropped >= 1, "a random state loses at least one write");
            assert!(s.extra.iter().all(|&e| e >= s.prefix && log.entries[e].changes_device()));
            assert!(s.extra.iter().all(|&e| e <= s.cut));
        }
        // Replay order: prefixes never go back.
        assert!(p.windows(2).all(|w| w[0].prefix <= w[1].prefix));
        // Post marks get the expensive checks.
        assert!(p.iter().filter(|s| s.deep).all(|s| s.kind == Kind::Mark && s.context.phase == "after"));
    }

    #[test]
    fn random_subsets_never_cross_a_durable_point() {
        let log = sample();
        let p = plan(&log, &opts(60, 50, 0));
        let barriers = [4usize, 7, 11, 13];
        for s in p.iter().filter(|s| s.kind == Kind::Random) {
            for &e in &s.extra {
                assert!(!barriers.iter().any(|&b| s.prefix <= b && b < e), "{s:?} keeps a write from past a flush");
            }
        }
        // Planning is deterministic for a seed.
        assert_eq!(plan(&log, &opts(60, 50, 0)), p);
    }

    #[test]
    fn a_short_budget_keeps_marks_and_spreads_the_rest_over_steps() {
        // Many flushes in two steps.
        let mut b = LogBuilder::new(512);
        b.mark("pre-big");
        for i in 0..40 {
            b.fill(i % 8, 1, i as u8, 0).flush();
        }
        b.mark("post-big").mark("pre-small");
        for i in 0..4 {
            b.fill(8 + i, 1, i as u8, 0).flush();
        }
        b.mark("post-small");
        let log = Log::open(b.file(), 16 * 512).unwrap();
        let p = plan(&log, &opts(14, 2, 3));
        assert_eq!(p.len(), 14);
        assert_eq!(p.iter().filter(|s| s.kind == Kind::Mark).count(), 4);
        let flush: Vec<&State> = p.iter().filter(|s| s.kind == Kind::Flush).collect();
        assert_eq!(flush.len(), 8);
        assert!(flush.iter().any(|s| s.context.step == "small"), "every step gets flush states");
        assert!(flush.iter().filter(|s| s.context.step == "big").count() > 4, "more to the bigger step");
        assert_eq!(p.iter().filter(|s| s.kind == Kind::Random).count(), 2);
        assert_eq!(p.iter().filter(|s| s.deep).count(), 2 + 3);
    }

    #[test]
    fn a_flush_carrying_data_keeps_its_own_write_losable() {
        let mut b = LogBuilder::new(512);
        b.fill(0, 1, 1, 0).write(1, &[2u8; 512], crate::log::FLUSH).flush();
        let log = Log::open(b.file(), 8 * 512).unwrap();
        let p = plan(&log, &opts(10, 0, 0));
        // Durable after entry 1: only entry 0 (prefix 1); then the plain flush makes 0..=2 durable.
        let flush: Vec<usize> = p.iter().filter(|s| s.kind == Kind::Flush).map(|s| s.prefix).collect();
        assert_eq!(flush, vec![1, 3]);
        let p = plan(&log, &opts(10, 10, 0));
        let random: Vec<(usize, usize)> = p.iter().filter(|s| s.kind == Kind::Random).map(|s| (s.prefix, s.extra.len())).collect();
        // Entry 0 may be lost before the flush; entry 1's own data after it.
        assert_eq!(random, vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn spread_and_allocate() {
        assert_eq!(spread(10, 3), vec![0, 4, 9]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        assert_eq!(allocate(&[100, 1, 0], 10), vec![9, 1, 0]);
        assert_eq!(allocate(&[5, 5], 20), vec![5, 5]);
        assert_eq!(allocate(&[3, 3, 3], 2), vec![1, 1, 0]);
    }
}
