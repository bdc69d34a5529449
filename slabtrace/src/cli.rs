//! The command line. Every flag's doc comment is its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default sample: track 1 in 16 object addresses. Chosen by measurement (see README,
/// "Overhead and accuracy"): it keeps the live-object map small on busy nodes while the error
/// bound stays within a few percent for caches with thousands of objects.
pub const DEFAULT_SAMPLE: u32 = 16;

/// Who allocated this node's kernel slab memory, and how much of it is still live.
///
/// slabtrace attaches BPF programs to the kernel's slab allocation tracepoints
/// (`kmem_cache_alloc/free`, kmalloc/kfree) and counts, per cgroup and per slab cache, the
/// objects allocated, the objects freed (credited to the cgroup that allocated them, whoever
/// frees them) and the objects still live. It needs root (or `CAP_BPF` and `CAP_PERFMON`) and a
/// kernel with BTF (/sys/kernel/btf/vmlinux).
///
/// Example: `sudo slabtrace report --duration 30` traces for 30 seconds and prints the cgroups
/// whose slab allocations are still live, largest first; `--format json` prints the same as a
/// `slabtrace.report.v1` document.
#[derive(Debug, Parser)]
#[command(name = "slabtrace", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr: `text` (`[time LEVEL target] message`) or `json`, one object per
    /// line with `ts`, `level`, `target` and `message`, for log pipelines that parse the
    /// container log (the event stream stays on stdout either way).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLABTRACE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `[time LEVEL target] message`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace for a while, then print who allocated slab memory and what is still live.
    ///
    /// Ctrl-C (SIGINT) or SIGTERM ends tracing early and still prints the report. Objects
    /// freed in RCU callbacks (dentries, inodes) are freed up to ~10 s after their unlink on
    /// kernels with lazy RCU, so trace at least that long past the workload you measure.
    Report(ReportArgs),
    /// Run until stopped, as a Kubernetes `DaemonSet` does: every interval, an NDJSON event stream on stdout,
    /// and Prometheus metrics, the current report and a health check over HTTP.
    ///
    /// Logs go to stderr (`RUST_LOG=debug` for more), so stdout carries only events: one JSON
    /// object per line, schema `slabtrace.event.v1` (published in schema/). SIGTERM or SIGINT
    /// ends the daemon: the last interval is flushed and it exits 0 within --shutdown-timeout.
    ///
    /// Example: `sudo slabtrace daemon --interval 10s | jq 'select(.type == "slab.sample")'`,
    /// and `curl -s localhost:9477/metrics`.
    Daemon(DaemonArgs),
    /// Kubelet reservations (`systemReserved`, `kubeReserved`, `evictionHard`) sized from the
    /// kernel memory no pod is charged for, each with its evidence and a ready
    /// `KubeletConfiguration` snippet.
    ///
    /// With `--from`, asks a running daemon (its advice covers everything it has seen: the
    /// peak since it started); otherwise traces for `--duration` and advises from that window,
    /// which only sees the peaks that happen in it.
    Advise(AdviseArgs),
    /// A live view like slabtop, per pod (or cgroup) and cache: live bytes, allocations and
    /// frees per second, growth. Keys change the order; `q` quits.
    Top(TopArgs),
}

