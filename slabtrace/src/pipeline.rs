//! The long-running half of slabtrace: a [`Session`] read every interval into an [`Interval`]
//! (the cumulative report, its [`OwnerTable`], what changed, who is gone, the node's books and
//! slabtrace's own cost), which the daemon's sinks and `slabtrace top` consume.
//!
//! Counters are accumulated here from per-interval deltas rather than read whole from the
//! maps, so keys the kernel side drops (a full map, a future clean-up of dead cgroups) do not
//! make cumulative figures go backwards.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use log::{debug, warn};
use slabtrace_common::{CounterKey, Counters, ShrinkerStats};

use crate::{
    advice::{self, Advice, NodeSample, Policy},
    cgroup::charged::Charged,
    frame::{self, Change, Owner, OwnerKey, OwnerTable},
    maps::{delta, retire},
    node::{
        growth::{GrowthEvent, Observation, Reclaim, Thresholds, Transition, Watch},
        oom::OomKill,
        shrinkers::{self, NamedShrinkerDelta},
        slabinfo::SlabInfo,
        slow_growth::{Series as SlowSeries, Settings as SlowSettings, SlowFinding, SlowWatch},
    },
    oom_report::{self, OomReport, PodRef},
    output::report::{KernelMemory, Report},
    session::{self, Session, SessionOptions, TraceError},
};

/// What one interval read (see [`Pipeline::read`]).
struct Reading {
    now: Instant,
    snap: crate::maps::snapshot::Snapshot,
    books: session::Books,
    shrinkers: BTreeMap<u64, ShrinkerStats>,
    dentries: Option<(u64, u64)>,
    process: ProcessUsage,
}

/// Growth is judged over this window unless the caller says otherwise.
pub const DEFAULT_GROWTH_WINDOW: Duration = Duration::from_mins(30);

/// Points per growth series at most (an interval of 10 s over 30 min needs 180).
const GROWTH_POINTS: usize = 720;

/// Growth series of each kind at most.
const GROWTH_SERIES: usize = 5_000;

/// Node samples kept for the advice: a day at a 10 s interval. The highest sample since the
/// start is kept besides, so the advice never forgets the peak.
const NODE_SAMPLES: usize = 8_640;

/// OOM kills kept for the report.
const OOM_HISTORY: usize = 100;

/// Holders listed with an OOM kill.
const OOM_HOLDERS: usize = 10;

/// What one interval produced. Sinks get it behind an `Arc` and never reach back into the maps.
#[derive(Debug)]
pub struct Interval {
    /// Which interval, from 1.
    pub seq: u64,
    /// This node's name.
    pub node: String,
    /// When the interval ended.
    pub ts: SystemTime,
    /// Its length in seconds (> 0).
    pub seconds: f64,
    /// Everything since the probes were attached (what `/report` serves).
    pub report: Report,
    /// Per owner × cache, cumulative.
    pub frame: OwnerTable,
    /// Rows that changed in this interval, most important first.
    pub changes: Vec<Change>,
    /// Owners that went away in this interval (reported once).
    pub gone: Vec<Owner>,
    /// /proc/meminfo's kernel memory lines now.
    pub meminfo: Option<KernelMemory>,
    /// /proc/slabinfo now (empty if unreadable).
    pub slabinfo: Vec<SlabInfo>,
    /// slabtrace's own process.
    pub process: ProcessUsage,
    /// Events the BPF programs handled in this interval, per second.
    pub events_per_second: f64,
    /// The last interval before shutdown.
    pub last: bool,
    /// OOM kills drained in this interval, with the slab picture.
    pub oom_kills: Vec<OomReport>,
    /// Growth findings that started or ended in this interval.
    pub growth: Vec<GrowthEvent<Owner>>,
    /// Slow-growth findings (the long view) that started or ended in this interval.
    pub slow_growth: Vec<(Transition, SlowFinding)>,
}

