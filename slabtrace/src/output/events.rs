//! The NDJSON event stream: one JSON object per line, for log pipelines (Vector, Fluent Bit,
//! Loki, Elasticsearch). Every object has `schema` (`slabtrace.event.v1`), `type`, `ts`
//! (RFC 3339), `node`, `seq` (the interval it belongs to), `id` (unique: the daemon's run, the
//! interval and the line's place in it, so an at-least-once shipper's duplicates can be
//! dropped) and `severity` (`info`, `warning` or `error`); the JSON Schema is
//! `schema/slabtrace.event.v1.json`, open to added fields (the tests validate with the strict
//! one it is made from, tests/schema). Fields are only ever added.
//!
//! Types, per interval: `slab.sample` (one pod or cgroup × cache that changed, the top N of
//! them, plus one with owner kind `other` summing the rest), `node.memory` (/proc/meminfo's
//! kernel lines), `oom` (an OOM kill with its victim, scope and the slab picture),
//! `slab.growth` (a problematic growth finding started or ended),
//! `pod.gone` / `cgroup.gone` (once, when an owner goes away), `self.stats` (slabtrace's
//! own cost and health; `last: true` on the final interval), and the memory controller's own
//! books, objects from before tracing included: `slab.slow_growth` (a finding of the long
//! view, judged over days, started or ended), `node.charged` (what cgroups are charged
//! against the node's Slab), `pod.charged` (the top N pods by charged slab, their containers'
//! books beside) and `node.dying_cgroups` (removed cgroups the kernel still holds, per
//! parent, with the pods that were there).
//!
//! A consumer that reads slowly or not at all never stalls tracing: lines go through a bounded
//! buffer to a writer thread, and lines that do not fit are dropped and counted
//! (`dropped_events` in the next `self.stats` that gets through, and in the metrics).

use std::{
    fmt,
    fs::OpenOptions,
    io::{self, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{debug, warn};
use serde::Serialize;

use crate::{
    cgroup::{charged::Charged, dying::DyingCgroups},
    frame::{Change, Owner, OwnerKey, Rest, top},
    node::growth::Transition,
    output::report::KernelMemory,
    pipeline::Interval,
    rollup::PodUsage,
};

/// The events' schema name; bump the version on any incompatible change.
pub const EVENT_SCHEMA: &str = "slabtrace.event.v1";

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
    /// A listening unix stream socket.
    Unix(PathBuf),
    /// Nowhere.
    Off,
}

impl FromStr for EventTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" => return Err("--events is empty: say -, a file path, unix:PATH or off".to_owned()),
            "-" | "stdout" => Self::Stdout,
            "off" | "none" => Self::Off,
            _ => match s.strip_prefix("unix:") {
                Some("") => return Err("--events unix: needs a socket path".to_owned()),
                Some(path) => Self::Unix(path.into()),
                None => Self::File(s.into()),
            },
        })
    }
}

impl fmt::Display for EventTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("standard output"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Unix(p) => write!(f, "unix socket {}", p.display()),
            Self::Off => f.write_str("nowhere"),
        }
    }
}

/// Every event type, as `type` names it.
pub const EVENT_TYPES: [&str; 11] = [
    "self.stats",
    "node.memory",
    "node.charged",
    "node.dying_cgroups",
    "oom",
    "slab.growth",
    "slab.slow_growth",
    "pod.gone",
    "cgroup.gone",
    "pod.charged",
    "slab.sample",
];

/// The event types a stream writes (`--event-types`): all, or those listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTypes(Vec<&'static str>);

impl Default for EventTypes {
    fn default() -> Self {
        Self(EVENT_TYPES.to_vec())
    }
}

impl EventTypes {
    /// Whether events of type `kind` are written.
    #[must_use]
    pub fn contains(&self, kind: &str) -> bool {
        self.0.contains(&kind)
    }
}

impl FromStr for EventTypes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Self::default());
        }
        let mut chosen = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(kind) = EVENT_TYPES.iter().find(|k| **k == name) else {
                return Err(format!(
                    "--event-types: no event type {}; the types are all, {}",
                    crate::output::printable::printable(name),
                    EVENT_TYPES.join(", ")
                ));
            };
            if !chosen.contains(kind) {
                chosen.push(*kind);
            }
        }
        if chosen.is_empty() {
            return Err("--event-types is empty: name some types, or use --events off".to_owned());
        }
        Ok(Self(chosen))
    }
}

/// What a stream writes besides the intervals: its run id, its types, its sample count.
#[derive(Clone, Debug, Default)]
pub struct LineOptions {
    /// Names this daemon's run in every event's `id`: random at start.
    pub run: u64,
    /// `slab.sample` events per interval.
    pub top: usize,
    /// The types written.
    pub types: EventTypes,
}

