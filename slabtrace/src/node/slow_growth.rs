//! Slow leaks: growth judged over days, not minutes.
//!
//! A leak of 200 MB a day is invisible to a 30-minute growth window: it hides in the noise of
//! work coming and going. So the daemon also keeps, for each of a few series, one figure per
//! step (10 minutes by default) over a window of days (2 by default), and judges those.
//!
//! The series are figures that outlive slabtrace itself, so that a restart (a rollout, an
//! OOM kill of the daemon) loses nothing: the node's `Slab` and `SUnreclaim` (/proc/meminfo),
//! and each pod's charged slab from the memory controller's own books (`slab` on cgroup v2, all
//! kernel memory on v1, whose books have no slab figure), which count objects from before
//! slabtrace started. A step keeps its *lowest* figure: a leak raises the floor, while work on
//! top of it comes and goes. The points are kept in a file beside the daemon's other state,
//! read back at start.
//!
//! Bounded: a point a step a series, at most [`MAX_PODS`] pods (the stalest go first), points
//! older than the window dropped. Pure but for [`SlowWatch::load`] and [`SlowWatch::save`].

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{
    node::growth::{
        Finding, Point, Reason, Reclaim, Thresholds, Tracker, Transition, Verdict, classify,
    },
    oom_report::PodRef,
};

/// The history file's schema name; bump on any incompatible change.
pub const HISTORY_SCHEMA: &str = "slabtrace.history.v1";

/// Pods followed at most: a node runs about a hundred at a time, and gone ones age out with
/// the window.
pub const MAX_PODS: usize = 512;

/// What a series follows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Series {
    /// /proc/meminfo `Slab`.
    NodeSlab,
    /// /proc/meminfo `SUnreclaim`.
    NodeUnreclaimable,
    /// A pod's charged slab (all kernel memory on cgroup v1), by uid.
    Pod(String),
}

impl Series {
    /// Its key in the history file.
    fn key(&self) -> String {
        match self {
            Self::NodeSlab => "node/slab".to_owned(),
            Self::NodeUnreclaimable => "node/sunreclaim".to_owned(),
            Self::Pod(uid) => format!("pod/{uid}"),
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key {
            "node/slab" => Some(Self::NodeSlab),
            "node/sunreclaim" => Some(Self::NodeUnreclaimable),
            _ => key.strip_prefix("pod/").filter(|u| !u.is_empty()).map(|u| Self::Pod(u.into())),
        }
    }

    /// The `series` of the events and the report: `slab`, `sunreclaim` or `charged_slab`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::NodeSlab => "slab",
            Self::NodeUnreclaimable => "sunreclaim",
            Self::Pod(_) => "charged_slab",
        }
    }

    /// Whether reclaim could bring it back (`SUnreclaim` cannot, by definition).
    const fn reclaimable(&self) -> bool {
        !matches!(self, Self::NodeUnreclaimable)
    }
}

/// How the long view is kept and judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Seconds a point stands for.
    pub step: u64,
    /// Seconds of history kept and judged.
    pub window: u64,
    /// Smallest growth worth a finding, bytes.
    pub min_growth_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { step: 600, window: 2 * 86_400, min_growth_bytes: 64 << 20 }
    }
}

impl Settings {
    /// Points a series keeps: the window's steps and the one in progress.
    fn capacity(&self) -> usize {
        usize::try_from(self.window / self.step.max(1)).unwrap_or(usize::MAX).saturating_add(2)
    }

    /// A verdict needs a quarter of the window: half a day at the defaults, so that growth
    /// of 200 MB a day is a finding within a day of it starting.
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            min_span: self.window as f64 / 4.0,
            min_growth_bytes: self.min_growth_bytes,
            ..Thresholds::default()
        }
    }
}

/// The history file.
#[derive(Serialize, Deserialize)]
struct File {
    schema: String,
    step_seconds: u64,
    /// Per series key, `[unix seconds, bytes]` oldest first.
    series: BTreeMap<String, Vec<[u64; 2]>>,
    /// The series whose problematic finding was open (its `started` said): a restarted daemon
    /// does not say it again.
    #[serde(default)]
    open: Vec<String>,
}

/// The long view: the series, and which of them are findings now.
#[derive(Debug)]
pub struct SlowWatch {
    settings: Settings,
    series: BTreeMap<Series, VecDeque<[u64; 2]>>,
    tracker: Tracker<Series>,
    /// The step of the last record.
    step_at: Option<u64>,
    /// The pods' names as last seen, for the pods with a series.
    names: BTreeMap<String, PodRef>,
}

/// A finding that started or ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowEvent {
    /// What grew.
    pub series: Series,
    /// Started or ended.
    pub state: Transition,
    /// The verdict and its numbers (`live_bytes` and `peak_bytes` are the series' figures).
    pub finding: Finding,
}

