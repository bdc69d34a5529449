//! The daemon's Prometheus metrics: a prometheus-client [`Registry`] with one [`Collector`]
//! that encodes the latest [`Interval`] at scrape time. Series are not kept in the registry,
//! so an owner that stops being exported simply stops appearing; nothing has to be removed.
//!
//! Families (every name has the `slabtrace_` prefix but the standard `process_cpu_seconds` and
//! `process_resident_memory_bytes`; counters get `_total` from the encoder):
//! - node: /proc/meminfo's kernel lines (`slabtrace_node_*_bytes`);
//! - per cache, node-wide: /proc/slabinfo's count (`slabtrace_slabinfo_*`) and what tracing saw
//!   (`slabtrace_cache_*`), at most [`MAX_CACHES`] caches by name and the rest under
//!   `cache="other"`;
//! - per pod × cache (`slabtrace_pod_*{namespace,pod,cache}`, with `slabtrace_pod_info` and
//!   `slabtrace_pod_deleted` for the pods shown) and per other cgroup × cache
//!   (`slabtrace_cgroup_*{cgroup,cache}`: systemd services, sessions, the root, interrupt
//!   context), each the top `--metrics-top` rows and the rest summed under `"other"`;
//! - slabtrace itself (`slabtrace_events_total`, map fullness, its CPU and memory, ...).
//!
//! Cardinality is bounded by the top-N. The selection is sticky: a row keeps its series while
//! it exists, and a row outside takes the place of the smallest one shown only when it holds
//! more than [`DISPLACE_FACTOR`] times its live bytes plus [`DISPLACE_MARGIN`]. So a new leak
//! shows by name within an interval, while rows of similar size do not trade places every
//! interval (the cost: the top-N shown is not always exactly the N largest rows now).
//! The counters of `"other"` are the growth of each row's counters while it was outside the
//! top-N, so they never go down when rows move in or out of the top or expire.
//!
//! Expiry: an owner that is gone (a deleted pod, a removed cgroup) and holds no live bytes
//! stops being exported. A gone owner still holding live bytes stays: that memory is still
//! there, and "deleted pods still pinning slab" is what the metrics are for.
//!
//! Series are keyed by what people read: two pods with the same namespace and name (a
//! `StatefulSet` pod deleted while its objects live on, and its successor) or two cgroups with
//! the same path (a restarted service) are summed into one series.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Instant, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue,
        EncodeMetric, LabelValueEncoder, text,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    attribution::CacheTotals,
    cgroup::charged::Charged,
    cgroup::kubepods::{Identity, Qos, identify},
    frame::{Owner, OwnerKey, OwnerRow, OwnerTable},
    output::events::EventCounters,
    pipeline::Interval,
};

/// Every metric family slabtrace exports, by its name in the `OpenMetrics` text (a counter's
/// samples add `_total`). Dashboards and alerts are checked against this list
/// (deploy/grafana); a unit test keeps it equal to what the exporter writes. Some appear only
/// when there is something to say: the stream families with an event stream, growth findings
/// when there are some.
pub const FAMILIES: &[&str] = &[
    "slabtrace_node_slab_bytes",
    "slabtrace_node_slab_reclaimable_bytes",
    "slabtrace_node_slab_unreclaimable_bytes",
    "slabtrace_node_kernel_stack_bytes",
    "slabtrace_node_page_tables_bytes",
    "slabtrace_node_memory_available_bytes",
    "slabtrace_slabinfo_active_objects",
    "slabtrace_slabinfo_bytes",
    "slabtrace_cache_live_bytes",
    "slabtrace_cache_allocations",
    "slabtrace_cache_allocated_bytes",
    "slabtrace_cache_frees",
    "slabtrace_pod_live_bytes",
    "slabtrace_pod_unaccounted_live_bytes",
    "slabtrace_pod_allocations",
    "slabtrace_pod_allocated_bytes",
    "slabtrace_pod_frees",
    "slabtrace_pod_info",
    "slabtrace_pod_deleted",
    "slabtrace_pod_charged_bytes",
    "slabtrace_node_charged_bytes",
    "slabtrace_node_uncharged_slab_bytes",
    "slabtrace_dying_cgroups",
    "slabtrace_node_dying_memcgs",
    "slabtrace_cgroup_live_bytes",
    "slabtrace_cgroup_unaccounted_live_bytes",
    "slabtrace_cgroup_allocations",
    "slabtrace_cgroup_allocated_bytes",
    "slabtrace_cgroup_frees",
    "slabtrace_oom_kills",
    "slabtrace_problematic_growth_bytes_per_second",
    "slabtrace_slow_growth_bytes_per_second",
    "slabtrace_build_info",
    "slabtrace_probes_attached",
    "slabtrace_intervals",
    "slabtrace_stream_events_written",
    "slabtrace_stream_events_dropped",
    "slabtrace_http_connections_evicted",
    "slabtrace_http_connections_timed_out",
    "slabtrace_events",
    "slabtrace_lost_events",
    "slabtrace_counters_full",
    "slabtrace_dropped",
    "slabtrace_counters_keys",
    "slabtrace_counters_capacity",
    "slabtrace_counters_retired",
    "slabtrace_live_objects_tracked",
    "slabtrace_live_objects_capacity",
    "slabtrace_live_evictions",
    "slabtrace_bpf_map_bytes",
    "slabtrace_bpf_program_bytes",
    "slabtrace_process_cpu_seconds",
    "slabtrace_process_resident_memory_bytes",
    "slabtrace_runtime_connected",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "slabtrace_sample_rate",
    "slabtrace_warnings",
    "slabtrace_last_interval_timestamp_seconds",
];

/// The `namespace` of a pod the runtime has not named. Never empty: Prometheus drops empty
/// labels, and with `honorLabels` the target's own `namespace` (slabtrace's) would then take
/// its place. Kubernetes names cannot hold `_`, so no real namespace is called this.
pub const UNKNOWN_NAMESPACE: &str = "_unknown";

/// The `namespace` of the series that sums the pods beyond the top-N (`pod="other"`).
pub const OTHER_NAMESPACE: &str = "_other";

/// Caches exported by name, node-wide (a node has a few hundred); the rest are summed under
/// `cache="other"`.
pub const MAX_CACHES: usize = 512;

/// The label value of a rolled-up series (`pod`, `cgroup` and `cache`).
pub const OTHER: &str = "other";

/// A row outside the top-N takes the place of the smallest row shown when it holds more than
/// this many times as many live bytes ...
pub const DISPLACE_FACTOR: u64 = 2;

/// ... plus this many, so that rows of a few kilobytes do not trade places all the time.
pub const DISPLACE_MARGIN: u64 = 1 << 20;

/// The latest interval as the tracing loop hands it over, and whether the probes are attached.
/// Publishing is a swap of an `Arc` under a mutex held for nothing else, so a scrape never
/// holds up tracing.
#[derive(Debug)]
pub struct Latest {
    slot: Mutex<Option<Published>>,
    attached: AtomicBool,
    started: Instant,
}

/// An interval and when it was handed over.
#[derive(Clone, Debug)]
pub struct Published {
    /// The interval.
    pub interval: Arc<Interval>,
    /// When it was published.
    pub at: Instant,
}

impl Default for Latest {
    fn default() -> Self {
        Self::new()
    }
}

impl Latest {
    /// Nothing published yet; the probes are attached (the endpoints start after they are).
    #[must_use]
    pub fn new() -> Self {
        Self { slot: Mutex::new(None), attached: AtomicBool::new(true), started: Instant::now() }
    }

    /// Hands over a new interval.
    pub fn publish(&self, interval: Arc<Interval>) {
        *lock(&self.slot) = Some(Published { interval, at: Instant::now() });
    }

    /// The latest interval, if any.
    #[must_use]
    pub fn get(&self) -> Option<Published> {
        lock(&self.slot).clone()
    }

    /// Says the probes are detached.
    pub fn detach(&self) {
        self.attached.store(false, Ordering::Relaxed);
    }

    /// Whether the probes are attached.
    #[must_use]
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    /// When this was created (the endpoints' start).
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// A poisoned lock only means a scrape panicked; the data under it is whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the HTTP server (`output::http`) turned away, exported as metrics. Here rather than
/// there: the server serves the exporter, so the exporter must not depend on the server.
#[derive(Debug, Default)]
pub struct HttpCounters {
    evicted: AtomicU64,
    timed_out: AtomicU64,
}

impl HttpCounters {
    /// Connections closed before they finished, the oldest open, because a new one came while
    /// the most the server serves at once were open.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections closed at their deadline.
    #[must_use]
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

impl HttpCounters {
    /// Counts an eviction; the count before it.
    pub fn evicted_one(&self) -> u64 {
        self.evicted.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection closed at its deadline.
    pub fn timed_out_one(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which caches are exported by name (`--metrics-cache-include`, `--metrics-cache-exclude`,
/// anchored regular expressions, as `node_exporter`'s slabinfo collector has them); the rest are
/// summed under `cache="other"`, so totals stay whole while the series are fewer.
#[derive(Clone, Debug, Default)]
pub struct CacheFilter {
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

impl CacheFilter {
    /// From the flags' patterns; an error names the bad one.
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Self, String> {
        let compile = |flag: &str, pattern: Option<&str>| {
            pattern
                .map(|p| {
                    regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                        format!(
                            "{flag}: not a regular expression ({})",
                            e.to_string().replace('\n', " ")
                        )
                    })
                })
                .transpose()
        };
        Ok(Self {
            include: compile("--metrics-cache-include", include)?,
            exclude: compile("--metrics-cache-exclude", exclude)?,
        })
    }

    /// Whether `cache` is exported by name.
    fn keeps(&self, cache: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(cache))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(cache))
    }

    /// The label `cache` is exported under: itself, or `other`.
    fn label<'a>(&self, cache: &'a str) -> &'a str {
        if self.keeps(cache) { cache } else { OTHER }
    }
}

/// What the exporter needs besides the latest interval.
#[derive(Debug)]
pub struct ExporterOptions {
    /// Pod × cache (and cgroup × cache) rows exported by name (`--metrics-top`).
    pub top: usize,
    /// Caches exported by name.
    pub caches: CacheFilter,
    /// The per-row counter families (`*_allocations_total`, `*_allocated_bytes_total`,
    /// `*_frees_total`), three series more per pod, cgroup and cache row: `--metrics-counters`.
    pub counters: bool,
    /// The event stream's counters, when there is a stream.
    pub stream: Option<Arc<EventCounters>>,
    /// The HTTP server's refusals, when there is a server.
    pub http: Option<Arc<HttpCounters>>,
    /// The page size, for /proc/slabinfo's slab counts.
    pub page_size: u64,
}

#[cfg(test)]
impl ExporterOptions {
    /// For tests: `top` rows, every cache, the counters, no stream or server.
    pub(crate) fn plain(top: usize) -> Self {
        Self {
            top,
            caches: CacheFilter::default(),
            counters: true,
            stream: None,
            http: None,
            page_size: 4096,
        }
    }
}

/// The registry `/metrics` encodes.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    /// A registry over `latest`.
    #[must_use]
    pub fn new(latest: Arc<Latest>, options: ExporterOptions) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SlabCollector {
            latest,
            options,
            view: Mutex::new(View::default()),
        }));
        Self { registry }
    }

    /// The `OpenMetrics` text exposition (what Prometheus asks for).
    pub fn openmetrics(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The same exposition in Prometheus' text format 0.0.4, for clients that do not ask for
/// `OpenMetrics` (curl, `promtool check metrics`, older scrapers). For the types used here
/// (gauges and counters, no exemplars, no units) the two differ only in that a counter
/// family's `# HELP` and `# TYPE` name carries the `_total` suffix in 0.0.4, and in the
/// `# EOF` line; the samples are the same.
#[must_use]
pub fn text_format(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, tail) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Whether an owner's series stop: it is gone and holds nothing live.
#[must_use]
pub fn expired(owner: &Owner, live_bytes: u64) -> bool {
    owner.gone() && live_bytes == 0
}

/// The figures of one series: a row of the frame, a cache's totals, or a sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Figures {
    allocs: u64,
    alloc_bytes: u64,
    frees: u64,
    live_bytes: u64,
    unaccounted_live_bytes: u64,
}