/// Bytes of lines queued for the consumer at most, whatever `--event-buffer` allows in lines:
/// lines differ in size (an `oom` event with its holders is many samples long), and a slow
/// consumer's queue fills with the first lines of each interval, so a bound in lines alone
/// does not bound its bytes. (It is not what made the soak's RSS grow: a run with this bound
/// grew as much.)
pub const MAX_QUEUED_BYTES: u64 = 2 << 20;

/// Events written and dropped so far, and the bytes queued; shared with the metrics.
#[derive(Debug, Default)]
pub struct EventCounters {
    written: AtomicU64,
    dropped: AtomicU64,
    queued_bytes: AtomicU64,
}

impl EventCounters {
    /// Lines handed to the consumer.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the buffer was full or the consumer was gone.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of lines queued and not yet written.
    #[must_use]
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

/// The event stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the event stream {target}: {source}; check --events")]
pub struct EventError {
    target: String,
    source: io::Error,
}

/// The open event stream: a bounded buffer and the thread that writes it out.
pub struct EventStream {
    tx: SyncSender<String>,
    counters: Arc<EventCounters>,
    writer: JoinHandle<()>,
    options: LineOptions,
}

impl EventStream {
    /// Opens `target` (None for `off`) with room for `buffer` lines, writing what `options`
    /// say.
    pub fn open(
        target: &EventTarget,
        buffer: usize,
        options: LineOptions,
    ) -> Result<Option<Self>, EventError> {
        let err = |source| EventError { target: target.to_string(), source };
        let sink: Box<dyn Sink> = match target {
            EventTarget::Off => return Ok(None),
            EventTarget::Stdout => Box::new(io::stdout()),
            EventTarget::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path).map_err(err)?)
            }
            EventTarget::Unix(path) => {
                // Fail early if nothing listens: a typo should not be a silent drop counter.
                let stream = connect_unix(path).map_err(err)?;
                Box::new(Reconnecting { path: path.clone(), stream: Some(stream), next_try: None })
            }
        };
        let (tx, rx) = sync_channel(buffer.max(1));
        let counters = Arc::new(EventCounters::default());
        let writer = {
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("events".to_owned())
                .spawn(move || write_lines(&rx, sink, &counters))
                .map_err(err)?
        };
        Ok(Some(Self { tx, counters, writer, options }))
    }

    /// The counters of written and dropped lines.
    #[must_use]
    pub fn counters(&self) -> Arc<EventCounters> {
        Arc::clone(&self.counters)
    }

    /// Queues the events of one interval; what does not fit is dropped and counted.
    pub fn publish(&self, interval: &Interval) {
        let stats =
            StreamStats { written: self.counters.written(), dropped: self.counters.dropped() };
        for line in lines(interval, &self.options, stats) {
            let len = line.len() as u64;
            if self.counters.queued_bytes() + len > MAX_QUEUED_BYTES {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
            match self.tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Closes the stream and waits until `deadline` for the writer to write what is queued.
    /// Returns whether everything was written.
    #[must_use]
    pub fn close(self, deadline: Instant) -> bool {
        drop(self.tx);
        while !self.writer.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.writer.join().is_ok()
    }
}

/// A destination for lines.
trait Sink: Send {
    /// Writes one line (with its newline) and flushes.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
}

impl Sink for io::Stdout {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut out = self.lock();
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

impl Sink for std::fs::File {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.write_all(line.as_bytes())
    }
}

/// A consumer that reads nothing for this long is taken for hung: its connection is dropped
/// and made again, lines meanwhile dropped and counted. Without it a log agent that stops
/// reading (but keeps its socket open) would hold the writer for ever.
const UNIX_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the event consumer at `path`, writes bounded by [`UNIX_WRITE_TIMEOUT`].
fn connect_unix(path: &std::path::Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(UNIX_WRITE_TIMEOUT))?;
    Ok(stream)
}

/// A unix socket whose listener may restart (a log agent being upgraded): lines written while
/// it is away are dropped and counted, and the connection is tried again every few seconds.
struct Reconnecting {
    path: PathBuf,
    stream: Option<UnixStream>,
    next_try: Option<Instant>,
}

impl Sink for Reconnecting {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        if self.stream.is_none() && self.next_try.is_none_or(|t| Instant::now() >= t) {
            match connect_unix(&self.path) {
                Ok(s) => {
                    warn!("event socket {} is back", self.path.display());
                    self.stream = Some(s);
                }
                Err(_) => self.next_try = Some(Instant::now() + Duration::from_secs(5)),
            }
        }
        let Some(stream) = &mut self.stream else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket away"));
        };
        let result = stream.write_all(line.as_bytes());
        if let Err(e) = &result {
            warn!("event socket {}: {e}; reconnecting", self.path.display());
            self.stream = None;
            self.next_try = Some(Instant::now() + Duration::from_secs(1));
        }
        result
    }
}