/// Default address of the daemon's HTTP endpoints: loopback only, because /report names every
/// pod on the node. A `DaemonSet` that Prometheus scrapes sets `--listen 0.0.0.0:9477`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// `slabtrace daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// How often to read the maps and emit events and metrics (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_interval, env = "SLABTRACE_INTERVAL")]
    pub interval: std::time::Duration,
    /// Address for the HTTP endpoints: /metrics (Prometheus), /report (the current JSON
    /// report), /healthz (200 while the probes are attached and intervals are on time). `off`
    /// serves nothing.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT|off", env = "SLABTRACE_LISTEN")]
    pub listen: String,
    /// Where /report is served: `same` (on --listen, with the rest), `off`, or an address of
    /// its own (`127.0.0.1:9478`), where every endpoint is served and from which --listen no
    /// longer serves /report. /report names every pod, cgroup and OOM victim on the node: a
    /// `DaemonSet` that opens --listen to Prometheus keeps it on loopback this way (reach it
    /// with `kubectl port-forward`).
    #[arg(
        long,
        default_value = "same",
        value_name = "ADDR:PORT|same|off",
        env = "SLABTRACE_REPORT_LISTEN"
    )]
    pub report_listen: crate::output::http::ReportListen,
    /// Where the NDJSON event stream goes: `-` (standard output), a file path (appended to),
    /// `unix:PATH` (a listening unix stream socket, e.g. Vector's or Fluent Bit's socket
    /// source; reconnected when it goes away), or `off`.
    #[arg(long, default_value = "-", value_name = "TARGET", env = "SLABTRACE_EVENTS")]
    pub events: String,
    /// `slab.sample` events per interval: the pod × cache rows that changed most; the rest are
    /// summed into one sample with owner kind `other`. Also the `pod.charged` events per
    /// interval: the pods most charged.
    #[arg(long, default_value_t = 50, value_name = "N", env = "SLABTRACE_EVENTS_TOP")]
    pub events_top: usize,
    /// The event types written, comma-separated, or `all`: slab.sample, slab.growth,
    /// node.memory, node.charged, `node.dying_cgroups`, pod.charged, oom, pod.gone,
    /// cgroup.gone, self.stats. Samples are most of the volume and
    /// duplicate /metrics; `--event-types oom,slab.growth,pod.gone,cgroup.gone,self.stats`
    /// keeps what a log pipeline alerts on.
    #[arg(long, default_value = "all", value_name = "TYPES", env = "SLABTRACE_EVENT_TYPES")]
    pub event_types: crate::output::events::EventTypes,
    /// Event lines buffered for a slow consumer (and at most 2 MiB of them). When the buffer is
    /// full, new events are dropped and counted (`dropped_events` in `self.stats`); tracing
    /// never waits.
    #[arg(long, default_value_t = 4096, value_name = "LINES", env = "SLABTRACE_EVENT_BUFFER")]
    pub event_buffer: usize,
    /// Pod × cache series exported to Prometheus (most live bytes first; the rest are summed
    /// under `pod="other"`), which bounds the metrics' label cardinality.
    #[arg(long, default_value_t = 100, value_name = "N", env = "SLABTRACE_METRICS_TOP")]
    pub metrics_top: usize,
    /// Only caches whose name matches this regular expression (anchored) are exported by name
    /// in /metrics; the rest are summed under `cache="other"`. Fewer series, whole totals.
    #[arg(long, value_name = "REGEX", env = "SLABTRACE_METRICS_CACHE_INCLUDE")]
    pub metrics_cache_include: Option<String>,
    /// Caches whose name matches this regular expression (anchored) are summed under
    /// `cache="other"` in /metrics, e.g. `kmalloc-.*`.
    #[arg(long, value_name = "REGEX", env = "SLABTRACE_METRICS_CACHE_EXCLUDE")]
    pub metrics_cache_exclude: Option<String>,
    /// Also export the per-row counters (`slabtrace_{pod,cgroup,cache}_allocations_total`,
    /// `_allocated_bytes_total`, `_frees_total`) for `rate()` of churn: three series more per
    /// row, so off by default (the live-bytes gauges are what the dashboard and alerts use).
    #[arg(long, env = "SLABTRACE_METRICS_COUNTERS")]
    pub metrics_counters: bool,
    /// The window over which growth is judged: a pod's or cache's live slab that grew over it
    /// and did not come back is reported as problematic (`slab.growth` events). A verdict
    /// needs half a window of history.
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = parse_interval, env = "SLABTRACE_GROWTH_WINDOW")]
    pub growth_window: std::time::Duration,
    /// The margin the advice in `/report` adds to observed peaks, in percent.
    #[arg(long, default_value_t = 25, value_name = "PERCENT", env = "SLABTRACE_ADVICE_MARGIN")]
    pub advice_margin: u32,
    /// Growth smaller than this (MiB over the window) is never a finding.
    #[arg(long, default_value_t = 1, value_name = "MIB", env = "SLABTRACE_GROWTH_MIN_MIB")]
    pub growth_min_mib: u64,
    /// Keep the long view of slow growth in this file, so that a restart loses none of it:
    /// the node's Slab and `SUnreclaim` and each pod's charged slab, the lowest figure of each
    /// `--history-step`, over `--history-window`, judged at each step (`slab.slow_growth`
    /// events, `slow_growth` in /report). At most a few hundred KiB. `off`, or not given: the
    /// long view starts afresh with every start.
    #[arg(long, value_name = "PATH|off", env = "SLABTRACE_HISTORY_FILE")]
    pub history_file: Option<String>,
    /// What one point of the long view stands for.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_seconds, env = "SLABTRACE_HISTORY_STEP")]
    pub history_step: u64,
    /// How much history the long view keeps and judges. A verdict needs a quarter of it: at
    /// the default, growth of 200 MB a day is a finding within a day.
    #[arg(long, default_value = "2d", value_name = "DURATION", value_parser = parse_seconds, env = "SLABTRACE_HISTORY_WINDOW")]
    pub history_window: u64,
    /// Slow growth smaller than this (MiB over the long window) is never a finding.
    #[arg(long, default_value_t = 64, value_name = "MIB", env = "SLABTRACE_SLOW_GROWTH_MIN_MIB")]
    pub slow_growth_min_mib: u64,
    /// How long to wait on shutdown for the last interval to be written before exiting.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_interval, env = "SLABTRACE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: std::time::Duration,
    /// Create this file once the probes are attached.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Keep the live-object, counter and cache maps pinned in this directory on the BPF
    /// filesystem, so that a restarted or upgraded daemon picks up where this one stopped:
    /// objects allocated before the restart are still credited to their cgroups when freed.
    /// Maps pinned by an incompatible version (or another `--sample` or map size) are replaced,
    /// with a warning. One daemon per directory. `off` keeps no state across restarts. When not
    /// given: /sys/fs/bpf/slabtrace if a BPF filesystem is mounted at /sys/fs/bpf, else no
    /// pinning (with a warning). To free the maps for good: stop the daemon and `rm -r` the
    /// directory.
    #[arg(long, value_name = "DIR|off", env = "SLABTRACE_PIN_PATH")]
    pub pin_path: Option<String>,
    /// Tracing, roots and names.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Default directory of the daemon's pinned maps.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/slabtrace";

