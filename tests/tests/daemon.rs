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

/// Per key of `cgroup_id` in the kernel's COUNTERS map: (sampled allocs, sampled frees),
/// summed over CPUs.
fn kernel_keys(cgroup_id: u64) -> Result<Vec<(u64, u64)>> {
    let out = Command::new("bpftool").args(["-j", "map", "dump", "name", "COUNTERS"]).output()?;
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
    let before = kernel_keys(id)?;
    ensure!(!before.is_empty(), "no counters for cgroup {id} in the kernel's map");
    drop(cg);

    // Unlinked inodes are freed after an RCU grace period (lazy RCU: up to ~10 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let after = loop {
        let keys = kernel_keys(id)?;
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
