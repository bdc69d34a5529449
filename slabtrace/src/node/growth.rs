//! Is this growth a problem? Classifies a series of live-byte figures (one owner × cache, or
//! one cache node-wide) over a window as *healthy* (flat, or it grew and came back when the
//! work stopped or reclaim ran) or *problematic* (sustained growth that nothing returned), with
//! the growth rate and the evidence.
//!
//! The shrinker tracepoints say whether reclaim ran over the window and how much it freed, so
//! a problematic finding on a reclaimable cache (dentries, inodes) says which of two very
//! different things happened: reclaim tried and failed (the objects are pinned: open files,
//! files on tmpfs, a leak), or reclaim never ran (no memory pressure yet; negative dentries
//! pile up exactly like this until it comes). Unreclaimable caches (`SUnreclaim`) never come
//! back by reclaim, so their sustained growth is problematic either way.
//!
//! Pure: series and reclaim figures in, findings out; [`Tracker`] turns findings into
//! start/end transitions so an event is emitted once per finding.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// One figure of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    /// Seconds since tracing started.
    pub t: f64,
    /// Live bytes at `t`.
    pub live_bytes: u64,
}

/// What reclaim did over the window, for the shrinkers that cover the series' cache.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Reclaim {
    /// Objects the shrinkers scanned.
    pub scanned: u64,
    /// Objects they freed.
    pub freed: u64,
}

/// When growth counts as sustained, and when it counts as returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Shortest window worth a verdict, seconds.
    pub min_span: f64,
    /// Smallest growth worth a finding, bytes.
    pub min_growth_bytes: u64,
    /// Share of steps that must not go down for growth to be sustained.
    pub min_rising_share: f64,
    /// Share of the rise that must have come back for the series to be healthy.
    pub returned_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_span: 300.0,
            min_growth_bytes: 1 << 20,
            min_rising_share: 0.7,
            returned_share: 0.5,
        }
    }
}

/// The verdict.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Flat, or it came back.
    Healthy,
    /// Sustained growth nothing returned.
    Problematic,
}

/// Why.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    /// No growth worth a finding.
    Stable,
    /// It grew, then at least `returned_share` of the rise came back.
    Returned,
    /// Sustained growth of an unreclaimable cache.
    Unreclaimable,
    /// Reclaim scanned the cache's shrinkers over the window and did not bring it back.
    ReclaimFailed,
    /// Sustained growth of a reclaimable cache, and reclaim did not run over the window.
    ReclaimNotRun,
    /// It grew and is still growing, but not steadily enough to call it sustained.
    Irregular,
    /// Sustained growth over the long view of days, which does not follow reclaim (see
    /// [`crate::node::slow_growth`]).
    Sustained,
}

/// A verdict with its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Finding {
    /// Healthy or problematic.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Least-squares slope of live bytes over the window, bytes per second: what metrics
    /// export and what ranks findings. The JSON shows it as `rate_mb_per_hour` only.
    #[serde(skip)]
    pub bytes_per_second: f64,
    /// The same slope in MB (10^6 bytes) per hour, for people (the events' and the report's
    /// field).
    pub rate_mb_per_hour: f64,
    /// Live bytes at the end minus at the start of the window.
    pub growth_bytes: i64,
    /// Live bytes at the end.
    pub live_bytes: u64,
    /// Highest live bytes in the window.
    pub peak_bytes: u64,
    /// Share of steps that did not go down.
    pub rising_share: f64,
    /// Length of the window, seconds.
    pub window_seconds: f64,
    /// Whether the cache is reclaimable (`SLAB_RECLAIM_ACCOUNT`).
    pub reclaimable: bool,
    /// What reclaim did over the window.
    pub reclaim: Reclaim,
}

/// Least-squares slope of `points`, bytes per second.
fn slope(points: &[Point]) -> f64 {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.t).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.live_bytes as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for p in points {
        num += (p.t - mean_t) * (p.live_bytes as f64 - mean_y);
        den += (p.t - mean_t) * (p.t - mean_t);
    }
    if den > 0.0 { num / den } else { 0.0 }
}

