//! Bad input gets one sentence that says what to do, and the exit code of its kind (README
//! "Exit codes"), never a panic.

use std::process::Command;

use anyhow::Result;
use slabtrace_integration::{require_root, slabtrace_bin};

fn run(args: &[&str], uid: Option<u32>) -> Result<(i32, String)> {
    let out = match uid {
        None => Command::new(slabtrace_bin()).args(args).output()?,
        Some(uid) => {
            // The checkout may sit in a directory other users cannot enter: run a copy from
            // the world-readable temp dir.
            let copy =
                std::env::temp_dir().join(format!("slabtrace-test-{}-bin", std::process::id()));
            std::fs::copy(slabtrace_bin(), &copy)?;
            std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            let mut cmd = Command::new(&copy);
            cmd.args(args).current_dir("/");
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            let out = cmd.output();
            let _ = std::fs::remove_file(&copy);
            out?
        }
    };
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn an_unprivileged_user_is_told_to_use_root() -> Result<()> {
    require_root()?;
    let (code, err) = run(&["report", "--duration", "1"], Some(65534))?;
    assert_eq!(code, 3, "not permitted: {err}");
    assert!(err.contains("run it as root"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn missing_btf_is_explained() -> Result<()> {
    require_root()?;
    let (code, err) = run(&["report", "--duration", "1", "--btf", "/nonexistent/vmlinux"], None)?;
    assert_eq!(code, 4, "an unsupported kernel: {err}");
    assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    Ok(())
}

#[test]
fn a_bad_sample_rate_is_refused_before_tracing() -> Result<()> {
    require_root()?;
    let (code, err) = run(&["report", "--sample", "10"], None)?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("power of two"), "{err}");
    Ok(())
}

#[test]
fn a_full_counters_map_is_counted_and_said() -> Result<()> {
    require_root()?;
    // Two keys cannot hold a node's (cgroup, cache) pairs: the rest must be counted as lost,
    // and the report must say how to fix it.
    let out = Command::new(slabtrace_bin())
        .args(["report", "--duration", "2", "--format", "json", "--max-keys", "2"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert!(report["self"]["counters_full"].as_u64().unwrap() > 0, "{}", report["self"]);
    let warnings = report["self"]["warnings"].to_string();
    assert!(warnings.contains("--max-keys"), "{warnings}");
    Ok(())
}

#[test]
fn an_event_socket_nobody_listens_on_is_one_sentence() -> Result<()> {
    require_root()?;
    let socket =
        std::env::temp_dir().join(format!("slabtrace-test-{}-nobody.sock", std::process::id()));
    let target = format!("unix:{}", socket.display());
    let (code, err) =
        run(&["daemon", "--events", &target, "--listen", "off", "--pin-path", "off"], None)?;
    assert_eq!(code, 5, "unavailable: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("slabtrace: cannot open the event stream unix socket")
            && last.contains(&socket.display().to_string())
            && last.contains("check --events"),
        "{err}"
    );
    Ok(())
}
