//! The container image, deployed as the `DaemonSet` deploys it: imported into a real containerd
//! (the tests' private one), run through the CRI in a host-network pod with the `DaemonSet`'s
//! security context (not privileged; UID 0 with capabilities ALL dropped and only `CAP_BPF`,
//! `CAP_PERFMON`, `CAP_SYSLOG` added; read-only root file system; no new privileges; the
//! runtime's default seccomp profile) and its host paths. The daemon in the container
//! attributes a workload in a host cgroup; then a rolling update stops it and starts a new
//! container of the same image on the same pin path, and the frees of files made before the
//! update are credited to the cgroup that made them.
//!
//! The image comes from `cargo xtask image --output <archive>`; `cargo xtask test` builds it
//! and passes the archive in `SLABTRACE_IMAGE_ARCHIVE`. Without an archive the test fails and
//! says how to build one.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_cri::v1::{
    Capability, ContainerConfig, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    SecurityProfile, security_profile::ProfileType,
};
use serde_json::Value;
use slabtrace_integration::{
    Cgroup, PinDir, SETTLE_SLACK, Tmpfs, bpf_maps, cache_of, cgroup,
    containerd::{Containerd, Pod},
    daemon::{free_port, http_get, report_when_at},
    fresh_uid, num, require_root, slabinfo_active, wait_for_kernel_frees, workload,
};

/// Where `cargo xtask test` puts the image archive it built.
const ARCHIVE_ENV: &str = "SLABTRACE_IMAGE_ARCHIVE";

/// The `DaemonSet`'s capabilities (deploy/kubernetes/daemonset.yaml), named as a pod spec names
/// them and kubelet passes them on: without `CAP_`, which containerd's CRI adds. (Found by
/// trying: given `CAP_BPF`, containerd 1.6 asks runc for `CAP_CAP_BPF`, which runc ignores, and
/// the daemon starts without it.)
const CAPS: [&str; 3] = ["BPF", "PERFMON", "SYSLOG"];

/// Their bits (include/uapi/linux/capability.h): `CAP_SYSLOG` 34, `CAP_PERFMON` 38, `CAP_BPF` 39.
const CAP_BITS: u64 = 1 << 34 | 1 << 38 | 1 << 39;

/// The node name the pod gets from the downward API.
const NODE_NAME: &str = "slabtrace-image-test-node";

/// The image archive: `$SLABTRACE_IMAGE_ARCHIVE`, else what `cargo xtask image --output`
/// writes by default in CI.
fn archive() -> Result<PathBuf> {
    let path = std::env::var_os(ARCHIVE_ENV).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/slabtrace.tar"),
        PathBuf::from,
    );
    ensure!(
        path.is_file(),
        "no image archive at {}: build it with `cargo xtask image --output {}` (cargo xtask test \
         does) or point {ARCHIVE_ENV} at one",
        path.display(),
        path.display()
    );
    Ok(path)
}

/// The image's name, from the docker archive's manifest (`RepoTags`).
fn image_name(archive: &Path) -> Result<String> {
    let out = Command::new("tar").arg("-xOf").arg(archive).arg("manifest.json").output()?;
    ensure!(
        out.status.success(),
        "{} has no manifest.json: not a docker archive",
        archive.display()
    );
    let manifest: Value = serde_json::from_slice(&out.stdout)?;
    manifest[0]["RepoTags"][0]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} names no image: {manifest}", archive.display()))
}

/// A scratch directory for the containers' logs, removed on drop.
struct LogDir(PathBuf);

