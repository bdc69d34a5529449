//! `cargo xtask bench`: what slabtrace costs per traced slab event.
//!
//! One slab-heavy workload (`slab-workload churn`, then `stat-missing`, on a private tmpfs)
//! runs in three modes: with no tracer; with empty BPF programs on slabtrace's four kmem
//! tracepoints (`slabtrace report --floor`, the cost of the tracepoints firing into BPF at all,
//! which no BPF tracer can beat); and with slabtrace itself. `--without PART` adds one mode per
//! part of slabtrace left out (`slabtrace-without-PART`), to see what each part costs. The
//! modes are interleaved (none, floor, slabtrace, none, …) so a drift of the machine spreads
//! over every mode instead of biasing one, and every figure is a median over repetitions,
//! because one slow run in a few is normal on a small VM. A mode's wall-time difference to no
//! tracer, divided by the events slabtrace counted, is its overhead per event.
//!
//! Then one more run of every tracer mode with the kernel's own per-program accounting on
//! (`kernel.bpf_stats_enabled`, restored afterwards): the run time and run count of each BPF
//! program the run's slabtrace holds, from the moment it is ready to the workload's end. These
//! runs stay out of the medians, because the accounting's timestamps cost time themselves.
//! The bench measures and reports; it asserts nothing about speed.

use std::{
    collections::BTreeMap,
    fmt,
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use clap::builder::PossibleValue;
use serde_json::{Value, json};

use crate::{cmd, setup};

/// How long slabtrace may take to load and attach its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A mode whose runs spread (max − min) by more than this fraction of its median is flagged.
const NOISY_SPREAD: f64 = 0.2;
/// Settings slabtrace reads from the environment: unset for the tracer, so the bench measures
/// slabtrace's defaults and not whatever the calling shell exports.
const TRACER_ENV: [&str; 4] =
    ["SLABTRACE_SAMPLE", "SLABTRACE_MAX_LIVE", "SLABTRACE_MAX_KEYS", "SLABTRACE_CALL_SITES"];
/// The kernel's switch for per-program run time and run count (Linux 5.1+): 1 while the bench's
/// kernel-stats runs run, then what it was before.
const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// A part of slabtrace that an ablation mode leaves out, through slabtrace's hidden
/// `--bench-without PART`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// The name `--without` and slabtrace's `--bench-without` take.
    name: &'static str,
    /// What slabtrace does without it.
    without: &'static str,
}

/// Every part `--without` can leave out, in the order their modes run.
const PARTS: [Part; 8] = [
    Part { name: "live", without: "no live-object tracking (no frees credited)" },
    Part { name: "interrupts", without: "no interrupt-context test" },
    Part {
        name: "free-backup",
        without: "no second program on kmem_cache_free for frees nested in the first",
    },
    Part { name: "oom", without: "no OOM programs" },
    Part { name: "shrinkers", without: "no shrinker programs" },
    Part { name: "stats", without: "no per-event statistics bumps" },
    Part {
        name: "cgroup-cache",
        without: "the cgroup id from the helper on every allocation, not a per-CPU cache",
    },
    Part {
        name: "exact-counts",
        without: "allocations counted 1 in --sample at random (plus sampled addresses)",
    },
];

impl clap::ValueEnum for Part {
    fn value_variants<'a>() -> &'a [Self] {
        &PARTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name).help(self.without))
    }
}

/// `cargo xtask bench`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
After the timed runs, every tracer mode runs once more with the kernel's own per-program \
accounting on (kernel.bpf_stats_enabled=1, set back afterwards, also on an error or Ctrl-C). \
For each BPF program that run's slabtrace holds, it prints runs, ns per run, total time and \
recursion misses (runs the kernel skipped because the program was already running on that \
CPU), and the BPF time per traced event: what slabtrace's programs themselves cost, apart from \
the kernel's work to reach them, and without the wall clock's noise. The accounting's clock \
reads slow those runs down, so they stay out of the medians. It costs one more workload run \
per tracer mode; where the sysctl cannot be set, the bench says so and goes on.")]
pub struct BenchArgs {
    /// Repetitions of each mode; the modes are interleaved (none, floor, slabtrace, then the
    /// `--without` modes, none, …).
    #[arg(long, default_value_t = 5, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Operations per run: N files created and unlinked, then N missing names stat'ed.
    #[arg(long, default_value_t = 200_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: u64,
    /// slabtrace's `--sample` for the slabtrace runs (default: slabtrace's own default).
    #[arg(long, value_name = "N", value_parser = parse_sample)]
    pub sample: Option<u32>,
    /// Run slabtrace with `--call-sites` (to measure what counting call sites costs).
    #[arg(long)]
    pub call_sites: bool,
    /// The kmem programs' type for the floor and slabtrace runs: `btf` (BTF tracepoints),
    /// `raw` (raw tracepoints, what Linux 6.1 to 6.12 get) or `auto`, to compare their costs.
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    pub tracepoint_programs: String,
    /// Also measure slabtrace with PART left out (repeatable): one more interleaved mode,
    /// `slabtrace-without-PART`, which runs slabtrace with its hidden `--bench-without PART`.
    /// The summary prints what the part costs: slabtrace's overhead per event minus the
    /// mode's, from the wall-clock medians and from the kernel's own BPF run time. An ablated
    /// slabtrace's reports are incomplete by design: this is for the bench only. Each part
    /// adds one workload run per rep, about a third more time than the three base modes take,
    /// and one kernel-stats run.
    #[arg(long, value_enum, value_name = "PART")]
    pub without: Vec<Part>,
    /// `--without` every part, to see where slabtrace's time per event goes: eight more modes,
    /// so the bench takes about three times as long.
    #[arg(long, conflicts_with = "without")]
    pub ablation: bool,
    /// Also write the summary as JSON (schema `slabtrace.bench.v1`) to this file, to compare
    /// runs later.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Instead of the per-event overhead, measure the daemon's userspace at scale: a cgroup
    /// tree of --cgroups pods (kubelet's systemd layout) whose counters hold --caches keys
    /// each, and the daemon's CPU and memory over --intervals intervals of 10 s with
    /// Prometheus scraping once an interval (about half a minute more than the intervals).
    /// Needs a machine that is not a Kubernetes node: it makes its own kubepods.slice.
    #[arg(long, conflicts_with_all = ["without", "ablation", "json"])]
    pub scale: bool,
    /// Pods for --scale.
    #[arg(long, default_value_t = 1000, value_name = "N", requires = "scale")]
    pub cgroups: u32,
    /// Caches per pod for --scale.
    #[arg(long, default_value_t = 200, value_name = "N", requires = "scale")]
    pub caches: u32,
    /// Intervals measured for --scale, after two of warm-up.
    #[arg(long, default_value_t = 6, value_name = "N", requires = "scale")]
    pub intervals: u32,
}

impl BenchArgs {
    /// The parts left out, each once, in [`PARTS`] order.
    fn parts(&self) -> Vec<Part> {
        PARTS.into_iter().filter(|p| self.ablation || self.without.contains(p)).collect()
    }
}

/// Builds slabtrace and the workload (release) with the toolchain they need; their directory.
pub(crate) fn build_release() -> Result<std::path::PathBuf> {
    setup::ensure_toolchain()?;
    cmd("cargo", &["build", "--release", "--package", "slabtrace"])?;
    cmd(
        "cargo",
        &["build", "--release", "--package", "slabtrace-integration", "--bin", "slab-workload"],
    )?;
    Ok(setup::workspace_root()?.join("target/release"))
}

