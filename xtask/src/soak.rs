//! `cargo xtask soak --minutes N`: the daemon over time under what a busy node throws at it,
//! and whether it stays bounded.
//!
//! Every round (a few seconds) a cgroup is created, churns files (allocations and frees of
//! dentries, inodes and files) and is removed; every minute a process in a memory cgroup with a
//! 64 MiB limit is OOM-killed; twenty HTTP clients ask for `/report` and never read; the event
//! stream goes to a unix socket whose reader takes a line a second. The daemon runs with a
//! small live-object table (`--max-live 4096`), so evictions happen all the time, and with
//! `--gone-pod-ttl 0`, so gone cgroups are forgotten as soon as nothing of theirs lives, and
//! with a growth window of `--growth-window-minutes` (5): the growth histories hold a window of
//! points per series, so RSS and CPU rise while the window fills and are judged from the minute
//! after it.
//!
//! Every round a pod also runs through a private containerd's CRI (tests/src/bin/pod-churn.rs),
//! makes files and is deleted, and the soak waits for `/report` to name it; every five minutes
//! (first at two and a half) containerd is stopped and started again on the same socket.
//!
//! Once a minute it prints the daemon's RSS and CPU, its counter keys and tracked objects,
//! what the BPF side dropped, the events dropped, HTTP connections evicted, OOM kills seen,
//! pods named of pods run, and runtime restarts. At the end it fails unless RSS is flat (the
//! last minute at most 1.5 MiB or 5 % above the first full window's, and a least-squares climb
//! of at most 3 MiB an hour over the minutes between), keys and CPU are (within a fifth, plus a
//! margin), the BPF side dropped nothing, and every pod of the last minute and one after each
//! restart was named.
//!
//! `SLABTRACE_DAEMON_WRAPPER` runs the daemon under a profiler that keeps its process id
//! (`valgrind --tool=massif --massif-out-file=/tmp/massif.out`): how the growth above was
//! found.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    scale::{Cleanup, Daemon, cgroup2_root, free_port, scrape},
    setup,
};

/// One round: a cgroup's churn and the HTTP clients.
const ROUND: Duration = Duration::from_secs(5);
/// Files each round's cgroup creates and unlinks.
const CHURN_FILES: &str = "2000";
/// HTTP clients per round that never read.
const SILENT_CLIENTS: usize = 20;
/// Rounds between runtime restarts (five minutes), and the round of the first.
const RESTART_ROUNDS: u64 = 60;
const FIRST_RESTART: u64 = 30;
/// How long a pod's name may take to show in `/report` (a few intervals).
const NAME_DEADLINE: Duration = Duration::from_secs(30);

/// One minute's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    minute: u32,
    rss_mib: f64,
    cpu_pct: f64,
    keys: f64,
    live: f64,
    retired: f64,
    bpf_dropped: f64,
    events_dropped: f64,
    http_evicted: f64,
    oom_kills: f64,
    pods_run: u32,
    pods_named: u32,
    restarts: u32,
}

