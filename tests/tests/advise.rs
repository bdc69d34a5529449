//! `slabtrace advise` on the real node: from a traced window and from a running daemon, the
//! reservations come with their evidence and a `KubeletConfiguration` snippet, sized from the
//! node's own `SUnreclaim`; a daemon that is not there is one sentence.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use slabtrace_integration::{daemon::Daemon, require_root, slabtrace_bin};

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