impl Interval {
    /// The interval between two of a running daemon's reports, as `top --from` shows it:
    /// `previous` is the last report's frame and event count (None for the first, which then
    /// has no rates). The daemon's own process figures are not in its report: left at zero.
    #[must_use]
    pub fn between_reports(
        report: Report,
        previous: Option<(&OwnerTable, u64)>,
        seq: u64,
        ts: SystemTime,
        seconds: f64,
    ) -> Self {
        let frame = OwnerTable::from_observation(&report);
        let events = report.self_stats.alloc_events + report.self_stats.free_events;
        let seconds = seconds.max(1e-3);
        let (changes, events_per_second) = previous.map_or((Vec::new(), 0.0), |(before, n)| {
            (crate::frame::changes(before, &frame), events.saturating_sub(n) as f64 / seconds)
        });
        Self {
            seq,
            node: report.node.clone(),
            ts,
            seconds,
            meminfo: report.meminfo.map(|m| m.after),
            frame,
            changes,
            events_per_second,
            report,
            ..Self::default()
        }
    }
}

/// An empty interval at the epoch: for tests and fixtures, which then set only the fields
/// they are about (`Interval { seq: 3, ..Interval::default() }`).
impl Default for Interval {
    fn default() -> Self {
        Self {
            seq: 0,
            node: String::new(),
            ts: SystemTime::UNIX_EPOCH,
            seconds: 1.0,
            report: Report::default(),
            frame: OwnerTable::default(),
            changes: Vec::new(),
            gone: Vec::new(),
            meminfo: None,
            slabinfo: Vec::new(),
            process: ProcessUsage::default(),
            events_per_second: 0.0,
            last: false,
            oom_kills: Vec::new(),
            growth: Vec::new(),
            slow_growth: Vec::new(),
        }
    }
}

/// slabtrace's own CPU and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// A session read every interval.
pub struct Pipeline {
    session: Session,
    proc_root: PathBuf,
    node: String,
    seq: u64,
    /// Counters as last read from the maps.
    read: BTreeMap<CounterKey, Counters>,
    /// Counters accumulated from deltas since the start.
    totals: BTreeMap<CounterKey, Counters>,
    frame: OwnerTable,
    last_tick: Instant,
    events: u64,
    /// When each finished key was first seen finished (see [`crate::maps::retire`]).
    finished_at: BTreeMap<CounterKey, Instant>,
    /// How long finished cgroups are kept in userspace (`--gone-pod-ttl`).
    grace: Duration,
    /// Keys deleted from the counters map so far.
    retired: u64,
    /// OOM kills drained but not yet reported, with meminfo when they were drained.
    pending_oom: Vec<(OomKill, Option<KernelMemory>)>,
    /// The last [`OOM_HISTORY`] OOM kills, and how many there were by scope.
    oom_history: VecDeque<OomReport>,
    oom_total: BTreeMap<String, u64>,
    /// Growth series and findings.
    watch: Watch<OwnerKey>,
    /// Shrinker totals as last read, the scan functions' names, and what reclaim did in each
    /// interval of the growth window (mostly nothing: only shrinkers that ran are kept).
    shrinkers_read: BTreeMap<u64, ShrinkerStats>,
    reclaim_history: VecDeque<(f64, Vec<NamedShrinkerDelta>)>,
    growth_window: f64,
    /// Node samples for the advice, and the one with the most uncharged kernel memory.
    samples: VecDeque<NodeSample>,
    peak_sample: Option<NodeSample>,
    policy: Policy,
    /// The long view of slow growth, when kept (the daemon).
    slow: Option<Slow>,
}

/// The long view and where it is kept.
struct Slow {
    watch: SlowWatch,
    file: Option<PathBuf>,
    /// Whether a failed save was said already (once: the next success says it works again).
    save_failed: bool,
}

impl Pipeline {
    /// Starts the session.
    pub fn start(opts: &SessionOptions) -> Result<Self, TraceError> {
        let session = Session::start(opts)?;
        let (proc_root, grace) = (opts.roots.proc_root.clone(), opts.runtime.gone_pod_ttl);
        let last_tick = session.started();
        Ok(Self {
            session,
            proc_root,
            node: session::hostname(),
            seq: 0,
            read: BTreeMap::new(),
            totals: BTreeMap::new(),
            frame: OwnerTable::default(),
            last_tick,
            events: 0,
            finished_at: BTreeMap::new(),
            grace,
            retired: 0,
            pending_oom: Vec::new(),
            oom_history: VecDeque::new(),
            oom_total: ["global", "memcg", "unknown"].map(|s| (s.to_owned(), 0)).into(),
            watch: growth_watch(DEFAULT_GROWTH_WINDOW, 1 << 20),
            shrinkers_read: BTreeMap::new(),
            reclaim_history: VecDeque::new(),
            growth_window: DEFAULT_GROWTH_WINDOW.as_secs_f64(),
            samples: VecDeque::new(),
            peak_sample: None,
            policy: Policy::default(),
            slow: None,
        })
    }

