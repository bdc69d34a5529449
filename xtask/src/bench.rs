//! `cargo xtask bench`: what slabtrace costs per traced slab event.
//!
//! One slab-heavy workload (`slab-workload churn`, then `stat-missing`, on a private tmpfs)
//! runs in three modes: with no tracer; with empty BPF programs on slabtrace's four kmem
//! tracepoints (`slabtrace report --floor`, the cost of the tracepoints firing into BPF at all,
//! which no BPF tracer can beat); and with slabtrace itself. The modes are interleaved
//! (none, floor, slabtrace, none, …) so a drift of the machine spreads over every mode instead
//! of biasing one, and every figure is a median over repetitions, because one slow run in a
//! few is normal on a small VM. A mode's wall-time difference to no tracer, divided by the
//! events slabtrace counted, is its overhead per event. The bench measures and reports; it
//! asserts nothing about speed.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
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

/// `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Repetitions of each mode; the modes are interleaved (none, floor, slabtrace, none, …).
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
    /// Also write the summary as JSON (schema `slabtrace.bench.v1`) to this file, to compare
    /// runs later.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Builds slabtrace and the workload, runs every mode `reps` times and prints the report.
pub fn run(args: &BenchArgs) -> Result<()> {
    // is_root reads the effective uid, which is what loading BPF programs and mounting need.
    if !setup::is_root() {
        bail!(
            "the bench loads BPF programs and mounts a tmpfs: run it as root, `sudo -E cargo xtask bench`"
        );
    }
    setup::ensure_toolchain()?;
    cmd("cargo", &["build", "--release", "--package", "slabtrace"])?;
    cmd(
        "cargo",
        &["build", "--release", "--package", "slabtrace-integration", "--bin", "slab-workload"],
    )?;
    let release = setup::workspace_root()?.join("target/release");
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

    // One untimed run first: the first run after a build pays for cold page cache and a cold
    // dcache hash, which would count against whichever mode happens to go first.
    eprintln!("xtask: bench: warm-up run");
    bench.workload()?;
    let mut runs = Vec::new();
    for rep in 0..args.reps {
        for mode in Mode::ALL {
            let run = bench
                .run(rep, mode)
                .map_err(|e| if interrupted() { anyhow!("interrupted") } else { e })?;
            eprintln!(
                "xtask: bench: rep {}/{} {:<9} {:>8.1} ms",
                rep + 1,
                args.reps,
                mode.name(),
                run.wall_ms
            );
            runs.push(run);
        }
    }

    let summary = Summary::of(&runs)?;
    let host = Host::read(bench.clock_ticks);
    print_runs(&runs);
    print_summary(&summary, &host, args);
    if let Some(path) = &args.json {
        let doc = serde_json::to_string_pretty(&summary_json(&summary, &runs, &host, args))?;
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
}

impl Mode {
    const ALL: [Self; 3] = [Self::None, Self::Floor, Self::Slabtrace];

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Floor => "floor",
            Self::Slabtrace => "slabtrace",
        }
    }
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
    /// Runs the workload once in `mode`.
    fn run(&self, rep: u32, mode: Mode) -> Result<Run> {
        if mode == Mode::None {
            let wall = self.workload()?;
            return Ok(Run { rep, mode, wall_ms: ms(wall), tracer: None });
        }
        let tracer = Tracer::start(
            &self.slabtrace,
            mode,
            self.sample,
            self.call_sites,
            &self.tracepoint_programs,
            &self.scratch.base,
        )?;
        let cpu_ready = tracer.cpu_ticks()?;
        let wall = self.workload()?;
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

/// A running `slabtrace report`; killed on drop unless stopped, so an error mid-run leaves no
/// programs attached.
struct Tracer {
    child: Option<Child>,
    pid: u32,
    ready: PathBuf,
    log: PathBuf,
}

impl Tracer {
    /// Starts slabtrace in `mode` and waits until its programs are attached.
    fn start(
        bin: &Path,
        mode: Mode,
        sample: Option<u32>,
        call_sites: bool,
        tracepoint_programs: &str,
        dir: &Path,
    ) -> Result<Self> {
        let ready = dir.join("ready");
        let log = dir.join("slabtrace.log");
        remove_if_present(&ready)?;
        let mut command = Command::new(bin);
        command
            .args(["report", "--format", "json", "--duration", "600", "--ready-file"])
            .arg(&ready);
        for var in TRACER_ENV {
            command.env_remove(var);
        }
        match (mode, sample) {
            (Mode::Floor, _) => _ = command.arg("--floor"),
            (Mode::Slabtrace, Some(n)) => _ = command.arg("--sample").arg(n.to_string()),
            (Mode::Slabtrace, None) => {}
            (Mode::None, _) => bail!("the `none` mode runs no tracer"),
        }
        if call_sites && mode == Mode::Slabtrace {
            command.arg("--call-sites");
        }
        command.args(["--tracepoint-programs", tracepoint_programs]);
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
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
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

fn clock_ticks_per_second() -> Result<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// utime + stime (fields 14 and 15) from the text of `/proc/<pid>/stat`, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
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
    /// Wall time per mode, in [`Mode::ALL`] order.
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
}

impl Summary {
    fn of(runs: &[Run]) -> Result<Self> {
        let wall_of = |mode: Mode| -> Result<Spread> {
            let times: Vec<f64> =
                runs.iter().filter(|r| r.mode == mode).map(|r| r.wall_ms).collect();
            Spread::of(&times).with_context(|| format!("no {} runs", mode.name()))
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
        })
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
    println!(
        "\nRuns (in the order they ran; tracer CPU = utime + stime from its start to SIGINT):"
    );
    println!(
        "{:>4}  {:<9}  {:>9}  {:>10}  {:>6}  {:>7}  {:>15}  {:>9}",
        "rep", "mode", "wall ms", "events", "lost", "CPU ms", "during workload", "peak RSS"
    );
    for run in runs {
        let rep = run.rep + 1;
        let mode = run.mode.name();
        match &run.tracer {
            None => println!(
                "{rep:>4}  {mode:<9}  {:>9.1}  {:>10}  {:>6}  {:>7}  {:>15}  {:>9}",
                run.wall_ms, "-", "-", "-", "-", "-"
            ),
            Some(t) => println!(
                "{rep:>4}  {mode:<9}  {:>9.1}  {:>10}  {:>6}  {:>7.0}  {:>12.0} ms  {:>5.1} MiB",
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
    println!(
        "\nSummary: {reps} reps per mode, each run {ops} files created+unlinked then {ops} missing names stat'ed, on tmpfs"
    );
    println!(
        "(kernel {}, {} cores; medians, with min and max to show the noise)",
        host.kernel, host.cores
    );
    println!(
        "\n{:<9}  {:>9}  {:>9}  {:>9}  {:>7}  {:>17}",
        "mode", "median ms", "min ms", "max ms", "spread", "overhead ns/event"
    );
    let overheads = [None, s.floor_ns_per_event, s.slabtrace_ns_per_event];
    for ((mode, w), overhead) in Mode::ALL.iter().zip(&s.wall).zip(overheads) {
        let overhead = overhead.map_or_else(|| "-".to_owned(), |o| format!("{o:.1}"));
        println!(
            "{:<9}  {:>9.1}  {:>9.1}  {:>9.1}  {:>6.1}%  {overhead:>17}",
            mode.name(),
            w.median,
            w.min,
            w.max,
            w.relative() * 100.0
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
    for (mode, w) in Mode::ALL.iter().zip(&s.wall) {
        if w.noisy() {
            any_noisy = true;
            println!(
                "Noisy: {}'s runs spread by {:.0}% of their median (more than {:.0}%); rerun, or raise --reps.",
                mode.name(),
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

fn summary_json(s: &Summary, runs: &[Run], host: &Host, args: &BenchArgs) -> Value {
    let mode_json = |mode: Mode, w: &Spread| {
        let runs_ms: Vec<f64> = runs.iter().filter(|r| r.mode == mode).map(|r| r.wall_ms).collect();
        json!({ "median_ms": w.median, "min_ms": w.min, "max_ms": w.max, "noisy": w.noisy(), "runs_ms": runs_ms })
    };
    let [none, floor, slab] = &s.wall;
    json!({
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
    })
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
}