fn write_lines(rx: &Receiver<String>, mut sink: Box<dyn Sink>, counters: &EventCounters) {
    let mut said = false;
    for line in rx {
        counters.queued_bytes.fetch_sub(line.len() as u64, Ordering::Relaxed);
        match sink.write_line(&line) {
            Ok(()) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                // A closed pipe (`slabtrace daemon | head`) is said once, not per line.
                if said {
                    debug!("cannot write an event: {e}");
                } else {
                    warn!("cannot write events: {e}; dropping them (counted in dropped_events)");
                    said = true;
                }
            }
        }
    }
}

/// What the stream has done so far, for `self.stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Lines written.
    pub written: u64,
    /// Lines dropped.
    pub dropped: u64,
}

/// Fields every event has.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    schema: &'static str,
    #[serde(flatten)]
    head: Head<'a>,
    #[serde(flatten)]
    body: T,
}

/// How much an event matters, for log pipelines' level filters and alerting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Figures and state as usual.
    Info,
    /// Something to look at: problematic growth started, slabtrace lost data or warns.
    Warning,
    /// The kernel killed a process for memory.
    Error,
}

/// Owner of a sample: a pod, a cgroup, interrupt context, or the rolled-up rest.
#[derive(Serialize)]
#[serde(untagged)]
enum SampleOwner<'a> {
    Known(&'a Owner),
    Other(OtherOwner),
}

#[derive(Serialize)]
struct OtherOwner {
    kind: &'static str,
    rows: u64,
}

/// `slab.sample`.
#[derive(Serialize)]
struct Sample<'a> {
    owner: SampleOwner<'a>,
    /// Cache name; `null` for the rolled-up rest (many caches).
    cache: Option<&'a str>,
    object_size: Option<u64>,
    interval_seconds: f64,
    allocs: u64,
    alloc_bytes: u64,
    frees: u64,
    live_objects_delta: Option<i64>,
    live_bytes_delta: i64,
    live_objects: Option<u64>,
    live_bytes: u64,
    live_objects_error: Option<u64>,
    unaccounted_live_bytes: Option<u64>,
    estimated: bool,
}

/// `pod.gone` and `cgroup.gone`.
#[derive(Serialize)]
struct Gone<'a> {
    owner: &'a Owner,
    /// Bytes its objects still hold (they outlive it).
    live_bytes: u64,
}

/// `node.memory`.
#[derive(Serialize)]
struct NodeMemory {
    #[serde(flatten)]
    memory: KernelMemory,
}

/// `slab.slow_growth`: a finding of the long view that started or ended.
#[derive(Serialize)]
struct SlowGrowthEvent<'a> {
    state: crate::node::growth::Transition,
    #[serde(flatten)]
    finding: &'a crate::node::slow_growth::SlowFinding,
}

/// `node.charged`: the report's `charged`.
#[derive(Serialize)]
struct NodeChargedEvent<'a> {
    #[serde(flatten)]
    charged: &'a crate::cgroup::charged::NodeCharged,
}

/// `node.dying_cgroups`: the report's `dying_cgroups`.
#[derive(Serialize)]
struct NodeDying<'a> {
    #[serde(flatten)]
    dying: &'a DyingCgroups,
}

/// `pod.charged`: a pod's books beside what slabtrace traced of it.
#[derive(Serialize)]
struct PodCharged<'a> {
    owner: Owner,
    /// The pod cgroup's books (its containers included).
    charged: &'a Charged,
    /// Live bytes slabtrace traced to the pod since it started: objects from before are in
    /// `charged` only.
    traced_live_bytes: u64,
    /// Its containers' own books, where read.
    containers: Vec<ContainerCharged<'a>>,
}

/// A container's books in `pod.charged`.
#[derive(Serialize)]
struct ContainerCharged<'a> {
    container_id: &'a str,
    name: Option<&'a str>,
    charged: &'a Charged,
}

/// The `top` pods with books, most charged first.
fn most_charged(pods: &[PodUsage], top: usize) -> Vec<(&PodUsage, &Charged)> {
    let mut charged: Vec<(&PodUsage, &Charged)> =
        pods.iter().filter_map(|p| p.charged.as_ref().map(|c| (p, c))).collect();
    charged.sort_by(|a, b| {
        b.1.slab_or_kernel().cmp(&a.1.slab_or_kernel()).then(a.0.uid.cmp(&b.0.uid))
    });
    charged.truncate(top);
    charged
}

fn pod_charged<'a>(pod: &'a PodUsage, charged: &'a Charged) -> PodCharged<'a> {
    PodCharged {
        owner: Owner::Pod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            qos: pod.qos,
            deleted: pod.deleted,
        },
        charged,
        traced_live_bytes: pod.totals.live_bytes,
        containers: pod
            .containers
            .iter()
            .filter_map(|c| {
                Some(ContainerCharged {
                    container_id: c.container_id.as_deref()?,
                    name: c.name.as_deref(),
                    charged: c.charged.as_ref()?,
                })
            })
            .collect(),
    }
}