    /// The margin the advice adds to observed peaks (0.25 = 25 %).
    pub fn set_advice_margin(&mut self, margin: f64) {
        self.policy.margin = margin;
    }

    /// Judges growth over `window`, ignoring growth below `min_bytes` (by default 30 minutes
    /// and 1 MiB). A verdict needs half a window of history.
    pub fn set_growth(&mut self, window: Duration, min_bytes: u64) {
        self.watch = growth_watch(window, min_bytes);
        self.growth_window = window.as_secs_f64();
    }

    /// Keeps the long view of slow growth ([`crate::node::slow_growth`]), in `file` across
    /// restarts when given: what the file holds is judged at the first interval. A file that
    /// cannot be read is said once and started afresh.
    pub fn set_slow_growth(&mut self, settings: SlowSettings, file: Option<PathBuf>) {
        let watch = file.as_ref().map_or_else(
            || SlowWatch::new(settings),
            |path| {
                SlowWatch::load(path, settings).unwrap_or_else(|why| {
                    log::warn!(
                        "starting the slow-growth history afresh: {} cannot be read: {why}",
                        crate::output::printable::printable(&path.display().to_string())
                    );
                    SlowWatch::new(settings)
                })
            },
        );
        self.slow = Some(Slow { watch, file, save_failed: false });
    }

    /// Between intervals: names the cgroups of new keys while they exist.
    pub fn peek(&mut self) {
        self.session.peek();
    }

    /// Drains OOM kills, noting /proc/meminfo as it is now; true if some wait to be
    /// reported (the daemon then ends the interval early, so their slab picture is fresh).
    pub fn poll_oom(&mut self) -> bool {
        let kills = self.session.oom_kills();
        if !kills.is_empty() {
            let meminfo = session::read_kernel_memory(&self.proc_root);
            self.pending_oom.extend(kills.into_iter().map(|k| (k, meminfo)));
        }
        !self.pending_oom.is_empty()
    }

    /// Ends an interval: reads the maps and the kernel's books, accumulates, builds the report
    /// and the frame, and compares with the previous interval. `last` marks the final interval
    /// before shutdown.
    pub fn tick(&mut self, last: bool) -> Result<Interval, TraceError> {
        let reading = self.read()?;
        self.accumulate(&reading.snap, reading.now);
        Ok(self.assemble(reading, last))
    }

    /// Everything an interval reads, in one place: the maps, the runtime's pod names, OOM
    /// kills, the kernel's books, the shrinker map, the dentry state and slabtrace's own usage.
    fn read(&mut self) -> Result<Reading, TraceError> {
        let now = Instant::now();
        let snap = self.session.read()?;
        let mut books = self.session.read_books(&snap);
        self.session.refresh();
        // After the rescan, so every pod alive now has its books read.
        self.session.read_charged(&mut books);
        self.session.read_dying(&mut books);
        books.add_warnings_of(&self.session);
        self.poll_oom();
        let shrinkers = self.session.shrinkers();
        let dentries = std::fs::read_to_string(self.proc_root.join("sys/fs/dentry-state"))
            .ok()
            .and_then(|text| advice::parse_dentry_state(&text));
        Ok(Reading {
            now,
            snap,
            books,
            shrinkers,
            dentries,
            process: process_usage(&self.proc_root),
        })
    }

    /// Adds the interval's counter deltas to the totals, then retires finished keys (the
    /// interval's one write: deleting them from the kernel's map).
    fn accumulate(&mut self, snap: &crate::maps::snapshot::Snapshot, now: Instant) {
        for (key, d) in &delta(&self.read, &snap.counters) {
            self.totals.entry(*key).or_default().add(d);
        }
        self.read.clone_from(&snap.counters);
        self.retire(now, &snap.call_sites);
    }