impl Figures {
    fn of_row(r: &OwnerRow) -> Self {
        Self {
            allocs: r.allocs,
            alloc_bytes: r.alloc_bytes,
            frees: r.frees,
            live_bytes: r.live_bytes,
            unaccounted_live_bytes: r.unaccounted_live_bytes,
        }
    }

    fn of_cache(c: &CacheTotals) -> Self {
        Self {
            allocs: c.allocs,
            alloc_bytes: c.alloc_bytes,
            frees: c.frees,
            live_bytes: c.live_bytes,
            unaccounted_live_bytes: 0,
        }
    }

    fn add(&mut self, o: &Self) {
        self.allocs = self.allocs.saturating_add(o.allocs);
        self.alloc_bytes = self.alloc_bytes.saturating_add(o.alloc_bytes);
        self.frees = self.frees.saturating_add(o.frees);
        self.live_bytes = self.live_bytes.saturating_add(o.live_bytes);
        self.unaccounted_live_bytes =
            self.unaccounted_live_bytes.saturating_add(o.unaccounted_live_bytes);
    }

    /// How much the counters grew since `then`; a counter that went down (its row was
    /// forgotten and came back) counts from zero, never negative.
    fn growth(&self, then: &Self) -> Self {
        let g = |now: u64, before: u64| if now >= before { now - before } else { now };
        Self {
            allocs: g(self.allocs, then.allocs),
            alloc_bytes: g(self.alloc_bytes, then.alloc_bytes),
            frees: g(self.frees, then.frees),
            live_bytes: 0,
            unaccounted_live_bytes: 0,
        }
    }
}

/// The sticky top-`n` of `rows` by weight (live bytes, then a tie-breaker): the rows of
/// `previous` that still exist keep their place; free places go to the heaviest others; then
/// an outsider takes the place of the lightest row kept while it [`displaces`] it.
fn select<'a, K: Ord + Clone + 'a>(
    previous: &BTreeSet<K>,
    rows: impl IntoIterator<Item = (&'a K, (u64, u64))>,
    n: usize,
) -> BTreeSet<K> {
    let heaviest_first =
        |a: &(&K, (u64, u64)), b: &(&K, (u64, u64))| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    let (mut kept, mut outside): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|(k, _)| previous.contains(*k));
    kept.sort_by(heaviest_first);
    kept.truncate(n);
    outside.sort_by(heaviest_first);
    let mut outside = outside.into_iter();
    while kept.len() < n {
        let Some(row) = outside.next() else { break };
        kept.push(row);
    }
    kept.sort_by(heaviest_first);
    for candidate in outside {
        // Outsiders come heaviest first: once one does not displace, none after it does.
        if !kept.last().is_some_and(|lightest| displaces(candidate.1.0, lightest.1.0)) {
            break;
        }
        kept.pop();
        let at =
            kept.partition_point(|r| heaviest_first(r, &candidate) == std::cmp::Ordering::Less);
        kept.insert(at, candidate);
    }
    kept.into_iter().map(|(k, _)| k.clone()).collect()
}

/// Whether a row outside the top with `outsider` live bytes takes the place of one inside
/// with `insider`.
fn displaces(outsider: u64, insider: u64) -> bool {
    outsider > insider.saturating_mul(DISPLACE_FACTOR).saturating_add(DISPLACE_MARGIN)
}

/// Rows of one family across intervals: which are shown by name, and the rest's counters.
#[derive(Debug)]
struct Rollup<K> {
    selected: BTreeSet<K>,
    /// Every row's figures as of the last update.
    rows: BTreeMap<K, Figures>,
    /// The growth of each row's counters while it was outside the top, summed.
    rest: Figures,
    /// Whether a row was ever outside the top: from then on the rest is exported, so its
    /// counters never vanish.
    has_rest: bool,
}

impl<K> Default for Rollup<K> {
    fn default() -> Self {
        Self {
            selected: BTreeSet::new(),
            rows: BTreeMap::new(),
            rest: Figures::default(),
            has_rest: false,
        }
    }
}

impl<K: Ord + Clone> Rollup<K> {
    /// Takes the rows of a new interval (those still exported) and keeps the top `n`.
    fn update(&mut self, rows: BTreeMap<K, Figures>, n: usize) {
        self.selected =
            select(&self.selected, rows.iter().map(|(k, f)| (k, (f.live_bytes, f.alloc_bytes))), n);
        for (key, now) in &rows {
            if self.selected.contains(key) {
                continue;
            }
            self.has_rest = true;
            let then = self.rows.get(key).copied().unwrap_or_default();
            self.rest.add(&now.growth(&then));
        }
        self.rows = rows;
    }

    /// The rows shown by name, and the rest (gauges as of now, counters accumulated).
    fn split(&self) -> (Vec<(&K, &Figures)>, Option<Figures>) {
        let mut rest = Figures { live_bytes: 0, unaccounted_live_bytes: 0, ..self.rest };
        let mut named = Vec::new();
        for (key, f) in &self.rows {
            if self.selected.contains(key) {
                named.push((key, f));
            } else {
                rest.live_bytes = rest.live_bytes.saturating_add(f.live_bytes);
                rest.unaccounted_live_bytes =
                    rest.unaccounted_live_bytes.saturating_add(f.unaccounted_live_bytes);
            }
        }
        (named, self.has_rest.then_some(rest))
    }
}

/// A row of the frame: owner and cache.
type RowKey = (OwnerKey, String);

/// What is exported, as of the last interval a scrape saw.
#[derive(Debug, Default)]
struct View {
    /// The interval this is of (0: none yet).
    seq: u64,
    pods: Rollup<RowKey>,
    cgroups: Rollup<RowKey>,
    caches: Rollup<String>,
    slabinfo: BTreeSet<String>,
}

impl View {
    /// Moves to `interval` unless it is the one already seen; the selection moves once per
    /// interval, whatever the scrape rate.
    fn update(&mut self, interval: &Interval, options: &ExporterOptions) {
        if interval.seq == self.seq {
            return;
        }
        self.seq = interval.seq;
        let (pods, cgroups) = owner_rows(&interval.frame, &options.caches);
        self.pods.update(pods, options.top);
        self.cgroups.update(cgroups, options.top);
        let mut caches: BTreeMap<String, Figures> = BTreeMap::new();
        for c in &interval.report.caches {
            let cache = options.caches.label(&c.totals.cache).to_owned();
            caches.entry(cache).or_default().add(&Figures::of_cache(&c.totals));
        }
        self.caches.update(caches, MAX_CACHES);
        let page_size = options.page_size;
        self.slabinfo = select(
            &self.slabinfo,
            interval
                .slabinfo
                .iter()
                .filter(|s| options.caches.keeps(&s.name))
                .map(|s| (&s.name, (s.total_bytes(page_size), s.active_objs))),
            MAX_CACHES,
        );
    }
}

/// The exported rows of a frame, pods apart from the rest; expired owners are left out.
fn owner_rows(
    frame: &OwnerTable,
    filter: &CacheFilter,
) -> (BTreeMap<RowKey, Figures>, BTreeMap<RowKey, Figures>) {
    let live: BTreeMap<&OwnerKey, u64> = frame.live_bytes_by_owner().into_iter().collect();
    let (mut pods, mut cgroups): (BTreeMap<RowKey, Figures>, BTreeMap<RowKey, Figures>) =
        (BTreeMap::new(), BTreeMap::new());
    for ((key, cache), row) in &frame.rows {
        let Some(owner) = frame.owners.get(key) else { continue };
        if expired(owner, live.get(key).copied().unwrap_or(0)) {
            continue;
        }
        let family = if matches!(owner, Owner::Pod { .. }) { &mut pods } else { &mut cgroups };
        let cache = filter.label(cache).to_owned();
        family.entry((key.clone(), cache)).or_default().add(&Figures::of_row(row));
    }
    (pods, cgroups)
}

/// A label value that came from outside (cgroup paths, pod and namespace names, cache names,
/// OOM scopes: tenants choose most of them), escaped as the text formats require: `\\`,
/// `\"` and `\n`. prometheus-client 0.24 writes label values as they are, so a cgroup named
/// with a quote and a newline would forge a series, and a trailing backslash break the scrape.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Label(String);