impl LogDir {
    /// What a container wrote (the CRI log format: `<time> <stream> <tag> <line>`), lines only.
    fn read(&self, name: &str) -> String {
        let text = fs::read_to_string(self.0.join(format!("{name}.log"))).unwrap_or_default();
        text.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The container of deploy/kubernetes/daemonset.yaml, as JSON.
fn manifest_container() -> Result<(Value, Value)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let ds: Value = serde_norway::from_str(&fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    let pod = ds["spec"]["template"]["spec"].clone();
    let container = pod["containers"][0].clone();
    ensure!(container.is_object(), "no container in {}", path.display());
    Ok((pod, container))
}

/// `"256Mi"` in bytes.
fn mebibytes(quantity: &Value) -> Result<i64> {
    let q = quantity.as_str().context("no memory limit")?;
    let mib: i64 = q.strip_suffix("Mi").context("a memory limit not in Mi")?.parse()?;
    Ok(mib << 20)
}

/// Where a `DaemonSet` host path is on this test's machine: the test's containerd listens in its
/// own directory, not the node's /run/containerd; the test's pins and state are its own too,
/// where the container expects the node's (`DirectoryOrCreate`: kubelet makes them, here the
/// test does). `(host, inside)` as mounted.
fn test_host_path(
    host: &str,
    inside: &str,
    name: &Value,
    host_path: &Value,
    dirs: &Dirs,
    socket_dir: &Path,
) -> Result<(String, String)> {
    Ok(if host == "/run/containerd" {
        (socket_dir.display().to_string(), socket_dir.display().to_string())
    } else if host_path["type"] == "DirectoryOrCreate" {
        let dir = match name.as_str() {
            Some("pins") => dirs.pins,
            Some("state") => dirs.state,
            other => bail!("a DirectoryOrCreate volume the test does not know: {other:?}"),
        };
        fs::create_dir_all(dir)?;
        (dir.display().to_string(), inside.to_owned())
    } else {
        (host.to_owned(), inside.to_owned())
    })
}

/// What the `DaemonSet` runs, as kubelet would hand it to the CRI, read from
/// deploy/kubernetes/daemonset.yaml: its security context, host paths, environment and memory
/// limit, so that what is tested is what users deploy. Only what must differ here differs: a
/// free port, the test's containerd socket (in place of /run/containerd), /report on that port
/// and exact sampling, all as arguments, which override the manifest's environment; and the
/// test's own pin and state directories as the pins and state volumes' host paths.
fn daemonset_container(
    image: &str,
    listen: &str,
    dirs: &Dirs,
    cri_socket: &Path,
    log: &str,
) -> Result<ContainerConfig> {
    let (pod, container) = manifest_container()?;
    let sc = &container["securityContext"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let add = strings(&sc["capabilities"]["add"]);
    ensure!(add == CAPS, "the DaemonSet adds {add:?}, the test expects {CAPS:?}");
    ensure!(sc["seccompProfile"]["type"] == "RuntimeDefault", "seccomp: {}", sc["seccompProfile"]);
    let socket_dir = cri_socket.parent().unwrap_or(Path::new("/"));
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().context("no volumeMounts")? {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == m["name"])
            .with_context(|| format!("no volume {}", m["name"]))?;
        let host = volume["hostPath"]["path"].as_str().context("not a hostPath volume")?;
        let inside = m["mountPath"].as_str().context("no mountPath")?;
        let (host, inside) =
            test_host_path(host, inside, &m["name"], &volume["hostPath"], dirs, socket_dir)?;
        mounts.push(Mount {
            container_path: inside,
            host_path: host,
            readonly: m["readOnly"].as_bool().unwrap_or(false),
            ..Mount::default()
        });
    }
    let mut envs: Vec<KeyValue> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let value = e["value"].as_str()?;
            Some(KeyValue { key: e["name"].as_str()?.to_owned(), value: value.to_owned() })
        })
        .collect();
    // NODE_NAME comes from the downward API; RUST_LOG so the test can read the log.
    envs.push(KeyValue { key: "NODE_NAME".into(), value: NODE_NAME.into() });
    envs.push(KeyValue { key: "RUST_LOG".into(), value: "info".into() });
    let mut args = strings(&container["args"]);
    ensure!(args.first().map(String::as_str) == Some("daemon"), "args: {args:?}");
    args.retain(|a| a == "daemon");
    args.extend(
        [
            "--listen",
            listen,
            // The test reads /report where it reads the metrics: the manifest's loopback
            // report port would be the host's here (the pod has the host's network).
            "--report-listen",
            "same",
            "--interval",
            "1s",
            // Exact frees, so the rolling update's credit is checked to the file.
            "--sample",
            "1",
            "--cri-socket",
            &cri_socket.display().to_string(),
        ]
        .map(str::to_owned),
    );
    Ok(ContainerConfig {
        image: Some(ImageSpec { image: image.to_owned(), ..ImageSpec::default() }),
        args,
        envs,
        mounts,
        log_path: format!("{log}.log"),
        linux: Some(LinuxContainerConfig {
            // The DaemonSet's requests and limits, as kubelet passes them (cpu 50m: 51 shares).
            resources: Some(LinuxContainerResources {
                cpu_shares: 51,
                memory_limit_in_bytes: mebibytes(&container["resources"]["limits"]["memory"])?,
                ..LinuxContainerResources::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: add,
                    drop_capabilities: strings(&sc["capabilities"]["drop"]),
                    add_ambient_capabilities: Vec::new(),
                }),
                privileged: sc["privileged"].as_bool().unwrap_or(false),
                run_as_user: sc["runAsUser"].as_i64().map(|value| Int64Value { value }),
                readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
                // What kubelet does for allowPrivilegeEscalation: false.
                no_new_privs: sc["allowPrivilegeEscalation"] == false,
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault.into(),
                    localhost_ref: String::new(),
                }),
                // The DaemonSet's pod network is the cluster's; this machine has no CNI, so
                // the test's sandbox uses the node's (the daemon does not care which).
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node.into(),
                    pid: NamespaceMode::Container.into(),
                    ipc: NamespaceMode::Pod.into(),
                    ..NamespaceOption::default()
                }),
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    })
}

