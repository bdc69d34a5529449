//! The daemon over time: the counters of a cgroup that is gone and holds nothing live leave
//! the kernel's map (it is bounded, and a node runs many pods over weeks), while those that
//! still hold live objects stay. Checked in the kernel's own map with bpftool.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use slabtrace_integration::{Cgroup, Tmpfs, daemon::Daemon, require_root, workload};

/// The id of the COUNTERS map process `pid` holds (not another slabtrace's, nor maps pinned on
/// this node): its map fds' ids from fdinfo, matched by name in bpftool's list.
fn counters_map_id(pid: u32) -> Result<u64> {
    let mut held = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = std::fs::read_to_string(fd?.path()).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) {
            held.push(id.trim().parse::<u64>()?);
        }
    }
    let out = Command::new("bpftool").args(["-j", "map", "show"]).output()?;
    ensure!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let maps: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    maps.iter()
        .filter(|m| m["name"] == "COUNTERS")
        .filter_map(|m| m["id"].as_u64())
        .find(|id| held.contains(id))
        .context("the daemon holds no COUNTERS map")
}

/// Per key of `cgroup_id` in the COUNTERS map of daemon `pid`: (sampled allocs, sampled
/// frees), summed over CPUs.
fn kernel_keys(pid: u32, cgroup_id: u64) -> Result<Vec<(u64, u64)>> {
    let id = counters_map_id(pid)?.to_string();
    let out = Command::new("bpftool").args(["-j", "map", "dump", "id", &id]).output()?;
    ensure!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_str())
                    .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let mut keys = Vec::new();
    for e in entries {
        let key = bytes(&e["key"]);
        if key.len() < 8 || word(&key, 0) != cgroup_id {
            continue;
        }
        let (mut sa, mut sf) = (0, 0);
        for cpu in e["values"].as_array().context("no per-CPU values")? {
            let v = bytes(&cpu["value"]);
            sa += word(&v, 1);
            sf += word(&v, 2);
        }
        keys.push((sa, sf));
    }
    Ok(keys)
}

#[test]
fn gone_cgroups_with_nothing_live_leave_the_kernel_map() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("retire")?;
    let daemon =
        Daemon::start("retire", &["--interval", "1s", "--sample", "1", "--gone-pod-ttl", "0"])?;
    let cg = Cgroup::create("retire")?;
    let id = cg.id()?;
    let path = cg.relative().to_owned();
    // A process that creates and unlinks files, then exits: most of what it allocated (its
    // mm, VMAs, files, the unlinked inodes) is freed; some may stay cached.
    cg.run(Command::new(workload()).arg("churn").arg(fs.path()).arg("300"))?;
    thread::sleep(Duration::from_secs(2));
    let before = kernel_keys(daemon.pid(), id)?;
    ensure!(!before.is_empty(), "no counters for cgroup {id} in the kernel's map");
    drop(cg);

    // Unlinked inodes are freed after an RCU grace period (lazy RCU: up to ~10 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let after = loop {
        let keys = kernel_keys(daemon.pid(), id)?;
        if keys.len() < before.len() {
            break keys;
        }
        ensure!(
            Instant::now() < deadline,
            "the gone cgroup still has all its {} keys in the kernel's map; stderr:\n{}",
            keys.len(),
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(500));
    };
    // What is left still holds live objects; everything that held none was deleted.
    for (sa, sf) in &after {
        ensure!(sa > sf, "a key with nothing live was kept: {sa} sampled allocs, {sf} frees");
    }
    let gone = daemon.wait_for_event(Duration::from_secs(10), |e| {
        e["type"] == "cgroup.gone" && e["owner"]["cgroup"] == path
    })?;
    let retired = daemon.wait_for_event(Duration::from_secs(10), |e| {
        e["type"] == "self.stats" && e["retired_counters"].as_u64() >= Some(1)
    })?;
    eprintln!(
        "cgroup {id}: {} keys before removal, {} after; {gone}\n{retired}",
        before.len(),
        after.len()
    );
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    Ok(())
}

/// A directory on the root filesystem, removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("slabtrace-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `args` of slab-workload in `cg` every `pause` until `until`, each round in a new
/// subdirectory of `dir`.
fn keep_running(cg: &Cgroup, dir: &std::path::Path, args: &[&str], until: Instant) -> Result<()> {
    let mut round = 0;
    while Instant::now() < until {
        let sub = dir.join(format!("r{round}"));
        std::fs::create_dir_all(&sub)?;
        cg.run(Command::new(workload()).arg(args[0]).arg(&sub).args(&args[1..]))?;
        round += 1;
        thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

fn growth_event<'a>(
    events: &'a [Value],
    state: &str,
    path: &str,
    cache: &str,
) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["type"] == "slab.growth"
            && e["state"] == state
            && e["owner"]["cgroup"] == path
            && e["cache"] == cache
    })
}

