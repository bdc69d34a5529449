//! The daemon's HTTP endpoints against real parts: a real Prometheus scrapes `/metrics` and
//! finds the slab memory a workload in a pod's cgroup holds as a per-pod series; `promtool
//! check metrics` finds nothing to lint; `/healthz` and `/report` answer; and a `--listen`
//! port that is taken fails the daemon with one sentence.

use std::{
    io::Read as _,
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use slabtrace_integration::{
    Cgroup, Tmpfs,
    daemon::Daemon,
    fresh_uid,
    prometheus::{Prometheus, promtool_check_metrics, request, sample_value},
    require_root, slabtrace_bin, workload,
};

/// Files the pod's workload creates on a tmpfs: a dentry and an inode each, live while the
/// tmpfs is mounted.
const FILES: u64 = 3_000;

/// What Prometheus sends (2.x).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn prometheus_scrapes_a_pods_slab_memory() -> Result<()> {
    require_root()?;
    let fs = Tmpfs::mount("metrics")?;
    let daemon = Daemon::start("metrics", &["--interval", "1s", "--sample", "1"])?;
    let uid = fresh_uid()?;
    // A kubelet-shaped cgroup with no runtime behind it: the pod has no name, so its series
    // carry the uid as `pod` and an empty namespace.
    let pod = Cgroup::create_at(&format!("/kubepods/besteffort/pod{uid}/0123456789abcdef"))?;
    pod.run(Command::new(workload()).arg("create").arg(fs.path()).arg(FILES.to_string()))?;
    // A tenant's cgroup named to forge a label and break the scrape: quotes, an escape
    // sequence and a trailing backslash (cgroupfs refuses a newline or a slash, nothing else).
    let evil_name = format!("slabtrace-evil-{uid}\",a=\"forged\x1b[2J\\");
    let evil = Cgroup::create_at(&format!("/{evil_name}"))?;
    let evil_files = fs.path().join("evil");
    std::fs::create_dir(&evil_files)?;
    evil.run(Command::new(workload()).arg("create").arg(&evil_files).arg(FILES.to_string()))?;
    let prometheus = Prometheus::start("metrics", &daemon.listen)?;

    let query = format!("slabtrace_pod_live_bytes{{pod=\"{uid}\"}}");
    let deadline = Instant::now() + Duration::from_mins(1);
    let series = loop {
        let result = prometheus.query(&query)?;
        if result.iter().any(|s| sample_value(s).is_some_and(|v| v > 0.0)) {
            break result;
        }
        if Instant::now() >= deadline {
            bail!(
                "Prometheus has no {query} > 0 after 60 s (got {result:?});\ntargets: {:#}\n\
                 daemon log:\n{}\nprometheus log:\n{}",
                prometheus.targets()?,
                daemon.stderr(),
                prometheus.log()
            );
        }
        thread::sleep(Duration::from_millis(500));
    };
    for s in &series {
        // Never empty (which is no label, and a scraper's target namespace would fill it).
        assert_eq!(s["metric"]["namespace"], "_unknown", "the unnamed pod's namespace: {s}");
        assert_eq!(s["metric"]["job"], "slabtrace", "{s}");
    }
    // Each file is a dentry allocated in the pod, still live.
    let dentry = series
        .iter()
        .find(|s| s["metric"]["cache"] == "dentry")
        .with_context(|| format!("no dentry series of the pod: {series:#?}"))?;
    let dentry_bytes = sample_value(dentry).unwrap_or(0.0);
    ensure!(dentry_bytes >= (FILES * 100) as f64, "the pod's live dentries: {dentry_bytes} bytes");
    let info = prometheus.query(&format!("slabtrace_pod_info{{uid=\"{uid}\"}}"))?;
    ensure!(info.len() == 1, "pod_info of {uid}: {info:?}");
    assert_eq!(info[0]["metric"]["qos"], "best_effort");
    assert_eq!(info[0]["metric"]["pod"], uid.as_str());
    // The hostile name came back whole, as one series' label value, and forged nothing.
    let cgroups = prometheus.query("slabtrace_cgroup_live_bytes")?;
    let evil_path = format!("/{evil_name}");
    ensure!(
        cgroups.iter().any(|s| s["metric"]["cgroup"] == evil_path.as_str()),
        "no series of the cgroup {evil_path:?}: {cgroups:#?}"
    );
    ensure!(
        prometheus.query("{__name__=~\".+\", a!=\"\"}")?.is_empty(),
        "a series with a forged label"
    );
    // Prometheus read the OpenMetrics exposition without complaint.
    let targets = prometheus.targets()?;
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target:#}");
    assert_eq!(target["lastError"], "", "{target:#}");

    // What Prometheus asks for: OpenMetrics.
    let om = request(&daemon.listen, "GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)])?;
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    ensure!(om.body.ends_with("# EOF\n"), "no # EOF at the end:\n{}", om.body);
    ensure!(om.body.contains(&format!("pod=\"{uid}\"")), "no series of the pod:\n{}", om.body);
    // What curl gets: the text format, which promtool lints.
    let text = request(&daemon.listen, "GET", "/metrics", &[])?;
    assert_eq!(text.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let (passed, said) = promtool_check_metrics(&text.body)?;
    ensure!(passed && said.trim().is_empty(), "promtool check metrics: {said}\n{}", text.body);

    let (status, body) = daemon.get("/healthz")?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let report = request(&daemon.listen, "GET", "/report", &[])?;
    assert_eq!((report.status, report.header("content-type")), (200, Some("application/json")));
    let report: Value = serde_json::from_str(&report.body).context("/report is not JSON")?;
    assert_eq!(report["schema"], "slabtrace.report.v1");
    let pods = report["pods"].as_array().context("no pods[] in /report")?;
    ensure!(pods.iter().any(|p| p["uid"] == uid.as_str()), "{uid} not in /report's pods");
    assert_eq!(daemon.get("/nope")?.0, 404);
    let post = request(&daemon.listen, "POST", "/metrics", &[("Content-Length", "0")])?;
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));

    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "the daemon failed: {}", stopped.stderr);
    ensure!(
        !stopped.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "a control character in the daemon's log: {:?}",
        stopped.stderr
    );
    drop(evil);
    Ok(())
}

