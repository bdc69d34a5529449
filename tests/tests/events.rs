//! The daemon's NDJSON event stream, from real runs: every line validates against the
//! published JSON Schema, every event type shows up when its cause happens, a consumer that
//! stops reading costs counted drops and never stops tracing, and SIGTERM flushes the last
//! interval and exits 0 within the deadline.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use slabtrace_integration::{
    Cgroup, Tmpfs, check_event_schema,
    daemon::{Daemon, Stopped},
    event_schema, fresh_uid,
    memcg::{Memcg, ensure_killed},
    require_root, workload,
};

fn create_files(cg: &Cgroup, dir: &Path, n: u64) -> Result<()> {
    cg.run(Command::new(workload()).arg("create").arg(dir).arg(n.to_string()))?;
    Ok(())
}

fn is_sample_of(e: &Value, path: &str) -> bool {
    e["type"] == "slab.sample" && e["owner"]["cgroup"] == path
}

#[test]
fn every_event_type_validates_against_the_schema() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("events-schema")?;
    let daemon = Daemon::start("events-schema", &["--interval", "1s", "--events-top", "3"])?;

    // A cgroup outside kubepods and a pod: each allocates, then goes away.
    let plain = Cgroup::create("events-plain")?;
    let uid = fresh_uid()?;
    let pod = Cgroup::create_at(&format!("/kubepods/besteffort/pod{uid}/0123456789abcdef"))?;
    let plain_path = plain.relative().to_owned();
    fs::create_dir(fs.path().join("a"))?;
    fs::create_dir(fs.path().join("b"))?;
    create_files(&plain, &fs.path().join("a"), 2_000)?;
    create_files(&pod, &fs.path().join("b"), 1_000)?;
    let sample = daemon.wait_for_event(|e| is_sample_of(e, &plain_path))?;
    drop(plain);
    drop(pod);
    let gone = daemon
        .wait_for_event(|e| e["type"] == "cgroup.gone" && e["owner"]["cgroup"] == plain_path)?;
    let pod_gone =
        daemon.wait_for_event(|e| e["type"] == "pod.gone" && e["owner"]["uid"] == uid)?;

    let (_, events) = daemon_stop(daemon)?;
    check_event_schema(&events)?;

    let types: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in ["slab.sample", "pod.gone", "cgroup.gone", "node.memory", "self.stats"] {
        ensure!(types.contains(t), "no {t} event in {types:?}");
    }
    // Where a hierarchy has the memory controller, its books come every interval.
    if slabtrace::cgroup::charged::MemcgBooks::find(Path::new("/proc")).is_some() {
        for t in ["node.charged", "node.dying_cgroups"] {
            ensure!(types.contains(t), "no {t} event in {types:?}");
        }
    }
    // Top 3 per interval, then one rolled-up sample for the rest.
    let other = events.iter().find(|e| e["type"] == "slab.sample" && e["owner"]["kind"] == "other");
    ensure!(other.is_some_and(|o| o["owner"]["rows"].as_u64() > Some(0)), "no other rollup");
    for seq in events.iter().filter_map(|e| e["seq"].as_u64()).collect::<BTreeSet<_>>() {
        let samples = events
            .iter()
            .filter(|e| {
                e["seq"] == seq && e["type"] == "slab.sample" && e["owner"]["kind"] != "other"
            })
            .count();
        ensure!(samples <= 3, "interval {seq} has {samples} samples, more than --events-top 3");
    }
    // The files the plain cgroup made are its inodes, live (they still exist on the tmpfs).
    ensure!(sample["allocs"].as_u64() > Some(0), "{sample}");
    ensure!(gone["live_bytes"].as_u64() > Some(0), "the gone cgroup's inodes live on: {gone}");
    ensure!(pod_gone["owner"]["deleted"] == true, "{pod_gone}");
    // The last interval is flushed and says so.
    let last = events.iter().rev().find(|e| e["type"] == "self.stats").context("no self.stats")?;
    ensure!(last["last"] == true, "the final self.stats is not marked last: {last}");
    ensure!(last["dropped_events"] == 0, "{last}");
    Ok(())
}

/// SIGTERM, exit 0 in time, and every event written.
fn daemon_stop(daemon: Daemon) -> Result<(Stopped, Vec<Value>)> {
    let mut stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "the daemon failed ({}): {}", stopped.status, stopped.stderr);
    let events = std::mem::take(&mut stopped.events);
    Ok((stopped, events))
}