/// Classifies `points` (oldest first). None when the window is too short for a verdict.
#[must_use]
pub fn classify(
    points: &[Point],
    reclaimable: bool,
    reclaim: Reclaim,
    th: &Thresholds,
) -> Option<Finding> {
    let (first, last) = (points.first()?, points.last()?);
    let span = last.t - first.t;
    if points.len() < 3 || span < th.min_span {
        return None;
    }
    let steps = points.windows(2).count() as f64;
    let rising = points.windows(2).filter(|w| w[1].live_bytes >= w[0].live_bytes).count() as f64;
    let rising_share = rising / steps;
    let peak = points.iter().map(|p| p.live_bytes).max().unwrap_or(0);
    let growth = i64::try_from(last.live_bytes).unwrap_or(i64::MAX)
        - i64::try_from(first.live_bytes).unwrap_or(i64::MAX);
    let rise = peak.saturating_sub(first.live_bytes);
    let returned = peak.saturating_sub(last.live_bytes);
    let grew = rise >= th.min_growth_bytes;
    let (verdict, reason) = if !grew {
        (Verdict::Healthy, Reason::Stable)
    } else if returned as f64 >= th.returned_share * rise as f64 {
        (Verdict::Healthy, Reason::Returned)
    } else if growth < 0 || (growth.unsigned_abs()) < th.min_growth_bytes {
        (Verdict::Healthy, Reason::Stable)
    } else if rising_share < th.min_rising_share {
        (Verdict::Healthy, Reason::Irregular)
    } else if !reclaimable {
        (Verdict::Problematic, Reason::Unreclaimable)
    } else if reclaim.scanned > 0 {
        (Verdict::Problematic, Reason::ReclaimFailed)
    } else {
        (Verdict::Problematic, Reason::ReclaimNotRun)
    };
    Some(Finding {
        verdict,
        reason,
        bytes_per_second: slope(points),
        rate_mb_per_hour: slope(points) * 3600.0 / 1e6,
        growth_bytes: growth,
        live_bytes: last.live_bytes,
        peak_bytes: peak,
        rising_share,
        window_seconds: span,
        reclaimable,
        reclaim,
    })
}

/// Bounded series per key: the last `capacity` points within `window` seconds.
#[derive(Clone, Debug)]
pub struct History<K: Ord> {
    series: BTreeMap<K, VecDeque<Point>>,
    window: f64,
    capacity: usize,
    max_series: usize,
}

impl<K: Ord + Clone> History<K> {
    /// Keeps points of the last `window` seconds, at most `capacity` per series and
    /// `max_series` series (the least recently updated are dropped first).
    #[must_use]
    pub fn new(window: f64, capacity: usize, max_series: usize) -> Self {
        Self { series: BTreeMap::new(), window, capacity: capacity.max(3), max_series }
    }

    /// Adds a point to `key`'s series and drops points older than the window.
    pub fn push(&mut self, key: K, point: Point) {
        let s = self.series.entry(key).or_default();
        s.push_back(point);
        while s.len() > self.capacity || s.front().is_some_and(|p| point.t - p.t > self.window) {
            s.pop_front();
        }
    }

    /// Drops series not updated since `t` minus the window, then the stalest beyond the cap.
    pub fn prune(&mut self, t: f64) {
        let window = self.window;
        self.series.retain(|_, s| s.back().is_some_and(|p| t - p.t <= window));
        if self.series.len() > self.max_series {
            let mut by_age: Vec<(f64, K)> = self
                .series
                .iter()
                .map(|(k, s)| (s.back().map_or(0.0, |p| p.t), k.clone()))
                .collect();
            by_age.sort_by(|a, b| a.0.total_cmp(&b.0));
            let excess = self.series.len() - self.max_series;
            for (_, k) in by_age.into_iter().take(excess) {
                self.series.remove(&k);
            }
        }
    }

    /// A key's points, oldest first.
    #[must_use]
    pub fn points(&self, key: &K) -> Vec<Point> {
        self.series.get(key).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Every key with a series.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.series.keys()
    }
}

/// A change of a key's finding worth an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A problematic finding started.
    Started,
    /// It ended (the series is healthy again, or gone).
    Ended,
}

/// Remembers which keys have a problematic finding, so each start and end is said once.
#[derive(Clone, Debug)]
pub struct Tracker<K: Ord> {
    open: BTreeMap<K, Finding>,
}

impl<K: Ord> Default for Tracker<K> {
    fn default() -> Self {
        Self { open: BTreeMap::new() }
    }
}

