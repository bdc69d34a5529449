//! The commands that can read a running daemon instead of tracing. `slabtrace advise` on the
//! real node: from a traced window and from a running daemon, the reservations come with their
//! evidence and a `KubeletConfiguration` snippet, sized from the node's own `SUnreclaim`.
//! `slabtrace report --from`: the daemon's figures, filtered, with no privilege of its own. A
//! daemon that is not there is one sentence.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use slabtrace_integration::{
    Cgroup, Tmpfs, cache_of, cgroup, check_report_schema, daemon::Daemon, num, require_root,
    slabtrace_bin, workload,
};

fn sunreclaim_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no SUnreclaim")?
        .parse()?;
    Ok(kb * 1024)
}

fn check(advice: &Value) -> Result<()> {
    let settings = advice["settings"].as_array().context("no settings")?;
    let get = |name: &str| settings.iter().find(|s| s["name"] == name);
    let system = get("systemReserved.memory").context("no systemReserved")?;
    // Nothing is charged to pods here: the reservation is SUnreclaim plus 25%, in MiB.
    let bytes = system["bytes"].as_u64().context("no bytes")?;
    let sunreclaim = sunreclaim_bytes()?;
    ensure!(
        bytes >= sunreclaim && bytes <= sunreclaim * 3 / 2 + (8 << 20),
        "systemReserved {bytes} is not SUnreclaim {sunreclaim} plus the margin: {system}"
    );
    ensure!(system["value"].as_str().is_some_and(|v| v.ends_with("Mi")), "{system}");
    ensure!(system["evidence"].as_str().is_some_and(|e| e.contains("SUnreclaim")), "{system}");
    let eviction = get("evictionHard.memory.available").context("no evictionHard")?;
    ensure!(eviction["bytes"].as_u64() >= Some(100 << 20), "{eviction}");
    let config = advice["kubelet_config"].as_str().context("no snippet")?;
    for line in [
        "kind: KubeletConfiguration",
        "systemReserved:",
        "evictionHard:",
        &format!("memory: \"{}\"", system["value"].as_str().unwrap_or_default()),
    ] {
        ensure!(config.contains(line), "the snippet lacks {line:?}:\n{config}");
    }
    Ok(())
}

#[test]
fn advice_from_a_traced_window() -> Result<()> {
    require_root()?;
    let out = Command::new(slabtrace_bin())
        .args(["advise", "--duration", "3", "--format", "json"])
        .env("RUST_LOG", "warn")
        .output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let advice: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(advice["samples"].as_u64() >= Some(3), "{advice}");
    check(&advice)
}

#[test]
fn advice_from_a_running_daemon_and_from_none() -> Result<()> {
    require_root()?;
    let daemon = Daemon::start("advise", &["--interval", "1s"])?;
    daemon.wait_for_event(|e| e["type"] == "self.stats")?;
    let out = Command::new(slabtrace_bin())
        .args(["advise", "--from", &daemon.listen, "--format", "json"])
        .output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check(&serde_json::from_slice(&out.stdout)?)?;
    let text = Command::new(slabtrace_bin()).args(["advise", "--from", &daemon.listen]).output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(text.contains("systemReserved.memory") && text.contains("apiVersion:"), "{text}");
    drop(daemon);

    // Nobody listens on port 1: one sentence that says what to check.
    let out = Command::new(slabtrace_bin()).args(["advise", "--from", "127.0.0.1:1"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "advise succeeded without a daemon");
    ensure!(err.contains("is `slabtrace daemon` running") && err.lines().count() == 1, "{err}");
    Ok(())
}

/// `report --from` shows what a running daemon counted, as JSON or a table, filtered like a
/// traced report; it loads no probes, so it runs as nobody.
#[test]
fn a_report_from_a_running_daemon_needs_no_privilege() -> Result<()> {
    const FILES: u64 = 2_000;
    const INODES: &str = "shmem_inode_cache";
    require_root()?;
    let fs = Tmpfs::mount("from")?;
    let cg = Cgroup::create("from")?;
    let daemon = Daemon::start("from", &["--interval", "1s", "--sample", "1"])?;
    cg.run(Command::new(workload()).arg("create").arg(fs.path()).arg(FILES.to_string()))?;
    daemon.report_when("the daemon to see the files", |r| {
        num(cache_of(cgroup(r, cg.relative()), INODES), "live_objects") >= FILES
    })?;
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(slabtrace_bin())
            .args(["report", "--from", &daemon.listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = as_nobody(&["--format", "json", "--cache", INODES])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    check_report_schema(&report)?;
    let mine = cache_of(cgroup(&report, cg.relative()), INODES);
    ensure!(num(mine, "live_objects") >= FILES, "{mine:?}");
    // Filtered to one cache: every cgroup shows only that one.
    let cgroups = report["cgroups"].as_array().context("no cgroups")?;
    ensure!(
        cgroups.iter().all(|c| c["caches"]
            .as_array()
            .is_some_and(|cs| cs.len() == 1 && cs[0]["cache"] == INODES)),
        "{cgroups:?}"
    );
    let table = as_nobody(&["--cache", INODES])?;
    let text = String::from_utf8_lossy(&table.stdout);
    ensure!(table.status.success() && text.contains(cg.relative()), "{text}");
    drop(daemon);

    let out = Command::new(slabtrace_bin()).args(["report", "--from", "127.0.0.1:1"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(5), "{:?}: {err}", out.status);
    ensure!(err.contains("is `slabtrace daemon` running") && err.lines().count() == 1, "{err}");
    Ok(())
}