/// `oom`: the kill, with its slab picture also as `slab_picture`. `slab` is an integer in
/// `node.memory` and an object here, which stores that type a field by its name refuse; v1
/// keeps `slab` for the consumers that read it, v2 drops it.
#[derive(Serialize)]
struct OomEvent<'a> {
    #[serde(flatten)]
    kill: &'a crate::oom_report::OomReport,
    slab_picture: &'a crate::oom_report::SlabPicture,
}

/// `self.stats`.
#[derive(Serialize)]
struct SelfEvent<'a> {
    interval_seconds: f64,
    events_per_second: f64,
    alloc_events: u64,
    free_events: u64,
    lost_events: u64,
    counters_full: u64,
    counters_entries: u64,
    counters_capacity: u64,
    retired_counters: u64,
    live_entries: u64,
    live_capacity: u64,
    evictions: u64,
    map_bytes: u64,
    cpu_seconds: f64,
    rss_bytes: u64,
    events_written: u64,
    dropped_events: u64,
    sample_rate: u64,
    warnings: &'a [String],
    last: bool,
}

/// The lines of one interval, most important first, because when the buffer is full the
/// tail of an interval is what gets dropped: self stats (which say what was dropped), node
/// memory and the memory controller's node-wide books, OOM kills, growth, gone owners, the
/// pods' books, then the samples.
#[must_use]
pub fn lines(interval: &Interval, options: &LineOptions, stream: StreamStats) -> Vec<String> {
    let ts = humantime::format_rfc3339_millis(interval.ts).to_string();
    let mut out = Vec::new();
    // The line's place in the interval, counted over every type, written or not: an id stays
    // the same whatever `--event-types` leaves out.
    let mut n = 0u32;
    let mut push = |kind: &'static str, severity: Severity, body: &dyn erased::Body| {
        n += 1;
        if !options.types.contains(kind) {
            return;
        }
        let head = Head {
            kind,
            ts: ts.clone(),
            node: &interval.node,
            seq: interval.seq,
            id: format!("{:016x}-{}-{n}", options.run, interval.seq),
            severity,
        };
        match body.line(head) {
            Ok(line) => out.push(line),
            Err(e) => warn!("cannot encode a {kind} event: {e}"),
        }
    };
    let s = &interval.report.self_stats;
    let troubled = !s.warnings.is_empty() || stream.dropped > 0 || s.lost_events > 0;
    push(
        "self.stats",
        if troubled { Severity::Warning } else { Severity::Info },
        &SelfEvent {
            interval_seconds: interval.seconds,
            events_per_second: interval.events_per_second,
            alloc_events: s.alloc_events,
            free_events: s.free_events,
            lost_events: s.lost_events,
            counters_full: s.counters_full,
            counters_entries: s.counters_entries,
            counters_capacity: s.counters_capacity,
            retired_counters: s.retired_counters,
            live_entries: s.live_entries,
            live_capacity: s.live_capacity,
            evictions: s.evictions,
            map_bytes: s.map_bytes,
            cpu_seconds: interval.process.cpu_seconds,
            rss_bytes: interval.process.rss_bytes,
            events_written: stream.written,
            dropped_events: stream.dropped,
            sample_rate: s.sample_rate,
            warnings: &s.warnings,
            last: interval.last,
        },
    );
    if let Some(memory) = interval.meminfo {
        push("node.memory", Severity::Info, &NodeMemory { memory });
    }
    let report = &interval.report;
    if let Some(charged) = report.charged.as_ref().filter(|c| c.source.is_some()) {
        push("node.charged", Severity::Info, &NodeChargedEvent { charged });
    }
    if let Some(dying) = report.dying_cgroups.as_ref().filter(|d| d.source.is_some()) {
        push("node.dying_cgroups", Severity::Info, &NodeDying { dying });
    }
    for kill in &interval.oom_kills {
        push("oom", Severity::Error, &OomEvent { kill, slab_picture: &kill.slab });
    }
    for growth in &interval.growth {
        let severity = match growth.state {
            Transition::Started => Severity::Warning,
            Transition::Ended => Severity::Info,
        };
        push("slab.growth", severity, growth);
    }
    for (state, finding) in &interval.slow_growth {
        let severity = match state {
            Transition::Started => Severity::Warning,
            Transition::Ended => Severity::Info,
        };
        push("slab.slow_growth", severity, &SlowGrowthEvent { state: *state, finding });
    }
    let live_by_owner: std::collections::BTreeMap<&OwnerKey, u64> =
        interval.frame.live_bytes_by_owner().into_iter().collect();
    for owner in &interval.gone {
        let kind = match owner {
            Owner::Pod { .. } => "pod.gone",
            Owner::Cgroup { .. } => "cgroup.gone",
            Owner::Interrupt => continue,
        };
        let live_bytes = live_by_owner.get(&owner.key()).copied().unwrap_or(0);
        push(kind, Severity::Info, &Gone { owner, live_bytes });
    }
    for (pod, charged) in most_charged(&report.pods, options.top) {
        push("pod.charged", Severity::Info, &pod_charged(pod, charged));
    }
    let estimated = report.sampling.estimated;
    let (kept, rest) = top(interval.changes.clone(), options.top);
    for change in &kept {
        let Some(owner) = interval.frame.owners.get(&change.owner) else { continue };
        push("slab.sample", Severity::Info, &sample(owner, change, interval.seconds, estimated));
    }
    if let Some(rest) = rest {
        push("slab.sample", Severity::Info, &other(&rest, interval.seconds, estimated));
    }
    out
}