    /// Builds the interval from what [`Pipeline::read`] read: reads nothing more than cgroup
    /// paths (cached) and kallsyms (once).
    fn assemble(&mut self, reading: Reading, last: bool) -> Interval {
        let Reading { now, snap, books, shrinkers, dentries, process } = reading;
        let mut report = self.session.report(&snap, &self.totals, books);
        let slabinfo = std::mem::take(&mut report.slabinfo);
        report.self_stats.retired_counters = self.retired;
        let frame = OwnerTable::from_observation(&report);
        let session = &mut self.session;
        let oom_kills: Vec<OomReport> = std::mem::take(&mut self.pending_oom)
            .into_iter()
            .map(|(kill, meminfo)| {
                oom_report::join(
                    &kill,
                    meminfo,
                    &report,
                    &frame,
                    |id| session.cgroup(id).0,
                    OOM_HOLDERS,
                )
            })
            .collect();
        for kill in &oom_kills {
            log::warn!(
                "OOM kill ({} scope): {} (pid {}) in {}",
                kill.scope,
                kill.comm,
                kill.victim.pid,
                kill.victim.cgroup.as_deref().unwrap_or("an unknown cgroup")
            );
            if self.oom_history.len() == OOM_HISTORY {
                self.oom_history.pop_front();
            }
            self.oom_history.push_back(kill.clone());
            *self.oom_total.entry(kill.scope.to_string()).or_default() += 1;
        }
        report.oom_kills_total.clone_from(&self.oom_total);
        report.oom_kills = self.oom_history.iter().cloned().collect();
        let growth = self.observe_growth(&report, &frame, &slabinfo, shrinkers);
        let owners = &frame.owners;
        report.growth = self.watch.open(|k| owners.get(k).cloned());
        let slow_growth = self.observe_slow(&mut report, last);
        let window: Vec<NamedShrinkerDelta> =
            self.reclaim_history.iter().flat_map(|(_, ran)| ran.iter().cloned()).collect();
        report.reclaim = shrinkers::summarize(&window);
        report.advice = self.advise(&report, dentries);
        let changes = frame::changes(&self.frame, &frame);
        let gone = frame.newly_gone(&self.frame).into_iter().cloned().collect();
        let seconds = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        let events = report.self_stats.alloc_events + report.self_stats.free_events;
        let events_per_second = events.saturating_sub(self.events) as f64 / seconds;
        self.events = events;
        self.last_tick = now;
        self.frame = frame.clone();
        self.seq += 1;
        Interval {
            seq: self.seq,
            node: self.node.clone(),
            ts: SystemTime::now(),
            seconds,
            meminfo: report.meminfo.map(|m| m.after),
            report,
            frame,
            changes,
            gone,
            slabinfo,
            process,
            events_per_second,
            last,
            oom_kills,
            growth,
            slow_growth,
        }
    }