/// `slabtrace advise`.
#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// A running daemon's address (`127.0.0.1:9477` or `http://127.0.0.1:9477`): use the
    /// advice it has built from its whole history.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Without `--from`: how long to trace (`60`, `60s`, `10m`), sampling the node every second.
    #[arg(long, short, default_value_t = 60, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: u64,
    /// Without `--from`: the margin added to observed peaks, in percent.
    #[arg(long, default_value_t = 25, value_name = "PERCENT")]
    pub margin: u32,
    /// Text with the snippet, or the advice as JSON.
    #[arg(long, short, visible_alias = "output", visible_short_alias = 'o', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Tracing, roots and names.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `slabtrace top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often the view refreshes (`2s`, `500ms`).
    #[arg(long, short = 'd', default_value = "2s", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// A running daemon's /report address (`127.0.0.1:9478`): show what it counts, asked every
    /// `--interval`, instead of loading a second set of probes (it needs no privilege then).
    /// Rates come from the difference between two of its reports, so they start at the second.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// The order of the rows at start: live bytes, allocations or frees per second, growth,
    /// owner name or cache. The keys `l`, `a`, `f`, `g`, `n` and `c` change it while it runs.
    #[arg(long, value_enum, default_value_t = crate::output::top::Sort::Live)]
    pub sort: crate::output::top::Sort,
    /// Create this file once the probes are attached.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Tracing, roots and names.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `slabtrace report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A running daemon's /report address (`127.0.0.1:9478`, `http://…`): show what it has
    /// counted since it started, with its growth findings and OOM kills, instead of loading
    /// a second set of probes. In the `DaemonSet`'s pod, which serves /report on its loopback:
    /// `kubectl exec -n slabtrace <pod> -- slabtrace report --from 127.0.0.1:9478` (the port of
    /// --report-listen, or of --listen where /report is served with the rest).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["duration", "ready_file", "floor"])]
    pub from: Option<String>,
    /// How long to trace before reporting: seconds (`30`) or with a unit (`30s`, `5m`).
    #[arg(long, short, default_value_t = 10, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: u64,
    /// Output format: a slabtop-like table, or a JSON document (schema slabtrace.report.v1).
    #[arg(long, short, visible_alias = "output", visible_short_alias = 'o', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Table view: how many rows (cgroups, pods or containers) to show (JSON always has all).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Table view: one row per cgroup, per Kubernetes pod (its containers rolled up, from the
    /// kubelet's cgroup layouts), or per container. The JSON report always has `cgroups[]` and
    /// `pods[]`.
    #[arg(long, value_enum, default_value_t = By::Cgroup)]
    pub by: By,
    /// Table view: the order of the rows, largest first: live bytes, bytes allocated,
    /// objects allocated, frees, or live bytes charged to no memory cgroup.
    #[arg(long, value_enum, default_value_t = Sort::Live)]
    pub sort: Sort,
    /// Only the pods of this namespace (and their cgroups), in the table and the JSON.
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this pod, by name or uid (and its cgroups), in the table and the JSON.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Only this cache (as /proc/slabinfo names it, e.g. `dentry`), everywhere: each row's
    /// figures are then its figures for that cache.
    #[arg(long, value_name = "CACHE")]
    pub cache: Option<String>,
    /// Create this file once the probes are attached, so a script can start its workload.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Attach empty programs instead of slabtrace's (the overhead floor; `cargo xtask bench`).
    #[arg(long, hide = true)]
    pub floor: bool,
    /// Tracing, roots and names.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What every tracing command takes: the BPF side's settings, where the kernel's files are,