/// Builds slabtrace and the workload, runs every mode `reps` times, then every tracer mode once
/// more with the kernel's per-program accounting, and prints the report.
pub fn run(args: &BenchArgs) -> Result<()> {
    // is_root reads the effective uid, which is what loading BPF programs and mounting need.
    if !setup::is_root() {
        bail!(
            "the bench loads BPF programs and mounts a tmpfs: run it as root, `sudo -E cargo xtask bench`"
        );
    }
    let release = build_release()?;
    catch_ctrl_c();
    let bench = Bench {
        slabtrace: release.join("slabtrace"),
        workload: release.join("slab-workload"),
        scratch: Scratch::new()?,
        ops: args.ops,
        sample: args.sample,
        call_sites: args.call_sites,
        tracepoint_programs: args.tracepoint_programs.clone(),
        clock_ticks: clock_ticks_per_second()?,
    };
    let modes = Mode::all(&args.parts());
    let width = name_width(&modes);

    // One untimed run first: the first run after a build pays for cold page cache and a cold
    // dcache hash, which would count against whichever mode happens to go first.
    eprintln!("xtask: bench: warm-up run");
    bench.workload()?;
    let mut runs = Vec::new();
    for rep in 0..args.reps {
        for &mode in &modes {
            let run = bench.run(rep, mode, false).map_err(interrupted_or)?;
            eprintln!(
                "xtask: bench: rep {}/{} {mode:<width$} {:>8.1} ms",
                rep + 1,
                args.reps,
                run.wall_ms
            );
            runs.push(run);
        }
    }
    let kernel = kernel_stats_runs(&bench, &modes)?.map(|runs| KernelFigures::of(&runs));
    let kernel = kernel.as_deref();

    let summary = Summary::of(&runs)?;
    let host = Host::read(bench.clock_ticks);
    print_runs(&runs);
    print_summary(&summary, &host, args);
    match kernel {
        Ok(kernel) => print_kernel(kernel),
        Err(why) => println!(
            "\nThe kernel's per-program BPF run times are not measured: cannot turn on kernel.bpf_stats_enabled ({why})."
        ),
    }
    print_part_costs(&summary, kernel.ok());
    if let Some(path) = &args.json {
        let doc = summary_json(&summary, kernel.ok(), &runs, &host, args);
        let doc = serde_json::to_string_pretty(&doc)?;
        fs::write(path, doc + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nSummary written to {}.", path.display());
    }
    Ok(())
}

/// What runs beside the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No tracer: the baseline.
    None,
    /// slabtrace's loader with empty programs on the same tracepoints.
    Floor,
    /// slabtrace as users run it.
    Slabtrace,
    /// slabtrace with one part left out (`--bench-without`).
    Without(Part),
}

impl Mode {
    /// The modes every bench runs, in the order they run and [`Summary::wall`] holds them.
    const BASE: [Self; 3] = [Self::None, Self::Floor, Self::Slabtrace];

    /// Every mode a rep runs, in order: the base modes, then one per part left out.
    fn all(parts: &[Part]) -> Vec<Self> {
        Self::BASE.into_iter().chain(parts.iter().copied().map(Self::Without)).collect()
    }

    /// Whether slabtrace's own programs run (so it counts events and takes its settings).
    fn traces(self) -> bool {
        matches!(self, Self::Slabtrace | Self::Without(_))
    }
}

impl fmt::Display for Mode {
    /// Pads like a string, so `{mode:<9}` lines up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.pad("none"),
            Self::Floor => f.pad("floor"),
            Self::Slabtrace => f.pad("slabtrace"),
            Self::Without(part) => f.pad(&format!("slabtrace-without-{}", part.name)),
        }
    }
}

/// The width of the longest mode name, for the tables' first column.
fn name_width(modes: &[Mode]) -> usize {
    modes.iter().map(|m| m.to_string().len()).max().unwrap_or(0)
}

/// One timed workload run.
#[derive(Clone, Debug)]
struct Run {
    rep: u32,
    mode: Mode,
    wall_ms: f64,
    /// What the tracer cost and saw; `None` in the `none` mode.
    tracer: Option<TracerRun>,
}

/// A tracer's cost and view of one run.
#[derive(Clone, Debug, Default, PartialEq)]
struct TracerRun {
    /// utime + stime from its start until just before SIGINT, loading and attaching included.
    cpu_ms: f64,
    /// The part of `cpu_ms` spent while the workload ran.
    workload_cpu_ms: f64,
    /// `VmHWM` just before SIGINT.
    peak_rss_kib: u64,
    /// `self.alloc_events + self.free_events` (0 for the floor, whose programs count nothing).
    events: u64,
    /// `self.lost_events`.
    lost_events: u64,
    /// `self.map_bytes`.
    map_bytes: u64,
    /// `self.sample_rate`.
    sample_rate: u64,
    /// What each of its BPF programs did while the workload ran, by the kernel's accounting;
    /// only in the kernel-stats runs.
    programs: Option<Vec<ProgramDelta>>,
}

/// The binaries, the workload's directory and the settings shared by every run.
struct Bench {
    slabtrace: PathBuf,
    workload: PathBuf,
    scratch: Scratch,
    ops: u64,
    sample: Option<u32>,
    call_sites: bool,
    tracepoint_programs: String,
    clock_ticks: f64,
}

impl Bench {
    /// Runs the workload once in `mode`; with `programs`, also diffs the kernel's counters of
    /// the tracer's BPF programs over the workload (which needs `kernel.bpf_stats_enabled`).
    fn run(&self, rep: u32, mode: Mode, programs: bool) -> Result<Run> {
        if mode == Mode::None {
            let wall = self.workload()?;
            return Ok(Run { rep, mode, wall_ms: ms(wall), tracer: None });
        }
        let args = tracer_args(mode, self.sample, self.call_sites, &self.tracepoint_programs)?;
        let tracer = Tracer::start(&self.slabtrace, &args, &self.scratch.base)?;
        let cpu_ready = tracer.cpu_ticks()?;
        let before = programs.then(|| bpf_programs(tracer.pid)).transpose()?;
        let wall = self.workload()?;
        let after = programs.then(|| bpf_programs(tracer.pid)).transpose()?;
        // Read before SIGINT: building the report afterwards costs CPU that is not tracing.
        let cpu_done = tracer.cpu_ticks()?;
        let peak_rss_kib = tracer.peak_rss_kib()?;
        let report = tracer.stop()?;
        let me = report.get("self").context("slabtrace's JSON report has no `self` object")?;
        let field = |name: &str| {
            me.get(name)
                .and_then(Value::as_u64)
                .with_context(|| format!("slabtrace's JSON report has no number self.{name}"))
        };
        let tracer = TracerRun {
            cpu_ms: cpu_done as f64 * 1e3 / self.clock_ticks,
            workload_cpu_ms: cpu_done.saturating_sub(cpu_ready) as f64 * 1e3 / self.clock_ticks,
            peak_rss_kib,
            events: field("alloc_events")? + field("free_events")?,
            lost_events: field("lost_events")?,
            map_bytes: field("map_bytes")?,
            sample_rate: field("sample_rate")?,
            programs: before.zip(after).map(|(before, after)| diff_programs(&before, &after)),
        };
        Ok(Run { rep, mode, wall_ms: ms(wall), tracer: Some(tracer) })
    }

    /// Runs `churn` then `stat-missing` in the current cgroup; times both together.
    fn workload(&self) -> Result<Duration> {
        let ops = self.ops.to_string();
        let start = Instant::now();
        for step in ["churn", "stat-missing"] {
            let status = Command::new(&self.workload)
                .arg(step)
                .arg(&self.scratch.mnt)
                .arg(&ops)
                .status()
                .with_context(|| format!("cannot run {}", self.workload.display()))?;
            ensure!(status.success(), "`slab-workload {step}` failed ({status})");
        }
        Ok(start.elapsed())
    }
}