    /// Adds the node's Slab and `SUnreclaim` and each pod's charged slab to the long view; at
    /// each new step (and the last interval) judges it and keeps it in its file. The open
    /// findings go in the report, fastest first.
    fn observe_slow(&mut self, report: &mut Report, last: bool) -> Vec<(Transition, SlowFinding)> {
        let Some(slow) = &mut self.slow else { return Vec::new() };
        let now =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut figures = Vec::new();
        if let Some(m) = report.meminfo.map(|m| m.after) {
            figures.push((SlowSeries::NodeSlab, m.slab));
            figures.push((SlowSeries::NodeUnreclaimable, m.sunreclaim));
        }
        for pod in &report.pods {
            if let Some(bytes) = pod.charged.as_ref().and_then(Charged::slab_or_kernel) {
                figures.push((SlowSeries::Pod(pod.uid.clone()), bytes));
            }
        }
        let stepped = slow.watch.record(now, figures);
        for pod in &report.pods {
            slow.watch.name_pod(PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            });
        }
        let mut events = Vec::new();
        if stepped {
            for e in slow.watch.judge() {
                events.push((e.state, slow.watch.describe(&e.series, &e.finding)));
            }
        }
        if (stepped || last)
            && let Some(path) = &slow.file
        {
            match slow.watch.save(path) {
                Ok(()) => slow.save_failed = false,
                Err(e) if !slow.save_failed => {
                    slow.save_failed = true;
                    log::warn!(
                        "cannot keep the slow-growth history in {}: {e}; a restart will start it \
                         afresh",
                        crate::output::printable::printable(&path.display().to_string())
                    );
                }
                Err(_) => {}
            }
        }
        let mut open: Vec<SlowFinding> =
            slow.watch.open().map(|(series, f)| slow.watch.describe(series, f)).collect();
        open.sort_by(|a, b| b.finding.bytes_per_second.total_cmp(&a.finding.bytes_per_second));
        report.slow_growth = open;
        events
    }

    /// Deletes finished keys from the kernel's map and forgets those finished for longer than
    /// the grace period, with their cgroups' paths.
    fn retire(&mut self, now: Instant, call_sites: &BTreeMap<slabtrace_common::CallSiteKey, u64>) {
        let session = &self.session;
        let plan = retire::plan(
            &self.read,
            &self.totals,
            |id| session.alive(id),
            &mut self.finished_at,
            now,
            self.grace,
        );
        if !plan.delete.is_empty() {
            match self.session.delete_counters(&plan.delete) {
                Ok(n) => {
                    debug!("retired {n} counters of gone cgroups");
                    self.retired += n as u64;
                }
                Err(e) => warn!("cannot retire counters of gone cgroups: {e}"),
            }
            for key in &plan.delete {
                self.read.remove(key);
            }
        }
        if !plan.forget_keys.is_empty() {
            debug!("forgetting {} finished keys of gone cgroups", plan.forget_keys.len());
            self.totals.retain(|k, _| !plan.forget_keys.contains(k));
            self.finished_at.retain(|k, _| !plan.forget_keys.contains(k));
        }
        if !plan.forget.is_empty() {
            debug!("forgetting {} gone cgroups", plan.forget.len());
            self.session.forget_cgroups(|id| !plan.forget.contains(&id));
            // Their call-site counts go with them (the map is bounded too).
            let sites: Vec<_> =
                call_sites.keys().filter(|k| plan.forget.contains(&k.cgroup_id)).copied().collect();
            if !sites.is_empty() {
                match self.session.delete_call_sites(&sites) {
                    Ok(n) => debug!("retired {n} call-site counts of forgotten cgroups"),
                    Err(e) => warn!("cannot retire call-site counts of gone cgroups: {e}"),
                }
            }
        }
    }

    /// Adds this interval's node sample and sizes the kubelet reservations from the history.
    fn advise(&mut self, report: &Report, dentries: Option<(u64, u64)>) -> Option<Advice> {
        let t = self.session.started().elapsed().as_secs_f64();
        if let Some(sample) = advice::node_sample(report, t, dentries) {
            if self.samples.len() == NODE_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(sample);
            if self.peak_sample.is_none_or(|p| sample.uncharged() > p.uncharged()) {
                self.peak_sample = Some(sample);
            }
        }
        let mut history: Vec<NodeSample> = self.samples.iter().copied().collect();
        if let Some(peak) = self.peak_sample
            && history.first().is_some_and(|first| peak.t < first.t)
        {
            history.insert(0, peak);
        }
        advice::advise(&history, &self.policy)
    }

    /// Adds this interval's live bytes to the growth series and classifies them.
    fn observe_growth(
        &mut self,
        report: &Report,
        frame: &OwnerTable,
        slabinfo: &[SlabInfo],
        now: BTreeMap<u64, ShrinkerStats>,
    ) -> Vec<GrowthEvent<Owner>> {
        let t = self.session.started().elapsed().as_secs_f64();
        let obs = Observation {
            t,
            rows: frame
                .rows
                .iter()
                .map(|((k, cache), r)| (k, cache.as_str(), r.live_bytes))
                .collect(),
            caches: slabinfo
                .iter()
                .map(|s| (s.name.as_str(), s.active_objs.saturating_mul(s.objsize)))
                .collect(),
        };
        let reclaimable: BTreeSet<&str> = report
            .caches
            .iter()
            .filter(|c| c.reclaimable)
            .map(|c| c.totals.cache.as_str())
            .collect();
        // What reclaim did over the window, per cache, from the shrinker tracepoints.
        let called = shrinkers::delta(&self.shrinkers_read, &now);
        // Names only when some shrinker ran: most intervals see no reclaim at all.
        let ran = if called.is_empty() {
            Vec::new()
        } else {
            shrinkers::symbolize(&called, self.session.kallsyms())
        };
        self.shrinkers_read = now;
        self.reclaim_history.push_back((t, ran));
        while self.reclaim_history.front().is_some_and(|(at, _)| t - at > self.growth_window) {
            self.reclaim_history.pop_front();
        }
        let history = &self.reclaim_history;
        let reclaim = |cache: &str| {
            let is = reclaimable.contains(cache);
            let mut sum = Reclaim::default();
            for (_, ran) in history {
                let r = shrinkers::reclaim_for_cache(cache, is, ran);
                sum.scanned += r.scanned;
                sum.freed += r.freed;
            }
            (is, sum)
        };
        self.watch.observe(&obs, reclaim, |k| frame.owners.get(k).cloned())
    }

    /// Detaches the probes.
    pub fn detach(&mut self) {
        self.session.detach();
    }
}