/// and where pod names come from.
#[derive(Debug, Args, Clone)]
pub struct SessionArgs {
    /// Tracing settings.
    #[command(flatten)]
    pub tracer: TracerArgs,
    /// Where the kernel's files are.
    #[command(flatten)]
    pub roots: Roots,
    /// Pod and container names.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl SessionArgs {
    /// The session's options (plain structs, no clap), with the programs of `set`.
    #[must_use]
    pub fn options(&self, set: crate::probe::ProbeSet) -> crate::session::SessionOptions {
        crate::session::SessionOptions {
            roots: self.roots.options(),
            tracer: self.tracer.options(),
            runtime: self.runtime.options(),
            set,
            pin_path: None,
        }
    }
}

/// Settings of the BPF side.
#[derive(Debug, Args, Clone)]
pub struct TracerArgs {
    /// Track 1 in N object addresses from allocation to free, to credit frees to the
    /// allocating cgroup. A power of two; 1 tracks every object (exact, most memory). Frees
    /// and live figures are then estimates, each shown with its error bound.
    #[arg(long, default_value_t = DEFAULT_SAMPLE, value_name = "N", value_parser = parse_sample, env = "SLABTRACE_SAMPLE")]
    pub sample: u32,
    /// Capacity of the live-object table: tracked objects at most, 32 bytes each (rounded down
    /// to a power of two, at least 16). When both 8-slot sets an address may go in are full, a
    /// tracked object is pushed out: counted as evicted for its cgroup, no longer as live.
    #[arg(long, default_value_t = 262_144, value_name = "ENTRIES", env = "SLABTRACE_MAX_LIVE")]
    pub max_live: u32,
    /// Also count allocations per kernel call site (`ext4_alloc_inode+0x1d`), shown as the top
    /// call sites of every cgroup's and pod's caches. Costs about one more per-CPU hash update
    /// per allocation (see README, "Overhead"); off by default.
    #[arg(long, env = "SLABTRACE_CALL_SITES")]
    pub call_sites: bool,
    /// Capacity of the (cgroup, cache) counters map. New keys beyond it are dropped and
    /// counted.
    #[arg(long, default_value_t = 16_384, value_name = "ENTRIES", env = "SLABTRACE_MAX_KEYS")]
    pub max_keys: u32,
    /// The program type of the kmem tracepoint programs: BTF tracepoints where the kernel
    /// accepts them, else raw tracepoints (auto); or one of them, to compare their costs
    /// (`cargo xtask bench`).
    #[arg(long, value_enum, default_value_t, hide = true)]
    pub tracepoint_programs: crate::probe::TracepointPrograms,
    /// Leave one part of the BPF side out, to measure what it costs (`cargo xtask bench
    /// --ablation`); repeatable. Not for production: what is left out is not reported.
    #[arg(long, value_enum, value_name = "PART", hide = true)]
    pub bench_without: Vec<BenchPart>,
}