/// What the report and the events say of a slow-growth finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlowFinding {
    /// What grew: `slab` (/proc/meminfo's Slab), `sunreclaim` (its `SUnreclaim`) or
    /// `charged_slab` (a pod's charged slab; all its kernel memory on cgroup v1).
    pub series: String,
    /// The pod, for `charged_slab`: names as last seen (`null` until seen since a restart).
    pub pod: Option<PodRef>,
    /// The verdict over the long window; `live_bytes` and `peak_bytes` are the series'
    /// figures (the lowest of each step).
    #[serde(flatten)]
    pub finding: Finding,
}

impl SlowWatch {
    /// An empty history.
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            series: BTreeMap::new(),
            tracker: Tracker::default(),
            step_at: None,
            names: BTreeMap::new(),
        }
    }

    /// The history in `text` (a history file): one clear sentence if it is not one.
    pub fn parse(text: &str, settings: Settings) -> Result<Self, String> {
        let file: File =
            serde_json::from_str(text).map_err(|e| format!("it is not a history file: {e}"))?;
        if file.schema != HISTORY_SCHEMA {
            return Err(format!(
                "it is a {} file, not {HISTORY_SCHEMA}",
                crate::output::printable::printable(&file.schema)
            ));
        }
        let mut me = Self::new(settings);
        for (key, points) in file.series {
            let Some(series) = Series::from_key(&key) else { continue };
            // Oldest first, one point a step, within bounds, whatever the file says.
            let mut points = points;
            points.sort_unstable_by_key(|p| p[0]);
            points.dedup_by_key(|p| p[0] / settings.step.max(1));
            let skip = points.len().saturating_sub(settings.capacity());
            let kept: VecDeque<[u64; 2]> = points.into_iter().skip(skip).collect();
            if !kept.is_empty() {
                me.series.insert(series, kept);
            }
        }
        me.bound_pods();
        // Findings the last daemon had said started stay open, unsaid, if the points still
        // show them; the next judgement ends them if not.
        let th = settings.thresholds();
        for series in file.open.iter().filter_map(|k| Series::from_key(k)) {
            let points = me.points(&series);
            if let Some(f) = classify(&points, series.reclaimable(), Reclaim::default(), &th)
                .map(|f| sustained(f, &series))
                .filter(|f| f.verdict == Verdict::Problematic)
            {
                let _ = me.tracker.update(&series, Some(&f));
            }
        }
        Ok(me)
    }

    /// The history as a file's text.
    #[must_use]
    pub fn to_text(&self) -> String {
        let file = File {
            schema: HISTORY_SCHEMA.to_owned(),
            step_seconds: self.settings.step,
            series: self
                .series
                .iter()
                .map(|(s, p)| (s.key(), p.iter().copied().collect()))
                .collect(),
            open: self.tracker.open().map(|(s, _)| s.key()).collect(),
        };
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads the history kept at `path`; a missing file is an empty history.
    pub fn load(path: &Path, settings: Settings) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, settings),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::new(settings)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes the history to `path` whole or not at all (a new file renamed over the old).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        std::fs::write(&tmp, self.to_text())?;
        std::fs::rename(&tmp, path)
    }

    /// Adds the figures known at `now` (unix seconds): each step keeps its lowest. Returns
    /// true when this is a new step (time to judge and to save).
    pub fn record(&mut self, now: u64, figures: impl IntoIterator<Item = (Series, u64)>) -> bool {
        let step = self.settings.step.max(1);
        let at = now - now % step;
        let capacity = self.settings.capacity();
        for (series, bytes) in figures {
            let points = self.series.entry(series).or_default();
            match points.back_mut() {
                Some(last) if last[0] == at => last[1] = last[1].min(bytes),
                // A clock set back: the figure belongs to no later step.
                Some(last) if last[0] > at => {}
                _ => points.push_back([at, bytes]),
            }
            while points.len() > capacity {
                points.pop_front();
            }
        }
        let oldest = now.saturating_sub(self.settings.window);
        for points in self.series.values_mut() {
            while points.front().is_some_and(|p| p[0] < oldest) {
                points.pop_front();
            }
        }
        self.series.retain(|_, p| !p.is_empty());
        self.bound_pods();
        let new_step = self.step_at != Some(at);
        self.step_at = Some(at);
        new_step
    }

    /// At most [`MAX_PODS`] pod series: the ones updated least recently go.
    fn bound_pods(&mut self) {
        let mut pods: Vec<(u64, Series)> = self
            .series
            .iter()
            .filter(|(s, _)| matches!(s, Series::Pod(_)))
            .map(|(s, p)| (p.back().map_or(0, |l| l[0]), s.clone()))
            .collect();
        let excess = pods.len().saturating_sub(MAX_PODS);
        if excess == 0 {
            return;
        }
        pods.sort();
        for (_, series) in pods.into_iter().take(excess) {
            self.series.remove(&series);
        }
    }

    /// The series' points, oldest first.
    #[must_use]
    pub fn points(&self, series: &Series) -> Vec<Point> {
        self.series.get(series).map_or_else(Vec::new, |p| {
            p.iter().map(|&[t, b]| Point { t: t as f64, live_bytes: b }).collect()
        })
    }

    /// Judges every series: the findings that started or ended since the last judgement.
    /// Series that went away (a pod gone for a window) end theirs.
    pub fn judge(&mut self) -> Vec<SlowEvent> {
        let th = self.settings.thresholds();
        let mut out = Vec::new();
        for series in self.series.keys() {
            let points = self.points(series);
            let finding = classify(&points, series.reclaimable(), Reclaim::default(), &th)
                .map(|f| sustained(f, series));
            if let Some(state) = self.tracker.update(series, finding.as_ref())
                && let Some(finding) = finding
            {
                out.push(SlowEvent { series: series.clone(), state, finding });
            }
        }
        let series = &self.series;
        for (gone, finding) in self.tracker.close_gone(|s| series.contains_key(s)) {
            out.push(SlowEvent { series: gone, state: Transition::Ended, finding });
        }
        out
    }

    /// The problematic findings open now.
    pub fn open(&self) -> impl Iterator<Item = (&Series, &Finding)> {
        self.tracker.open()
    }

    /// Remembers a pod's names, for its findings.
    pub fn name_pod(&mut self, pod: PodRef) {
        if self.series.contains_key(&Series::Pod(pod.uid.clone())) {
            self.names.insert(pod.uid.clone(), pod);
        }
        let series = &self.series;
        self.names.retain(|uid, _| series.contains_key(&Series::Pod(uid.clone())));
    }

    /// What the report and the events say of `finding` of `series`.
    #[must_use]
    pub fn describe(&self, series: &Series, finding: &Finding) -> SlowFinding {
        let pod = match series {
            Series::Pod(uid) => Some(
                self.names
                    .get(uid)
                    .cloned()
                    .unwrap_or_else(|| PodRef { uid: uid.clone(), ..PodRef::default() }),
            ),
            _ => None,
        };
        SlowFinding { series: series.name().to_owned(), pod, finding: *finding }
    }
}