/// slabtrace's arguments for `mode`, after `report --format json --duration 600 --ready-file F`:
/// the floor takes only the program type; every slabtrace mode takes the bench's settings, and
/// an ablated one the part to leave out.
fn tracer_args(
    mode: Mode,
    sample: Option<u32>,
    call_sites: bool,
    tracepoint_programs: &str,
) -> Result<Vec<String>> {
    let mut args = Vec::new();
    match mode {
        Mode::None => bail!("the `none` mode runs no tracer"),
        Mode::Floor => args.push("--floor".to_owned()),
        Mode::Slabtrace => {}
        Mode::Without(part) => args.extend(["--bench-without".to_owned(), part.name.to_owned()]),
    }
    if mode.traces() {
        if let Some(n) = sample {
            args.extend(["--sample".to_owned(), n.to_string()]);
        }
        if call_sites {
            args.push("--call-sites".to_owned());
        }
    }
    args.extend(["--tracepoint-programs".to_owned(), tracepoint_programs.to_owned()]);
    Ok(args)
}

/// A running `slabtrace report`; killed on drop unless stopped, so an error mid-run leaves no
/// programs attached.
struct Tracer {
    child: Option<Child>,
    pid: u32,
    ready: PathBuf,
    log: PathBuf,
}

impl Tracer {
    /// Starts `slabtrace report` with `args` (from [`tracer_args`]) and waits until its
    /// programs are attached.
    fn start(bin: &Path, args: &[String], dir: &Path) -> Result<Self> {
        let ready = dir.join("ready");
        let log = dir.join("slabtrace.log");
        remove_if_present(&ready)?;
        let mut command = Command::new(bin);
        command
            .args(["report", "--format", "json", "--duration", "600", "--ready-file"])
            .arg(&ready)
            .args(args);
        for var in TRACER_ENV {
            command.env_remove(var);
        }
        // Its logs go to a file: shown only if it fails, and a pipe nobody reads could fill.
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut tracer = Self { pid: child.id(), child: Some(child), ready, log };
        tracer.wait_ready()?;
        Ok(tracer)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.ready.exists() {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                bail!(
                    "slabtrace exited ({status}) before attaching its programs:\n{}",
                    self.log_tail()
                );
            }
            ensure!(!interrupted(), "interrupted");
            ensure!(
                Instant::now() < deadline,
                "slabtrace did not attach its programs within {}s:\n{}",
                READY_TIMEOUT.as_secs(),
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Its utime + stime so far, in clock ticks, all threads together.
    fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_cpu_ticks(&stat).with_context(|| format!("cannot parse utime and stime in {path}"))
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_vm_hwm_kib(&status).with_context(|| format!("no VmHWM in {path}"))
    }

    /// SIGINT, then its JSON report.
    fn stop(mut self) -> Result<Value> {
        let Some(mut child) = self.child.take() else { bail!("slabtrace was already stopped") };
        let pid = libc::pid_t::try_from(self.pid)?;
        // SAFETY: `pid` is our child and has not been waited for, so it cannot be reused yet.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            let e = io::Error::last_os_error();
            let _ = child.kill();
            let _ = child.wait();
            bail!("cannot send SIGINT to slabtrace: {e}");
        }
        let out = child.wait_with_output().context("cannot wait for slabtrace")?;
        ensure!(out.status.success(), "slabtrace failed ({}):\n{}", out.status, self.log_tail());
        serde_json::from_slice(&out.stdout).context("slabtrace's report is not JSON")
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// The last ten lines of a log file, for error messages (empty if unreadable).
pub(crate) fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error cut the run short: no report is wanted, and its programs detach when it
            // exits.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The bench's temp directory, with a fresh tmpfs mounted in it for the workload (so the
/// workload's dentries and inodes are the same on every machine, whatever /tmp is) and the
/// tracer's ready file and log beside it. Unmounted and removed on drop, errors included.
struct Scratch {
    base: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn new() -> Result<Self> {
        let base = std::env::temp_dir().join(format!("slabtrace-bench.{}", std::process::id()));
        fs::create_dir(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let mut scratch = Self { mnt: base.join("fs"), base, mounted: false };
        fs::create_dir(&scratch.mnt)
            .with_context(|| format!("cannot create {}", scratch.mnt.display()))?;
        let mnt = scratch.mnt.to_str().context("the temp directory's path is not UTF-8")?;
        cmd("mount", &["-t", "tmpfs", "-o", "size=64m,mode=0700", "slabtrace-bench", mnt])?;
        scratch.mounted = true;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let unmounted =
                Command::new("umount").arg(&self.mnt).status().is_ok_and(|s| s.success());
            if !unmounted {
                // Removing the tree now would reach into the still-mounted tmpfs.
                eprintln!(
                    "xtask: bench: cannot unmount {}: unmount and remove it by hand",
                    self.mnt.display()
                );
                return;
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.base) {
            eprintln!("xtask: bench: cannot remove {}: {e}", self.base.display());
        }
    }
}

/// `kernel.bpf_stats_enabled` set to 1 for the kernel-stats runs; set back to what it was on
/// drop, so an error or Ctrl-C (turned into an error) leaves the machine as it was.
struct BpfStats {
    /// The sysctl's file: [`BPF_STATS_ENABLED`], or a fixture in tests.
    path: PathBuf,
    /// The value to write back; `None` when it was already 1.
    restore: Option<String>,
}

impl BpfStats {
    fn enable(path: &Path) -> Result<Self> {
        let shown = path.display();
        let previous = fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
        let previous = previous.trim();
        let restore = if previous == "1" {
            None
        } else {
            fs::write(path, "1").with_context(|| format!("cannot write 1 to {shown}"))?;
            Some(previous.to_owned())
        };
        Ok(Self { path: path.to_owned(), restore })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(previous) = &self.restore
            && let Err(e) = fs::write(&self.path, previous)
        {
            // Left on, every BPF program on the machine pays two clock reads per run.
            eprintln!(
                "xtask: bench: cannot set {} back to {previous}: {e}; write it by hand",
                self.path.display()
            );
        }
    }
}

/// Runs every tracer mode (not `none`) once more with `kernel.bpf_stats_enabled` on, diffing
/// the kernel's counters of its BPF programs over the workload. `Ok(Err(why))` when the
/// kernel's accounting cannot be turned on: the report says so, and the bench goes on.
fn kernel_stats_runs(bench: &Bench, modes: &[Mode]) -> Result<Result<Vec<Run>, String>> {
    let stats = match BpfStats::enable(Path::new(BPF_STATS_ENABLED)) {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("xtask: bench: no kernel-stats runs: {e:#}");
            return Ok(Err(format!("{e:#}")));
        }
    };
    if stats.restore.is_none() {
        eprintln!(
            "xtask: bench: kernel.bpf_stats_enabled was already 1, so the timed runs paid for it too"
        );
    }
    let width = name_width(modes);
    let mut runs = Vec::new();
    for &mode in modes.iter().filter(|&&m| m != Mode::None) {
        let run = bench.run(0, mode, true).map_err(interrupted_or)?;
        eprintln!("xtask: bench: kernel stats {mode:<width$} {:>8.1} ms", run.wall_ms);
        runs.push(run);
    }
    drop(stats);
    Ok(Ok(runs))
}

/// One BPF program's counters as the kernel keeps them (run time and count only while
/// `kernel.bpf_stats_enabled` is 1).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProgramStats {
    id: u32,
    /// The kernel's copy of the name: its first 15 bytes.
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
    /// Runs the kernel skipped because the program was already running on that CPU (a
    /// tracepoint fired inside the program); `None` before Linux 5.12 or when only a link of
    /// the program was seen.
    recursion_misses: Option<u64>,
}

/// What one BPF program did between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProgramDelta {
    id: u32,
    name: String,
    runs: u64,
    run_time_ns: u64,
    recursion_misses: Option<u64>,
}

