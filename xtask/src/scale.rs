//! `cargo xtask bench --scale`: what slabtrace's daemon costs in userspace on a node with many
//! cgroups, each allocating from many caches.
//!
//! The kernel side's cost per event does not depend on how many keys there are; the daemon's
//! work per interval does (reading the counters map, deltas, attribution, rollups, events,
//! metrics). So this runs the real daemon, on its real (pinned) maps, with a real cgroup tree
//! of `--cgroups` pods (kubelet's systemd layout, one container each), and fills the counters
//! map with `--caches` keys per container cgroup, as that many pods' allocations would, then
//! measures the daemon's CPU time and memory over `--intervals` intervals at its default
//! interval, with Prometheus scraping /metrics once per interval. Between intervals a tenth of
//! the keys grow, so every interval has changes to attribute and report. The keys are written
//! by the bench, not by allocations: making 1,000 cgroups allocate from 200 caches each is not
//! something a workload can do on demand, and the daemon cannot tell the difference.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
use slabtrace_common::{CacheId, CounterKey, Counters};

use crate::{cmd, setup};

/// The daemon's default interval (`slabtrace daemon --interval`).
const INTERVAL: Duration = Duration::from_secs(10);
/// Intervals before measuring: the first reads see every key new and name every cgroup.
const WARM_UP: u32 = 2;
/// How long the daemon may take to attach its programs.
const READY_TIMEOUT: Duration = Duration::from_mins(2);
/// Goals (issue 13): a `DaemonSet` on a busy node must stay out of the way.
const GOAL_CORE_PCT: f64 = 0.5;
const GOAL_RSS_MIB: f64 = 30.0;

/// The scale mode's settings (`cargo xtask bench --scale`).
#[derive(Clone, Copy, Debug)]
pub struct ScaleArgs {
    /// Pods (one container cgroup each).
    pub cgroups: u32,
    /// Caches per container cgroup: keys = cgroups × caches.
    pub caches: u32,
    /// Intervals measured after the warm-up.
    pub intervals: u32,
}