/// Runs the soak for `minutes` and prints its table; fails when something grew or was lost.
pub fn run(minutes: u32, window: u32) -> Result<()> {
    ensure!(setup::is_root(), "the soak loads BPF programs and makes cgroups: run it as root");
    ensure!(window >= 1, "the growth window is at least a minute");
    ensure!(
        minutes >= window + 3,
        "a soak needs the growth window ({window} min) and 3 minutes more to judge flatness"
    );
    let release = crate::bench::build_release()?;
    let workload = release.join("slab-workload");
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    crate::cmd(
        "cargo",
        &["build", "--release", "--package", "slabtrace-integration", "--bin", "pod-churn"],
    )?;

    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("slabtrace-soak.{pid}"));
    fs::create_dir_all(scratch.join("files"))?;
    let pin = PathBuf::from(format!("/sys/fs/bpf/slabtrace-soak-{pid}"));
    let _cleanup = Cleanup { paths: vec![scratch.clone(), pin.clone()] };
    let socket = scratch.join("events.sock");
    let reader = slow_reader(&socket)?;
    let port = free_port()?;
    let events = format!("unix:{}", socket.display());
    // Short: the CRI socket's path must fit in sun_path.
    let runtime_dir = PathBuf::from(format!("/tmp/st-soak-{pid}"));
    let _runtime_cleanup = Cleanup { paths: vec![runtime_dir.clone()] };
    let churn = PodChurn::start(&release.join("pod-churn"), &runtime_dir)?;
    let cri = churn.socket.clone();
    let mut pods = Pods { churn, run: 0, named: 0, restarts: 0, named_since_restart: true };
    let daemon = Daemon::start(
        &release.join("slabtrace"),
        &scratch,
        &pin,
        port,
        &[
            "--interval",
            "5s",
            "--max-live",
            "4096",
            "--gone-pod-ttl",
            "0",
            "--growth-window",
            &format!("{window}m"),
            "--events",
            &events,
            "--cri-socket",
            &cri,
        ],
    )?;
    let cgroups = cgroup2_root()?;
    let memcg = OomCgroup::create(pid)?;

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut cpu_before = daemon.cpu_seconds()?;
    let mut round = 0u64;
    let mut next_minute = start + Duration::from_mins(1);
    let mut minute = 0;
    println!("{}", Sample::HEADER);
    while minute < minutes {
        round += 1;
        let silent = silent_clients(port);
        let pod = pods.churn.ask("pod")?;
        churn_cgroup(&cgroups, &workload, &scratch.join("files"), pid, round)?;
        if round % (60 / ROUND.as_secs()) == 1 {
            memcg.kill_one(&workload)?;
        }
        thread::sleep(ROUND);
        drop(silent);
        pods.settle(&pod, port, round)?;
        if Instant::now() >= next_minute {
            next_minute += Duration::from_mins(1);
            let cpu = daemon.cpu_seconds()?;
            minute += 1;
            let mut sample = sample(&daemon, port, minute, cpu - cpu_before)?;
            cpu_before = cpu;
            (sample.pods_run, sample.pods_named, sample.restarts) = pods.minute();
            println!("{}", sample.row());
            samples.push(sample);
        }
    }
    daemon.stop()?;
    ensure!(pods.named_since_restart, "no pod was named after the last runtime restart");
    drop(pods);
    drop(reader);
    judge(&samples, window as usize + 1)
}

impl Sample {
    const HEADER: &str = "MINUTE  RSS MiB  CPU %    KEYS    LIVE  RETIRED BPF DROP  EV DROP  HTTP EV  OOMS    PODS RESTARTS";

    fn row(&self) -> String {
        format!(
            "{:>6} {:>8.1} {:>6.2} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>8}",
            self.minute,
            self.rss_mib,
            self.cpu_pct,
            self.keys,
            self.live,
            self.retired,
            self.bpf_dropped,
            self.events_dropped,
            self.http_evicted,
            self.oom_kills,
            format!("{}/{}", self.pods_named, self.pods_run),
            self.restarts
        )
    }
}

/// The pods of the soak: run, named, and the runtime's restarts.
struct Pods {
    churn: PodChurn,
    /// Pods run and named this minute.
    run: u32,
    named: u32,
    /// Runtime restarts so far, and whether a pod was named since the last.
    restarts: u32,
    named_since_restart: bool,
}

impl Pods {
    /// After a round: whether `/report` named the pod `answer` describes, then the pod goes,
    /// and on the restart rounds the runtime restarts.
    fn settle(&mut self, answer: &str, port: u16, round: u64) -> Result<()> {
        self.run += 1;
        if let Some((uid, name)) = answer.strip_prefix("pod ").and_then(|p| p.split_once(' ')) {
            if named(port, uid, name)? {
                self.named += 1;
                self.named_since_restart = true;
            }
        } else {
            eprintln!("xtask: soak: pod-churn: {answer}");
        }
        self.churn.ask("gone")?;
        if round % RESTART_ROUNDS == FIRST_RESTART {
            ensure!(
                self.named_since_restart,
                "no pod was named after runtime restart {}",
                self.restarts
            );
            self.churn.ask("restart")?;
            self.restarts += 1;
            self.named_since_restart = false;
        }
        Ok(())
    }

    /// This minute's pods run and named, and the restarts so far; starts the next minute.
    fn minute(&mut self) -> (u32, u32, u32) {
        let figures = (self.run, self.named, self.restarts);
        (self.run, self.named) = (0, 0);
        figures
    }
}