/// A part of the BPF side the bench can leave out (`--bench-without`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPart {
    /// Tracking sampled objects from allocation to free: no frees credited, nothing live.
    Live,
    /// The interrupt-context test of allocations: all charged to the interrupted task.
    Interrupts,
    /// `kmem_cache_free`'s second program, for frees nested in a run of the first.
    FreeBackup,
    /// The OOM programs.
    Oom,
    /// The shrinker programs.
    Shrinkers,
    /// The per-event statistics (`alloc_events`, `free_events`).
    Stats,
    /// Exact allocation counts: only a random 1 in `--sample` allocations (and those of sampled
    /// addresses) is counted, the rest return at once.
    ExactCounts,
    /// The per-CPU cache of the current task's cgroup id: the helper on every allocation.
    CgroupCache,
}

impl TracerArgs {
    /// The session's BPF-side options.
    #[must_use]
    pub fn options(&self) -> crate::session::TracerOptions {
        let mut ablation = crate::session::Ablation::default();
        for part in &self.bench_without {
            match part {
                BenchPart::Live => ablation.live = false,
                BenchPart::Interrupts => ablation.interrupts = false,
                BenchPart::Stats => ablation.stats = false,
                BenchPart::ExactCounts => ablation.exact_counts = false,
                BenchPart::CgroupCache => ablation.cgroup_cache = false,
                BenchPart::FreeBackup => ablation.parts.nested_free = false,
                BenchPart::Oom => ablation.parts.oom = false,
                BenchPart::Shrinkers => ablation.parts.shrinkers = false,
            }
        }
        crate::session::TracerOptions {
            sample: self.sample,
            max_live: self.max_live,
            max_keys: self.max_keys,
            call_sites: self.call_sites,
            tracepoint_programs: self.tracepoint_programs,
            ablation,
        }
    }
}

/// Filesystem roots, configurable for containers that mount the host's elsewhere.
#[derive(Debug, Args, Clone)]
pub struct Roots {
    /// The kernel's BTF.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux", value_name = "PATH")]
    pub btf: PathBuf,
    /// procfs (slabinfo, meminfo, mountinfo).
    #[arg(long, default_value = "/proc", value_name = "PATH")]
    pub proc_root: PathBuf,
    /// sysfs (the slab merge aliases under kernel/slab).
    #[arg(long, default_value = "/sys", value_name = "PATH")]
    pub sys_root: PathBuf,
    /// The cgroup2 mount; found from /proc/self/mountinfo when not given.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// The memory controller's hierarchy, whose books give each pod's charged kernel memory:
    /// cgroup2 when it has `cgroup.controllers`, else a cgroup v1 `memory` mount. Found from
    /// /proc/self/mountinfo when not given (v1 `memory` on hybrid nodes, else cgroup2).
    #[arg(long, value_name = "PATH")]
    pub memcg_root: Option<PathBuf>,
}

/// Where pod and container names come from.
#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// The container runtime's CRI socket, for pod and container names. When not given,
    /// slabtrace tries containerd's, CRI-O's, cri-dockerd's, k3s/RKE2's and `MicroK8s`'s usual
    /// sockets; with none, pods are known by their uid only.
    #[arg(long, value_name = "PATH", env = "SLABTRACE_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,
    /// How long the names of a pod the runtime no longer lists (deleted, its objects still
    /// live) are kept. At most 10,000 pods' names are kept.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = parse_seconds, env = "SLABTRACE_GONE_POD_TTL")]
    pub gone_pod_ttl: u64,
}

impl RuntimeArgs {
    /// The session's runtime options.
    #[must_use]
    pub fn options(&self) -> crate::session::RuntimeOptions {
        crate::session::RuntimeOptions {
            cri_socket: self.cri_socket.clone(),
            gone_pod_ttl: std::time::Duration::from_secs(self.gone_pod_ttl),
        }
    }
}

impl Roots {
    /// The session's roots.
    #[must_use]
    pub fn options(&self) -> crate::session::Roots {
        crate::session::Roots {
            btf: self.btf.clone(),
            proc_root: self.proc_root.clone(),
            sys_root: self.sys_root.clone(),
            cgroup_root: self.cgroup_root.clone(),
            memcg_root: self.memcg_root.clone(),
        }
    }
}

pub use crate::output::table::{By, Sort};

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// One JSON document, schema slabtrace.report.v1.
    Json,
}