/// The long view does not follow reclaim over days: what the short window would call "reclaim
/// did not run" is only known to be sustained.
fn sustained(mut f: Finding, series: &Series) -> Finding {
    if f.verdict == Verdict::Problematic && series.reclaimable() {
        f.reason = Reason::Sustained;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;
    const DAY: u64 = 86_400;

    fn settings() -> Settings {
        Settings { step: 600, window: 2 * DAY, min_growth_bytes: 64 << 20 }
    }

    /// The figures' clock starts here.
    const START: u64 = 1_800_000_000;

    /// A figure a minute from `from` for `span` seconds: a floor growing by `per_day` bytes a
    /// day since [`START`], with `noise` bytes of work on top every other figure.
    fn feed(w: &mut SlowWatch, series: &Series, from: u64, span: u64, per_day: u64, noise: u64) {
        let every = 60;
        for (i, t) in (from..from + span).step_by(every).enumerate() {
            let floor = 500 * MB + (t - START) * per_day / DAY;
            let bytes = if i % 2 == 0 { floor + noise } else { floor };
            w.record(t, [(series.clone(), bytes)]);
        }
    }

    #[test]
    fn a_leak_of_200_mb_a_day_is_a_finding_within_a_day_and_work_on_top_is_not() {
        let start = START;
        let mut w = SlowWatch::new(settings());
        let pod = Series::Pod("u-1".into());
        // Work comes and goes on top (300 MB every other minute), the floor creeps up.
        feed(&mut w, &pod, start, DAY / 8, 200 * MB, 300 * MB);
        assert!(w.judge().is_empty(), "no verdict before a quarter of the window");
        feed(&mut w, &pod, start + DAY / 8, DAY - DAY / 8, 200 * MB, 300 * MB);
        let events = w.judge();
        assert_eq!(events.len(), 1, "{events:#?}");
        let e = &events[0];
        assert_eq!((e.state, e.finding.verdict), (Transition::Started, Verdict::Problematic));
        assert_eq!(e.finding.reason, Reason::Sustained);
        let per_day = e.finding.rate_mb_per_hour * 24.0;
        assert!((190.0..210.0).contains(&per_day), "{per_day} MB a day");
        // One point a step, its lowest figure: the work on top is not in the series.
        let points = w.points(&pod);
        assert_eq!(points.len(), 144, "a day of 10-minute steps");
        assert!(points.iter().all(|p| p.live_bytes < 500 * MB + 201 * MB));
        // The same work with a flat floor is no finding; nor is SUnreclaim's flat line.
        let mut flat = SlowWatch::new(settings());
        feed(&mut flat, &pod, start, DAY, 0, 300 * MB);
        feed(&mut flat, &Series::NodeUnreclaimable, start, DAY, 0, 0);
        assert!(flat.judge().is_empty());
        assert_eq!(flat.open().count(), 0);
    }

    #[test]
    fn the_history_survives_a_restart_and_a_finding_spans_it() {
        let start = START;
        let mut before = SlowWatch::new(settings());
        feed(&mut before, &Series::NodeUnreclaimable, start, DAY / 2, 400 * MB, 0);
        let text = before.to_text();
        // A new daemon: the file, then figures from after the restart.
        let mut after = SlowWatch::parse(&text, settings()).unwrap();
        assert_eq!(
            after.points(&Series::NodeUnreclaimable),
            before.points(&Series::NodeUnreclaimable)
        );
        feed(&mut after, &Series::NodeUnreclaimable, start + DAY / 2, DAY / 4, 400 * MB, 0);
        let events = after.judge();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].finding.reason, Reason::Unreclaimable);
        assert!(events[0].finding.window_seconds > (DAY / 2) as f64, "{:?}", events[0].finding);
        // Restarted again while the leak goes on: the finding is open from the start, and its
        // start is not said twice.
        let mut again = SlowWatch::parse(&after.to_text(), settings()).unwrap();
        assert_eq!(again.open().count(), 1);
        feed(&mut again, &Series::NodeUnreclaimable, start + 3 * DAY / 4, 600, 400 * MB, 0);
        assert_eq!(again.judge(), Vec::new());
        assert_eq!(again.open().count(), 1);
    }

    #[test]
    fn bad_files_are_refused_in_one_sentence_and_odd_ones_are_bounded() {
        assert!(SlowWatch::parse("", settings()).unwrap_err().starts_with("it is not a history"));
        let other = r#"{"schema":"slabtrace.history.v9\u001b","step_seconds":1,"series":{}}"#;
        let why = SlowWatch::parse(other, settings()).unwrap_err();
        assert!(why.contains("v9\\x1b") && why.contains(HISTORY_SCHEMA), "{why}");
        // Unknown keys go, points are sorted, one a step, at most the window's.
        let many: Vec<String> = (0..1000).rev().map(|i| format!("[{},{}]", i * 600, i)).collect();
        let text = format!(
            r#"{{"schema":"{HISTORY_SCHEMA}","step_seconds":600,"series":{{"pod/u":[{}],"cgroup/x":[[1,1]],"pod/":[[1,1]]}}}}"#,
            many.join(",")
        );
        let w = SlowWatch::parse(&text, settings()).unwrap();
        let points = w.points(&Series::Pod("u".into()));
        assert_eq!(points.len(), settings().capacity());
        assert!(points.windows(2).all(|p| p[0].t < p[1].t));
        assert_eq!(w.series.len(), 1);
    }

    #[test]
    fn pods_are_bounded_and_a_gone_pod_ends_its_finding() {
        let mut w = SlowWatch::new(Settings { step: 60, window: 3600, min_growth_bytes: MB });
        for i in 0..MAX_PODS + 10 {
            w.record(1000 + i as u64, [(Series::Pod(format!("u-{i}")), 1)]);
        }
        let pods = w.series.keys().filter(|s| matches!(s, Series::Pod(_))).count();
        assert_eq!(pods, MAX_PODS);
        assert!(!w.series.contains_key(&Series::Pod("u-0".into())), "the stalest went first");

        let mut w = SlowWatch::new(Settings { step: 60, window: 3600, min_growth_bytes: MB });
        let pod = Series::Pod("u-leak".into());
        for t in (0..3600).step_by(60) {
            w.record(10_000 + t, [(pod.clone(), t * MB), (Series::NodeSlab, 5)]);
        }
        assert_eq!(w.judge().len(), 1);
        // The pod's figures stop (it is gone): a window later its series and finding end.
        for t in (3600..7300).step_by(60) {
            w.record(10_000 + t, [(Series::NodeSlab, 5)]);
        }
        let events = w.judge();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!((&events[0].series, events[0].state), (&pod, Transition::Ended));
    }

    #[test]
    fn a_file_is_written_whole_and_read_back() {
        let dir = crate::testutil::TempDir::new("slow-growth");
        let path = dir.path().join("history.json");
        assert_eq!(SlowWatch::load(&path, settings()).unwrap().series.len(), 0);
        let mut w = SlowWatch::new(settings());
        w.record(1_800_000_000, [(Series::NodeSlab, 7)]);
        w.save(&path).unwrap();
        assert!(!dir.path().join("history.json.new").exists());
        let back = SlowWatch::load(&path, settings()).unwrap();
        assert_eq!(back.points(&Series::NodeSlab), w.points(&Series::NodeSlab));
    }
}