impl ProgramDelta {
    fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

/// Every program in `after` with what it did since `before`, by name then id. A program not
/// in `before` counts from zero (loaded after it, its counters started then); one only in
/// `before` is gone and left out.
fn diff_programs(before: &[ProgramStats], after: &[ProgramStats]) -> Vec<ProgramDelta> {
    let mut deltas: Vec<ProgramDelta> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let since = |f: fn(&ProgramStats) -> u64| f(a).saturating_sub(b.map_or(0, f));
            ProgramDelta {
                id: a.id,
                name: a.name.clone(),
                runs: since(|p| p.run_cnt),
                run_time_ns: since(|p| p.run_time_ns),
                recursion_misses: a
                    .recursion_misses
                    .map(|m| m.saturating_sub(b.and_then(|b| b.recursion_misses).unwrap_or(0))),
            }
        })
        .collect();
    deltas.sort_by(|x, y| (&x.name, x.id).cmp(&(&y.name, y.id)));
    deltas
}

/// The kernel's counters of every BPF program process `pid` holds, through a program fd or a
/// link fd: exactly the programs the slabtrace the bench started loaded, whatever else loads
/// programs meanwhile. Names, run times and counts from aya's `loaded_programs()`; recursion
/// misses from the program fd's fdinfo, as aya 0.14 does not read them.
fn bpf_programs(pid: u32) -> Result<Vec<ProgramStats>> {
    let held = held_programs(pid)?;
    let mut programs = Vec::new();
    let mut first_error = None;
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(info) => {
                if let Some(&recursion_misses) = held.get(&info.id()) {
                    programs.push(ProgramStats {
                        id: info.id(),
                        name: String::from_utf8_lossy(info.name()).into_owned(),
                        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                        run_cnt: info.run_count(),
                        recursion_misses,
                    });
                }
            }
            // Another tool's program unloaded between being listed and being read is not
            // ours; one of ours missing is caught below.
            Err(e) => _ = first_error.get_or_insert(e),
        }
    }
    if programs.len() < held.len() {
        let why = first_error.map_or_else(String::new, |e| format!(": {e}"));
        bail!(
            "cannot read {} of the {} BPF programs slabtrace holds{why}",
            held.len() - programs.len(),
            held.len()
        );
    }
    Ok(programs)
}

/// The ids of the BPF programs process `pid` holds, from `/proc/PID/fdinfo`, each with its
/// recursion misses when a program fd of it shows them.
fn held_programs(pid: u32) -> Result<BTreeMap<u32, Option<u64>>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut fdinfos = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = entry.with_context(|| format!("cannot list {dir}"))?.path();
        match fs::read_to_string(&path) {
            Ok(text) => fdinfos.push(text),
            // Closed since it was listed: not a program slabtrace is running.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(programs_in_fdinfos(fdinfos.iter().map(String::as_str)))
}

/// The programs behind a process's fds, from the text of each fd's fdinfo: a program fd and a
/// link fd both have `prog_id:`; a program fd also has `recursion_misses:` (Linux 5.12+).
fn programs_in_fdinfos<'a>(fdinfos: impl Iterator<Item = &'a str>) -> BTreeMap<u32, Option<u64>> {
    let mut programs = BTreeMap::new();
    for fdinfo in fdinfos {
        let field = |name: &str| {
            fdinfo.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key == name).then(|| value.trim().parse::<u64>().ok()).flatten()
            })
        };
        let Some(id) = field("prog_id").and_then(|id| u32::try_from(id).ok()) else {
            continue;
        };
        let misses: &mut Option<u64> = programs.entry(id).or_default();
        *misses = misses.or(field("recursion_misses"));
    }
    programs
}

/// Set by Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns Ctrl-C into an error, so the guards unmount the tmpfs and stop the tracer instead of
/// the default action killing xtask and leaking both. The children still get the terminal's
/// SIGINT (a handler, unlike an ignored signal, is reset by exec): the workload dies, which
/// ends the run.
fn catch_ctrl_c() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// A run's error, or "interrupted" when Ctrl-C caused it (the workload dying of SIGINT).
fn interrupted_or(e: anyhow::Error) -> anyhow::Error {
    if interrupted() { anyhow!("interrupted") } else { e }
}

/// Fails early on a sample slabtrace would refuse, before the warm-up run.
fn parse_sample(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("{s} is not a whole number"))?;
    if n.is_power_of_two() {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two (1, 2, 4, 8, 16, …)"))
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

pub(crate) fn clock_ticks_per_second() -> Result<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// utime + stime (fields 14 and 15) from the text of `/proc/<pid>/stat`, in clock ticks.
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and parentheses:
    // count from the last ')'. The first field after it is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` (peak resident set) from the text of `/proc/<pid>/status`, in KiB.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The median: the mean of the middle two for an even count. `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[mid]),
        _ => Some(f64::midpoint(v[mid - 1], v[mid])),
    }
}

/// Median, min and max of one mode's wall times, ms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            median: median(values)?,
            min: values.iter().copied().reduce(f64::min)?,
            max: values.iter().copied().reduce(f64::max)?,
        })
    }

    /// (max − min) / median.
    fn relative(&self) -> f64 {
        (self.max - self.min) / self.median
    }

    fn noisy(&self) -> bool {
        self.relative() > NOISY_SPREAD
    }
}

/// The figures the report and the JSON show.
#[derive(Clone, Debug, PartialEq)]
struct Summary {
    /// Wall time per mode, in [`Mode::BASE`] order.
    wall: [Spread; 3],
    /// Median events per slabtrace run, used for every mode: all run the same workload.
    events: f64,
    /// Median events lost per slabtrace run.
    lost_events: f64,
    /// (median floor − median none) / events, ns; `None` without events.
    floor_ns_per_event: Option<f64>,
    /// (median slabtrace − median none) / events, ns; `None` without events.
    slabtrace_ns_per_event: Option<f64>,
    /// Median slabtrace / median none.
    time_ratio: f64,
    /// slabtrace's overhead / the floor's; `None` unless both are positive.
    overhead_ratio: Option<f64>,
    /// slabtrace's CPU, median ms: whole life until SIGINT, and during the workload.
    cpu_ms: f64,
    workload_cpu_ms: f64,
    /// slabtrace's largest peak RSS over its runs, MiB.
    peak_rss_mib: f64,
    /// slabtrace's BPF maps, MiB (the largest seen; the maps are preallocated, so constant).
    map_mib: f64,
    /// slabtrace's sample rate as it reported it.
    sample_rate: u64,
    /// The floor's CPU (median ms) and peak RSS (max MiB): the loader alone.
    floor_cpu_ms: f64,
    floor_peak_rss_mib: f64,
    /// One per `--without` mode, in the order they ran.
    ablations: Vec<Ablation>,
}

/// The figures of slabtrace with one part left out.
#[derive(Clone, Debug, PartialEq)]
struct Ablation {
    part: Part,
    wall: Spread,
    /// (median of this mode − median none) / slabtrace's events, ns: divided by what full
    /// slabtrace counted, because a slabtrace without a part may count less of the same work.
    ns_per_event: Option<f64>,
    /// What the part costs: slabtrace's overhead per event − this mode's, ns.
    part_cost_ns_per_event: Option<f64>,
}