impl From<String> for Label {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, enc: &mut LabelValueEncoder<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => enc.write_str("\\\\")?,
                '"' => enc.write_str("\\\"")?,
                '\n' => enc.write_str("\\n")?,
                c => enc.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PodCacheLabels {
    namespace: Label,
    pod: Label,
    cache: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PodKindLabels {
    namespace: Label,
    pod: Label,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PodLabels {
    namespace: Label,
    pod: Label,
    uid: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PodInfoLabels {
    namespace: Label,
    pod: Label,
    uid: Label,
    qos: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CgroupCacheLabels {
    cgroup: Label,
    cache: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CacheLabels {
    cache: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ParentLabels {
    parent: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct WhatLabels {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The `qos` label: the report's spelling.
fn qos_label(q: Qos) -> &'static str {
    match q {
        Qos::Guaranteed => "guaranteed",
        Qos::Burstable => "burstable",
        Qos::BestEffort => "best_effort",
    }
}

/// Gauges are signed in prometheus-client; no byte count here comes near 2^63.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One family of gauges, written only if it has series.
fn gauges<S: EncodeLabelSet, V: EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&S, V)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(family.encode_family(*labels)?)?;
    }
    Ok(())
}

/// One family of counters (the encoder adds `_total` to `name`), written only if it has
/// series.
fn counters<S: EncodeLabelSet, V: EncodeCounterValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&S, V)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(family.encode_family(*labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter without labels (the encoder adds `_total`).
fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeCounterValue,
) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// The five families of a set of rows: `<prefix>_live_bytes`,
/// `<prefix>_unaccounted_live_bytes` (unless `unaccounted` is false),
/// `<prefix>_allocations_total`, `<prefix>_allocated_bytes_total`, `<prefix>_frees_total`.
fn figure_families<S: EncodeLabelSet + Ord>(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    whose: &str,
    series: &BTreeMap<S, Figures>,
    unaccounted: bool,
    with_counters: bool,
) -> fmt::Result {
    let of = |f: fn(&Figures) -> u64| series.iter().map(|(s, v)| (s, f(v))).collect::<Vec<_>>();
    let live: Vec<_> = series.iter().map(|(s, v)| (s, int(v.live_bytes))).collect();
    gauges(
        enc,
        &format!("{prefix}_live_bytes"),
        &format!(
            "Bytes of slab objects allocated {whose} since slabtrace started and still live \
             (an estimate when sampling)."
        ),
        &live,
    )?;
    if unaccounted {
        let unaccounted: Vec<_> =
            series.iter().map(|(s, v)| (s, int(v.unaccounted_live_bytes))).collect();
        gauges(
            enc,
            &format!("{prefix}_unaccounted_live_bytes"),
            &format!(
                "Of the live bytes allocated {whose}, those charged to no memory cgroup: \
                 invisible to container memory limits and metrics."
            ),
            &unaccounted,
        )?;
    }
    // Three series more per row: opt-in (`--metrics-counters`), for `rate()` of churn.
    if !with_counters {
        return Ok(());
    }
    counters(
        enc,
        &format!("{prefix}_allocations"),
        &format!("Slab objects allocated {whose} since slabtrace started."),
        &of(|f| f.allocs),
    )?;
    counters(
        enc,
        &format!("{prefix}_allocated_bytes"),
        &format!("Bytes of slab objects allocated {whose} since slabtrace started."),
        &of(|f| f.alloc_bytes),
    )?;
    counters(
        enc,
        &format!("{prefix}_frees"),
        &format!(
            "Slab objects allocated {whose} since slabtrace started that were freed since \
             (by anyone; an estimate when sampling)."
        ),
        &of(|f| f.frees),
    )
}

/// The collector: the latest interval, encoded at each scrape.
#[derive(Debug)]
struct SlabCollector {
    latest: Arc<Latest>,
    options: ExporterOptions,
    view: Mutex<View>,
}

impl Collector for SlabCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let published = self.latest.get();
        let interval = published.as_ref().map(|p| &*p.interval);
        let mut view = lock(&self.view);
        if let Some(interval) = interval {
            view.update(interval, &self.options);
            encode_node(&mut enc, interval)?;
            encode_slabinfo(&mut enc, interval, &view.slabinfo, self.options.page_size)?;
            let with_counters = self.options.counters;
            encode_caches(&mut enc, &view.caches, with_counters)?;
            encode_pods(&mut enc, &interval.frame, &view.pods, with_counters)?;
            encode_cgroups(&mut enc, &interval.frame, &view.cgroups, with_counters)?;
            encode_findings(&mut enc, interval)?;
            encode_charged(&mut enc, interval, self.options.top)?;
            encode_dying(&mut enc, interval)?;
        }
        encode_self(
            &mut enc,
            interval,
            self.latest.attached(),
            self.options.stream.as_deref(),
            self.options.http.as_deref(),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ScopeLabels {
    scope: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct GrowthLabels {
    owner: Label,
    cache: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct SlowGrowthLabels {
    series: Label,
    namespace: Label,
    pod: Label,
    reason: &'static str,
}

/// Open problematic growth findings exported at most (the fastest).
const MAX_FINDINGS: usize = 100;

/// OOM kills by scope, and the open problematic growth findings with their rate.
fn encode_findings(enc: &mut DescriptorEncoder, interval: &Interval) -> fmt::Result {
    let report = &interval.report;
    let scopes: Vec<(ScopeLabels, u64)> = report
        .oom_kills_total
        .iter()
        .map(|(scope, n)| (ScopeLabels { scope: scope.as_str().into() }, *n))
        .collect();
    let scopes: Vec<(&ScopeLabels, u64)> = scopes.iter().map(|(l, n)| (l, *n)).collect();
    counters(
        enc,
        "slabtrace_oom_kills",
        "Processes the kernel OOM-killed, by scope (global: the node ran out; memcg: a memory cgroup hit its limit).",
        &scopes,
    )?;
    let findings: Vec<(GrowthLabels, f64)> = report
        .growth
        .iter()
        .take(MAX_FINDINGS)
        .map(|g| {
            let owner = g.owner.as_ref().map_or_else(String::new, crate::frame::Owner::display);
            (
                GrowthLabels {
                    owner: owner.into(),
                    cache: g.cache.as_str().into(),
                    reason: reason_label(g.finding.reason),
                },
                g.finding.bytes_per_second,
            )
        })
        .collect();
    let findings: Vec<(&GrowthLabels, f64)> = findings.iter().map(|(l, v)| (l, *v)).collect();
    gauges(
        enc,
        "slabtrace_problematic_growth_bytes_per_second",
        "Open problematic growth findings (sustained growth nothing returned) and their rate; owner is empty for a cache node-wide.",
        &findings,
    )?;
    // The long view's findings: a handful (two node series and the pods that leak).
    let slow: Vec<(SlowGrowthLabels, f64)> = report
        .slow_growth
        .iter()
        .take(MAX_FINDINGS)
        .map(|f| {
            let (namespace, pod) = f.pod.as_ref().map_or_else(
                || (String::new(), String::new()),
                |p| {
                    (
                        p.namespace.clone().unwrap_or_else(|| UNKNOWN_NAMESPACE.to_owned()),
                        p.name.clone().unwrap_or_else(|| p.uid.clone()),
                    )
                },
            );
            (
                SlowGrowthLabels {
                    series: f.series.as_str().into(),
                    namespace: namespace.into(),
                    pod: pod.into(),
                    reason: reason_label(f.finding.reason),
                },
                f.finding.bytes_per_second,
            )
        })
        .collect();
    let slow: Vec<(&SlowGrowthLabels, f64)> = slow.iter().map(|(l, v)| (l, *v)).collect();
    gauges(
        enc,
        "slabtrace_slow_growth_bytes_per_second",
        "Open findings of the long view (days, kept across restarts) and their rate: series slab or sunreclaim (the node's, pod empty) or charged_slab (a pod's).",
        &slow,
    )
}

/// A finding's reason as its label.
const fn reason_label(reason: crate::node::growth::Reason) -> &'static str {
    match reason {
        crate::node::growth::Reason::Unreclaimable => "unreclaimable",
        crate::node::growth::Reason::ReclaimFailed => "reclaim_failed",
        crate::node::growth::Reason::ReclaimNotRun => "reclaim_not_run",
        crate::node::growth::Reason::Returned => "returned",
        crate::node::growth::Reason::Stable => "stable",
        crate::node::growth::Reason::Irregular => "irregular",
        crate::node::growth::Reason::Sustained => "sustained",
    }
}

fn encode_node(enc: &mut DescriptorEncoder, interval: &Interval) -> fmt::Result {
    let Some(m) = interval.meminfo else { return Ok(()) };
    let lines = [
        ("slabtrace_node_slab_bytes", "All slab caches (/proc/meminfo Slab).", m.slab),
        (
            "slabtrace_node_slab_reclaimable_bytes",
            "Slab the kernel can reclaim under memory pressure (/proc/meminfo SReclaimable).",
            m.sreclaimable,
        ),
        (
            "slabtrace_node_slab_unreclaimable_bytes",
            "Slab the kernel cannot reclaim (/proc/meminfo SUnreclaim).",
            m.sunreclaim,
        ),
        ("slabtrace_node_kernel_stack_bytes", "Kernel stacks (/proc/meminfo KernelStack).", {
            m.kernel_stack
        }),
        ("slabtrace_node_page_tables_bytes", "Page tables (/proc/meminfo PageTables).", {
            m.page_tables
        }),
        (
            "slabtrace_node_memory_available_bytes",
            "Memory available for new work without swapping (/proc/meminfo MemAvailable).",
            m.mem_available,
        ),
    ];
    for (name, help, v) in lines {
        gauge(enc, name, help, int(v))?;
    }
    Ok(())
}

fn encode_slabinfo(
    enc: &mut DescriptorEncoder,
    interval: &Interval,
    selected: &BTreeSet<String>,
    page_size: u64,
) -> fmt::Result {
    let mut series: BTreeMap<CacheLabels, (u64, u64)> = BTreeMap::new();
    for s in &interval.slabinfo {
        let cache = if selected.contains(&s.name) { s.name.clone() } else { OTHER.to_owned() };
        let e = series.entry(CacheLabels { cache: cache.into() }).or_default();
        e.0 = e.0.saturating_add(s.active_objs);
        e.1 = e.1.saturating_add(s.total_bytes(page_size));
    }
    let objects: Vec<_> = series.iter().map(|(s, v)| (s, int(v.0))).collect();
    let bytes: Vec<_> = series.iter().map(|(s, v)| (s, int(v.1))).collect();
    gauges(
        enc,
        "slabtrace_slabinfo_active_objects",
        "Objects the kernel counts as allocated in the cache, all of them, also those allocated \
         before slabtrace started (/proc/slabinfo active_objs; SLUB counts per-CPU slabs as \
         active).",
        &objects,
    )?;
    gauges(
        enc,
        "slabtrace_slabinfo_bytes",
        "Bytes the cache's slabs occupy (/proc/slabinfo num_slabs x pagesperslab x page size).",
        &bytes,
    )
}

fn encode_caches(
    enc: &mut DescriptorEncoder,
    rollup: &Rollup<String>,
    with_counters: bool,
) -> fmt::Result {
    let (named, rest) = rollup.split();
    let mut series: BTreeMap<CacheLabels, Figures> = named
        .into_iter()
        .map(|(cache, f)| (CacheLabels { cache: cache.as_str().into() }, *f))
        .collect();
    if let Some(rest) = rest {
        series.entry(CacheLabels { cache: OTHER.into() }).or_default().add(&rest);
    }
    figure_families(enc, "slabtrace_cache", "in the cache", &series, false, with_counters)
}

fn encode_pods(
    enc: &mut DescriptorEncoder,
    frame: &OwnerTable,
    rollup: &Rollup<RowKey>,
    with_counters: bool,
) -> fmt::Result {
    let (named, rest) = rollup.split();
    let mut series: BTreeMap<PodCacheLabels, Figures> = BTreeMap::new();
    let mut info: BTreeSet<PodInfoLabels> = BTreeSet::new();
    let mut deleted: BTreeMap<PodLabels, bool> = BTreeMap::new();
    for ((key, cache), f) in named {
        let Some(Owner::Pod { namespace, name, uid, qos, deleted: gone }) = frame.owners.get(key)
        else {
            continue;
        };
        let namespace = namespace.clone().unwrap_or_else(|| UNKNOWN_NAMESPACE.to_owned());
        let pod = name.clone().unwrap_or_else(|| uid.clone());
        let labels = PodCacheLabels {
            namespace: namespace.as_str().into(),
            pod: pod.as_str().into(),
            cache: cache.as_str().into(),
        };
        series.entry(labels).or_default().add(f);
        let pod_labels =
            PodLabels { namespace: namespace.into(), pod: pod.into(), uid: uid.as_str().into() };
        info.insert(PodInfoLabels {
            namespace: pod_labels.namespace.clone(),
            pod: pod_labels.pod.clone(),
            uid: uid.as_str().into(),
            qos: qos_label(*qos),
        });
        deleted.insert(pod_labels, *gone);
    }
    if let Some(rest) = rest {
        let other = PodCacheLabels {
            namespace: OTHER_NAMESPACE.into(),
            pod: OTHER.into(),
            cache: OTHER.into(),
        };
        series.entry(other).or_default().add(&rest);
    }
    figure_families(enc, "slabtrace_pod", "by the pod", &series, true, with_counters)?;
    let info: Vec<_> = info.iter().map(|l| (l, 1_i64)).collect();
    gauges(
        enc,
        "slabtrace_pod_info",
        "Always 1: a pod shown in the slabtrace_pod_ series (pod is its uid until the runtime \
         names it), with its uid and QoS class.",
        &info,
    )?;
    let deleted: Vec<_> = deleted.iter().map(|(l, d)| (l, i64::from(*d))).collect();
    gauges(
        enc,
        "slabtrace_pod_deleted",
        "1 if every cgroup of the pod is gone while its slab objects live on, else 0.",
        &deleted,
    )
}

/// What the memory controller charges the pods (the `top` most charged by name, the rest
/// summed under `pod="other"`) and the node's cgroups, one series per figure its books have
/// (`kind`: six on cgroup v2, `kmem` alone on v1), and the node's slab no cgroup is charged
/// for. Pods are ranked anew each interval: their books move slowly, unlike traced rows.
fn encode_charged(enc: &mut DescriptorEncoder, interval: &Interval, top: usize) -> fmt::Result {
    let report = &interval.report;
    let weight = |c: &Charged| c.slab.or(c.kmem).or(c.kernel).unwrap_or(0);
    let mut pods: Vec<(&crate::rollup::PodUsage, &Charged)> =
        report.pods.iter().filter_map(|p| p.charged.as_ref().map(|c| (p, c))).collect();
    pods.sort_by_key(|(p, c)| (std::cmp::Reverse(weight(c)), p.uid.as_str()));
    let mut series: BTreeMap<PodKindLabels, u64> = BTreeMap::new();
    for (i, (p, c)) in pods.iter().enumerate() {
        let (namespace, pod) = if i < top {
            (
                p.namespace.clone().unwrap_or_else(|| UNKNOWN_NAMESPACE.to_owned()),
                p.name.clone().unwrap_or_else(|| p.uid.clone()),
            )
        } else {
            (OTHER_NAMESPACE.to_owned(), OTHER.to_owned())
        };
        for (kind, v) in c.kinds() {
            let labels = PodKindLabels {
                namespace: namespace.as_str().into(),
                pod: pod.as_str().into(),
                kind,
            };
            let e = series.entry(labels).or_default();
            *e = e.saturating_add(v);
        }
    }
    let series: Vec<_> = series.iter().map(|(l, v)| (l, int(*v))).collect();
    gauges(
        enc,
        "slabtrace_pod_charged_bytes",
        "Kernel memory the memory controller charges the pod's cgroup now, objects allocated \
         before slabtrace started included, by kind (cgroup v2 memory.stat: slab_reclaimable, \
         slab_unreclaimable, sock, percpu, kernel_stack, kernel; cgroup v1: kmem).",
        &series,
    )?;
    let Some(node) = &report.charged else { return Ok(()) };
    let kinds: Vec<(KindLabels, i64)> = node
        .cgroups
        .iter()
        .flat_map(Charged::kinds)
        .map(|(kind, v)| (KindLabels { kind }, int(v)))
        .collect();
    let kinds: Vec<_> = kinds.iter().map(|(l, v)| (l, *v)).collect();
    gauges(
        enc,
        "slabtrace_node_charged_bytes",
        "Kernel memory charged to any cgroup (the top-level cgroups' books summed), by kind.",
        &kinds,
    )?;
    match node.uncharged_slab_bytes {
        Some(v) => gauge(
            enc,
            "slabtrace_node_uncharged_slab_bytes",
            "Slab no cgroup is charged for: /proc/meminfo Slab less the cgroups' charged slab \
             (cgroup v2 only).",
            int(v),
        ),
        None => Ok(()),
    }
}

/// Dying cgroups per parent: the node's top-level cgroups and Kubernetes quality-of-service
/// parents only (a few dozen values, never a pod: pods come and go, and a series per deleted
/// pod is the growth this is meant to show), and the node's dying memcgs.
fn encode_dying(enc: &mut DescriptorEncoder, interval: &Interval) -> fmt::Result {
    let Some(dying) = &interval.report.dying_cgroups else { return Ok(()) };
    let labels: Vec<(ParentLabels, i64)> = dying
        .parents
        .iter()
        .filter(|p| !matches!(identify(&p.parent), Identity::Pod { .. }))
        .filter_map(|p| Some((ParentLabels { parent: p.parent.as_str().into() }, int(p.nr_dying?))))
        .collect();
    let series: Vec<_> = labels.iter().map(|(l, v)| (l, *v)).collect();
    gauges(
        enc,
        "slabtrace_dying_cgroups",
        "Removed cgroups the kernel still holds under the parent (cgroup.stat \
         nr_dying_descendants, cgroup2); on a hybrid node these are cgroup2's, which die at once.",
        &series,
    )?;
    match dying.memcg_nr_dying {
        Some(v) => gauge(
            enc,
            "slabtrace_node_dying_memcgs",
            "Dying memory cgroups node-wide: the cgroup2 root's nr_dying_descendants (cgroup v2), \
             or /proc/cgroups' memory num_cgroups less the hierarchy's directories (cgroup v1).",
            int(v),
        ),
        None => Ok(()),
    }
}

fn encode_cgroups(
    enc: &mut DescriptorEncoder,
    frame: &OwnerTable,
    rollup: &Rollup<RowKey>,
    with_counters: bool,
) -> fmt::Result {
    let (named, rest) = rollup.split();
    let mut series: BTreeMap<CgroupCacheLabels, Figures> = BTreeMap::new();
    for ((key, cache), f) in named {
        let Some(owner) = frame.owners.get(key) else { continue };
        let labels =
            CgroupCacheLabels { cgroup: owner.display().into(), cache: cache.as_str().into() };
        series.entry(labels).or_default().add(f);
    }
    if let Some(rest) = rest {
        let other = CgroupCacheLabels { cgroup: OTHER.into(), cache: OTHER.into() };
        series.entry(other).or_default().add(&rest);
    }
    figure_families(
        enc,
        "slabtrace_cgroup",
        "by the cgroup (one outside Kubernetes pods, or interrupt context)",
        &series,
        true,
        with_counters,
    )
}

fn encode_self(
    enc: &mut DescriptorEncoder,
    interval: Option<&Interval>,
    attached: bool,
    stream: Option<&EventCounters>,
    http: Option<&HttpCounters>,
) -> fmt::Result {
    gauges(
        enc,
        "slabtrace_build_info",
        "Always 1, with slabtrace's version.",
        &[(&VersionLabels { version: env!("CARGO_PKG_VERSION") }, 1_i64)],
    )?;
    gauge(
        enc,
        "slabtrace_probes_attached",
        "1 while the BPF programs are attached, 0 once they are detached.",
        i64::from(attached),
    )?;
    counter(
        enc,
        "slabtrace_intervals",
        "Intervals read from the BPF maps.",
        interval.map_or(0, |i| i.seq),
    )?;
    if let Some(interval) = interval {
        encode_self_stats(enc, interval)?;
        gauge(
            enc,
            "slabtrace_runtime_connected",
            "1 while a container runtime answers for pod and container names, else 0 (pods are then named by uid).",
            i64::from(interval.report.self_stats.runtime_connected),
        )?;
        // The standard process families every Prometheus client library exports, which
        // dashboards and alerts on "process_resident_memory_bytes" expect; the slabtrace_
        // ones stay for those who use them already.
        counter(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            interval.process.cpu_seconds,
        )?;
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            int(interval.process.rss_bytes),
        )?;
    }
    if let Some(stream) = stream {
        counter(
            enc,
            "slabtrace_stream_events_written",
            "NDJSON events handed to the --events consumer.",
            stream.written(),
        )?;
        counter(
            enc,
            "slabtrace_stream_events_dropped",
            "NDJSON events dropped because the --events consumer was slow or away.",
            stream.dropped(),
        )?;
    }
    if let Some(http) = http {
        counter(
            enc,
            "slabtrace_http_connections_evicted",
            "HTTP connections closed before they finished, the oldest open, because a new one came while the most the daemon serves at a time were open.",
            http.evicted(),
        )?;
        counter(
            enc,
            "slabtrace_http_connections_timed_out",
            "HTTP connections closed at their deadline (a client that did not finish in time).",
            http.timed_out(),
        )?;
    }
    Ok(())
}

/// What the BPF side could not record: full counters, then one series per other kind.
fn encode_dropped(enc: &mut DescriptorEncoder, s: &crate::observation::SelfStats) -> fmt::Result {
    counter(
        enc,
        "slabtrace_counters_full",
        "New cgroup x cache keys dropped because the counters map was full (raise --max-keys).",
        s.counters_full,
    )?;
    let dropped = [
        ("call_sites_full", s.call_sites_full),
        ("caches_full", s.caches_full),
        ("live_insert_failed", s.live_insert_failed),
        ("live_torn", s.live_torn),
        ("new_keys_lost", s.new_keys_lost),
        ("oom_events_lost", s.oom_events_lost),
        ("oom_read_failed", s.oom_read_failed),
        ("oom_stack_failed", s.oom_stack_failed),
        ("shrinker_insert_failed", s.shrinker_insert_failed),
        ("shrinker_read_failed", s.shrinker_read_failed),
    ]
    .map(|(what, n)| (WhatLabels { what }, n));
    let dropped: Vec<(&WhatLabels, u64)> = dropped.iter().map(|(l, n)| (l, *n)).collect();
    counters(
        enc,
        "slabtrace_dropped",
        "What the BPF side could not record, by what: each is also a field of the report's self (the same name).",
        &dropped,
    )
}

fn encode_self_stats(enc: &mut DescriptorEncoder, interval: &Interval) -> fmt::Result {
    let s = &interval.report.self_stats;
    counters(
        enc,
        "slabtrace_events",
        "Allocation and free events the BPF programs handled.",
        &[
            (&KindLabels { kind: "alloc" }, s.alloc_events),
            (&KindLabels { kind: "free" }, s.free_events),
        ],
    )?;
    counter(
        enc,
        "slabtrace_lost_events",
        "Events lost because a probe was already running on that CPU.",
        s.lost_events,
    )?;
    encode_dropped(enc, s)?;
    gauge(
        enc,
        "slabtrace_counters_keys",
        "Cgroup x cache keys in the counters map.",
        int(s.counters_entries),
    )?;
    gauge(
        enc,
        "slabtrace_counters_capacity",
        "Capacity of the counters map (--max-keys).",
        int(s.counters_capacity),
    )?;
    counter(
        enc,
        "slabtrace_counters_retired",
        "Keys of gone cgroups with nothing live deleted from the counters map.",
        s.retired_counters,
    )?;
    gauge(
        enc,
        "slabtrace_live_objects_tracked",
        "Objects tracked from allocation to free in the live-object map (as of its last count).",
        int(s.live_entries),
    )?;
    gauge(
        enc,
        "slabtrace_live_objects_capacity",
        "Capacity of the live-object map (--max-live).",
        int(s.live_capacity),
    )?;
    counter(
        enc,
        "slabtrace_live_evictions",
        "Tracked objects pushed out of the full live-object map (their frees go unattributed).",
        s.evictions,
    )?;
    gauge(
        enc,
        "slabtrace_bpf_map_bytes",
        "Kernel memory held by slabtrace's BPF maps.",
        int(s.map_bytes),
    )?;
    gauge(
        enc,
        "slabtrace_bpf_program_bytes",
        "Kernel memory held by slabtrace's BPF programs.",
        int(s.prog_bytes),
    )?;
    counter(
        enc,
        "slabtrace_process_cpu_seconds",
        "CPU time slabtrace's own process used, user and system.",
        interval.process.cpu_seconds,
    )?;
    gauge(
        enc,
        "slabtrace_process_resident_memory_bytes",
        "Resident memory of slabtrace's own process.",
        int(interval.process.rss_bytes),
    )?;
    gauge(
        enc,
        "slabtrace_sample_rate",
        "N: one object address in N is tracked from allocation to free (1: exact figures).",
        int(s.sample_rate),
    )?;
    gauge(
        enc,
        "slabtrace_warnings",
        "Warnings about this run (their text is in /report under self.warnings).",
        s.warnings.len(),
    )?;
    gauge(
        enc,
        "slabtrace_last_interval_timestamp_seconds",
        "When the last interval ended, Unix time.",
        interval.ts.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        frame::OwnerTable,
        node::slabinfo::SlabInfo,
        output::report::{KernelMemory, NodeCache},
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

    fn pod(uid: &str, name: Option<&str>, deleted: bool) -> Owner {
        Owner::Pod {
            namespace: name.map(|_| "shop".to_owned()),
            name: name.map(str::to_owned),
            uid: uid.into(),
            qos: Qos::Burstable,
            deleted,
        }
    }

    fn frame(rows: &[(&Owner, &str, OwnerRow)]) -> OwnerTable {
        let mut f = OwnerTable::default();
        for (owner, cache, r) in rows {
            f.owners.insert(owner.key(), (*owner).clone());
            f.rows.insert((owner.key(), (*cache).to_owned()), *r);
        }
        f
    }

    fn interval(seq: u64, frame: OwnerTable) -> Interval {
        Interval {
            seq,
            node: "node-a".into(),
            ts: SystemTime::UNIX_EPOCH + Duration::from_hours(500_000),
            seconds: 10.0,
            frame,
            ..Interval::default()
        }
    }

    fn new_exporter(top: usize) -> (Arc<Latest>, Exporter) {
        let latest = Arc::new(Latest::new());
        let options = ExporterOptions::plain(top);
        (Arc::clone(&latest), Exporter::new(latest, options))
    }

    /// The exposition's sample lines of the families starting with `prefix`.
    fn samples(text: &str, prefix: &str) -> Vec<String> {
        text.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    }

    /// An interval with every family in it: a named pod, a pod the runtime has not named, a
    /// service, interrupt context, a gone cgroup with nothing live, the node's books, two
    /// caches and slabtrace's own figures.
    fn full_interval() -> Interval {
        let web = pod("u-1", Some("web-0"), false);
        let nameless = pod("u-2", None, true);
        let svc = Owner::Cgroup {
            cgroup_id: 7,
            cgroup: Some("/system.slice/a.service".into()),
            alive: true,
        };
        let gone =
            Owner::Cgroup { cgroup_id: 8, cgroup: Some("/user.slice/x".into()), alive: false };
        let mut unaccounted = row(10, 4);
        unaccounted.unaccounted_live_bytes = 400;
        let f = frame(&[
            (&web, "dentry", row(1000, 900)),
            (&web, "filp", row(20, 1)),
            (&nameless, "dentry", row(50, 5)),
            (&svc, "filp", row(10, 2)),
            (&Owner::Interrupt, "skbuff_head_cache", unaccounted),
            (&gone, "dentry", row(5, 0)),
        ]);
        let mut i = interval(3, f);
        i.meminfo = Some(KernelMemory {
            slab: 300 << 20,
            sreclaimable: 200 << 20,
            sunreclaim: 100 << 20,
            kernel_stack: 16 << 20,
            page_tables: 8 << 20,
            mem_available: 4 << 30,
        });
        let cache = |name: &str, allocs: u64, live: u64| NodeCache {
            totals: CacheTotals {
                cache: name.into(),
                object_size: 100,
                allocs,
                alloc_bytes: allocs * 100,
                frees: allocs - live,
                live_objects: live,
                live_bytes: live * 100,
                ..CacheTotals::default()
            },
            slab_account: true,
            reclaimable: false,
            slabinfo: None,
        };
        i.report.caches = vec![cache("dentry", 1055, 905), cache("filp", 30, 3)];
        let slab = |name: &str, active: u64, slabs: u64| SlabInfo {
            name: name.into(),
            active_objs: active,
            num_objs: active + 10,
            objsize: 192,
            objperslab: 21,
            pagesperslab: 1,
            active_slabs: slabs,
            num_slabs: slabs,
        };
        i.slabinfo = vec![slab("dentry", 42_000, 2_100), slab("filp", 1_000, 50)];
        // The memory controller's books of one pod (v2) and of the node's cgroups.
        i.report.pods = vec![crate::testutil::charged_pod(7)];
        i.report.charged = Some(node_charged());
        i.report.observation.dying_cgroups = Some(crate::testutil::dying());
        let s = &mut i.report.self_stats;
        s.sample_rate = 1;
        s.alloc_events = 5000;
        s.free_events = 4000;
        s.lost_events = 1;
        s.counters_entries = 12;
        s.counters_capacity = 65_536;
        s.live_entries = 900;
        s.live_capacity = 1 << 20;
        s.map_bytes = 50 << 20;
        s.prog_bytes = 64 << 10;
        s.warnings = vec!["something to know".into()];
        i.process = ProcessUsage { cpu_seconds: 1.5, rss_bytes: 40 << 20 };
        i
    }

    const GOLDEN: &str = r#"# HELP slabtrace_node_slab_bytes All slab caches (/proc/meminfo Slab).
# TYPE slabtrace_node_slab_bytes gauge
slabtrace_node_slab_bytes 314572800
# HELP slabtrace_node_slab_reclaimable_bytes Slab the kernel can reclaim under memory pressure (/proc/meminfo SReclaimable).
# TYPE slabtrace_node_slab_reclaimable_bytes gauge
slabtrace_node_slab_reclaimable_bytes 209715200
# HELP slabtrace_node_slab_unreclaimable_bytes Slab the kernel cannot reclaim (/proc/meminfo SUnreclaim).
# TYPE slabtrace_node_slab_unreclaimable_bytes gauge
slabtrace_node_slab_unreclaimable_bytes 104857600
# HELP slabtrace_node_kernel_stack_bytes Kernel stacks (/proc/meminfo KernelStack).
# TYPE slabtrace_node_kernel_stack_bytes gauge
slabtrace_node_kernel_stack_bytes 16777216
# HELP slabtrace_node_page_tables_bytes Page tables (/proc/meminfo PageTables).
# TYPE slabtrace_node_page_tables_bytes gauge
slabtrace_node_page_tables_bytes 8388608
# HELP slabtrace_node_memory_available_bytes Memory available for new work without swapping (/proc/meminfo MemAvailable).
# TYPE slabtrace_node_memory_available_bytes gauge
slabtrace_node_memory_available_bytes 4294967296
# HELP slabtrace_slabinfo_active_objects Objects the kernel counts as allocated in the cache, all of them, also those allocated before slabtrace started (/proc/slabinfo active_objs; SLUB counts per-CPU slabs as active).
# TYPE slabtrace_slabinfo_active_objects gauge
slabtrace_slabinfo_active_objects{cache="dentry"} 42000
slabtrace_slabinfo_active_objects{cache="filp"} 1000
# HELP slabtrace_slabinfo_bytes Bytes the cache's slabs occupy (/proc/slabinfo num_slabs x pagesperslab x page size).
# TYPE slabtrace_slabinfo_bytes gauge
slabtrace_slabinfo_bytes{cache="dentry"} 8601600
slabtrace_slabinfo_bytes{cache="filp"} 204800
# HELP slabtrace_cache_live_bytes Bytes of slab objects allocated in the cache since slabtrace started and still live (an estimate when sampling).
# TYPE slabtrace_cache_live_bytes gauge
slabtrace_cache_live_bytes{cache="dentry"} 90500
slabtrace_cache_live_bytes{cache="filp"} 300
# HELP slabtrace_cache_allocations Slab objects allocated in the cache since slabtrace started.
# TYPE slabtrace_cache_allocations counter
slabtrace_cache_allocations_total{cache="dentry"} 1055
slabtrace_cache_allocations_total{cache="filp"} 30
# HELP slabtrace_cache_allocated_bytes Bytes of slab objects allocated in the cache since slabtrace started.
# TYPE slabtrace_cache_allocated_bytes counter
slabtrace_cache_allocated_bytes_total{cache="dentry"} 105500
slabtrace_cache_allocated_bytes_total{cache="filp"} 3000
# HELP slabtrace_cache_frees Slab objects allocated in the cache since slabtrace started that were freed since (by anyone; an estimate when sampling).
# TYPE slabtrace_cache_frees counter
slabtrace_cache_frees_total{cache="dentry"} 150
slabtrace_cache_frees_total{cache="filp"} 27
# HELP slabtrace_pod_live_bytes Bytes of slab objects allocated by the pod since slabtrace started and still live (an estimate when sampling).
# TYPE slabtrace_pod_live_bytes gauge
slabtrace_pod_live_bytes{namespace="_unknown",pod="u-2",cache="dentry"} 500
slabtrace_pod_live_bytes{namespace="shop",pod="web-0",cache="dentry"} 90000
slabtrace_pod_live_bytes{namespace="shop",pod="web-0",cache="filp"} 100
# HELP slabtrace_pod_unaccounted_live_bytes Of the live bytes allocated by the pod, those charged to no memory cgroup: invisible to container memory limits and metrics.
# TYPE slabtrace_pod_unaccounted_live_bytes gauge
slabtrace_pod_unaccounted_live_bytes{namespace="_unknown",pod="u-2",cache="dentry"} 0
slabtrace_pod_unaccounted_live_bytes{namespace="shop",pod="web-0",cache="dentry"} 0
slabtrace_pod_unaccounted_live_bytes{namespace="shop",pod="web-0",cache="filp"} 0
# HELP slabtrace_pod_allocations Slab objects allocated by the pod since slabtrace started.
# TYPE slabtrace_pod_allocations counter
slabtrace_pod_allocations_total{namespace="_unknown",pod="u-2",cache="dentry"} 50
slabtrace_pod_allocations_total{namespace="shop",pod="web-0",cache="dentry"} 1000
slabtrace_pod_allocations_total{namespace="shop",pod="web-0",cache="filp"} 20
# HELP slabtrace_pod_allocated_bytes Bytes of slab objects allocated by the pod since slabtrace started.
# TYPE slabtrace_pod_allocated_bytes counter
slabtrace_pod_allocated_bytes_total{namespace="_unknown",pod="u-2",cache="dentry"} 5000
slabtrace_pod_allocated_bytes_total{namespace="shop",pod="web-0",cache="dentry"} 100000
slabtrace_pod_allocated_bytes_total{namespace="shop",pod="web-0",cache="filp"} 2000
# HELP slabtrace_pod_frees Slab objects allocated by the pod since slabtrace started that were freed since (by anyone; an estimate when sampling).
# TYPE slabtrace_pod_frees counter
slabtrace_pod_frees_total{namespace="_unknown",pod="u-2",cache="dentry"} 45
slabtrace_pod_frees_total{namespace="shop",pod="web-0",cache="dentry"} 100
slabtrace_pod_frees_total{namespace="shop",pod="web-0",cache="filp"} 19
# HELP slabtrace_pod_info Always 1: a pod shown in the slabtrace_pod_ series (pod is its uid until the runtime names it), with its uid and QoS class.
# TYPE slabtrace_pod_info gauge
slabtrace_pod_info{namespace="_unknown",pod="u-2",uid="u-2",qos="burstable"} 1
slabtrace_pod_info{namespace="shop",pod="web-0",uid="u-1",qos="burstable"} 1
# HELP slabtrace_pod_deleted 1 if every cgroup of the pod is gone while its slab objects live on, else 0.
# TYPE slabtrace_pod_deleted gauge
slabtrace_pod_deleted{namespace="_unknown",pod="u-2",uid="u-2"} 1
slabtrace_pod_deleted{namespace="shop",pod="web-0",uid="u-1"} 0
# HELP slabtrace_cgroup_live_bytes Bytes of slab objects allocated by the cgroup (one outside Kubernetes pods, or interrupt context) since slabtrace started and still live (an estimate when sampling).
# TYPE slabtrace_cgroup_live_bytes gauge
slabtrace_cgroup_live_bytes{cgroup="(interrupt context)",cache="skbuff_head_cache"} 400
slabtrace_cgroup_live_bytes{cgroup="/system.slice/a.service",cache="filp"} 200
# HELP slabtrace_cgroup_unaccounted_live_bytes Of the live bytes allocated by the cgroup (one outside Kubernetes pods, or interrupt context), those charged to no memory cgroup: invisible to container memory limits and metrics.
# TYPE slabtrace_cgroup_unaccounted_live_bytes gauge
slabtrace_cgroup_unaccounted_live_bytes{cgroup="(interrupt context)",cache="skbuff_head_cache"} 400
slabtrace_cgroup_unaccounted_live_bytes{cgroup="/system.slice/a.service",cache="filp"} 0
# HELP slabtrace_cgroup_allocations Slab objects allocated by the cgroup (one outside Kubernetes pods, or interrupt context) since slabtrace started.
# TYPE slabtrace_cgroup_allocations counter
slabtrace_cgroup_allocations_total{cgroup="(interrupt context)",cache="skbuff_head_cache"} 10
slabtrace_cgroup_allocations_total{cgroup="/system.slice/a.service",cache="filp"} 10
# HELP slabtrace_cgroup_allocated_bytes Bytes of slab objects allocated by the cgroup (one outside Kubernetes pods, or interrupt context) since slabtrace started.
# TYPE slabtrace_cgroup_allocated_bytes counter
slabtrace_cgroup_allocated_bytes_total{cgroup="(interrupt context)",cache="skbuff_head_cache"} 1000
slabtrace_cgroup_allocated_bytes_total{cgroup="/system.slice/a.service",cache="filp"} 1000
# HELP slabtrace_cgroup_frees Slab objects allocated by the cgroup (one outside Kubernetes pods, or interrupt context) since slabtrace started that were freed since (by anyone; an estimate when sampling).
# TYPE slabtrace_cgroup_frees counter
slabtrace_cgroup_frees_total{cgroup="(interrupt context)",cache="skbuff_head_cache"} 6
slabtrace_cgroup_frees_total{cgroup="/system.slice/a.service",cache="filp"} 8
# HELP slabtrace_pod_charged_bytes Kernel memory the memory controller charges the pod's cgroup now, objects allocated before slabtrace started included, by kind (cgroup v2 memory.stat: slab_reclaimable, slab_unreclaimable, sock, percpu, kernel_stack, kernel; cgroup v1: kmem).
# TYPE slabtrace_pod_charged_bytes gauge
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="kernel"} 32
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="kernel_stack"} 16
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="percpu"} 8
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="slab_reclaimable"} 7
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="slab_unreclaimable"} 1
slabtrace_pod_charged_bytes{namespace="ns",pod="p-7",kind="sock"} 0
# HELP slabtrace_node_charged_bytes Kernel memory charged to any cgroup (the top-level cgroups' books summed), by kind.
# TYPE slabtrace_node_charged_bytes gauge
slabtrace_node_charged_bytes{kind="slab_reclaimable"} 500
slabtrace_node_charged_bytes{kind="slab_unreclaimable"} 100
# HELP slabtrace_node_uncharged_slab_bytes Slab no cgroup is charged for: /proc/meminfo Slab less the cgroups' charged slab (cgroup v2 only).
# TYPE slabtrace_node_uncharged_slab_bytes gauge
slabtrace_node_uncharged_slab_bytes 400
# HELP slabtrace_dying_cgroups Removed cgroups the kernel still holds under the parent (cgroup.stat nr_dying_descendants, cgroup2); on a hybrid node these are cgroup2's, which die at once.
# TYPE slabtrace_dying_cgroups gauge
slabtrace_dying_cgroups{parent="/kubepods/burstable"} 7
# HELP slabtrace_node_dying_memcgs Dying memory cgroups node-wide: the cgroup2 root's nr_dying_descendants (cgroup v2), or /proc/cgroups' memory num_cgroups less the hierarchy's directories (cgroup v1).
# TYPE slabtrace_node_dying_memcgs gauge
slabtrace_node_dying_memcgs 1200
# HELP slabtrace_build_info Always 1, with slabtrace's version.
# TYPE slabtrace_build_info gauge
slabtrace_build_info{version="VERSION"} 1
# HELP slabtrace_probes_attached 1 while the BPF programs are attached, 0 once they are detached.
# TYPE slabtrace_probes_attached gauge
slabtrace_probes_attached 1
# HELP slabtrace_intervals Intervals read from the BPF maps.
# TYPE slabtrace_intervals counter
slabtrace_intervals_total 3
# HELP slabtrace_events Allocation and free events the BPF programs handled.
# TYPE slabtrace_events counter
slabtrace_events_total{kind="alloc"} 5000
slabtrace_events_total{kind="free"} 4000
# HELP slabtrace_lost_events Events lost because a probe was already running on that CPU.
# TYPE slabtrace_lost_events counter
slabtrace_lost_events_total 1
# HELP slabtrace_counters_full New cgroup x cache keys dropped because the counters map was full (raise --max-keys).
# TYPE slabtrace_counters_full counter
slabtrace_counters_full_total 0
# HELP slabtrace_dropped What the BPF side could not record, by what: each is also a field of the report's self (the same name).
# TYPE slabtrace_dropped counter
slabtrace_dropped_total{what="call_sites_full"} 0
slabtrace_dropped_total{what="caches_full"} 0
slabtrace_dropped_total{what="live_insert_failed"} 0
slabtrace_dropped_total{what="live_torn"} 0
slabtrace_dropped_total{what="new_keys_lost"} 0
slabtrace_dropped_total{what="oom_events_lost"} 0
slabtrace_dropped_total{what="oom_read_failed"} 0
slabtrace_dropped_total{what="oom_stack_failed"} 0
slabtrace_dropped_total{what="shrinker_insert_failed"} 0
slabtrace_dropped_total{what="shrinker_read_failed"} 0
# HELP slabtrace_counters_keys Cgroup x cache keys in the counters map.
# TYPE slabtrace_counters_keys gauge
slabtrace_counters_keys 12
# HELP slabtrace_counters_capacity Capacity of the counters map (--max-keys).
# TYPE slabtrace_counters_capacity gauge
slabtrace_counters_capacity 65536
# HELP slabtrace_counters_retired Keys of gone cgroups with nothing live deleted from the counters map.
# TYPE slabtrace_counters_retired counter
slabtrace_counters_retired_total 0
# HELP slabtrace_live_objects_tracked Objects tracked from allocation to free in the live-object map (as of its last count).
# TYPE slabtrace_live_objects_tracked gauge
slabtrace_live_objects_tracked 900
# HELP slabtrace_live_objects_capacity Capacity of the live-object map (--max-live).
# TYPE slabtrace_live_objects_capacity gauge
slabtrace_live_objects_capacity 1048576
# HELP slabtrace_live_evictions Tracked objects pushed out of the full live-object map (their frees go unattributed).
# TYPE slabtrace_live_evictions counter
slabtrace_live_evictions_total 0
# HELP slabtrace_bpf_map_bytes Kernel memory held by slabtrace's BPF maps.
# TYPE slabtrace_bpf_map_bytes gauge
slabtrace_bpf_map_bytes 52428800
# HELP slabtrace_bpf_program_bytes Kernel memory held by slabtrace's BPF programs.
# TYPE slabtrace_bpf_program_bytes gauge
slabtrace_bpf_program_bytes 65536
# HELP slabtrace_process_cpu_seconds CPU time slabtrace's own process used, user and system.
# TYPE slabtrace_process_cpu_seconds counter
slabtrace_process_cpu_seconds_total 1.5
# HELP slabtrace_process_resident_memory_bytes Resident memory of slabtrace's own process.
# TYPE slabtrace_process_resident_memory_bytes gauge
slabtrace_process_resident_memory_bytes 41943040
# HELP slabtrace_sample_rate N: one object address in N is tracked from allocation to free (1: exact figures).
# TYPE slabtrace_sample_rate gauge
slabtrace_sample_rate 1
# HELP slabtrace_warnings Warnings about this run (their text is in /report under self.warnings).
# TYPE slabtrace_warnings gauge
slabtrace_warnings 1
# HELP slabtrace_last_interval_timestamp_seconds When the last interval ended, Unix time.
# TYPE slabtrace_last_interval_timestamp_seconds gauge
slabtrace_last_interval_timestamp_seconds 1800000000.0
# HELP slabtrace_runtime_connected 1 while a container runtime answers for pod and container names, else 0 (pods are then named by uid).
# TYPE slabtrace_runtime_connected gauge
slabtrace_runtime_connected 0
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 1.5
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 41943040
# EOF
"#;

    /// [`full_interval`] with two memcg OOM kills and one growth finding: the families that
    /// are written only when there is something to say.
    fn interval_with_findings() -> Interval {
        use crate::node::growth::{Finding, GrowthFinding, Reason, Reclaim, Verdict};
        let mut interval = full_interval();
        interval.report.oom_kills_total =
            [("global".to_owned(), 0), ("memcg".to_owned(), 2)].into();
        interval.report.growth = vec![GrowthFinding {
            owner: None,
            cache: "dentry".into(),
            finding: Finding {
                verdict: Verdict::Problematic,
                reason: Reason::ReclaimNotRun,
                bytes_per_second: 10_000.0,
                rate_mb_per_hour: 36.0,
                growth_bytes: 1 << 20,
                live_bytes: 1 << 21,
                peak_bytes: 1 << 21,
                rising_share: 1.0,
                window_seconds: 600.0,
                reclaimable: true,
                reclaim: Reclaim::default(),
            },
        }];
        let slow = |series: &str, pod| crate::node::slow_growth::SlowFinding {
            series: series.to_owned(),
            pod,
            finding: Finding {
                reason: Reason::Sustained,
                bytes_per_second: 2_000.0,
                window_seconds: 86_400.0,
                ..interval.report.growth[0].finding
            },
        };
        let leaking = crate::oom_report::PodRef {
            namespace: Some("git".into()),
            name: Some("gitea-0".into()),
            uid: "u-9".into(),
        };
        interval.report.slow_growth = vec![slow("charged_slab", Some(leaking)), slow("slab", None)];
        interval
    }

    #[test]
    fn oom_kills_and_growth_findings_are_exported() {
        let (latest, exporter) = new_exporter(10);
        let interval = interval_with_findings();
        latest.publish(Arc::new(interval));
        let text = exporter.openmetrics().unwrap();
        assert!(text.contains("slabtrace_oom_kills_total{scope=\"memcg\"} 2\n"), "{text}");
        assert!(text.contains("slabtrace_oom_kills_total{scope=\"global\"} 0\n"), "{text}");
        assert!(
            text.contains(
                "slabtrace_problematic_growth_bytes_per_second{owner=\"\",cache=\"dentry\",reason=\"reclaim_not_run\"} 10000.0\n"
            ),
            "{text}"
        );
        // The long view's: a pod's charged slab and the node's Slab.
        assert!(
            text.contains(
                "slabtrace_slow_growth_bytes_per_second{series=\"charged_slab\",namespace=\"git\",pod=\"gitea-0\",reason=\"sustained\"} 2000.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "slabtrace_slow_growth_bytes_per_second{series=\"slab\",namespace=\"\",pod=\"\",reason=\"sustained\"} 2000.0\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_exported_family_is_listed() {
        let (latest, exporter) = new_exporter(10);
        let interval = interval_with_findings();
        latest.publish(Arc::new(interval));
        let text = exporter.openmetrics().unwrap();
        let written: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let listed: BTreeSet<&str> = FAMILIES.iter().copied().collect();
        assert_eq!(listed.len(), FAMILIES.len(), "a family is listed twice");
        let unlisted: Vec<_> = written.difference(&listed).collect();
        assert!(unlisted.is_empty(), "exported but not in FAMILIES: {unlisted:?}");
        // Without an event stream or an HTTP server their families are not written.
        let unwritten: Vec<_> = listed.difference(&written).copied().collect();
        assert_eq!(
            unwritten,
            [
                "slabtrace_http_connections_evicted",
                "slabtrace_http_connections_timed_out",
                "slabtrace_stream_events_dropped",
                "slabtrace_stream_events_written"
            ]
        );
    }

    #[test]
    fn the_exposition_of_an_interval() {
        let (latest, exporter) = new_exporter(10);
        latest.publish(Arc::new(full_interval()));
        let text = exporter.openmetrics().unwrap();
        let text = text.replace(env!("CARGO_PKG_VERSION"), "VERSION");
        if text != GOLDEN {
            // The whole text on failure, so a deliberate change is one copy away.
            eprintln!("{text}");
        }
        assert_eq!(text, GOLDEN);
    }

    #[test]
    fn before_the_first_interval_only_self_metrics() {
        let latest = Arc::new(Latest::new());
        let stream = Arc::new(EventCounters::default());
        let options = ExporterOptions { stream: Some(stream), ..ExporterOptions::plain(10) };
        let exporter = Exporter::new(Arc::clone(&latest), options);
        latest.detach();
        let text = exporter.openmetrics().unwrap();
        assert_eq!(
            samples(&text, "slabtrace_"),
            [
                format!("slabtrace_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
                "slabtrace_probes_attached 0".to_owned(),
                "slabtrace_intervals_total 0".to_owned(),
                "slabtrace_stream_events_written_total 0".to_owned(),
                "slabtrace_stream_events_dropped_total 0".to_owned(),
            ]
        );
        assert!(text.ends_with("# EOF\n"));
    }

    /// README "Series per node": at the defaults (`--metrics-top 100`, no counters) a node with
    /// more pods × caches and cgroups × caches than the top, and 300 caches (a busy node has
    /// 150-250), exports at most this many series.
    const SERIES_BUDGET: usize = 2_000;

    #[test]
    fn a_busy_node_stays_within_the_series_budget_at_the_defaults() {
        let mut rows = Vec::new();
        let owners: Vec<Owner> =
            (0..300).map(|i| pod(&format!("u-{i}"), Some(&format!("p-{i}")), false)).collect();
        let caches: Vec<String> = (0..300).map(|c| format!("cache-{c}")).collect();
        for (i, owner) in owners.iter().enumerate() {
            for cache in caches.iter().skip(i % 7).step_by(30) {
                rows.push((owner, cache.as_str(), row(10 + i as u64, 5)));
            }
        }
        let make = || {
            let mut made = interval(1, frame(&rows));
            made.slabinfo = caches
                .iter()
                .map(|c| crate::node::slabinfo::SlabInfo {
                    name: c.clone(),
                    active_objs: 1,
                    num_objs: 1,
                    objsize: 64,
                    objperslab: 64,
                    pagesperslab: 1,
                    active_slabs: 1,
                    num_slabs: 1,
                })
                .collect();
            // Every pod's memory books, with all six figures of cgroup v2.
            made.report.pods = (0..300).map(crate::testutil::charged_pod).collect();
            made.report.charged = Some(node_charged());
            made
        };
        let count = |counters: bool| {
            let latest = Arc::new(Latest::new());
            let options = ExporterOptions { counters, ..ExporterOptions::plain(100) };
            let exporter = Exporter::new(Arc::clone(&latest), options);
            latest.publish(Arc::new(make()));
            let text = exporter.openmetrics().unwrap();
            text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count()
        };
        let (default, with_counters) = (count(false), count(true));
        eprintln!("series: {default} at the defaults, {with_counters} with counters");
        assert!(default <= SERIES_BUDGET, "{default} series at the defaults");
        assert!(with_counters > default + 300, "counters add series: {with_counters}");
    }

    #[test]
    fn dying_cgroups_per_parent_and_node() {
        let mut made = interval(1, frame(&[]));
        made.report.observation.dying_cgroups = Some(crate::testutil::dying());
        let (latest, exporter) = new_exporter(2);
        latest.publish(Arc::new(made));
        let text = exporter.openmetrics().unwrap();
        assert_eq!(
            samples(&text, "slabtrace_dying_cgroups"),
            ["slabtrace_dying_cgroups{parent=\"/kubepods/burstable\"} 7"],
            "a parent whose count is unknown has no series"
        );
        assert_eq!(
            samples(&text, "slabtrace_node_dying_memcgs"),
            ["slabtrace_node_dying_memcgs 1200"]
        );
    }

    fn node_charged() -> crate::cgroup::charged::NodeCharged {
        use crate::cgroup::charged::{Charged, NodeCharged, Source};
        NodeCharged {
            source: Some(Source::CgroupV2),
            node_slab_bytes: Some(1000),
            cgroups: Some(Charged {
                slab_reclaimable: Some(500),
                slab_unreclaimable: Some(100),
                slab: Some(600),
                ..Charged::unknown(Source::CgroupV2)
            }),
            uncharged_slab_bytes: Some(400),
            files_read: 3,
            skipped: 0,
        }
    }

    #[test]
    fn charged_memory_is_exported_per_pod_with_the_rest_as_other() {
        let mut made = interval(1, frame(&[]));
        made.report.pods = (1..=3).map(crate::testutil::charged_pod).collect();
        // v1 books: one figure, kmem.
        let mut v1 = crate::testutil::charged_pod(4);
        v1.charged = Some(crate::cgroup::charged::Charged {
            kmem: Some(4096),
            ..crate::cgroup::charged::Charged::unknown(crate::cgroup::charged::Source::CgroupV1)
        });
        made.report.pods.push(v1);
        made.report.charged = Some(node_charged());
        let (latest, exporter) = new_exporter(2);
        latest.publish(Arc::new(made));
        let text = exporter.openmetrics().unwrap();
        let slab = samples(&text, "slabtrace_pod_charged_bytes{");
        // The two most charged by slab (kmem where there is no slab) by name, the rest summed.
        let pods: BTreeSet<String> = slab.iter().map(|l| label_value(l, "pod")).collect();
        assert_eq!(pods, BTreeSet::from(["p-3".into(), "p-4".into(), OTHER.into()]), "{slab:#?}");
        assert!(
            slab.contains(
                &"slabtrace_pod_charged_bytes{namespace=\"ns\",pod=\"p-4\",kind=\"kmem\"} 4096"
                    .to_owned()
            ),
            "{slab:#?}"
        );
        assert!(
            slab.contains(&"slabtrace_pod_charged_bytes{namespace=\"_other\",pod=\"other\",kind=\"slab_reclaimable\"} 3".to_owned()),
            "p-1 and p-2 summed: {slab:#?}"
        );
        assert_eq!(slab.len(), 1 + 6 + 6, "{slab:#?}");
        assert_eq!(
            samples(&text, "slabtrace_node_charged_bytes"),
            [
                "slabtrace_node_charged_bytes{kind=\"slab_reclaimable\"} 500",
                "slabtrace_node_charged_bytes{kind=\"slab_unreclaimable\"} 100",
            ]
        );
        assert_eq!(
            samples(&text, "slabtrace_node_uncharged_slab_bytes"),
            ["slabtrace_node_uncharged_slab_bytes 400"]
        );
    }

    #[test]
    fn caches_left_out_by_the_filter_are_summed_under_other() {
        let a = pod("a", Some("a"), false);
        let f = frame(&[(&a, "dentry", row(1000, 900)), (&a, "kmalloc-64", row(10, 10))]);
        let latest = Arc::new(Latest::new());
        let options = ExporterOptions {
            caches: CacheFilter::new(None, Some("kmalloc-.*")).unwrap(),
            ..ExporterOptions::plain(10)
        };
        let exporter = Exporter::new(Arc::clone(&latest), options);
        latest.publish(Arc::new(interval(1, f)));
        let text = exporter.openmetrics().unwrap();
        assert_eq!(
            samples(&text, "slabtrace_pod_allocations_total"),
            [
                "slabtrace_pod_allocations_total{namespace=\"shop\",pod=\"a\",cache=\"dentry\"} 1000",
                "slabtrace_pod_allocations_total{namespace=\"shop\",pod=\"a\",cache=\"other\"} 10",
            ]
        );
        // Anchored: `dent` matches no cache; a bad pattern names its flag.
        let only = CacheFilter::new(Some("dent"), None).unwrap();
        assert_eq!((only.label("dentry"), only.label("dent")), ("other", "dent"));
        let bad = CacheFilter::new(Some("("), None).unwrap_err();
        assert!(bad.starts_with("--metrics-cache-include: not a regular expression"), "{bad}");
    }

    #[test]
    fn rows_beyond_the_top_are_summed_into_other() {
        let (a, b, c) =
            (pod("a", Some("a"), false), pod("b", Some("b"), false), pod("c", None, false));
        let f = frame(&[
            (&a, "dentry", row(1000, 900)),
            (&b, "dentry", row(10, 10)),
            (&c, "filp", row(5, 1)),
        ]);
        let (latest, exporter) = new_exporter(1);
        latest.publish(Arc::new(interval(1, f)));
        let text = exporter.openmetrics().unwrap();
        assert_eq!(
            samples(&text, "slabtrace_pod_live_bytes"),
            [
                "slabtrace_pod_live_bytes{namespace=\"_other\",pod=\"other\",cache=\"other\"} 1100",
                "slabtrace_pod_live_bytes{namespace=\"shop\",pod=\"a\",cache=\"dentry\"} 90000",
            ]
        );
        assert_eq!(
            samples(&text, "slabtrace_pod_allocations_total"),
            [
                "slabtrace_pod_allocations_total{namespace=\"_other\",pod=\"other\",cache=\"other\"} 15",
                "slabtrace_pod_allocations_total{namespace=\"shop\",pod=\"a\",cache=\"dentry\"} 1000",
            ]
        );
        // Only the pods shown have an info series.
        assert_eq!(
            samples(&text, "slabtrace_pod_info"),
            ["slabtrace_pod_info{namespace=\"shop\",pod=\"a\",uid=\"a\",qos=\"burstable\"} 1"]
        );
        // No top at all: everything is other.
        let (latest, exporter) = new_exporter(0);
        latest.publish(Arc::new(interval(1, frame(&[(&a, "dentry", row(3, 1))]))));
        assert_eq!(
            samples(&exporter.openmetrics().unwrap(), "slabtrace_pod_live_bytes"),
            ["slabtrace_pod_live_bytes{namespace=\"_other\",pod=\"other\",cache=\"other\"} 100"]
        );
    }

    fn weights<'a>(rows: &'a [(&'a str, u64)]) -> Vec<(&'a &'a str, (u64, u64))> {
        rows.iter().map(|(k, w)| (k, (*w, 0))).collect()
    }

    fn set<'a>(keys: &[&'a str]) -> BTreeSet<&'a str> {
        keys.iter().copied().collect()
    }

    #[test]
    fn the_selection_is_sticky_until_an_outsider_is_much_larger() {
        const MIB: u64 = 1 << 20;
        // (what, exported before, rows and their live bytes, n, exported now)
        type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, u64)], usize, &'a [&'a str]);
        let cases: &[Case] = &[
            ("first pick: heaviest", &[], &[("a", 5), ("b", 9), ("c", 1)], 2, &["a", "b"]),
            ("ties by key", &[], &[("b", 1), ("a", 1), ("c", 1)], 2, &["a", "b"]),
            ("kept while it exists", &["c"], &[("a", 5), ("b", 9), ("c", 1)], 2, &["b", "c"]),
            ("gone rows free places", &["x", "y"], &[("a", 5), ("y", 0)], 2, &["a", "y"]),
            ("a little larger stays out", &["a"], &[("a", 4 * MIB), ("b", 8 * MIB)], 1, &["a"]),
            ("much larger gets in", &["a"], &[("a", 4 * MIB), ("b", 10 * MIB)], 1, &["b"]),
            ("kb rows do not trade", &["a"], &[("a", 0), ("b", MIB)], 1, &["a"]),
            (
                "each outsider against the lightest",
                &["a", "b", "c"],
                &[("a", 30 * MIB), ("b", 0), ("c", MIB), ("d", 50 * MIB), ("e", 4 * MIB)],
                3,
                &["a", "d", "e"],
            ),
            ("n = 0", &["a"], &[("a", 1)], 0, &[]),
            ("empty", &["a"], &[], 3, &[]),
        ];
        for (what, previous, rows, n, want) in cases {
            let got = select(&set(previous), weights(rows), *n);
            assert_eq!(got, set(want), "{what}");
        }
    }