fn sample<'a>(owner: &'a Owner, c: &'a Change, seconds: f64, estimated: bool) -> Sample<'a> {
    Sample {
        owner: SampleOwner::Known(owner),
        cache: Some(&c.cache),
        object_size: Some(c.now.object_size),
        interval_seconds: seconds,
        allocs: c.allocs,
        alloc_bytes: c.alloc_bytes,
        frees: c.frees,
        live_objects_delta: Some(c.live_objects_delta),
        live_bytes_delta: c.live_bytes_delta,
        live_objects: Some(c.now.live_objects),
        live_bytes: c.now.live_bytes,
        live_objects_error: Some(c.now.live_objects_error),
        unaccounted_live_bytes: Some(c.now.unaccounted_live_bytes),
        estimated,
    }
}

fn other(rest: &Rest, seconds: f64, estimated: bool) -> Sample<'static> {
    Sample {
        owner: SampleOwner::Other(OtherOwner { kind: "other", rows: rest.rows }),
        cache: None,
        object_size: None,
        interval_seconds: seconds,
        allocs: rest.allocs,
        alloc_bytes: rest.alloc_bytes,
        frees: rest.frees,
        live_objects_delta: None,
        live_bytes_delta: rest.live_bytes_delta,
        live_objects: None,
        live_bytes: rest.live_bytes,
        live_objects_error: None,
        unaccounted_live_bytes: None,
        estimated,
    }
}

/// The envelope of one event but its schema and body.
#[derive(Serialize)]
struct Head<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: String,
    node: &'a str,
    seq: u64,
    id: String,
    severity: Severity,
}

/// Serialising bodies of different types through one closure.
mod erased {
    use super::{EVENT_SCHEMA, Envelope, Head};

    pub trait Body {
        fn line(&self, head: Head<'_>) -> serde_json::Result<String>;
    }