/// Whether `/report` names pod `uid` `soak/<name>` within [`NAME_DEADLINE`].
fn named(port: u16, uid: &str, name: &str) -> Result<bool> {
    let deadline = Instant::now() + NAME_DEADLINE;
    loop {
        let report: serde_json::Value = serde_json::from_str(&scrape(port, "/report")?)?;
        let pod = report["pods"].as_array().into_iter().flatten().find(|p| p["uid"] == uid);
        if pod.is_some_and(|p| p["namespace"] == "soak" && p["name"] == name) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            eprintln!("xtask: soak: pod soak/{name} ({uid}) not named: {pod:?}");
            return Ok(false);
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// tests/src/bin/pod-churn.rs, running: pods through a private containerd, on command.
struct PodChurn {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// Its CRI socket.
    socket: String,
}

impl PodChurn {
    fn start(bin: &Path, dir: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut me = Self { child, stdin: Some(stdin), stdout, socket: String::new() };
        let ready = me.answer()?;
        ready.strip_prefix("ready ").context("pod-churn did not start")?.clone_into(&mut me.socket);
        Ok(me)
    }

    /// Sends `command`; its answer.
    fn ask(&mut self, command: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("pod-churn's input is closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        self.answer()
    }

    fn answer(&mut self) -> Result<String> {
        self.stdout.next().context("pod-churn ended (see its error above)")?.map_err(Into::into)
    }
}

impl Drop for PodChurn {
    fn drop(&mut self) {
        // End of input: it removes its pods and stops containerd.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The daemon's figures now, `cpu` its CPU seconds over the last minute.
fn sample(daemon: &Daemon, port: u16, minute: u32, cpu: f64) -> Result<Sample> {
    let metrics = scrape(port, "/metrics")?;
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Sample {
        minute,
        rss_mib: daemon.rss_mib()?.0,
        cpu_pct: cpu / 60.0 * 100.0,
        keys: sum("slabtrace_counters_keys "),
        live: sum("slabtrace_live_objects_tracked "),
        retired: sum("slabtrace_counters_retired_total "),
        bpf_dropped: sum("slabtrace_dropped_total{") + sum("slabtrace_counters_full_total "),
        events_dropped: sum("slabtrace_stream_events_dropped_total "),
        http_evicted: sum("slabtrace_http_connections_evicted_total "),
        oom_kills: sum("slabtrace_oom_kills_total{"),
        ..Sample::default()
    })
}

/// Flat RSS, CPU and keys from minute `from` (the first after the growth histories filled) to
/// the last, and nothing lost on the BPF side.
fn judge(samples: &[Sample], from: usize) -> Result<()> {
    let (Some(base), Some(last)) = (samples.get(from - 1), samples.last()) else {
        return Ok(());
    };
    let flat = |what: &str, base: f64, last: f64, margin: f64| {
        ensure!(
            last <= base * 1.2 + margin,
            "{what} grew from {base:.2} (minute {from}) to {last:.2} (minute {})",
            samples.len()
        );
        Ok(())
    };
    // RSS: at most 1.5 MiB (or 5 %) above the first judged minute, and no steady climb. The
    // looser bound before (a fifth plus 5 MiB) passed a daemon growing 2 MiB a minute.
    let allowed = (base.rss_mib * 0.05).max(1.5);
    ensure!(
        last.rss_mib <= base.rss_mib + allowed,
        "RSS grew from {:.1} MiB (minute {from}) to {:.1} MiB (minute {}): more than {allowed:.1}",
        base.rss_mib,
        last.rss_mib,
        samples.len()
    );
    let judged: Vec<(f64, f64)> =
        samples[from - 1..].iter().map(|s| (f64::from(s.minute), s.rss_mib)).collect();
    if judged.len() >= 5 {
        let per_hour = slope(&judged) * 60.0;
        ensure!(
            per_hour <= MAX_RSS_MIB_PER_HOUR,
            "RSS climbs {per_hour:.1} MiB an hour from minute {from} (at most \
             {MAX_RSS_MIB_PER_HOUR}): a leak"
        );
    }
    flat("counter keys", base.keys, last.keys, 200.0)?;
    // CPU is noisy minute to minute: the mean of the last three against the three from `from`.
    let mean = |s: &[Sample]| s.iter().map(|s| s.cpu_pct).sum::<f64>() / s.len().max(1) as f64;
    let n = samples.len();
    let early = mean(&samples[from - 1..(from + 2).min(n)]);
    let late = mean(&samples[n.saturating_sub(3).max(from - 1)..]);
    flat("CPU (% of a core)", early, late, 0.2)?;
    ensure!(last.bpf_dropped == 0.0, "the BPF side dropped {} records", last.bpf_dropped);
    ensure!(last.oom_kills > 0.0, "no OOM kill was seen");
    ensure!(
        last.pods_run > 0 && last.pods_named == last.pods_run,
        "the last minute named {} of {} pods",
        last.pods_named,
        last.pods_run
    );
    println!(
        "soak: RSS, CPU and keys flat from minute {from}, nothing dropped on the BPF side, every \
         pod of the last minute named"
    );
    Ok(())
}

/// How fast RSS may climb over the judged minutes, MiB an hour (a least-squares slope).
const MAX_RSS_MIB_PER_HOUR: f64 = 3.0;

/// The least-squares slope of `points` (x, y): y per unit of x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// A unix socket listener that reads the event stream a line a second, on its own thread.
fn slow_reader(socket: &Path) -> Result<thread::JoinHandle<()>> {
    let listener = UnixListener::bind(socket)?;
    Ok(thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut lines = BufReader::new(stream).lines();
            while let Some(Ok(_)) = lines.next() {
                thread::sleep(Duration::from_secs(1));
            }
        }
    }))
}

/// Clients that ask for `/report` and never read; closed when the result is dropped.
fn silent_clients(port: u16) -> Vec<TcpStream> {
    (0..SILENT_CLIENTS)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /report HTTP/1.1\r\nHost: soak\r\n\r\n").ok()?;
            Some(s)
        })
        .collect()
}