impl<K: Ord + Clone> Tracker<K> {
    /// Feeds the latest finding of `key` (None: no verdict this time, the state holds).
    pub fn update(&mut self, key: &K, finding: Option<&Finding>) -> Option<Transition> {
        let finding = finding?;
        match (finding.verdict, self.open.contains_key(key)) {
            (Verdict::Problematic, false) => {
                self.open.insert(key.clone(), *finding);
                Some(Transition::Started)
            }
            (Verdict::Problematic, true) => {
                self.open.insert(key.clone(), *finding);
                None
            }
            (Verdict::Healthy, true) => {
                self.open.remove(key);
                Some(Transition::Ended)
            }
            (Verdict::Healthy, false) => None,
        }
    }

    /// Ends the findings of keys `alive` says are gone; returns them.
    pub fn close_gone(&mut self, mut alive: impl FnMut(&K) -> bool) -> Vec<(K, Finding)> {
        let gone: Vec<K> = self.open.keys().filter(|k| !alive(k)).cloned().collect();
        gone.into_iter().filter_map(|k| self.open.remove(&k).map(|f| (k, f))).collect()
    }

    /// The open problematic findings.
    pub fn open(&self) -> impl Iterator<Item = (&K, &Finding)> {
        self.open.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    /// Points `step` seconds apart, live bytes in tenths of a MiB.
    fn series(tenths_mb: &[u64], step: f64) -> Vec<Point> {
        tenths_mb
            .iter()
            .enumerate()
            .map(|(i, v)| Point { t: i as f64 * step, live_bytes: v * MB / 10 })
            .collect()
    }

    fn th() -> Thresholds {
        Thresholds { min_span: 60.0, ..Thresholds::default() }
    }

    #[test]
    fn steady_growth_of_an_unreclaimable_cache_is_problematic() {
        // 1 MiB a minute for 10 minutes.
        let p = series(&[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 60.0);
        let f = classify(&p, false, Reclaim::default(), &th()).unwrap();
        assert_eq!((f.verdict, f.reason), (Verdict::Problematic, Reason::Unreclaimable));
        // 1 MiB/min = 62.9 MB/h.
        assert!((f.rate_mb_per_hour - 62.91).abs() < 0.01, "{}", f.rate_mb_per_hour);
        assert_eq!(f.growth_bytes, 10 << 20);
        assert!((f.rising_share - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn reclaim_tells_failed_from_never_ran() {
        let p = series(&[0, 20, 40, 60, 80], 60.0);
        let not_run = classify(&p, true, Reclaim::default(), &th()).unwrap();
        assert_eq!(
            (not_run.verdict, not_run.reason),
            (Verdict::Problematic, Reason::ReclaimNotRun)
        );
        let tried = Reclaim { scanned: 50_000, freed: 12 };
        let failed = classify(&p, true, tried, &th()).unwrap();
        assert_eq!((failed.verdict, failed.reason), (Verdict::Problematic, Reason::ReclaimFailed));
        assert_eq!(failed.reclaim, tried);
    }

    #[test]
    fn growth_that_came_back_is_healthy() {
        // Grew by 8 MiB with the work, then reclaim or the end of the work returned 6.
        let p = series(&[0, 40, 80, 50, 20], 60.0);
        let f = classify(&p, true, Reclaim { scanned: 100, freed: 90 }, &th()).unwrap();
        assert_eq!((f.verdict, f.reason), (Verdict::Healthy, Reason::Returned));
        assert_eq!(f.peak_bytes, 8 * MB);
    }

    #[test]
    fn small_or_flat_series_are_stable_and_short_windows_have_no_verdict() {
        let flat = series(&[50, 51, 49, 50, 52], 60.0);
        let f = classify(&flat, false, Reclaim::default(), &th()).unwrap();
        assert_eq!((f.verdict, f.reason), (Verdict::Healthy, Reason::Stable));
        assert_eq!(classify(&series(&[0, 90, 180], 1.0), false, Reclaim::default(), &th()), None);
        assert_eq!(classify(&series(&[0, 90], 600.0), false, Reclaim::default(), &th()), None);
        assert_eq!(classify(&[], false, Reclaim::default(), &th()), None);
    }

    #[test]
    fn a_sawtooth_that_ends_higher_is_irregular_not_sustained() {
        let p = series(&[0, 60, 10, 70, 20, 80, 30, 90, 60], 60.0);
        let f = classify(&p, false, Reclaim::default(), &th()).unwrap();
        assert_eq!((f.verdict, f.reason), (Verdict::Healthy, Reason::Irregular));
    }

    #[test]
    fn history_keeps_the_window_and_is_bounded() {
        let mut h: History<&str> = History::new(100.0, 5, 2);
        for i in 0u32..10 {
            h.push("a", Point { t: f64::from(i) * 30.0, live_bytes: u64::from(i) });
        }
        // 270 s now: points within 100 s are 180, 210, 240, 270.
        let ts: Vec<f64> = h.points(&"a").iter().map(|p| p.t).collect();
        assert_eq!(ts, vec![180.0, 210.0, 240.0, 270.0]);
        h.push("b", Point { t: 260.0, live_bytes: 1 });
        h.push("c", Point { t: 270.0, live_bytes: 1 });
        h.prune(270.0);
        // Three series, at most two: the stalest (b) goes.
        assert_eq!(h.keys().copied().collect::<Vec<_>>(), vec!["a", "c"]);
        h.prune(500.0);
        assert_eq!(h.keys().count(), 0);
    }

    #[test]
    fn the_tracker_says_each_start_and_end_once() {
        let p = series(&[0, 20, 40, 60, 80], 60.0);
        let bad = classify(&p, false, Reclaim::default(), &th()).unwrap();
        let good =
            classify(&series(&[10, 10, 10], 60.0), false, Reclaim::default(), &th()).unwrap();
        let mut t = Tracker::default();
        assert_eq!(t.update(&"k", Some(&good)), None);
        assert_eq!(t.update(&"k", Some(&bad)), Some(Transition::Started));
        assert_eq!(t.update(&"k", Some(&bad)), None);
        assert_eq!(t.update(&"k", None), None);
        assert_eq!(t.open().count(), 1);
        assert_eq!(t.update(&"k", Some(&good)), Some(Transition::Ended));
        assert_eq!(t.update(&"k", Some(&bad)), Some(Transition::Started));
        let closed = t.close_gone(|_| false);
        assert_eq!(closed.len(), 1);
        assert_eq!(t.open().count(), 0);
    }
}

/// What a growth event or the report says about one series.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GrowthFinding<O> {
    /// Whose objects (a pod or cgroup), or `null` for a cache node-wide.
    pub owner: Option<O>,
    /// The cache.
    pub cache: String,
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
}

/// A finding that started or ended.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct GrowthEvent<O> {
    /// `started` or `ended`.
    pub state: Transition,
    /// The finding (when it ended: the last problematic one, or the healthy one that ended
    /// it).
    #[serde(flatten)]
    pub subject: GrowthFinding<O>,
}

/// Series per owner × cache and per cache, classified every interval.
#[derive(Clone, Debug)]
pub struct Watch<K: Ord + Clone> {
    rows: History<(K, String)>,
    caches: History<String>,
    row_findings: Tracker<(K, String)>,
    cache_findings: Tracker<String>,
    thresholds: Thresholds,
}

/// One interval's input to a [`Watch`].
pub struct Observation<'a, K> {
    /// Seconds since tracing started.
    pub t: f64,
    /// Live bytes per owner × cache (slabtrace's attribution).
    pub rows: Vec<(&'a K, &'a str, u64)>,
    /// Live bytes per cache node-wide (the kernel's books: slabinfo).
    pub caches: Vec<(&'a str, u64)>,
}

impl<K: Ord + Clone> Watch<K> {
    /// A watch over `window` seconds (series keep at most `capacity` points, at most
    /// `max_series` series of each kind).
    #[must_use]
    pub fn new(thresholds: Thresholds, window: f64, capacity: usize, max_series: usize) -> Self {
        Self {
            rows: History::new(window, capacity, max_series),
            caches: History::new(window, capacity, max_series),
            row_findings: Tracker::default(),
            cache_findings: Tracker::default(),
            thresholds,
        }
    }

    /// Adds an interval and classifies every series. `reclaim(cache)` says what reclaim did
    /// to a cache over the window and whether the cache is reclaimable. Returns the findings
    /// that started or ended; `owner` turns a key into what events carry.
    pub fn observe<O>(
        &mut self,
        obs: &Observation<'_, K>,
        mut reclaim: impl FnMut(&str) -> (bool, Reclaim),
        mut owner: impl FnMut(&K) -> Option<O>,
    ) -> Vec<GrowthEvent<O>> {
        for (key, cache, live) in &obs.rows {
            self.rows
                .push(((*key).clone(), (*cache).to_owned()), Point { t: obs.t, live_bytes: *live });
        }
        for (cache, live) in &obs.caches {
            self.caches.push((*cache).to_owned(), Point { t: obs.t, live_bytes: *live });
        }
        self.rows.prune(obs.t);
        self.caches.prune(obs.t);
        let mut events = Vec::new();
        let keys: Vec<(K, String)> = self.rows.keys().cloned().collect();
        for key in keys {
            let (reclaimable, r) = reclaim(&key.1);
            let finding = classify(&self.rows.points(&key), reclaimable, r, &self.thresholds);
            if let Some(state) = self.row_findings.update(&key, finding.as_ref())
                && let Some(finding) = finding
            {
                let subject = GrowthFinding { owner: owner(&key.0), cache: key.1.clone(), finding };
                events.push(GrowthEvent { state, subject });
            }
        }
        let caches: Vec<String> = self.caches.keys().cloned().collect();
        for cache in caches {
            let (reclaimable, r) = reclaim(&cache);
            let finding = classify(&self.caches.points(&cache), reclaimable, r, &self.thresholds);
            if let Some(state) = self.cache_findings.update(&cache, finding.as_ref())
                && let Some(finding) = finding
            {
                events.push(GrowthEvent {
                    state,
                    subject: GrowthFinding { owner: None, cache, finding },
                });
            }
        }
        // Series that left the window: their open findings end with their last state.
        let rows = &self.rows;
        for ((k, cache), finding) in
            self.row_findings.close_gone(|key| rows.series.contains_key(key))
        {
            let subject = GrowthFinding { owner: owner(&k), cache, finding };
            events.push(GrowthEvent { state: Transition::Ended, subject });
        }
        let caches = &self.caches;
        for (cache, finding) in self.cache_findings.close_gone(|c| caches.series.contains_key(c)) {
            events.push(GrowthEvent {
                state: Transition::Ended,
                subject: GrowthFinding { owner: None, cache, finding },
            });
        }
        events
    }

    /// The open problematic findings, per owner × cache and per cache.
    pub fn open<O>(&self, mut owner: impl FnMut(&K) -> Option<O>) -> Vec<GrowthFinding<O>> {
        let rows = self.row_findings.open().map(|((k, cache), f)| GrowthFinding {
            owner: owner(k),
            cache: cache.clone(),
            finding: *f,
        });
        let caches = self.cache_findings.open().map(|(cache, f)| GrowthFinding {
            owner: None,
            cache: cache.clone(),
            finding: *f,
        });
        let mut all: Vec<GrowthFinding<O>> = rows.chain(caches).collect();
        all.sort_by(|a, b| b.finding.bytes_per_second.total_cmp(&a.finding.bytes_per_second));
        all
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[test]
    fn a_growing_row_starts_a_finding_and_a_reclaimed_one_ends_it() {
        let th = Thresholds { min_span: 2.0, min_growth_bytes: 1000, ..Thresholds::default() };
        let mut w: Watch<u32> = Watch::new(th, 60.0, 100, 100);
        let owner = |k: &u32| Some(*k);
        let mut events = Vec::new();
        // Pod 7's dentries grow 1 kB a second for 5 s; reclaim never runs.
        for i in 0u32..6 {
            let obs = Observation {
                t: f64::from(i),
                rows: vec![(&7, "dentry", u64::from(i) * 1000)],
                caches: vec![("dentry", 50_000 + u64::from(i) * 1000)],
            };
            events.extend(w.observe(&obs, |_| (true, Reclaim::default()), owner));
        }
        let started: Vec<_> = events.iter().filter(|e| e.state == Transition::Started).collect();
        assert_eq!(started.len(), 2, "{events:#?}");
        assert_eq!(started[0].subject.owner, Some(7));
        assert_eq!(started[0].subject.finding.reason, Reason::ReclaimNotRun);
        assert_eq!(started[1].subject.owner, None);
        assert_eq!(w.open(owner).len(), 2);
        // drop_caches: reclaim ran and took the dentries back.
        let obs =
            Observation { t: 6.0, rows: vec![(&7, "dentry", 0)], caches: vec![("dentry", 50_000)] };
        let ended = w.observe(&obs, |_| (true, Reclaim { scanned: 9000, freed: 8000 }), owner);
        assert_eq!(ended.len(), 2, "{ended:#?}");
        assert!(ended.iter().all(|e| e.state == Transition::Ended));
        assert_eq!(ended[0].subject.finding.reason, Reason::Returned);
        assert!(w.open(owner).is_empty());
    }
}