    impl<T: serde::Serialize> Body for T {
        fn line(&self, head: Head<'_>) -> serde_json::Result<String> {
            let mut line =
                serde_json::to_string(&Envelope { schema: EVENT_SCHEMA, head, body: self })?;
            line.push('\n');
            Ok(line)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::Value;

    use super::*;
    use crate::{
        cgroup::kubepods::Qos,
        frame::{OwnerRow, OwnerTable, changes},
        output::report::Report,
        pipeline::ProcessUsage,
    };

    fn row(allocs: u64, live: u64) -> OwnerRow {
        OwnerRow {
            object_size: 100,
            allocs,
            alloc_bytes: allocs * 100,
            frees: allocs - live,
            live_objects: live,
            live_bytes: live * 100,
            ..OwnerRow::default()
        }
    }

    /// An interval in which pod `web` grew, a service grew a little, and a cgroup went away.
    fn interval() -> Interval {
        let web = Owner::Pod {
            namespace: Some("shop".into()),
            name: Some("web-0".into()),
            uid: "u-1".into(),
            qos: Qos::Burstable,
            deleted: false,
        };
        let svc = Owner::Cgroup {
            cgroup_id: 7,
            cgroup: Some("/system.slice/a.service".into()),
            alive: true,
        };
        let gone =
            Owner::Cgroup { cgroup_id: 8, cgroup: Some("/user.slice/x".into()), alive: false };
        let mut frame = OwnerTable::default();
        for (owner, cache, r) in [
            (&web, "dentry", row(1000, 900)),
            (&svc, "filp", row(10, 2)),
            (&gone, "dentry", row(5, 5)),
        ] {
            frame.owners.insert(owner.key(), owner.clone());
            frame.rows.insert((owner.key(), cache.to_owned()), r);
        }
        let mut report = Report::default();
        report.self_stats.sample_rate = 1;
        Interval {
            seq: 3,
            node: "node-a".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_hours(500_000),
            seconds: 10.0,
            changes: changes(&OwnerTable::default(), &frame),
            gone: vec![gone],
            frame,
            report,
            meminfo: Some(KernelMemory { slab: 1 << 30, ..KernelMemory::default() }),
            process: ProcessUsage { cpu_seconds: 1.5, rss_bytes: 40 << 20 },
            events_per_second: 1234.5,
            ..Interval::default()
        }
    }

    #[test]
    fn an_oom_event_carries_its_slab_picture_under_a_name_no_other_event_types_differently() {
        use crate::oom_report::{OomReport, SlabPicture};
        let mut iv = interval();
        iv.oom_kills.push(OomReport {
            at: "2027-01-15T08:00:00Z".into(),
            scope: "global".into(),
            slab: SlabPicture { attributed_live_bytes: 5 << 20, ..SlabPicture::default() },
            ..OomReport::default()
        });
        let events = parse(&lines(&iv, &LineOptions::default(), StreamStats::default()));
        let memory = events.iter().find(|e| e["type"] == "node.memory").unwrap();
        let oom = events.iter().find(|e| e["type"] == "oom").unwrap();
        assert!(memory["slab"].is_u64());
        assert_eq!(oom["slab_picture"]["attributed_live_bytes"], 5u64 << 20);
        // Deprecated, kept for v1's consumers: the same object.
        assert_eq!(oom["slab"], oom["slab_picture"]);
        assert!(memory.get("slab_picture").is_none());

        // Every other top-level field has one JSON type across the event types.
        assert_one_type_per_field(&events);
    }

    /// Every top-level field has one JSON type across the event types (but oom's deprecated
    /// `slab`): stores that type a field by its name refuse the others.
    fn assert_one_type_per_field(events: &[Value]) {
        let kind = |v: &Value| match v {
            Value::Null => None,
            Value::Bool(_) => Some("bool"),
            Value::Number(_) => Some("number"),
            Value::String(_) => Some("string"),
            Value::Array(_) => Some("array"),
            Value::Object(_) => Some("object"),
        };
        let mut kinds = std::collections::BTreeMap::<&str, (&str, &str)>::new();
        for e in events {
            let ty = e["type"].as_str().unwrap();
            for (field, value) in e.as_object().unwrap() {
                let Some(k) = kind(value) else { continue };
                if (ty, field.as_str()) == ("oom", "slab") {
                    continue;
                }
                let (first_ty, first_kind) = *kinds.entry(field).or_insert((ty, k));
                assert_eq!(k, first_kind, "{field}: {k} in {ty}, {first_kind} in {first_ty}");
            }
        }
    }

    #[test]
    fn the_memory_controllers_books_come_as_node_and_pod_events() {
        use crate::cgroup::charged::{Charged, NodeCharged, Source};
        let mut iv = interval();
        iv.report.observation.charged = Some(NodeCharged {
            source: Some(Source::CgroupV2),
            node_slab_bytes: Some(5 << 30),
            cgroups: Some(Charged { slab: Some(3 << 30), ..Charged::unknown(Source::CgroupV2) }),
            uncharged_slab_bytes: Some(2 << 30),
            files_read: 12,
            skipped: 0,
        });
        iv.report.observation.dying_cgroups =
            Some(DyingCgroups { source: Some(Source::CgroupV2), ..crate::testutil::dying() });
        let mut pods: Vec<PodUsage> = [5, 900, 40].map(crate::testutil::charged_pod).into();
        pods[1].totals.live_bytes = 4096;
        pods[1].containers.push(crate::rollup::ContainerUsage {
            container_id: Some("c0ffee".into()),
            name: Some("app".into()),
            runtime: None,
            sandbox: false,
            cgroup_ids: vec![9],
            totals: crate::attribution::Totals::default(),
            caches: Vec::new(),
            charged: Some(Charged { slab: Some(800), ..Charged::unknown(Source::CgroupV2) }),
        });
        // A pod whose books were not read is no pod.charged event.
        pods.push(PodUsage { charged: None, ..crate::testutil::charged_pod(10_000) });
        iv.report.pods = pods;
        let options = LineOptions { top: 2, ..LineOptions::default() };
        let events = parse(&lines(&iv, &options, StreamStats::default()));
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            &types[..4],
            ["self.stats", "node.memory", "node.charged", "node.dying_cgroups"],
            "{types:?}"
        );
        let node = &events[2];
        assert_eq!(node["source"], "cgroup_v2");
        assert_eq!(node["uncharged_slab_bytes"], 2u64 << 30);
        assert_eq!(node["cgroups"]["slab"], 3u64 << 30);
        assert_eq!(events[3]["memcg_nr_dying"], 1200);
        assert_eq!(events[3]["parents"][0]["parent"], "/kubepods/burstable");
        // The top two by charged slab, most first, with the traced figure beside.
        let pods: Vec<&Value> = events.iter().filter(|e| e["type"] == "pod.charged").collect();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0]["owner"]["name"], "p-900");
        assert_eq!(pods[0]["owner"]["kind"], "pod");
        assert_eq!(pods[0]["charged"]["slab"], 901);
        assert_eq!(pods[0]["traced_live_bytes"], 4096);
        assert_eq!(pods[0]["containers"][0]["container_id"], "c0ffee");
        assert_eq!(pods[0]["containers"][0]["charged"]["slab"], 800);
        assert_eq!(pods[1]["owner"]["name"], "p-40");
        assert!(pods.iter().all(|p| p["severity"] == "info"));
        assert_one_type_per_field(&events);