/// The longest duration any flag takes, in seconds: a year. Longer ones would overflow the
/// clock arithmetic (`Instant + Duration` panics past the platform's range) for nothing.
const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// A duration as every flag that takes one reads it: a bare number of seconds (`30`) or
/// humantime's words (`30s`, `1m30s`, `500ms`), at most a year.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| format!("{s} seconds is too long: at most a year"))?;
        std::time::Duration::from_secs(n)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{s}: {e} (say e.g. 30, 10s or 1m)"))?
    };
    if d > std::time::Duration::from_secs(MAX_SECONDS) {
        return Err(format!("{s} is too long: at most a year (366d)"));
    }
    Ok(d)
}

/// A duration of at least 100 ms (see [`parse_duration`]).
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s} is too short: at least 100ms"));
    }
    Ok(d)
}

/// Whole seconds (see [`parse_duration`]: `30`, `30s` and `1m` all work, as in the other
/// commands' duration flags).
fn parse_seconds(s: &str) -> Result<u64, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s} is not a whole number of seconds"));
    }
    Ok(d.as_secs())
}

fn parse_sample(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("{s} is not a whole number"))?;
    if n == 0 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two (1, 2, 4, 8, 16, …)"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn output_is_an_alias_of_format_as_in_kubectl() {
        for args in [
            ["slabtrace", "report", "-o", "json"],
            ["slabtrace", "report", "--output", "json"],
            ["slabtrace", "report", "-f", "json"],
        ] {
            let Command::Report(report) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not report");
            };
            assert!(matches!(report.format, Format::Json), "{args:?}");
        }
    }

    #[test]
    fn top_starts_in_the_order_asked_for() {
        use crate::output::top::Sort;
        let order = |args: &[&str]| {
            let Command::Top(top) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not top");
            };
            top.sort
        };
        assert_eq!(order(&["slabtrace", "top"]), Sort::Live);
        assert_eq!(order(&["slabtrace", "top", "--sort", "growth"]), Sort::Growth);
        assert!(Cli::try_parse_from(["slabtrace", "top", "--sort", "size"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sample_must_be_a_power_of_two() {
        assert_eq!(parse_sample("16"), Ok(16));
        assert_eq!(parse_sample("1"), Ok(1));
        assert!(parse_sample("12").unwrap_err().contains("power of two"));
        assert!(parse_sample("0").is_err());
        assert!(parse_sample("x").is_err());
    }

    #[test]
    fn report_defaults() {
        let cli = Cli::parse_from(["slabtrace", "report"]);
        let Command::Report(args) = cli.command else { panic!("not report") };
        assert_eq!(args.duration, 10);
        assert_eq!(args.format, Format::Table);
        assert_eq!(args.session.tracer.sample, DEFAULT_SAMPLE);
    }

    #[test]
    fn daemon_defaults_are_safe() {
        let cli = Cli::parse_from(["slabtrace", "daemon"]);
        let Command::Daemon(args) = cli.command else { panic!("not daemon") };
        assert_eq!(args.interval, std::time::Duration::from_secs(10));
        assert_eq!(args.listen, "127.0.0.1:9477");
        assert_eq!(args.events, "-");
        // The long view: kept in memory only unless a file is given; 10-minute steps, 2 days.
        assert_eq!(
            (args.history_file, args.history_step, args.history_window),
            (None, 600, 172_800)
        );
        assert_eq!(args.slow_growth_min_mib, 64);
    }

    #[test]
    fn intervals_are_durations() {
        assert_eq!(parse_interval("1m"), Ok(std::time::Duration::from_mins(1)));
        assert_eq!(parse_interval("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_interval("366d"), Ok(std::time::Duration::from_secs(MAX_SECONDS)));
        assert!(parse_interval("367d").unwrap_err().contains("too long"));
        assert!(parse_interval("500000000000y").is_err());
        assert_eq!(parse_seconds("31622400"), Ok(MAX_SECONDS));
        assert!(parse_seconds("18446744073709551615").unwrap_err().contains("too long"));
        // One reading of durations everywhere: `report --duration 30s` and `top -d 1` work.
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("1m"), Ok(60));
        assert_eq!(parse_seconds("30"), Ok(30));
        assert!(parse_seconds("1500ms").unwrap_err().contains("whole number"));
        assert_eq!(parse_interval("1"), Ok(std::time::Duration::from_secs(1)));
        assert_eq!(parse_interval("2s"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_interval("10ms").unwrap_err().contains("too short"));
        assert!(parse_interval("soon").is_err());
    }
}