    #[test]
    fn other_counters_never_go_down() {
        let mut r: Rollup<&str> = Rollup::default();
        let f = |allocs: u64, frees: u64, live: u64| Figures {
            allocs,
            alloc_bytes: allocs,
            frees,
            live_bytes: live,
            unaccounted_live_bytes: 0,
        };
        let rows = |v: &[(&'static str, Figures)]| v.iter().copied().collect::<BTreeMap<_, _>>();
        r.update(rows(&[("a", f(100, 50, 50)), ("b", f(10, 5, 5))]), 1);
        assert_eq!(r.split().1.map(|o| (o.allocs, o.live_bytes)), Some((10, 5)));
        // b outgrows a by far and takes its place: other does not jump by a's 100 allocations,
        // it grows by what a allocated since (20).
        r.update(rows(&[("a", f(120, 70, 50)), ("b", f(10, 5, 10 << 20))]), 1);
        assert_eq!(r.selected, set(&["b"]));
        assert_eq!(r.split().1.map(|o| (o.allocs, o.live_bytes)), Some((30, 50)));
        // a expires: other's gauge drops, its counters stay.
        r.update(rows(&[("b", f(10, 5, 10 << 20))]), 1);
        assert_eq!(r.split().1.map(|o| (o.allocs, o.frees, o.live_bytes)), Some((30, 25, 0)));
        // The rest stays exported once it existed.
        assert!(r.split().1.is_some());
    }

    #[test]
    fn gone_owners_expire_once_nothing_of_theirs_lives() {
        let deleted_empty = pod("d1", Some("old-job"), true);
        let deleted_pinning = pod("d2", Some("old-web"), true);
        let removed =
            Owner::Cgroup { cgroup_id: 9, cgroup: Some("/x.service".into()), alive: false };
        let f = frame(&[
            (&deleted_empty, "dentry", row(10, 0)),
            (&deleted_empty, "filp", row(10, 0)),
            (&deleted_pinning, "dentry", row(10, 0)),
            (&deleted_pinning, "inode_cache", row(10, 3)),
            (&removed, "dentry", row(4, 0)),
        ]);
        assert!(expired(&deleted_empty, 0));
        assert!(!expired(&deleted_pinning, 300));
        assert!(!expired(&pod("a", None, false), 0));
        assert!(!expired(&Owner::Interrupt, 0));
        let (latest, exporter) = new_exporter(10);
        latest.publish(Arc::new(interval(1, f)));
        let text = exporter.openmetrics().unwrap();
        // All rows of the pod that still pins memory stay (its 0-byte row too); nothing else.
        assert_eq!(
            samples(&text, "slabtrace_pod_live_bytes"),
            [
                "slabtrace_pod_live_bytes{namespace=\"shop\",pod=\"old-web\",cache=\"dentry\"} 0",
                "slabtrace_pod_live_bytes{namespace=\"shop\",pod=\"old-web\",cache=\"inode_cache\"} 300",
            ]
        );
        assert_eq!(
            samples(&text, "slabtrace_pod_deleted"),
            ["slabtrace_pod_deleted{namespace=\"shop\",pod=\"old-web\",uid=\"d2\"} 1"]
        );
        assert!(samples(&text, "slabtrace_cgroup_").is_empty(), "{text}");
    }

    #[test]
    fn pods_with_the_same_name_are_one_series() {
        let old = pod("u-old", Some("web-0"), true);
        let new = pod("u-new", Some("web-0"), false);
        let f = frame(&[(&old, "dentry", row(10, 4)), (&new, "dentry", row(20, 6))]);
        let (latest, exporter) = new_exporter(10);
        latest.publish(Arc::new(interval(1, f)));
        let text = exporter.openmetrics().unwrap();
        assert_eq!(
            samples(&text, "slabtrace_pod_live_bytes"),
            ["slabtrace_pod_live_bytes{namespace=\"shop\",pod=\"web-0\",cache=\"dentry\"} 1000"]
        );
        assert_eq!(samples(&text, "slabtrace_pod_info").len(), 2);
    }

    /// Label values as the text format escapes them, undone: what a scraper reads back.
    fn unescape(v: &str) -> String {
        let mut out = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => panic!("a dangling backslash in {v:?}"),
                },
                (c, false) => {
                    assert!(c != '"' && c != '\n', "unescaped {c:?} in {v:?}");
                    out.push(c);
                }
            }
        }
        out
    }

    /// The value of `label` in a sample line, unescaped: the labels are read in order, as a
    /// scraper reads them, so a quote or a brace inside a value cannot mislead it.
    fn label_value(line: &str, label: &str) -> String {
        let mut rest = &line[line.find('{').unwrap() + 1..];
        loop {
            let (name, after) = rest.split_once("=\"").unwrap();
            let bytes = after.as_bytes();
            let mut end = 0;
            while bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            if name == label {
                return unescape(&after[..end]);
            }
            rest = after[end + 1..].strip_prefix(',').unwrap();
        }
    }

    proptest::proptest! {
        /// Any cgroup name comes back whole from the exposition, in one sample line.
        #[test]
        fn any_label_value_round_trips(name in proptest::prelude::any::<String>()) {
            let cg = Owner::Cgroup { cgroup_id: 7, cgroup: Some(name.clone()), alive: true };
            let f = frame(&[(&cg, "dentry", row(10, 4))]);
            let (latest, exporter) = new_exporter(10);
            latest.publish(Arc::new(interval(1, f)));
            let text = exporter.openmetrics().unwrap();
            let lines = samples(&text, "slabtrace_cgroup_live_bytes");
            proptest::prop_assert_eq!(lines.len(), 1, "{:?}", lines);
            proptest::prop_assert_eq!(label_value(&lines[0], "cgroup"), name);
            proptest::prop_assert!(lines[0].ends_with("} 400"), "{}", lines[0]);
        }
    }

    #[test]
    fn hostile_names_stay_inside_their_label() {
        // A tenant's pod name and cgroup path built to forge a series and to break the scrape.
        let evil_pod = "web\"} 1\nslabtrace_pod_live_bytes{pod=\"forged";
        let evil_cgroup = "/system.slice/x\\";
        let p = pod("u-1", Some(evil_pod), false);
        let cg = Owner::Cgroup { cgroup_id: 7, cgroup: Some(evil_cgroup.into()), alive: true };
        let f = frame(&[(&p, "dentry", row(10, 4)), (&cg, "dentry", row(10, 4))]);
        let (latest, exporter) = new_exporter(10);
        latest.publish(Arc::new(interval(1, f)));
        let openmetrics = exporter.openmetrics().unwrap();
        for text in [text_format(&openmetrics), openmetrics] {
            let pods = samples(&text, "slabtrace_pod_live_bytes");
            assert_eq!(pods.len(), 1, "{pods:?}");
            let cgroups = samples(&text, "slabtrace_cgroup_live_bytes");
            assert_eq!(cgroups.len(), 1, "{cgroups:?}");
            // Each line is one sample: `name{...} value`, the labels' values round-trip.
            assert_eq!(label_value(&pods[0], "pod"), evil_pod);
            assert!(pods[0].ends_with("} 400"), "{}", pods[0]);
            assert_eq!(label_value(&cgroups[0], "cgroup"), evil_cgroup);
            assert!(cgroups[0].ends_with("} 400"), "{}", cgroups[0]);
        }
    }

    #[test]
    fn the_selection_moves_once_per_interval() {
        let (a, b) = (pod("a", Some("a"), false), pod("b", Some("b"), false));
        let (latest, exporter) = new_exporter(1);
        latest.publish(Arc::new(interval(
            1,
            frame(&[(&a, "dentry", row(10, 10)), (&b, "dentry", row(5, 5))]),
        )));
        let first = exporter.openmetrics().unwrap();
        // Scraping the same interval again changes nothing, the other counters included.
        assert_eq!(exporter.openmetrics().unwrap(), first);
        assert_eq!(
            samples(&first, "slabtrace_pod_allocations_total{namespace=\"_other\""),
            [
                "slabtrace_pod_allocations_total{namespace=\"_other\",pod=\"other\",cache=\"other\"} 5"
            ]
        );
    }

    #[test]
    fn text_format_names_counters_with_total() {
        let om = "# HELP x_events Events.\n# TYPE x_events counter\nx_events_total{kind=\"a\"} 1\n\
                  # HELP x_bytes Bytes.\n# TYPE x_bytes gauge\n# UNIT x_bytes bytes\nx_bytes 3\n\
                  # HELP x_events_rate Not a counter.\n# TYPE x_events_rate gauge\nx_events_rate 2\n\
                  # EOF\n";
        assert_eq!(
            text_format(om),
            "# HELP x_events_total Events.\n# TYPE x_events_total counter\n\
             x_events_total{kind=\"a\"} 1\n# HELP x_bytes Bytes.\n# TYPE x_bytes gauge\nx_bytes 3\n\
             # HELP x_events_rate Not a counter.\n# TYPE x_events_rate gauge\nx_events_rate 2\n"
        );
        assert_eq!(text_format(""), "");
        assert_eq!(text_format("# EOF\n"), "");
    }
}