impl Summary {
    fn of(runs: &[Run]) -> Result<Self> {
        let wall_of = |mode: Mode| -> Result<Spread> {
            let times: Vec<f64> =
                runs.iter().filter(|r| r.mode == mode).map(|r| r.wall_ms).collect();
            Spread::of(&times).with_context(|| format!("no {mode} runs"))
        };
        let wall = [wall_of(Mode::None)?, wall_of(Mode::Floor)?, wall_of(Mode::Slabtrace)?];
        let tracer_runs = |mode: Mode| -> Vec<&TracerRun> {
            runs.iter().filter(|r| r.mode == mode).filter_map(|r| r.tracer.as_ref()).collect()
        };
        let slab = tracer_runs(Mode::Slabtrace);
        let floor = tracer_runs(Mode::Floor);
        let med = |runs: &[&TracerRun], f: fn(&TracerRun) -> f64| {
            median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let max = |runs: &[&TracerRun], f: fn(&TracerRun) -> f64| {
            runs.iter().map(|r| f(r)).fold(0.0, f64::max)
        };
        let events = med(&slab, |r| r.events as f64);
        let [none, floor_wall, slab_wall] = wall;
        let per_event =
            |mode: Spread| (events > 0.0).then(|| (mode.median - none.median) * 1e6 / events);
        let floor_ns_per_event = per_event(floor_wall);
        let slabtrace_ns_per_event = per_event(slab_wall);
        let overhead_ratio = match (slabtrace_ns_per_event, floor_ns_per_event) {
            (Some(s), Some(f)) if s > 0.0 && f > 0.0 => Some(s / f),
            _ => None,
        };
        let mut parts: Vec<Part> = Vec::new();
        for run in runs {
            if let Mode::Without(part) = run.mode
                && !parts.contains(&part)
            {
                parts.push(part);
            }
        }
        let ablations = parts
            .into_iter()
            .map(|part| {
                let wall = wall_of(Mode::Without(part))?;
                let ns_per_event = per_event(wall);
                let part_cost_ns_per_event =
                    slabtrace_ns_per_event.zip(ns_per_event).map(|(full, without)| full - without);
                Ok(Ablation { part, wall, ns_per_event, part_cost_ns_per_event })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            wall,
            events,
            lost_events: med(&slab, |r| r.lost_events as f64),
            floor_ns_per_event,
            slabtrace_ns_per_event,
            time_ratio: slab_wall.median / none.median,
            overhead_ratio,
            cpu_ms: med(&slab, |r| r.cpu_ms),
            workload_cpu_ms: med(&slab, |r| r.workload_cpu_ms),
            peak_rss_mib: max(&slab, |r| kib_to_mib(r.peak_rss_kib)),
            map_mib: max(&slab, |r| r.map_bytes as f64 / 1024.0 / 1024.0),
            sample_rate: slab.iter().map(|r| r.sample_rate).max().unwrap_or(0),
            floor_cpu_ms: med(&floor, |r| r.cpu_ms),
            floor_peak_rss_mib: max(&floor, |r| kib_to_mib(r.peak_rss_kib)),
            ablations,
        })
    }

    /// Every mode's wall times and overhead per event, in the order they ran.
    fn modes(&self) -> Vec<(Mode, Spread, Option<f64>)> {
        let base = [None, self.floor_ns_per_event, self.slabtrace_ns_per_event];
        let base = Mode::BASE.into_iter().zip(self.wall).zip(base).map(|((m, w), o)| (m, w, o));
        let ablated =
            self.ablations.iter().map(|a| (Mode::Without(a.part), a.wall, a.ns_per_event));
        base.chain(ablated).collect()
    }
}

/// One tracer mode's kernel-stats run, by the kernel's per-program accounting.
#[derive(Clone, Debug, PartialEq)]
struct KernelFigures {
    mode: Mode,
    wall_ms: f64,
    /// Each BPF program the run's slabtrace held, over the workload.
    programs: Vec<ProgramDelta>,
    /// What the BPF time is divided by: the events slabtrace counted in its own kernel-stats
    /// run, for every mode. The same workload fires the same tracepoints in each, but the floor
    /// counts nothing and a slabtrace without a part may count less.
    events: u64,
}

impl KernelFigures {
    /// The figures of every kernel-stats run (runs without program counters are left out).
    fn of(runs: &[Run]) -> Vec<Self> {
        let events = runs
            .iter()
            .find(|r| r.mode == Mode::Slabtrace)
            .and_then(|r| r.tracer.as_ref())
            .map_or(0, |t| t.events);
        runs.iter()
            .filter_map(|r| {
                let programs = r.tracer.as_ref()?.programs.clone()?;
                Some(Self { mode: r.mode, wall_ms: r.wall_ms, programs, events })
            })
            .collect()
    }

    /// All the mode's programs' run time, ns.
    fn run_time_ns(&self) -> u64 {
        self.programs.iter().map(|p| p.run_time_ns).sum()
    }

    /// Kernel-measured BPF time per traced event, ns; `None` without events.
    fn ns_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.run_time_ns() as f64 / self.events as f64)
    }

    /// Recursion misses of the programs that show them; `None` when none does.
    fn recursion_misses(&self) -> Option<u64> {
        self.programs.iter().filter_map(|p| p.recursion_misses).reduce(|a, b| a + b)
    }
}