#[test]
fn sigterm_during_load_flushes_the_last_interval() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("events-term")?;
    let cg = Cgroup::create("events-term")?;
    // No interval ends on its own during the test: whatever is reported comes from the flush.
    let daemon = Daemon::start("events-term", &["--interval", "10m", "--shutdown-timeout", "5s"])?;
    create_files(&cg, fs.path(), 5_000)?;
    // Keep the allocator busy while the signal arrives.
    let mut churn = Command::new(workload())
        .arg("churn")
        .arg(fs.path())
        .arg("100000000")
        .stdout(Stdio::null())
        .spawn()?;
    thread::sleep(Duration::from_millis(500));
    let (stopped, events) = daemon_stop(daemon)?;
    let _ = churn.kill();
    let _ = churn.wait();

    ensure!(stopped.took < Duration::from_secs(5), "took {:?} to stop", stopped.took);
    check_event_schema(&events)?;
    ensure!(events.iter().all(|e| e["seq"] == 1), "more than one interval: {events:?}");
    let inodes = events
        .iter()
        .find(|e| is_sample_of(e, cg.relative()) && e["cache"] == "shmem_inode_cache")
        .with_context(|| format!("no sample of {} in the flushed interval", cg.relative()))?;
    ensure!(inodes["allocs"].as_u64() >= Some(5_000), "{inodes}");
    let last = events.iter().find(|e| e["type"] == "self.stats").context("no self.stats")?;
    ensure!(last["last"] == true, "{last}");
    Ok(())
}

#[test]
fn a_consumer_that_stops_reading_costs_counted_drops_not_tracing() -> Result<()> {
    require_root()?;
    // A pipe of one page: the daemon's stdout fills after a few lines.
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    ensure!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0, "pipe2 failed");
    // SAFETY: both fds were just created and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 4096) };
    let stdout = Stdio::from(write_end);
    let daemon = Daemon::start_with(
        "events-stuck",
        &["--events", "-", "--interval", "100ms", "--event-buffer", "8"],
        |cmd| {
            cmd.stdout(stdout);
        },
    )?;
    // Nobody reads; the daemon must keep ticking regardless. Its interval count comes from
    // /metrics, which does not go through the stuck stream: once the pipe is surely full (ten
    // intervals of several lines each fill 4 KiB many times over), it must go on growing.
    // Counts, not rates: a slow machine makes fewer intervals a second, not fewer intervals.
    let intervals = || -> Result<u64> {
        let (status, body) = daemon.get("/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        body.lines()
            .find(|l| l.starts_with("slabtrace_intervals"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no slabtrace_intervals in /metrics")
    };
    let wait_for = |n: u64| -> Result<()> {
        let deadline = Instant::now() + Duration::from_mins(2);
        while intervals()? < n {
            ensure!(Instant::now() < deadline, "the daemon stopped at {} intervals", intervals()?);
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    wait_for(10)?;
    let stuck_at = intervals()?;
    wait_for(stuck_at + 10)?;

    // Now read for a while: the newest self.stats says how much was lost, and that
    // intervals went on during the stall.
    let mut reader = std::fs::File::from(read_end);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let newest = String::from_utf8_lossy(&buf)
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| e["type"] == "self.stats");
            if let Some(e) = newest
                && tx.send(e).is_err()
            {
                return;
            }
        }
    });
    // The first self.stats of an interval after the stall: it counts what was dropped.
    let found = loop {
        let e = rx
            .recv_timeout(Duration::from_mins(2))
            .context("no self.stats from after the stall once the consumer resumed")?;
        if e["seq"].as_u64() >= Some(stuck_at + 10) {
            break e;
        }
    };
    ensure!(found["dropped_events"].as_u64() > Some(0), "no drops counted: {found}");
    check_event_schema(std::slice::from_ref(&found))?;

    // Stopping is not held up by the consumer either.
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}: {}", stopped.status, stopped.stderr);
    ensure!(stopped.took < Duration::from_secs(7), "took {:?} to stop", stopped.took);
    Ok(())
}