/// A cgroup that churns files in `dir`, then goes.
fn churn_cgroup(root: &Path, workload: &Path, dir: &Path, pid: u32, round: u64) -> Result<()> {
    let cgroup = root.join(format!("slabtrace-soak-{pid}-{round}"));
    fs::create_dir(&cgroup).with_context(|| format!("cannot create {}", cgroup.display()))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" churn "$3" "$4""#)
        .args(["sh"])
        .arg(&cgroup)
        .arg(workload)
        .arg(dir)
        .arg(CHURN_FILES)
        .status();
    let removed = fs::remove_dir(&cgroup);
    ensure!(status?.success(), "the churn in {} failed", cgroup.display());
    removed.with_context(|| format!("cannot remove {}", cgroup.display()))
}

/// A memory cgroup with a 64 MiB limit (cgroup v1's memory controller if mounted, else cgroup
/// v2's), where a process that touches 512 MiB is OOM-killed.
struct OomCgroup(PathBuf);

impl OomCgroup {
    fn create(pid: u32) -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(format!("slabtrace-soak-{pid}")), "memory.limit_in_bytes")
        } else {
            (cgroup2_root()?.join(format!("slabtrace-soak-{pid}-oom")), "memory.max")
        };
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let memcg = Self(dir);
        fs::write(memcg.0.join(limit), "67108864")
            .with_context(|| format!("cannot limit {}", memcg.0.display()))?;
        Ok(memcg)
    }

    /// Runs `slab-workload hog 512` in it, which the kernel kills.
    fn kill_one(&self, workload: &Path) -> Result<()> {
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" hog 512"#)
            .args(["sh"])
            .arg(&self.0)
            .arg(workload)
            .status()?;
        ensure!(!status.success(), "the hog in {} was not killed", self.0.display());
        Ok(())
    }
}

impl Drop for OomCgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("xtask: soak: cannot remove {}: {e}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(rss: &[f64]) -> Vec<Sample> {
        (1..)
            .zip(rss)
            .map(|(minute, &rss_mib)| Sample {
                minute,
                rss_mib,
                keys: 400.0,
                oom_kills: 1.0,
                pods_run: 10,
                pods_named: 10,
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn the_slope_is_per_unit_of_x() {
        assert!((slope(&[(1.0, 10.0), (2.0, 12.0), (3.0, 14.0)]) - 2.0).abs() < 1e-9);
        assert!(slope(&[(1.0, 5.0), (2.0, 5.0)]).abs() < 1e-9);
        assert!(slope(&[(1.0, 5.0)]).abs() < 1e-9);
    }

    #[test]
    fn a_flat_daemon_passes_and_the_runs_that_grew_fail() {
        judge(&minutes(&[24.7, 27.7, 27.9, 27.8, 27.9, 28.0, 27.9, 27.9, 28.1, 28.0]), 2).unwrap();
        // The first soak: 24.7 MiB at minute 1 to 37.0 at 30, in steps.
        let steps: Vec<f64> = (0..30)
            .map(|m| {
                if m < 6 {
                    27.7
                } else if m < 21 {
                    33.3
                } else {
                    35.5
                }
            })
            .collect();
        assert!(judge(&minutes(&steps), 6).is_err());
        // The second: 2 MiB a minute, which the old margin let through.
        let climb: Vec<f64> = (0..12).map(|m| 36.7 + 1.1 * f64::from(m)).collect();
        assert!(judge(&minutes(&climb), 5).is_err());
        // A slow climb within the end-to-end bound is still a leak: 3.6 MiB an hour.
        let slow: Vec<f64> = (0..30).map(|m| 30.0 + 0.06 * f64::from(m)).collect();
        let err = judge(&minutes(&slow), 6).unwrap_err().to_string();
        assert!(err.contains("an hour"), "{err}");
    }
}