/// Runs the scale bench and prints its figures; fails when the daemon did not see the keys.
pub fn run(args: ScaleArgs) -> Result<()> {
    ensure!(setup::is_root(), "the scale bench loads BPF programs: run it as root");
    setup::ensure_toolchain()?;
    cmd("cargo", &["build", "--release", "--package", "slabtrace"])?;
    let bin = setup::workspace_root()?.join("target/release/slabtrace");
    let keys = u64::from(args.cgroups) * u64::from(args.caches);
    let max_keys = u32::try_from((keys + keys / 4).next_power_of_two())
        .context("too many keys for the counters map")?;

    let tree = PodTree::create(&cgroup2_root()?, args.cgroups)?;
    let scratch = std::env::temp_dir().join(format!("slabtrace-scale.{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let pin = PathBuf::from(format!("/sys/fs/bpf/slabtrace-scale-{}", std::process::id()));
    let _cleanup = Cleanup { paths: vec![scratch.clone(), pin.clone()] };
    let port = free_port()?;
    let events = scratch.join("events.ndjson");
    let events = events.to_str().context("a scratch path that is not UTF-8")?;
    let extra = ["--max-keys", &max_keys.to_string(), "--events", events];
    let daemon = Daemon::start(&bin, &scratch, &pin, port, &extra)?;

    let counters = pinned_counters(&pin)?;
    let mut counters: PerCpuHashMap<MapData, CounterKey, Counters> =
        PerCpuHashMap::try_from(counters)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let keys_of: Vec<CounterKey> = tree
        .ids
        .iter()
        .flat_map(|&cgroup_id| {
            (0..args.caches).map(move |i| CounterKey {
                cgroup_id,
                cache: cache_id(i),
                flags: 0,
                padding: 0,
            })
        })
        .collect();
    eprintln!(
        "xtask: scale: {} pods, {} caches each: writing {} keys into the daemon's counters map",
        args.cgroups,
        args.caches,
        keys_of.len()
    );
    for key in &keys_of {
        counters.insert(key, per_cpu(cpus, 1)?, 0)?;
    }

    let mut round = 1;
    let grow = |counters: &mut PerCpuHashMap<MapData, CounterKey, Counters>, round: u64| {
        // A tenth of the keys grow each interval, a different tenth each time.
        for key in keys_of.iter().skip((round % 10) as usize).step_by(10) {
            counters.insert(key, per_cpu(cpus, round + 1)?, 0)?;
        }
        anyhow::Ok(())
    };
    for _ in 0..WARM_UP {
        thread::sleep(INTERVAL);
        grow(&mut counters, round)?;
        scrape(port, "/metrics")?;
        round += 1;
    }
    let cpu_before = daemon.cpu_seconds()?;
    let start = Instant::now();
    for _ in 0..args.intervals {
        thread::sleep(INTERVAL);
        grow(&mut counters, round)?;
        scrape(port, "/metrics")?;
        round += 1;
    }
    let cpu = daemon.cpu_seconds()? - cpu_before;
    let wall = start.elapsed().as_secs_f64();
    let (rss, peak) = daemon.rss_mib()?;
    let report = scrape(port, "/report")?;
    let report: serde_json::Value =
        serde_json::from_str(&report).context("the daemon's /report is not JSON")?;
    let seen = report["self"]["counters_entries"].as_u64().unwrap_or(0);
    let pods = report["pods"].as_array().map_or(0, Vec::len);
    daemon.stop()?;

    let core_pct = 100.0 * cpu / wall;
    println!("\nslabtrace daemon at scale (`slabtrace daemon`, interval {}s):", INTERVAL.as_secs());
    println!("  pods × caches:         {} × {} = {} keys", args.cgroups, args.caches, keys);
    println!("  seen by the daemon:    {seen} keys, {pods} pods in /report");
    println!(
        "  CPU:                   {core_pct:.2}% of a core ({cpu:.2}s over {wall:.0}s, {} intervals; goal ≤ {GOAL_CORE_PCT}%)",
        args.intervals
    );
    println!(
        "  RSS:                   {rss:.1} MiB now, {peak:.1} MiB peak (goal ≤ {GOAL_RSS_MIB} MiB)"
    );
    ensure!(
        seen >= keys,
        "the daemon saw {seen} keys of the {keys} written: the figures above do not measure the scale asked for"
    );
    Ok(())
}

/// The synthetic kmalloc cache id of the `i`th cache: the eight kmalloc families times sizes
/// in steps of 8 bytes, so that every id is distinct and every one names itself.
fn cache_id(i: u32) -> u64 {
    CacheId::kmalloc(i % 8, 8 * (i / 8 + 1))
}

/// One value per CPU, together `allocs` allocations with a quarter of the sample still live.
fn per_cpu(cpus: usize, n: u64) -> Result<PerCpuValues<Counters>> {
    let one = Counters {
        allocs: 16 * n,
        sampled_allocs: n,
        sampled_frees: n * 3 / 4,
        ..Counters::default()
    };
    Ok(PerCpuValues::try_from(vec![one; cpus])?)
}

/// The cgroup2 mount point, from /proc/self/mounts.
pub(crate) fn cgroup2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .context("no cgroup2 file system is mounted")
}

/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
/// cri-containerd-<id>.scope` for each pod, as kubelet's systemd driver lays them out; removed
/// on drop.
struct PodTree {
    top: PathBuf,
    dirs: Vec<PathBuf>,
    /// The container cgroups' ids (their directories' inode numbers).
    ids: Vec<u64>,
}

impl PodTree {
    fn create(root: &Path, pods: u32) -> Result<Self> {
        let top = root.join("kubepods.slice");
        ensure!(
            !top.exists(),
            "{} exists: the scale bench makes its own pods there and would mix with a node's; run it on a machine that is not a Kubernetes node",
            top.display()
        );
        let mut tree = Self { top: top.clone(), dirs: Vec::new(), ids: Vec::new() };
        let qos = top.join("kubepods-besteffort.slice");
        for dir in [&top, &qos] {
            fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            tree.dirs.push(dir.clone());
        }
        for i in 0..pods {
            let pod =
                qos.join(format!("kubepods-besteffort-pod5ca1e000_0000_4000_8000_{i:012x}.slice"));
            let container = pod.join(format!("cri-containerd-{i:064x}.scope"));
            for dir in [&pod, &container] {
                fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                tree.dirs.push(dir.clone());
            }
            tree.ids.push(fs::metadata(&container)?.ino());
        }
        Ok(tree)
    }
}

impl Drop for PodTree {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("xtask: scale: cannot remove {}: {e}", dir.display());
            }
        }
        if self.top.exists() {
            eprintln!("xtask: scale: {} is left behind", self.top.display());
        }
    }
}