/// Every owner kind and event type, built by hand (no root needed), against the schema: the
/// kinds a short real run may not produce (interrupt context, a deleted pod without a name).
#[test]
fn hand_built_events_of_every_kind_validate() -> Result<()> {
    use slabtrace::{
        cgroup::kubepods::Qos,
        frame::{Owner, OwnerRow, OwnerTable, changes},
        output::{
            events::{LineOptions, StreamStats, lines},
            report::{KernelMemory, Report},
        },
        pipeline::Interval,
    };
    let pod = Owner::Pod {
        namespace: None,
        name: None,
        uid: "4c1e0a2b-0000-4000-8000-000000000001".into(),
        qos: Qos::BestEffort,
        deleted: true,
    };
    let owners =
        [pod.clone(), Owner::Interrupt, Owner::Cgroup { cgroup_id: 9, cgroup: None, alive: true }];
    let mut frame = OwnerTable::default();
    for (i, owner) in owners.iter().enumerate() {
        let n = 10 * (i as u64 + 1);
        let row = OwnerRow {
            object_size: 64,
            allocs: n,
            alloc_bytes: 64 * n,
            live_objects: n,
            live_bytes: 64 * n,
            ..OwnerRow::default()
        };
        frame.owners.insert(owner.key(), owner.clone());
        frame.rows.insert((owner.key(), "kmalloc-64".to_owned()), row);
    }
    let mut report = Report::default();
    report.self_stats.sample_rate = 16;
    report.self_stats.warnings = vec!["a warning".into()];
    let interval = Interval {
        seq: 1,
        node: "n".into(),
        ts: std::time::SystemTime::now(),
        seconds: 1.0,
        changes: changes(&OwnerTable::default(), &frame),
        gone: vec![pod],
        frame,
        report,
        meminfo: Some(KernelMemory::default()),
        last: true,
        ..Interval::default()
    };
    let options = LineOptions { run: 7, top: 2, ..LineOptions::default() };
    let events: Vec<Value> = lines(&interval, &options, StreamStats::default())
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()?;
    let kinds: BTreeSet<String> =
        events.iter().map(|e| format!("{}/{}", e["type"], e["owner"]["kind"])).collect();
    ensure!(kinds.len() == 6, "expected six type/owner kinds, got {kinds:?}");
    check_event_schema(&events)?;

    // The schema is not vacuous: an unknown field, a missing one, a bad owner all fail.
    let validator = event_schema()?;
    let sample = events.iter().find(|e| e["type"] == "slab.sample").context("no sample")?;
    for (what, broken) in [
        ("an unknown field", with(sample, |e| e["surprise"] = 1.into())),
        ("a missing field", with(sample, |e| drop(e.as_object_mut().map(|o| o.remove("allocs"))))),
        ("an unknown owner", with(sample, |e| e["owner"]["kind"] = "daemonset".into())),
        ("another schema", with(sample, |e| e["schema"] = "slabtrace.event.v2".into())),
    ] {
        ensure!(!validator.is_valid(&broken), "the schema accepts {what}: {broken}");
    }
    Ok(())
}

fn with(event: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut e = event.clone();
    change(&mut e);
    e
}

/// A real memcg OOM kill while the daemon runs: an `oom` event right away (not at the end of
/// the interval), naming the victim's cgroup, the memcg over its limit, and who held slab then.
#[test]
fn an_oom_kill_is_an_event_with_the_slab_picture() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("events-oom")?;
    let memcg = Memcg::create("events-oom", 64 << 20)?;
    let cg2 = memcg.cgroup("events-oom")?;
    // A long interval: the event must come from the early interval an OOM kill starts.
    let daemon = Daemon::start("events-oom", &["--interval", "10m"])?;
    create_files(&cg2, fs.path(), 3_000)?;
    let mut child = memcg.spawn(&cg2, Command::new(workload()).args(["hog", "512"]))?;
    let pid = child.id();
    ensure_killed(&mut child)?;
    let oom = daemon.wait_for_event(|e| e["type"] == "oom" && e["victim"]["pid"] == pid)?;
    eprintln!("{oom}");
    ensure!(oom["scope"] == "memcg" && oom["memcg"] == memcg.relative(), "{oom}");
    ensure!(oom["comm"] == "slab-workload" && oom["victim"]["cgroup"] == cg2.relative(), "{oom}");
    ensure!(oom["meminfo"]["slab"].as_u64() > Some(0), "{oom}");
    let holders = oom["slab_picture"]["top_holders"].as_array().context("no holders")?;
    ensure!(!holders.is_empty(), "{oom}");
    // The victim's cgroup holds the 3,000 inodes it created.
    ensure!(oom["slab_picture"]["victim_live_bytes"].as_u64() > Some(1 << 20), "{oom}");
    // `slab`, deprecated for its clash with node.memory's integer, says the same until v2.
    ensure!(oom["slab"] == oom["slab_picture"], "{oom}");
    let (_, events) = daemon_stop(daemon)?;
    check_event_schema(&events)?;
    Ok(())
}
