//! slabtrace's CRI client against a real containerd: it names the pods and containers the
//! runtime runs, and those containers live in kubelet-shaped cgroups.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use slabtrace::runtime::cri::{CriClient, CriError, PodInfo};
use slabtrace_integration::{cgroup2_root, containerd::Containerd, fresh_uid};

/// Fails loudly unless the test can run: a private containerd needs root.
fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the containerd tests need root: run `sudo cargo xtask test`"
    );
    Ok(())
}

#[test]
fn the_cri_client_names_a_real_pod_and_its_container() -> Result<()> {
    require_root()?;
    let runtime = Containerd::start()?;
    let uid = fresh_uid()?;
    let pod = runtime.run_pod("slab-test", "git-server", &uid, "kubepods/besteffort")?;
    let worker = runtime.create_container(&pod, "worker", &["/bin/sleep", "1000000"])?;

    let client = CriClient::connect(runtime.socket())?;
    println!("runtime: {}", client.version()?);

    let pods = client.pods()?;
    let want = PodInfo {
        uid: uid.clone(),
        namespace: "slab-test".into(),
        name: "git-server".into(),
        sandbox_id: pod.sandbox_id.clone(),
    };
    ensure!(pods.contains(&want), "pod {want:?} not among {pods:#?}");

    let containers = client.containers()?;
    let found = containers.iter().find(|c| c.id == worker);
    ensure!(
        found.is_some_and(|c| c.name == "worker"
            && c.pod_uid == uid
            && c.pod_sandbox_id == pod.sandbox_id),
        "container worker ({worker}) of pod {uid} not among {containers:#?}"
    );

    let touch = runtime.exec_sync(&worker, &["touch", "/tmp/x"], Duration::from_secs(10))?;
    ensure!(touch.exit_code == 0, "touch /tmp/x failed: {touch:?}");
    let ls = runtime.exec_sync(&worker, &["ls", "/tmp/x"], Duration::from_secs(10))?;
    ensure!(ls.exit_code == 0 && ls.stdout.starts_with(b"/tmp/x"), "no /tmp/x: {ls:?}");

    // The pod's cgroup parent is relative, as the brief for this harness asks, so runc puts it
    // under the test's own cgroup; that is the cgroup2 root when the test runs from a root shell.
    let pod_cgroup = pod.cgroup2_dir().context("no cgroup2 hierarchy")?;
    println!(
        "pod cgroup2 directory: {} (cgroup2 root {})",
        pod_cgroup.display(),
        cgroup2_root()?.display()
    );
    let cgroup = pod_cgroup.join(&worker);
    ensure!(cgroup.is_dir(), "no cgroup2 directory {}", cgroup.display());
    println!(
        "container cgroup {} has id (inode) {}",
        cgroup.display(),
        fs::metadata(&cgroup)?.ino()
    );

    drop(pod);
    ensure!(!pod_cgroup.exists(), "{} outlived its pod", pod_cgroup.display());
    Ok(())
}

#[test]
fn a_missing_socket_is_one_sentence_saying_what_to_do() {
    let socket = Path::new("/run/slabtrace-test-nonexistent/containerd.sock");
    let err = CriClient::connect(socket).expect_err("connected to a socket that does not exist");
    assert!(matches!(err, CriError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot reach the container runtime at /run/slabtrace-test-nonexistent/containerd.sock: \
         No such file or directory (os error 2); pod names will come from cgroup paths only \
         (pass --cri-socket if the runtime listens elsewhere)"
    );
}