/// What `part` costs in kernel-measured BPF time per event: slabtrace's minus the time of
/// slabtrace without it, ns.
fn bpf_part_cost(kernel: &[KernelFigures], part: Part) -> Option<f64> {
    let of = |mode: Mode| kernel.iter().find(|k| k.mode == mode)?.ns_per_event();
    Some(of(Mode::Slabtrace)? - of(Mode::Without(part))?)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A figure with `decimals`, or "-" when there is none.
fn or_dash(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Where the bench ran, for reading the figures later.
struct Host {
    kernel: String,
    cores: usize,
    /// The resolution of the CPU times: one clock tick, ms.
    tick_ms: f64,
}

impl Host {
    fn read(clock_ticks: f64) -> Self {
        Self {
            tick_ms: 1e3 / clock_ticks,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            cores: thread::available_parallelism().map_or(0, usize::from),
        }
    }
}

/// Every run, so the noise behind the medians is visible.
fn print_runs(runs: &[Run]) {
    let width = name_width(&runs.iter().map(|r| r.mode).collect::<Vec<_>>()).max(4);
    println!(
        "\nRuns (in the order they ran; tracer CPU = utime + stime from its start to SIGINT):"
    );
    println!(
        "{:>4}  {:<width$}  {:>9}  {:>10}  {:>6}  {:>7}  {:>15}  {:>9}",
        "rep", "mode", "wall ms", "events", "lost", "CPU ms", "during workload", "peak RSS"
    );
    for run in runs {
        let rep = run.rep + 1;
        let mode = run.mode;
        match &run.tracer {
            None => println!(
                "{rep:>4}  {mode:<width$}  {:>9.1}  {:>10}  {:>6}  {:>7}  {:>15}  {:>9}",
                run.wall_ms, "-", "-", "-", "-", "-"
            ),
            Some(t) => println!(
                "{rep:>4}  {mode:<width$}  {:>9.1}  {:>10}  {:>6}  {:>7.0}  {:>12.0} ms  {:>5.1} MiB",
                run.wall_ms,
                // The floor's empty programs count nothing: its events are not zero, unknown.
                if run.mode == Mode::Floor { "-".to_owned() } else { t.events.to_string() },
                t.lost_events,
                t.cpu_ms,
                t.workload_cpu_ms,
                kib_to_mib(t.peak_rss_kib)
            ),
        }
    }
}

fn print_summary(s: &Summary, host: &Host, args: &BenchArgs) {
    let reps = args.reps;
    let ops = args.ops;
    let modes = s.modes();
    let width = name_width(&modes.iter().map(|(m, ..)| *m).collect::<Vec<_>>());
    println!(
        "\nSummary: {reps} reps per mode, each run {ops} files created+unlinked then {ops} missing names stat'ed, on tmpfs"
    );
    println!(
        "(kernel {}, {} cores; medians, with min and max to show the noise)",
        host.kernel, host.cores
    );
    println!(
        "\n{:<width$}  {:>9}  {:>9}  {:>9}  {:>7}  {:>17}",
        "mode", "median ms", "min ms", "max ms", "spread", "overhead ns/event"
    );
    for (mode, w, overhead) in &modes {
        println!(
            "{mode:<width$}  {:>9.1}  {:>9.1}  {:>9.1}  {:>6.1}%  {:>17}",
            w.median,
            w.min,
            w.max,
            w.relative() * 100.0,
            or_dash(*overhead, 1)
        );
    }
    let ratio = s
        .overhead_ratio
        .map_or_else(|| "n/a (an overhead is not positive)".to_owned(), |r| format!("{r:.2}x"));
    println!();
    println!(
        "events per run:              {:.0} (alloc + free seen by slabtrace, median of its runs; {:.0} lost)",
        s.events, s.lost_events
    );
    println!("slabtrace time / none time:  {:.3}x", s.time_ratio);
    println!("slabtrace / floor overhead:  {ratio}");
    println!(
        "slabtrace userspace CPU:     {:.0} ms median from start to SIGINT ({:.0} ms of it while the workload ran; {:.0} ms ticks)",
        s.cpu_ms, s.workload_cpu_ms, host.tick_ms
    );
    println!("slabtrace peak RSS:          {:.1} MiB (max over its runs)", s.peak_rss_mib);
    println!("slabtrace BPF maps:          {:.1} MiB (sample 1 in {})", s.map_mib, s.sample_rate);
    println!(
        "floor, for comparison:       {:.0} ms CPU median, {:.1} MiB peak RSS (the loader with empty programs)",
        s.floor_cpu_ms, s.floor_peak_rss_mib
    );

    println!(
        "\nThis machine has {} cores, shared by the workload, the kernel's RCU callbacks that free its dentries and inodes, and the tracer: single runs are noisy, read the medians.",
        host.cores
    );
    let mut any_noisy = false;
    for (mode, w, _) in &modes {
        if w.noisy() {
            any_noisy = true;
            println!(
                "Noisy: {mode}'s runs spread by {:.0}% of their median (more than {:.0}%); rerun, or raise --reps.",
                w.relative() * 100.0,
                NOISY_SPREAD * 100.0
            );
        }
    }
    if !any_noisy {
        println!(
            "No mode's runs spread by more than {:.0}% of their median.",
            NOISY_SPREAD * 100.0
        );
    }
}

/// The kernel's per-program figures of each kernel-stats run.
fn print_kernel(kernel: &[KernelFigures]) {
    println!(
        "\nThe kernel's own accounting (kernel.bpf_stats_enabled=1): one more run per tracer mode, not in the medians above because the accounting's clock reads cost time; every BPF program the run's slabtrace held, from ready to the workload's end."
    );
    for k in kernel {
        println!("\n{} ({:.1} ms wall)", k.mode, k.wall_ms);
        println!(
            "  {:<16}  {:>6}  {:>10}  {:>8}  {:>9}  {:>16}",
            "program", "id", "runs", "ns/run", "total ms", "recursion misses"
        );
        for p in &k.programs {
            println!(
                "  {:<16}  {:>6}  {:>10}  {:>8}  {:>9.2}  {:>16}",
                p.name,
                p.id,
                p.runs,
                or_dash(p.ns_per_run(), 1),
                p.run_time_ns as f64 / 1e6,
                p.recursion_misses.map_or_else(|| "-".to_owned(), |m| m.to_string())
            );
        }
        match k.ns_per_event() {
            Some(ns) => println!(
                "  kernel-measured BPF time per traced event: {ns:.1} ns ({:.2} ms over the {} events slabtrace counted)",
                k.run_time_ns() as f64 / 1e6,
                k.events
            ),
            None => println!(
                "  kernel-measured BPF time per traced event: n/a (slabtrace counted no events)"
            ),
        }
    }
}

/// What each part left out costs, from the wall clock and from the kernel's accounting.
fn print_part_costs(s: &Summary, kernel: Option<&[KernelFigures]>) {
    if s.ablations.is_empty() {
        return;
    }
    println!(
        "\nWhat each part costs per traced event: slabtrace's overhead minus the overhead of slabtrace without it (near 0 or below: within the noise):"
    );
    println!(
        "{:<12}  {:>13}  {:>18}  slabtrace without it has",
        "part", "wall clock ns", "kernel BPF time ns"
    );
    for a in &s.ablations {
        let bpf = kernel.and_then(|k| bpf_part_cost(k, a.part));
        println!(
            "{:<12}  {:>13}  {:>18}  {}",
            a.part.name,
            or_dash(a.part_cost_ns_per_event, 1),
            or_dash(bpf, 1),
            a.part.without
        );
    }
}

fn summary_json(
    s: &Summary,
    kernel: Option<&[KernelFigures]>,
    runs: &[Run],
    host: &Host,
    args: &BenchArgs,
) -> Value {
    let mode_json = |mode: Mode, w: &Spread| {
        let runs_ms: Vec<f64> = runs.iter().filter(|r| r.mode == mode).map(|r| r.wall_ms).collect();
        json!({ "median_ms": w.median, "min_ms": w.min, "max_ms": w.max, "noisy": w.noisy(), "runs_ms": runs_ms })
    };
    let [none, floor, slab] = &s.wall;
    let mut doc = json!({
        "schema": "slabtrace.bench.v1",
        "kernel": host.kernel,
        "cores": host.cores,
        "cpu_tick_ms": host.tick_ms,
        "reps": args.reps,
        "ops": args.ops,
        "sample": s.sample_rate,
        "modes": {
            "none": mode_json(Mode::None, none),
            "floor": mode_json(Mode::Floor, floor),
            "slabtrace": mode_json(Mode::Slabtrace, slab),
        },
        "events_per_run": s.events,
        "lost_events_per_run": s.lost_events,
        "overhead_ns_per_event": { "floor": s.floor_ns_per_event, "slabtrace": s.slabtrace_ns_per_event },
        "slabtrace_over_none_time": s.time_ratio,
        "slabtrace_over_floor_overhead": s.overhead_ratio,
        "slabtrace": {
            "cpu_ms_median": s.cpu_ms,
            "workload_cpu_ms_median": s.workload_cpu_ms,
            "peak_rss_mib_max": s.peak_rss_mib,
            "map_mib": s.map_mib,
        },
        "floor": { "cpu_ms_median": s.floor_cpu_ms, "peak_rss_mib_max": s.floor_peak_rss_mib },
    });
    // Added in place of a new schema: every field above keeps its name and meaning.
    for a in &s.ablations {
        let mode = Mode::Without(a.part).to_string();
        doc["modes"][&mode] = mode_json(Mode::Without(a.part), &a.wall);
        doc["overhead_ns_per_event"][&mode] = json!(a.ns_per_event);
    }
    doc["ablation"] = s
        .ablations
        .iter()
        .map(|a| {
            json!({
                "part": a.part.name,
                "mode": Mode::Without(a.part).to_string(),
                "without": a.part.without,
                "overhead_ns_per_event": a.ns_per_event,
                "part_cost_ns_per_event": a.part_cost_ns_per_event,
                "part_cost_bpf_ns_per_event": kernel.and_then(|k| bpf_part_cost(k, a.part)),
            })
        })
        .collect();
    // `null` when the kernel's accounting could not be turned on.
    doc["kernel_bpf_stats"] = kernel.map_or(Value::Null, |kernel| {
        let modes = kernel
            .iter()
            .map(|k| {
                let programs: Vec<Value> = k
                    .programs
                    .iter()
                    .map(|p| {
                        json!({
                            "id": p.id,
                            "name": p.name,
                            "runs": p.runs,
                            "run_time_ns": p.run_time_ns,
                            "ns_per_run": p.ns_per_run(),
                            "recursion_misses": p.recursion_misses,
                        })
                    })
                    .collect();
                let figures = json!({
                    "wall_ms": k.wall_ms,
                    "events": k.events,
                    "run_time_ns": k.run_time_ns(),
                    "bpf_ns_per_event": k.ns_per_event(),
                    "recursion_misses": k.recursion_misses(),
                    "programs": programs,
                });
                (k.mode.to_string(), figures)
            })
            .collect::<serde_json::Map<_, _>>();
        json!({ "modes": modes })
    });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_last_parenthesis() {
        let stat =
            "4242 (sl (ab) ) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 123 456 789";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks(""), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        assert_eq!(
            parse_vm_hwm_kib("Name:\tslabtrace\nVmHWM:\t   39816 kB\nVmRSS:\t 100 kB\n"),
            Some(39816)
        );
        assert_eq!(parse_vm_hwm_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn run(rep: u32, mode: Mode, wall_ms: f64, events: u64) -> Run {
        let tracer = (mode != Mode::None).then(|| TracerRun {
            cpu_ms: 10.0,
            workload_cpu_ms: 4.0,
            peak_rss_kib: 2048,
            events,
            map_bytes: 2 * 1024 * 1024,
            sample_rate: 16,
            ..TracerRun::default()
        });
        Run { rep, mode, wall_ms, tracer }
    }

    #[test]
    fn overhead_is_per_event_against_the_median_of_none() {
        let runs = [
            run(0, Mode::None, 1000.0, 0),
            run(0, Mode::Floor, 1100.0, 0),
            run(0, Mode::Slabtrace, 1300.0, 1_000_000),
            run(1, Mode::None, 1010.0, 0),
            run(1, Mode::Floor, 1090.0, 0),
            run(1, Mode::Slabtrace, 1290.0, 1_000_002),
            run(2, Mode::None, 5000.0, 0), // one outlier moves no median
            run(2, Mode::Floor, 1100.0, 0),
            run(2, Mode::Slabtrace, 1310.0, 999_998),
        ];
        let s = Summary::of(&runs).unwrap();
        assert_eq!(s.wall[0], Spread { median: 1010.0, min: 1000.0, max: 5000.0 });
        assert!(s.wall[0].noisy());
        assert!(!s.wall[2].noisy());
        assert!((s.events - 1_000_000.0).abs() < f64::EPSILON);
        assert!((s.floor_ns_per_event.unwrap() - 90.0).abs() < 1e-9);
        assert!((s.slabtrace_ns_per_event.unwrap() - 290.0).abs() < 1e-9);
        assert!((s.overhead_ratio.unwrap() - 290.0 / 90.0).abs() < 1e-9);
        assert!((s.map_mib - 2.0).abs() < f64::EPSILON);
        assert!((s.peak_rss_mib - 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn no_events_means_no_overhead_per_event() {
        let runs = [
            run(0, Mode::None, 1000.0, 0),
            run(0, Mode::Floor, 990.0, 0),
            run(0, Mode::Slabtrace, 1000.0, 0),
        ];
        let s = Summary::of(&runs).unwrap();
        assert_eq!(s.slabtrace_ns_per_event, None);
        assert_eq!(s.overhead_ratio, None);
    }

    #[test]
    fn a_missing_mode_is_an_error() {
        assert!(Summary::of(&[run(0, Mode::None, 1000.0, 0)]).is_err());
    }

    /// The bench's arguments as `cargo xtask bench ARGS` parses them.
    fn bench_args(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Cli as clap::Parser>::try_parse_from(["bench"].iter().chain(args)).map(|c| c.bench)
    }

    fn part(name: &str) -> Part {
        *PARTS.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn parts_are_each_left_out_once_in_their_order() {
        let names = |args: &[&str]| -> Vec<&str> {
            bench_args(args).unwrap().parts().iter().map(|p| p.name).collect()
        };
        assert!(names(&[]).is_empty());
        assert_eq!(
            names(&["--without", "stats", "--without", "live", "--without", "stats"]),
            ["live", "stats"]
        );
        assert_eq!(
            names(&["--ablation"]),
            [
                "live",
                "interrupts",
                "free-backup",
                "oom",
                "shrinkers",
                "stats",
                "cgroup-cache",
                "exact-counts"
            ]
        );
        assert!(bench_args(&["--without", "maps"]).is_err());
        assert!(bench_args(&["--ablation", "--without", "live"]).is_err());
    }

    #[test]
    fn the_help_says_what_each_part_is() {
        let help = bench_args(&["--help"]).unwrap_err().to_string();
        for p in PARTS {
            assert!(help.contains(p.name) && help.contains(p.without), "{p:?} in:\n{help}");
        }
    }

    #[test]
    fn ablation_modes_follow_the_base_modes() {
        let modes = Mode::all(&[part("free-backup"), part("oom")]);
        let names: Vec<String> = modes.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "none",
                "floor",
                "slabtrace",
                "slabtrace-without-free-backup",
                "slabtrace-without-oom"
            ]
        );
        assert_eq!(name_width(&modes), "slabtrace-without-free-backup".len());
        assert_eq!(format!("[{:<6}]", Mode::Floor), "[floor ]");
    }

    #[test]
    fn an_ablated_slabtrace_takes_the_bench_settings_and_its_part() {
        let args = |mode| tracer_args(mode, Some(4), true, "raw").unwrap().join(" ");
        assert_eq!(args(Mode::Floor), "--floor --tracepoint-programs raw");
        assert_eq!(args(Mode::Slabtrace), "--sample 4 --call-sites --tracepoint-programs raw");
        assert_eq!(
            args(Mode::Without(part("live"))),
            "--bench-without live --sample 4 --call-sites --tracepoint-programs raw"
        );
        assert_eq!(
            tracer_args(Mode::Without(part("oom")), None, false, "auto").unwrap().join(" "),
            "--bench-without oom --tracepoint-programs auto"
        );
        assert!(tracer_args(Mode::None, None, false, "auto").is_err());
    }

    #[test]
    fn what_a_part_costs_is_slabtrace_minus_the_mode_without_it() {
        let live = Mode::Without(part("live"));
        let stats = Mode::Without(part("stats"));
        let runs = [
            run(0, Mode::None, 1000.0, 0),
            run(0, Mode::Floor, 1100.0, 0),
            run(0, Mode::Slabtrace, 1300.0, 1_000_000),
            run(0, stats, 1290.0, 0), // counts nothing: divided by slabtrace's events
            run(0, live, 1200.0, 600_000),
            run(1, Mode::None, 1000.0, 0),
            run(1, Mode::Floor, 1100.0, 0),
            run(1, Mode::Slabtrace, 1300.0, 1_000_000),
            run(1, stats, 1310.0, 0),
            run(1, live, 1220.0, 600_000),
        ];
        let s = Summary::of(&runs).unwrap();
        assert_eq!(s.ablations.iter().map(|a| a.part.name).collect::<Vec<_>>(), ["stats", "live"]);
        let [without_stats, without_live] = &s.ablations[..] else { panic!("{:?}", s.ablations) };
        assert_eq!(without_stats.wall, Spread { median: 1300.0, min: 1290.0, max: 1310.0 });
        assert!((without_stats.ns_per_event.unwrap() - 300.0).abs() < 1e-9);
        assert!(without_stats.part_cost_ns_per_event.unwrap().abs() < 1e-9);
        assert!((without_live.ns_per_event.unwrap() - 210.0).abs() < 1e-9);
        assert!((without_live.part_cost_ns_per_event.unwrap() - 90.0).abs() < 1e-9);
        let modes: Vec<Mode> = s.modes().iter().map(|(m, ..)| *m).collect();
        assert_eq!(modes, [Mode::None, Mode::Floor, Mode::Slabtrace, stats, live]);
        // The figures of before stay as they were.
        assert!((s.slabtrace_ns_per_event.unwrap() - 300.0).abs() < 1e-9);
        assert!((s.events - 1_000_000.0).abs() < f64::EPSILON);
    }

    #[test]
    fn without_events_a_part_has_no_cost() {
        let runs = [
            run(0, Mode::None, 1000.0, 0),
            run(0, Mode::Floor, 1000.0, 0),
            run(0, Mode::Slabtrace, 1000.0, 0),
            run(0, Mode::Without(part("stats")), 1000.0, 0),
        ];
        let s = Summary::of(&runs).unwrap();
        assert_eq!(s.ablations[0].ns_per_event, None);
        assert_eq!(s.ablations[0].part_cost_ns_per_event, None);
    }

    fn stats(
        id: u32,
        name: &str,
        run_time_ns: u64,
        run_cnt: u64,
        misses: Option<u64>,
    ) -> ProgramStats {
        ProgramStats { id, name: name.to_owned(), run_time_ns, run_cnt, recursion_misses: misses }
    }

    #[test]
    fn program_counters_are_diffed_per_id() {
        let before = [
            stats(12, "slab_free", 1_000, 10, Some(1)),
            stats(11, "slab_alloc", 5_000, 100, Some(0)),
            stats(13, "gone", 7, 7, None),
        ];
        let after = [
            stats(11, "slab_alloc", 65_000, 1_100, Some(0)),
            stats(12, "slab_free", 41_000, 1_010, Some(4)),
            stats(14, "late", 300, 3, None),
            stats(15, "idle", 0, 0, Some(0)),
        ];
        let d = diff_programs(&before, &after);
        let names: Vec<&str> = d.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["idle", "late", "slab_alloc", "slab_free"]);
        let [idle, late, alloc, free] = &d[..] else { panic!("{d:?}") };
        assert_eq!(
            *alloc,
            ProgramDelta {
                id: 11,
                name: "slab_alloc".to_owned(),
                runs: 1_000,
                run_time_ns: 60_000,
                recursion_misses: Some(0)
            }
        );
        assert_eq!(alloc.ns_per_run(), Some(60.0));
        assert_eq!((free.runs, free.run_time_ns, free.recursion_misses), (1_000, 40_000, Some(3)));
        // Loaded after the first snapshot: counted from zero.
        assert_eq!((late.runs, late.run_time_ns, late.recursion_misses), (3, 300, None));
        assert_eq!(idle.ns_per_run(), None);
    }

    #[test]
    fn a_counter_that_went_backwards_counts_zero() {
        let d = diff_programs(&[stats(1, "p", 100, 10, Some(5))], &[stats(1, "p", 50, 5, Some(2))]);
        assert_eq!((d[0].runs, d[0].run_time_ns, d[0].recursion_misses), (0, 0, Some(0)));
    }

    #[test]
    fn held_programs_come_from_program_and_link_fds() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t26\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t100\nrun_cnt:\t2\nrecursion_misses:\t7\nverified_insns:\t30\n";
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\ttracing\nlink_id:\t5\nprog_tag:\t0123456789abcdef\nprog_id:\t42\n";
        let only_link = "link_type:\traw_tracepoint\nlink_id:\t6\nprog_id:\t43\n";
        let old_kernel = "prog_type:\t26\nprog_id:\t44\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        let map = "map_type:\t1\nkey_size:\t8\nmap_id:\t9\n";
        let file = "pos:\t0\nflags:\t02100000\nmnt_id:\t25\nino:\t12\n";
        let held = programs_in_fdinfos([link, prog, only_link, old_kernel, map, file].into_iter());
        assert_eq!(held.into_iter().collect::<Vec<_>>(), [(42, Some(7)), (43, None), (44, None)]);
        assert!(programs_in_fdinfos(std::iter::empty()).is_empty());
    }

    #[test]
    fn bpf_stats_are_set_back_to_what_they_were() {
        let dir = std::env::temp_dir().join(format!("slabtrace-bench-test.{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bpf_stats_enabled");
        fs::write(&path, "0\n").unwrap();
        let stats = BpfStats::enable(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1");
        drop(stats);
        assert_eq!(fs::read_to_string(&path).unwrap(), "0");
        // Already on (someone else's): left on.
        fs::write(&path, "1\n").unwrap();
        drop(BpfStats::enable(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        // No such sysctl (Linux before 5.1): an error for the bench to report, nothing written.
        assert!(BpfStats::enable(&dir.join("missing")).is_err());
        assert!(!dir.join("missing").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn kernel_run(mode: Mode, events: u64, programs: Vec<ProgramDelta>) -> Run {
        let mut r = run(0, mode, 2000.0, events);
        r.tracer.as_mut().unwrap().programs = Some(programs);
        r
    }

    fn delta(name: &str, runs: u64, run_time_ns: u64, misses: Option<u64>) -> ProgramDelta {
        ProgramDelta { id: 1, name: name.to_owned(), runs, run_time_ns, recursion_misses: misses }
    }

    #[test]
    fn kernel_time_per_event_is_over_slabtrace_events() {
        let live = Mode::Without(part("live"));
        let runs = [
            kernel_run(Mode::Floor, 0, vec![delta("floor_alloc", 2_000, 20_000, Some(0))]),
            kernel_run(
                Mode::Slabtrace,
                1_000,
                vec![
                    delta("slab_alloc", 1_000, 80_000, Some(1)),
                    delta("slab_free", 1_000, 70_000, None),
                ],
            ),
            kernel_run(live, 500, vec![delta("slab_alloc", 1_000, 90_000, None)]),
            // A timed run, without program counters: not a kernel-stats run.
            run(0, Mode::Slabtrace, 1000.0, 999),
        ];
        let k = KernelFigures::of(&runs);
        assert_eq!(
            k.iter().map(|k| k.mode).collect::<Vec<_>>(),
            [Mode::Floor, Mode::Slabtrace, live]
        );
        assert!(k.iter().all(|k| k.events == 1_000));
        assert_eq!(k[0].ns_per_event(), Some(20.0));
        assert_eq!(k[1].run_time_ns(), 150_000);
        assert_eq!(k[1].ns_per_event(), Some(150.0));
        assert_eq!(k[1].recursion_misses(), Some(1));
        assert_eq!(k[2].recursion_misses(), None);
        assert_eq!(bpf_part_cost(&k, part("live")), Some(60.0));
        assert_eq!(bpf_part_cost(&k, part("oom")), None);
        assert_eq!(bpf_part_cost(&k[..1], part("live")), None);
    }

    #[test]
    fn the_json_only_adds_fields() {
        let live = Mode::Without(part("live"));
        let runs = [
            run(0, Mode::None, 1000.0, 0),
            run(0, Mode::Floor, 1100.0, 0),
            run(0, Mode::Slabtrace, 1300.0, 1_000_000),
            run(0, live, 1200.0, 600_000),
        ];
        let s = Summary::of(&runs).unwrap();
        let kernel = KernelFigures::of(&[
            kernel_run(Mode::Slabtrace, 1_000_000, vec![delta("slab_alloc", 10, 1_000, Some(2))]),
            kernel_run(live, 600_000, vec![]),
        ]);
        let host = Host { kernel: "6.1.0".to_owned(), cores: 2, tick_ms: 10.0 };
        let args = bench_args(&["--without", "live"]).unwrap();
        let doc = summary_json(&s, Some(&kernel), &runs, &host, &args);
        assert_eq!(doc["schema"], "slabtrace.bench.v1");
        for mode in ["none", "floor", "slabtrace", "slabtrace-without-live"] {
            assert!(doc["modes"][mode]["median_ms"].is_f64(), "{mode}");
        }
        assert_eq!(doc["overhead_ns_per_event"]["slabtrace"], 300.0);
        assert_eq!(doc["overhead_ns_per_event"]["slabtrace-without-live"], 200.0);
        assert_eq!(doc["ablation"][0]["part"], "live");
        assert_eq!(doc["ablation"][0]["part_cost_ns_per_event"], 100.0);
        assert_eq!(doc["ablation"][0]["part_cost_bpf_ns_per_event"], 0.001);
        let slab = &doc["kernel_bpf_stats"]["modes"]["slabtrace"];
        assert_eq!(slab["bpf_ns_per_event"], 0.001);
        assert_eq!(slab["programs"][0]["name"], "slab_alloc");
        assert_eq!(slab["programs"][0]["ns_per_run"], 100.0);
        assert_eq!(slab["recursion_misses"], 2);
        let without_stats = summary_json(&s, None, &runs, &host, &args);
        assert!(without_stats["kernel_bpf_stats"].is_null());
        assert!(without_stats["ablation"][0]["part_cost_bpf_ns_per_event"].is_null());
    }
}