/// A daemon container of the test's pod.
struct Running<'a> {
    containerd: &'a Containerd,
    id: String,
    listen: String,
    name: String,
    logs: &'a LogDir,
}

/// The host directories the test stands in for the node's.
struct Dirs<'a> {
    pins: &'a Path,
    state: &'a Path,
}

impl<'a> Running<'a> {
    /// Starts the image as the `DaemonSet` does and waits until `/healthz` answers 200.
    fn start(
        containerd: &'a Containerd,
        pod: &Pod<'_>,
        logs: &'a LogDir,
        image: &str,
        dirs: &Dirs,
        name: &str,
    ) -> Result<Self> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let config = daemonset_container(image, &listen, dirs, containerd.socket(), name)?;
        let id = containerd.start_container(pod, "slabtrace", config)?;
        let me = Self { containerd, id, listen, name: name.to_owned(), logs };
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Ok((200, _)) = http_get(&me.listen, "/healthz") {
                return Ok(me);
            }
            let status = containerd.container_status(&me.id)?;
            // CONTAINER_EXITED = 2.
            if status.state == 2 {
                bail!(
                    "the container exited ({}, {} {}): {}",
                    status.exit_code,
                    status.reason,
                    status.message,
                    me.log()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "/healthz did not answer 200 within 60 s; the container logged: {}",
                me.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        self.logs.read(&self.name)
    }

    /// The daemon's `/report` once `reached` accepts it (see `wait_for_state`).
    fn report_when(&self, what: &str, reached: impl Fn(&Value) -> bool) -> Result<Value> {
        report_when_at(&self.listen, what, reached)
    }

    /// Stops the container as kubelet does in a rolling update (SIGTERM, 10 s grace), checks
    /// that the daemon exited 0, and removes the container.
    fn stop(self) -> Result<String> {
        self.containerd.stop_container(&self.id, Duration::from_secs(10))?;
        let status = self.containerd.container_status(&self.id)?;
        let log = self.log();
        ensure!(status.exit_code == 0, "the daemon exited {} on SIGTERM: {log}", status.exit_code);
        self.containerd.remove_container(&self.id)?;
        Ok(log)
    }
}

/// The daemon's process on the host (its command line names its listen address, unique to it).
fn daemon_pid(listen: &str) -> Result<u32> {
    let wanted = listen.as_bytes();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"/usr/bin/slabtrace"))
            && args.contains(&wanted)
        {
            return Ok(pid);
        }
    }
    bail!("no slabtrace process listening on {listen}")
}

/// `Field:\t<value>` of /proc/<pid>/status.
fn status_field(pid: u32, field: &str) -> Result<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