        // No memory controller: nothing to say, no event.
        iv.report.observation.charged = Some(NodeCharged::default());
        iv.report.observation.dying_cgroups = Some(DyingCgroups::default());
        iv.report.pods.clear();
        let events = parse(&lines(&iv, &options, StreamStats::default()));
        assert!(
            events.iter().all(|e| !e["type"].as_str().unwrap().contains("charged")
                && e["type"] != "node.dying_cgroups"),
            "{events:?}"
        );
    }

    fn parse(lines: &[String]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| {
                assert!(l.ends_with('\n') && !l[..l.len() - 1].contains('\n'), "not one line: {l}");
                serde_json::from_str(l).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_event_has_the_envelope_and_comes_in_order_of_importance() {
        let options = LineOptions { run: 0xab, top: 10, ..LineOptions::default() };
        let events = parse(&lines(&interval(), &options, StreamStats { written: 40, dropped: 2 }));
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "self.stats",
                "node.memory",
                "cgroup.gone",
                "slab.sample",
                "slab.sample",
                "slab.sample"
            ]
        );
        for e in &events {
            assert_eq!(e["schema"], EVENT_SCHEMA);
            assert_eq!(e["node"], "node-a");
            assert_eq!(e["seq"], 3);
            assert_eq!(e["ts"], "2027-01-15T08:00:00.000Z");
        }
        let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids[0], "00000000000000ab-3-1");
        assert!(ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id)), "{ids:?}");
        // Two lines were dropped: the self stats say so at warning level.
        assert_eq!(events[0]["severity"], "warning");
        assert!(events[1..].iter().all(|e| e["severity"] == "info"));
        assert_eq!(events[0]["dropped_events"], 2);
        assert_eq!(events[0]["events_written"], 40);
        assert_eq!(events[1]["slab"], 1u64 << 30);
        assert_eq!(events[2]["owner"]["cgroup"], "/user.slice/x");
        assert_eq!(events[2]["live_bytes"], 500);
        // The largest change first: the pod's 900 live dentries.
        let web = &events[3];
        assert_eq!(web["owner"]["kind"], "pod");
        assert_eq!(web["owner"]["name"], "web-0");
        assert_eq!(web["owner"]["qos"], "burstable");
        assert_eq!(
            (web["allocs"].as_u64(), web["live_bytes"].as_u64()),
            (Some(1000), Some(90_000))
        );
        assert_eq!(web["live_bytes_delta"], 90_000);
    }

    #[test]
    fn samples_beyond_the_top_are_rolled_up() {
        let options = LineOptions { top: 1, ..LineOptions::default() };
        let events = parse(&lines(&interval(), &options, StreamStats::default()));
        let samples: Vec<&Value> = events.iter().filter(|e| e["type"] == "slab.sample").collect();
        assert_eq!(samples.len(), 2);
        let other = samples[1];
        assert_eq!(other["owner"], serde_json::json!({"kind": "other", "rows": 2}));
        assert_eq!(other["cache"], Value::Null);
        assert_eq!(other["allocs"], 15);
        assert_eq!(other["live_bytes"], 700);
    }

    #[test]
    fn only_the_chosen_types_are_written_and_ids_do_not_depend_on_the_choice() {
        let options = LineOptions { top: 10, ..LineOptions::default() };
        let all = parse(&lines(&interval(), &options, StreamStats::default()));
        let types: EventTypes = "slab.sample, cgroup.gone".parse().unwrap();
        let some = parse(&lines(
            &interval(),
            &LineOptions { types, ..options.clone() },
            StreamStats::default(),
        ));
        assert_eq!(some.len(), 4);
        for e in &some {
            assert!(e["type"] == "slab.sample" || e["type"] == "cgroup.gone", "{e}");
            assert!(all.iter().any(|a| a == e), "{e} differs from the unfiltered stream");
        }
        assert_eq!("all".parse::<EventTypes>(), Ok(EventTypes::default()));
        let wrong = "slab.sample,oops\x1b".parse::<EventTypes>().unwrap_err();
        assert!(
            wrong.contains("no event type oops\\x1b") && wrong.contains("slab.growth"),
            "{wrong}"
        );
        assert!(",".parse::<EventTypes>().is_err());
    }

    /// The published schema is open (consumers that validate with it must not break on an
    /// added field); the tests validate with the strict one it is made from, which refuses any
    /// field it does not list. `SLABTRACE_WRITE_SCHEMA=1 cargo test -p slabtrace --lib
    /// published_schema` writes the published one anew from it.
    #[test]
    fn the_published_schema_of_events_is_the_strict_one_opened() {
        fn opened(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .filter(|(k, w)| {
                            !(matches!(
                                k.as_str(),
                                "additionalProperties" | "unevaluatedProperties"
                            ) && **w == Value::Bool(false))
                        })
                        .map(|(k, w)| (k.clone(), opened(w)))
                        .collect(),
                ),
                Value::Array(a) => Value::Array(a.iter().map(opened).collect()),
                _ => v.clone(),
            }
        }
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let strict = format!("{root}/tests/schema/slabtrace.event.v1.strict.json");
        let published = format!("{root}/schema/slabtrace.event.v1.json");
        let strict: Value =
            serde_json::from_str(&std::fs::read_to_string(strict).unwrap()).unwrap();
        let open = opened(&strict);
        assert_ne!(open, strict, "the strict schema refuses nothing");
        if std::env::var_os("SLABTRACE_WRITE_SCHEMA").is_some() {
            let text = serde_json::to_string_pretty(&open).unwrap() + "\n";
            std::fs::write(&published, text).expect("write the schema");
        }
        let text = std::fs::read_to_string(&published).unwrap_or_default();
        let on_disk: Value = serde_json::from_str(&text).unwrap_or_default();
        assert!(
            on_disk == open,
            "{published} is not tests/schema's strict schema opened: run SLABTRACE_WRITE_SCHEMA=1 cargo test -p slabtrace --lib published_schema"
        );
    }

    #[test]
    fn targets_parse_from_the_flag() {
        assert_eq!("-".parse(), Ok(EventTarget::Stdout));
        assert_eq!("off".parse(), Ok(EventTarget::Off));
        assert_eq!(
            "unix:/run/vector.sock".parse(),
            Ok(EventTarget::Unix("/run/vector.sock".into()))
        );
        assert_eq!(
            "/var/log/slab.ndjson".parse(),
            Ok(EventTarget::File("/var/log/slab.ndjson".into()))
        );
        assert!("unix:".parse::<EventTarget>().is_err());
        assert!("".parse::<EventTarget>().is_err());
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let dir =
            std::env::temp_dir().join(format!("slabtrace-events-unit-{}", std::process::id()));
        // A file target that always succeeds, and a buffer of 1: a burst of 6 lines cannot
        // all fit, yet publish returns at once.
        let options = LineOptions { top: 10, ..LineOptions::default() };
        let stream =
            EventStream::open(&EventTarget::File(dir.clone()), 1, options).unwrap().unwrap();
        stream.publish(&interval());
        let counters = stream.counters();
        assert!(stream.close(std::time::Instant::now() + Duration::from_secs(5)));
        assert_eq!(counters.written() + counters.dropped(), 6);
        let written = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(written.lines().count() as u64, counters.written());
        let _ = std::fs::remove_file(&dir);
    }

    /// A listening unix socket and a stream with room for `buffer` lines connected to it.
    fn unix_consumer(
        tag: &str,
        buffer: usize,
    ) -> (std::path::PathBuf, std::os::unix::net::UnixListener, EventStream) {
        let path = std::env::temp_dir()
            .join(format!("slabtrace-events-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let options = LineOptions { top: 10, ..LineOptions::default() };
        let stream =
            EventStream::open(&EventTarget::Unix(path.clone()), buffer, options).unwrap().unwrap();
        (path, listener, stream)
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        // Room for a million lines, a consumer that never reads: only the byte bound holds.
        let (path, listener, stream) = unix_consumer("bytes", 1 << 20);
        let (stalled, _) = listener.accept().unwrap();
        let counters = stream.counters();
        for _ in 0..20_000 {
            stream.publish(&interval());
        }
        assert!(counters.queued_bytes() <= MAX_QUEUED_BYTES, "{}", counters.queued_bytes());
        assert!(counters.dropped() > 0, "nothing was dropped");
        drop(stalled);
        let _ = stream.close(std::time::Instant::now() + Duration::from_secs(10));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_consumer_that_stops_reading_is_left_and_reconnected() {
        let (path, listener, stream) = unix_consumer("stall", 64);
        // The consumer accepts and never reads.
        let (_stalled, _) = listener.accept().unwrap();
        listener.set_nonblocking(true).unwrap();
        let counters = stream.counters();
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        let again = loop {
            stream.publish(&interval());
            if let Ok((s, _)) = listener.accept() {
                break Some(s);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(again.is_some(), "the writer stayed on the consumer that stopped reading");
        assert!(counters.dropped() > 0, "lines were lost without being counted");
        drop(again);
        let _ = stream.close(std::time::Instant::now() + Duration::from_secs(10));
        let _ = std::fs::remove_file(&path);
    }
}
