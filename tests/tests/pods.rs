//! `slabtrace report` names real containerd pods and containers: a pod runs through the CRI API
//! in a kubelet-shaped cgroup, a command in its container creates files, and the report rolls
//! those allocations up to `namespace/pod`, container by name.

use std::time::Duration;

use anyhow::{Result, ensure};
use slabtrace_integration::{
    Slabtrace, cache_of, containerd::Containerd, fresh_uid, num, reported_pod, require_root,
};

const FILES: u64 = 3_000;

/// Creates `n` empty files under `dir` inside `container`: dentries and inodes it allocates.
fn make_files(runtime: &Containerd, container: &str, dir: &str, n: u32) -> Result<()> {
    let script =
        format!("mkdir -p {dir} && i=0; while [ $i -lt {n} ]; do : > {dir}/f$i; i=$((i+1)); done");
    let out = runtime.exec_sync(container, &["/bin/sh", "-c", &script], Duration::from_mins(1))?;
    ensure!(out.exit_code == 0, "workload failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The log a test watches for the runtime's answers: slabtrace's session at debug level.
const NAMING: &str = "warn,slabtrace::session=debug";

/// The line slabtrace logs once it has seen the pod with `uid` in its cgroups and has its
/// names from the runtime.
fn named(uid: &str) -> String {
    format!("pod {uid:?} is seen and named")
}

#[test]
fn the_report_names_a_containerd_pod_and_its_container() -> Result<()> {
    require_root()?;
    let runtime = Containerd::start()?;
    let uid = fresh_uid()?;
    // An absolute parent, as the kubelet's cgroupfs driver passes it.
    let pod = runtime.run_pod("git", "gitea-0", &uid, "/kubepods/besteffort")?;
    let gitea = runtime.create_container(&pod, "gitea", &["/bin/sleep", "1000000"])?;
    let socket = runtime.socket().to_str().unwrap_or_default().to_owned();

    let tracer = Slabtrace::start(&["--sample", "1", "--cri-socket", &socket])?;
    // A small-file workload inside the container, as a Git server's would be; in batches, as
    // each CRI call is bounded (2 s) by the client's channel.
    for batch in 0..FILES / 500 {
        make_files(&runtime, &gitea, &format!("/tmp/repo/{batch}"), 500)?;
    }
    let report = tracer.finish()?;

    let p = reported_pod(&report, &uid)?;
    assert_eq!(p["namespace"], "git");
    assert_eq!(p["name"], "gitea-0");
    assert_eq!(p["qos"], "best_effort");
    assert_eq!(p["deleted"], false);
    let containers = p["containers"].as_array().expect("containers[]");
    let c = containers.iter().find(|c| c["container_id"] == gitea.as_str());
    ensure!(c.is_some(), "container {gitea} not in {containers:#?}");
    let c = c.unwrap_or(&serde_json::Value::Null);
    assert_eq!(c["name"], "gitea");
    assert_eq!(c["sandbox"], false);
    // Every file is a dentry allocated by the container (plus the shell's own lookups).
    let dentries = num(cache_of(Some(c), "dentry"), "allocs");
    assert!(dentries >= FILES, "the container's dentries: {dentries}, expected ≥ {FILES}");
    assert!(num(cache_of(Some(p), "dentry"), "allocs") >= dentries);
    // The pause container is the sandbox, if it allocated anything in the window.
    for other in containers.iter().filter(|c| c["container_id"] == pod.sandbox_id.as_str()) {
        assert_eq!(other["sandbox"], true);
    }
    Ok(())
}

#[test]
fn names_survive_the_runtime_and_the_pod_going_away() -> Result<()> {
    require_root()?;
    let runtime = Containerd::start()?;
    let uid = fresh_uid()?;
    let pod = runtime.run_pod("ci", "builder-7", &uid, "/kubepods/burstable")?;
    let worker = runtime.create_container(&pod, "build", &["/bin/sleep", "1000000"])?;
    let socket = runtime.socket().to_str().unwrap_or_default().to_owned();

    let tracer = Slabtrace::start_logging(&["--sample", "1", "--cri-socket", &socket], NAMING)?;
    make_files(&runtime, &worker, "/tmp/out", 500)?;
    // slabtrace names cgroups once a second while they exist; then the pod is deleted and
    // the runtime stops while slabtrace still traces.
    tracer.wait_for_log("the pod to be named", &named(&uid))?;
    drop(pod);
    drop(runtime);
    let report = tracer.finish()?;

    let warnings = report["self"]["warnings"].to_string();
    assert!(warnings.contains("the container runtime at"), "{warnings}");
    assert_eq!(report["self"]["runtime_connected"], false, "the runtime is gone");
    let p = reported_pod(&report, &uid)?;
    // Named from what the runtime said when tracing started.
    assert_eq!((&p["namespace"], &p["name"]), (&"ci".into(), &"builder-7".into()));
    assert_eq!(p["deleted"], true);
    let c = p["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["container_id"] == worker.as_str()));
    ensure!(c.is_some_and(|c| c["name"] == "build"), "container {worker}: {p:#}");
    Ok(())
}

#[test]
fn a_pod_that_lives_only_inside_the_window_is_named() -> Result<()> {
    require_root()?;
    let runtime = Containerd::start()?;
    let socket = runtime.socket().to_str().unwrap_or_default().to_owned();
    let tracer = Slabtrace::start_logging(&["--sample", "1", "--cri-socket", &socket], NAMING)?;

    // Neither the start nor the end of the window sees this pod: only the lookup slabtrace
    // makes when an unknown pod's cgroup shows up can name it.
    let uid = fresh_uid()?;
    let pod = runtime.run_pod("jobs", "cron-28871", &uid, "/kubepods/besteffort")?;
    let job = runtime.create_container(&pod, "job", &["/bin/sleep", "1000000"])?;
    make_files(&runtime, &job, "/tmp/o", 300)?;
    tracer.wait_for_log("the pod to be named", &named(&uid))?;
    drop(pod);
    let report = tracer.finish()?;

    let p = reported_pod(&report, &uid)?;
    assert_eq!((&p["namespace"], &p["name"]), (&"jobs".into(), &"cron-28871".into()));
    assert_eq!(p["deleted"], true);
    Ok(())
}

#[test]
fn names_of_deleted_pods_expire_after_the_ttl() -> Result<()> {
    require_root()?;
    let runtime = Containerd::start()?;
    let uid = fresh_uid()?;
    let pod = runtime.run_pod("tmp", "scratch-1", &uid, "/kubepods/besteffort")?;
    let work = runtime.create_container(&pod, "work", &["/bin/sleep", "1000000"])?;
    let socket = runtime.socket().to_str().unwrap_or_default().to_owned();

    let tracer = Slabtrace::start_logging(
        &["--sample", "1", "--cri-socket", &socket, "--gone-pod-ttl", "0"],
        NAMING,
    )?;
    let out = runtime.exec_sync(&work, &["/bin/sh", "-c", ": > /tmp/a"], Duration::from_mins(1))?;
    ensure!(out.exit_code == 0, "workload failed: {}", String::from_utf8_lossy(&out.stderr));
    tracer.wait_for_log("the pod to be named", &named(&uid))?;
    drop(pod);
    // The end of the window lists the runtime once more, without the pod: with a TTL of 0
    // its names are dropped there.
    let report = tracer.finish()?;

    let p = reported_pod(&report, &uid)?;
    assert_eq!(p["deleted"], true);
    assert!(p["name"].is_null(), "the name outlived its TTL: {p}");
    Ok(())
}

#[test]
fn a_runtime_that_starts_after_slabtrace_names_its_pods() -> Result<()> {
    require_root()?;
    // slabtrace starts first, told of a runtime socket where nothing listens yet (a node's
    // containerd restarting while the DaemonSet's pod starts).
    let dir = Containerd::next_dir();
    let socket = dir.join("c.sock");
    let tracer = Slabtrace::start_logging(
        &["--sample", "1", "--cri-socket", socket.to_str().unwrap_or_default()],
        NAMING,
    )?;
    let runtime = Containerd::start_in(&dir)?;
    let uid = fresh_uid()?;
    let pod = runtime.run_pod("late", "web-0", &uid, "/kubepods/besteffort")?;
    let web = runtime.create_container(&pod, "web", &["/bin/sleep", "1000000"])?;
    make_files(&runtime, &web, "/tmp/late", 300)?;
    // The pod's cgroup is seen, the runtime asked again (at most every 30 s once it failed),
    // and answers now.
    tracer.wait_for_log("the pod to be named", &named(&uid))?;
    let report = tracer.finish()?;

    let warnings = report["self"]["warnings"].to_string();
    ensure!(warnings.contains(socket.to_str().unwrap_or_default()), "no warning: {warnings}");
    assert_eq!(report["self"]["runtime_connected"], true);
    let p = reported_pod(&report, &uid)?;
    assert_eq!((&p["namespace"], &p["name"]), (&"late".into(), &"web-0".into()));
    let c = p["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["container_id"] == web.as_str()));
    ensure!(c.is_some_and(|c| c["name"] == "web"), "container {web}: {p:#}");
    Ok(())
}