/// Growth that nothing returns is a finding; churn is not; reclaim ends a finding on a
/// reclaimable cache.
#[test]
fn growth_is_classified_and_reclaim_turns_it_back() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("growth")?;
    let keeper = Cgroup::create("growth-keep")?;
    let churner = Cgroup::create("growth-churn")?;
    let looker = Cgroup::create("growth-look")?;
    let daemon = Daemon::start(
        "growth",
        &["--interval", "1s", "--growth-window", "8s", "--growth-min-mib", "1"],
    )?;
    let until = Instant::now() + Duration::from_secs(7);
    // Negative dentries need a disk filesystem: tmpfs does not keep them.
    let look = ScratchDir::new("growth-look")?;
    let (keep_dir, churn_dir, look_dir) =
        (fs.path().join("keep"), fs.path().join("churn"), look.0.clone());
    thread::scope(|s| -> Result<()> {
        let a = s.spawn(|| keep_running(&keeper, &keep_dir, &["create", "2000"], until));
        let b = s.spawn(|| keep_running(&churner, &churn_dir, &["churn", "2000"], until));
        let c = s.spawn(|| keep_running(&looker, &look_dir, &["stat-missing", "20000"], until));
        for h in [a, b, c] {
            h.join().map_err(|_| anyhow::anyhow!("a workload thread panicked"))??;
        }
        Ok(())
    })?;
    // Files kept on a tmpfs: their inodes cannot be reclaimed.
    let kept = daemon.wait_for_event(Duration::from_secs(10), |e| {
        e["type"] == "slab.growth"
            && e["state"] == "started"
            && e["owner"]["cgroup"] == keeper.relative()
            && e["cache"] == "shmem_inode_cache"
    })?;
    eprintln!("kept: {kept}");
    assert_eq!(kept["verdict"], "problematic");
    assert_eq!(kept["reason"]["kind"], "unreclaimable");
    assert!(kept["rate_mb_per_hour"].as_f64() > Some(100.0), "{kept}");
    // Negative dentries: reclaimable, and nothing has reclaimed them yet.
    let dentry_growth = daemon.wait_for_event(Duration::from_secs(10), |e| {
        e["type"] == "slab.growth"
            && e["state"] == "started"
            && e["owner"]["cgroup"] == looker.relative()
            && e["cache"] == "dentry"
    })?;
    eprintln!("dentry growth: {dentry_growth}");
    assert_eq!(dentry_growth["reason"]["kind"], "reclaim_not_run");
    // Reclaim: the negative dentries go, and the finding ends.
    std::fs::write("/proc/sys/vm/drop_caches", "2")?;
    let ended = daemon.wait_for_event(Duration::from_secs(15), |e| {
        e["type"] == "slab.growth"
            && e["state"] == "ended"
            && e["owner"]["cgroup"] == looker.relative()
            && e["cache"] == "dentry"
    })?;
    eprintln!("ended: {ended}");
    assert_eq!(ended["verdict"], "healthy");
    assert_eq!(ended["reason"]["kind"], "returned");
    // The shrinker tracepoints saw reclaim run on the dentries: the evidence is in the event.
    assert!(ended["reclaim"]["scanned"].as_u64() > Some(0), "{ended}");
    assert!(ended["reclaim"]["freed"].as_u64() > Some(0), "{ended}");
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    // Churn came back every time: never a finding.
    let churn_finding = stopped
        .events
        .iter()
        .find(|e| e["type"] == "slab.growth" && e["owner"]["cgroup"] == churner.relative());
    ensure!(churn_finding.is_none(), "churn was a finding: {churn_finding:?}");
    let _ = growth_event(&stopped.events, "started", keeper.relative(), "shmem_inode_cache")
        .context("the kept files' finding is not in the final stream")?;
    Ok(())
}

/// The daemon's figures come from deltas summed every interval, with finished keys retired
/// along the way: over the exact scenario of the one-shot report (A creates, B unlinks, the
/// frees come in RCU callbacks), its `/report` must credit A the same frees, exactly.
#[test]
fn the_daemons_cumulative_report_credits_frees_exactly() -> Result<()> {
    const CREATED: u64 = 20_000;
    const UNLINKED: u64 = 12_000;
    require_root()?;
    let fs = Tmpfs::mount("daemon-exact")?;
    let a = Cgroup::create("daemon-exact-a")?;
    let b = Cgroup::create("daemon-exact-b")?;
    let daemon = Daemon::start("daemon-exact", &["--interval", "1s", "--sample", "1"])?;
    a.run(Command::new(workload()).arg("create").arg(fs.path()).arg(CREATED.to_string()))?;
    b.run(
        Command::new(workload()).arg("unlink").arg(fs.path()).arg("0").arg(UNLINKED.to_string()),
    )?;
    thread::sleep(slabtrace_integration::RCU_SETTLE + Duration::from_secs(2));
    let (status, body) = daemon.get("/report")?;
    ensure!(status == 200, "/report answered {status}: {body}");
    let report: Value = serde_json::from_str(&body)?;
    let in_a = slabtrace_integration::cache_of(
        slabtrace_integration::cgroup(&report, a.relative()),
        "shmem_inode_cache",
    );
    let (allocs, frees) =
        (slabtrace_integration::num(in_a, "allocs"), slabtrace_integration::num(in_a, "frees"));
    ensure!((CREATED..CREATED + 50).contains(&allocs), "A allocated {allocs}: {in_a:?}");
    ensure!(
        (UNLINKED * 95 / 100..=UNLINKED).contains(&frees),
        "the daemon credited A {frees} frees, expected about {UNLINKED}: {in_a:?}; self: {}",
        report["self"]
    );
    ensure!(slabtrace_integration::num(in_a, "live_objects") == allocs - frees, "{in_a:?}");
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    Ok(())
}
