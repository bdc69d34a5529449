//! `cargo xtask soak --minutes N`: the daemon over time under what a busy node throws at it,
//! and whether it stays bounded.
//!
//! Every round (a few seconds) a cgroup is created, churns files (allocations and frees of
//! dentries, inodes and files) and is removed; every minute a process in a memory cgroup with a
//! 64 MiB limit is OOM-killed; twenty HTTP clients ask for `/report` and never read; the event
//! stream goes to a unix socket whose reader takes a line a second. The daemon runs with a
//! small live-object table (`--max-live 4096`), so evictions happen all the time, and with
//! `--gone-pod-ttl 0`, so gone cgroups are forgotten as soon as nothing of theirs lives.
//!
//! Once a minute it prints the daemon's RSS and CPU, its counter keys and tracked objects,
//! what the BPF side dropped, the events dropped, HTTP connections evicted and OOM kills seen.
//! At the end it fails unless RSS and keys are flat (the last minute within a fifth, plus a
//! margin, of the second minute's) and the BPF side dropped nothing. Not covered here: pod
//! churn through a container runtime and a runtime restart (the containerd tests do those).

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
}

/// Runs the soak for `minutes` and prints its table; fails when something grew or was lost.
pub fn run(minutes: u32) -> Result<()> {
    ensure!(setup::is_root(), "the soak loads BPF programs and makes cgroups: run it as root");
    ensure!(minutes >= 3, "a soak needs at least 3 minutes to judge flatness");
    let release = crate::bench::build_release()?;
    let workload = release.join("slab-workload");

    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("slabtrace-soak.{pid}"));
    fs::create_dir_all(scratch.join("files"))?;
    let pin = PathBuf::from(format!("/sys/fs/bpf/slabtrace-soak-{pid}"));
    let _cleanup = Cleanup { paths: vec![scratch.clone(), pin.clone()] };
    let socket = scratch.join("events.sock");
    let reader = slow_reader(&socket)?;
    let port = free_port()?;
    let events = format!("unix:{}", socket.display());
    let daemon = Daemon::start(
        &release.join("slabtrace"),
        &scratch,
        &pin,
        port,
        &["--interval", "5s", "--max-live", "4096", "--gone-pod-ttl", "0", "--events", &events],
    )?;
    let cgroups = cgroup2_root()?;
    let memcg = OomCgroup::create(pid)?;

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut cpu_before = daemon.cpu_seconds()?;
    let mut round = 0u64;
    let mut next_minute = start + Duration::from_mins(1);
    let mut minute = 0;
    println!(
        "{:>6} {:>8} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "MINUTE",
        "RSS MiB",
        "CPU %",
        "KEYS",
        "LIVE",
        "RETIRED",
        "BPF DROP",
        "EV DROP",
        "HTTP EV",
        "OOMS"
    );
    while minute < minutes {
        round += 1;
        let silent = silent_clients(port);
        churn_cgroup(&cgroups, &workload, &scratch.join("files"), pid, round)?;
        if round % (60 / ROUND.as_secs()) == 1 {
            memcg.kill_one(&workload)?;
        }
        thread::sleep(ROUND);
        drop(silent);
        if Instant::now() >= next_minute {
            next_minute += Duration::from_mins(1);
            let cpu = daemon.cpu_seconds()?;
            minute += 1;
            let sample = sample(&daemon, port, minute, cpu - cpu_before)?;
            cpu_before = cpu;
            println!(
                "{:>6} {:>8.1} {:>6.2} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>5}",
                sample.minute,
                sample.rss_mib,
                sample.cpu_pct,
                sample.keys,
                sample.live,
                sample.retired,
                sample.bpf_dropped,
                sample.events_dropped,
                sample.http_evicted,
                sample.oom_kills
            );
            samples.push(sample);
        }
    }
    daemon.stop()?;
    drop(reader);
    judge(&samples)
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
    })
}

/// Flat RSS and keys from the second minute to the last, and nothing lost on the BPF side.
fn judge(samples: &[Sample]) -> Result<()> {
    let (Some(base), Some(last)) = (samples.get(1), samples.last()) else {
        return Ok(());
    };
    let flat = |what: &str, base: f64, last: f64, margin: f64| {
        ensure!(
            last <= base * 1.2 + margin,
            "{what} grew from {base:.1} (minute 2) to {last:.1} (minute {})",
            samples.len()
        );
        Ok(())
    };
    flat("RSS (MiB)", base.rss_mib, last.rss_mib, 5.0)?;
    flat("counter keys", base.keys, last.keys, 200.0)?;
    ensure!(last.bpf_dropped == 0.0, "the BPF side dropped {} records", last.bpf_dropped);
    ensure!(last.oom_kills > 0.0, "no OOM kill was seen");
    println!("soak: RSS and keys flat, nothing dropped on the BPF side");
    Ok(())
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