/// A child process killed and reaped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_taken_listen_port_fails_the_daemon_in_one_sentence() -> Result<()> {
    require_root()?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let mut daemon = Running(
        Command::new(slabtrace_bin())
            .args(["daemon", "--listen", &addr, "--events", "off", "--pin-path", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(status) = daemon.0.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "the daemon still runs on a taken port after 60 s");
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    daemon.0.stderr.take().context("stderr")?.read_to_string(&mut stderr)?;
    ensure!(!status.success(), "the daemon succeeded on a taken port: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(
            format!(
                "slabtrace: cannot listen on {addr}: address in use; pick another --listen, or \
                 --listen off"
            )
            .as_str()
        ),
        "{stderr}"
    );
    drop(taken);
    Ok(())
}

#[test]
fn report_listen_moves_the_report_off_the_metrics_port() -> Result<()> {
    require_root()?;
    let own = format!("127.0.0.1:{}", slabtrace_integration::daemon::free_port()?);
    let daemon = Daemon::start("report-listen", &["--interval", "1s", "--report-listen", &own])?;
    let deadline = Instant::now() + Duration::from_mins(1);
    let report = loop {
        let (status, body) = slabtrace_integration::daemon::http_get(&own, "/report")?;
        if status == 200 {
            break body;
        }
        ensure!(Instant::now() < deadline, "no /report on {own} after 60 s: {status} {body}");
        thread::sleep(Duration::from_millis(200));
    };
    let report: Value = serde_json::from_str(&report)?;
    assert_eq!(report["schema"], "slabtrace.report.v1");
    // The metrics port serves the rest, and says where the report went.
    let (status, body) = daemon.get("/report")?;
    ensure!(status == 404 && body.contains(&own), "/report on --listen: {status} {body}");
    assert_eq!(daemon.get("/healthz")?.0, 200);
    assert_eq!(daemon.get("/metrics")?.0, 200);
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "the daemon failed: {}", stopped.stderr);
    Ok(())
}