fn growth_watch(window: Duration, min_bytes: u64) -> Watch<OwnerKey> {
    let window = window.as_secs_f64();
    let thresholds =
        Thresholds { min_span: window / 2.0, min_growth_bytes: min_bytes, ..Thresholds::default() };
    Watch::new(thresholds, window, GROWTH_POINTS, GROWTH_SERIES)
}

/// CPU time and RSS of this process from /proc/self/stat and /proc/self/status; zeros if
/// unreadable (said at debug level: these are slabtrace's own figures, not the node's).
#[must_use]
pub fn process_usage(proc_root: &std::path::Path) -> ProcessUsage {
    let stat = std::fs::read_to_string(proc_root.join("self/stat")).unwrap_or_default();
    let status = std::fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_process_usage(&stat, &status, if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// The pure half of [`process_usage`]: utime and stime are fields 14 and 15 of
/// /proc/self/stat, counted after the parenthesised command name (which may hold spaces).
#[must_use]
pub fn parse_process_usage(stat: &str, status: &str, ticks_per_second: f64) -> ProcessUsage {
    let after_comm = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are fields[11] and fields[12].
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let cpu_seconds = (tick(11) + tick(12)) as f64 / ticks_per_second;
    let rss_bytes = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    ProcessUsage { cpu_seconds, rss_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report in which cgroup `/a` made `allocs` dentries, `live` of them still live.
    fn report_of(allocs: u64, live: u64, events: u64) -> Report {
        use crate::attribution::{CacheUsage, CgroupUsage, Totals};
        let caches = vec![CacheUsage {
            cache: "dentry".into(),
            object_size: 192,
            allocs,
            alloc_bytes: allocs * 192,
            frees: allocs - live,
            live_objects: live,
            live_bytes: live * 192,
            ..CacheUsage::default()
        }];
        let cgroup = CgroupUsage {
            cgroup_id: 5,
            cgroup: Some("/a".into()),
            alive: true,
            totals: Totals::of(&caches),
            caches,
            identity: None,
        };
        let mut report = Report::default();
        report.observation.node = "n".into();
        report.observation.cgroups = vec![cgroup];
        report.observation.self_stats.alloc_events = events;
        report
    }

    #[test]
    fn two_reports_of_a_daemon_make_an_interval_with_rates() {
        let first =
            Interval::between_reports(report_of(10, 10, 100), None, 1, SystemTime::UNIX_EPOCH, 0.0);
        assert!(first.changes.is_empty(), "no rates from one report");
        assert_eq!((first.seq, first.node.as_str()), (1, "n"));
        assert!(!first.frame.rows.is_empty());
        let second = Interval::between_reports(
            report_of(30, 25, 600),
            Some((&first.frame, 100)),
            2,
            SystemTime::UNIX_EPOCH,
            2.0,
        );
        assert!((second.events_per_second - 250.0).abs() < 1e-9);
        let change = second.changes.iter().find(|c| c.cache == "dentry").expect("a change");
        assert_eq!((change.allocs, change.frees), (20, 5));
        assert_eq!(change.live_bytes_delta, 15 * 192);
    }

    #[test]
    fn process_usage_from_proc_text() {
        let stat = "4242 (slab trace) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 3 0";
        let status = "Name:\tslabtrace\nVmRSS:\t   40960 kB\nThreads:\t3\n";
        let u = parse_process_usage(stat, status, 100.0);
        assert!((u.cpu_seconds - 3.0).abs() < 1e-9);
        assert_eq!(u.rss_bytes, 40960 * 1024);
        assert_eq!(parse_process_usage("", "", 100.0), ProcessUsage::default());
    }
}