#[test]
fn the_image_runs_as_the_daemonset_runs_it_and_keeps_live_state_across_a_rolling_update()
-> Result<()> {
    const CREATED: u64 = 3000;
    const UNLINKED: u64 = 2000;
    require_root()?;
    let archive = archive()?;
    let image = image_name(&archive)?;
    let pid = std::process::id();
    let pins = PinDir::new("image")?;
    let logs = LogDir(std::env::temp_dir().join(format!("slabtrace-test-{pid}-image-logs")));
    fs::create_dir_all(&logs.0)?;
    let fs = Tmpfs::mount("image")?;
    let a = Cgroup::create("image-a")?;
    let b = Cgroup::create("image-b")?;

    let containerd = Containerd::start()?;
    containerd.import_image(&archive, &image)?;
    let uid = fresh_uid()?;
    let log_dir = logs.0.display().to_string();
    let pod = containerd.run_pod_with(
        "kube-system",
        "slabtrace-node",
        &uid,
        "kubepods/burstable",
        |c| c.log_directory = log_dir,
    )?;

    let state = logs.0.join("state");
    let dirs = Dirs { pins: pins.path(), state: &state };
    let first = Running::start(&containerd, &pod, &logs, &image, &dirs, "slabtrace-1")?;
    // The security context took: root's UID with exactly the three capabilities, no new
    // privileges, a seccomp filter.
    let daemon = daemon_pid(&first.listen)?;
    let eff = u64::from_str_radix(&status_field(daemon, "CapEff")?, 16)?;
    ensure!(eff == CAP_BITS, "the daemon runs with CapEff {eff:#x}, not only {CAP_BITS:#x}");
    ensure!(status_field(daemon, "Uid")?.starts_with("0\t"), "the daemon does not run as UID 0");
    ensure!(status_field(daemon, "NoNewPrivs")? == "1", "no_new_privs is not set");
    ensure!(status_field(daemon, "Seccomp")? == "2", "no seccomp filter (RuntimeDefault) applies");

    a.run(Command::new(workload()).arg("create").arg(fs.path()).arg(CREATED.to_string()))?;
    let before = first.report_when("the daemon in the container to see A's files", |r| {
        num(cache_of(cgroup(r, a.relative()), "shmem_inode_cache"), "live_objects") >= CREATED
    })?;
    let in_a = cache_of(cgroup(&before, a.relative()), "shmem_inode_cache");
    ensure!(
        num(in_a, "allocs") >= CREATED && num(in_a, "live_objects") >= CREATED,
        "the daemon in the container did not attribute A's {CREATED} files to {}: {in_a:?}; \
         log: {}",
        a.relative(),
        first.log()
    );
    let (status, body) = http_get(&first.listen, "/healthz")?;
    ensure!(status == 200, "/healthz answered {status}: {body}");
    let log = first.stop()?;
    ensure!(log.contains("pinning the live-object"), "it did not pin its maps: {log}");
    ensure!(log.contains(&format!("\"node\":\"{NODE_NAME}\"")), "events lack NODE_NAME: {log}");
    // The long view of slow growth was kept on the host, for the next container.
    let history = fs::read_to_string(state.join("history.json"))
        .with_context(|| format!("no history file in the state volume; log: {log}"))?;
    let history: serde_json::Value = serde_json::from_str(&history)?;
    ensure!(history["schema"] == "slabtrace.history.v1", "{history}");
    ensure!(history["series"]["node/slab"].as_array().is_some_and(|p| !p.is_empty()), "{history}");

    // The rolling update: the old container is gone, a new one of the same image starts on
    // the same pin path; then B unlinks files A made before the update.
    let second = Running::start(&containerd, &pod, &logs, &image, &dirs, "slabtrace-2")?;
    ensure!(second.log().contains("resuming from the maps"), "{}", second.log());
    let before_unlinks = slabinfo_active("shmem_inode_cache")?;
    b.run(
        Command::new(workload()).arg("unlink").arg(fs.path()).arg("0").arg(UNLINKED.to_string()),
    )?;
    // What the daemon's programs have seen, from its map: once every unlink is seen or the
    // kernel has freed the inodes (attribution.rs says why not every free need reach them),
    // the report need only catch up with it.
    let (pid, a_id) = (daemon_pid(&second.listen)?, a.id()?);
    let seen = || {
        bpf_maps::counters_of(pid, a_id, "shmem_inode_cache", false)
            .map(|c| slabtrace_integration::gone(&c))
    };
    wait_for_kernel_frees(
        "B's unlinks to free A's inodes",
        "shmem_inode_cache",
        (before_unlinks + SETTLE_SLACK).saturating_sub(UNLINKED),
        || Ok(seen()? >= UNLINKED),
    )?;
    let seen_then = seen()?;
    let after = second.report_when("B's unlinks to come back as A's frees", |r| {
        let in_a = cache_of(cgroup(r, a.relative()), "shmem_inode_cache");
        num(in_a, "frees") + num(in_a, "evicted_objects") >= seen_then
    })?;
    let in_a = cache_of(cgroup(&after, a.relative()), "shmem_inode_cache");
    let (allocs, frees) = (num(in_a, "allocs"), num(in_a, "frees"));
    ensure!(
        (CREATED..CREATED + 50).contains(&allocs),
        "the new container lost A's allocations: {allocs}: {in_a:?}"
    );
    // Every free the programs ran for: not always all (see attribution.rs).
    ensure!(
        (UNLINKED * 85 / 100..=UNLINKED).contains(&frees),
        "the new container credited A {frees} frees of the {UNLINKED} files it made before the \
         update (B unlinked them after): {in_a:?}; self: {}",
        after["self"]
    );
    let in_b = cache_of(cgroup(&after, b.relative()), "shmem_inode_cache");
    ensure!(num(in_b, "frees") < 100, "B was credited frees it did not allocate: {in_b:?}");
    let (status, body) = http_get(&second.listen, "/healthz")?;
    ensure!(status == 200, "/healthz answered {status}: {body}");
    second.stop()?;

    drop(pod);
    containerd.remove_image(&image)?;
    Ok(())
}