/// Removes the scratch and pin directories on drop.
pub(crate) struct Cleanup {
    pub(crate) paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.paths {
            if path.exists()
                && let Err(e) = fs::remove_dir_all(path)
            {
                eprintln!("xtask: scale: cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The running daemon; killed on drop unless stopped.
pub(crate) struct Daemon {
    child: Option<Child>,
    pub(crate) pid: u32,
    log: PathBuf,
}

impl Daemon {
    /// Starts `slabtrace daemon` on `port` with its maps pinned under `pin`, its log in
    /// `scratch`, and `extra`.
    pub(crate) fn start(
        bin: &Path,
        scratch: &Path,
        pin: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<Self> {
        let ready = scratch.join("ready");
        let log = scratch.join("daemon.log");
        // A profiler to run the daemon under (`valgrind --tool=massif`, say): diagnostics for a
        // soak whose memory grows. It must keep the daemon's process id (exec, not fork).
        let wrapper = std::env::var("SLABTRACE_DAEMON_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(["daemon", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--pin-path")
            .arg(pin)
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("SLABTRACE_INTERVAL")
            .env_remove("SLABTRACE_MAX_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut daemon = Self { pid: child.id(), child: Some(child), log };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            if let Some(status) = daemon.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the daemon exited ({status}) before attaching:\n{}", daemon.log_tail());
            }
            ensure!(Instant::now() < deadline, "the daemon did not attach:\n{}", daemon.log_tail());
            thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// utime + stime so far, all threads.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let ticks = crate::bench::parse_cpu_ticks(&stat).context("cannot parse /proc/PID/stat")?;
        Ok(ticks as f64 / crate::bench::clock_ticks_per_second()?)
    }

    /// Resident memory now and at its peak, MiB.
    pub(crate) fn rss_mib(&self) -> Result<(f64, f64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .with_context(|| format!("no {field} in /proc/PID/status"))
        };
        Ok((kib("VmRSS:")? as f64 / 1024.0, kib("VmHWM:")? as f64 / 1024.0))
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: our child, not yet waited for.
        unsafe { libc::kill(libc::pid_t::try_from(self.pid)?, libc::SIGTERM) };
        let status = child.wait()?;
        ensure!(status.success(), "the daemon failed ({status}):\n{}", self.log_tail());
        Ok(())
    }

    fn log_tail(&self) -> String {
        crate::bench::log_tail(&self.log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon's pinned counters map: `<pin>/<state>/COUNTERS`.
fn pinned_counters(pin: &Path) -> Result<Map> {
    let state = fs::read_dir(pin)
        .with_context(|| format!("cannot list {}", pin.display()))?
        .filter_map(Result::ok)
        .find(|e| e.path().join("COUNTERS").exists())
        .with_context(|| format!("no pinned COUNTERS map under {}", pin.display()))?;
    let data = MapData::from_pin(state.path().join("COUNTERS"))?;
    Ok(Map::PerCpuHashMap(data))
}

/// GET `path` from the daemon; the body.
pub(crate) fn scrape(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header from the daemon")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {}", head.lines().next().unwrap_or(""));
    Ok(body.to_owned())
}
