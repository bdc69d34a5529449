//! A private containerd for the root integration tests: real pods, real containers, real
//! cgroups, without touching the node's own runtime.
//!
//! [`Containerd::start`] runs `containerd` with its root, state, sockets and runc root all in a
//! fresh directory under the temp dir, imports a one-binary busybox image built on the spot (no
//! registry: the image is hand-made from Debian's `busybox-static`), and serves the CRI on its
//! own socket. Pods use the host network (so no CNI) and kubelet's cgroupfs layout
//! (`kubepods/<qos>/pod<uid>/<container id>`). Dropping a [`Pod`] removes its sandbox and its
//! pod-level cgroups (runc removes only the containers' own); dropping the [`Containerd`]
//! removes every sandbox left, stops the daemon and its shims, unmounts what it mounted and
//! deletes its directory and the cgroup directories it created. A system containerd, if one
//! runs, is never touched.
//!
//! Needs root and, on Debian: `apt-get install -y containerd runc busybox-static`.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use sha2::{Digest as _, Sha256};
use slabtrace::{
    cgroup::mount::unescape,
    runtime::cri::{self, CriClient},
};
use tonic::transport::Channel;

/// The test image: busybox, with `sleep 1000000` as its command so it doubles as the sandbox
/// ("pause") image.
pub const IMAGE: &str = "localhost/slabtrace-test/busybox:1";

/// The containerd namespace the CRI plugin works in.
const CRI_NAMESPACE: &str = "k8s.io";

/// How long one CRI call of the harness may take (creating a sandbox mounts and forks a shim).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Distinguishes several daemons started by one test process.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// A running private containerd. Drop it after every [`Pod`] it ran (the borrow checker sees
/// to that).
pub struct Containerd {
    // Fields drop in this order: the clients and their runtime before the daemon they talk to.
    runtime_client: RuntimeServiceClient<Channel>,
    exec_client: RuntimeServiceClient<Channel>,
    image_client: ImageServiceClient<Channel>,
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
}

/// A pod sandbox of a [`Containerd`]; stopped and removed, with its cgroups, when dropped.
pub struct Pod<'a> {
    containerd: &'a Containerd,
    /// The runtime's sandbox id.
    pub sandbox_id: String,
    /// The pod uid given to [`Containerd::run_pod`].
    pub uid: String,
    /// The pod-level cgroup, relative to each hierarchy's root: `<qos parent>/pod<uid>`.
    pub cgroup_parent: String,
    config: PodSandboxConfig,
}

/// What a command run with [`Containerd::exec_sync`] did.
#[derive(Debug)]
pub struct ExecOutput {
    /// Its exit code.
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl Containerd {
    /// Starts a private containerd and imports [`IMAGE`] into it.
    pub fn start() -> Result<Self> {
        Self::start_in(&Self::next_dir())
    }

    /// A fresh directory for a private containerd, its socket `c.sock` in it: for a test that
    /// needs the socket's path before the runtime is there.
    #[must_use]
    pub fn next_dir() -> PathBuf {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        // Short: the gRPC socket's path must fit in sun_path (108 bytes).
        std::env::temp_dir().join(format!("slabtrace-ctrd-{}-{n}", std::process::id()))
    }

    /// Starts a private containerd in `dir` (its socket `dir/c.sock`) and imports [`IMAGE`].
    pub fn start_in(dir: &Path) -> Result<Self> {
        require_tools()?;
        let dir = dir.to_owned();
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // containerd 1.6 puts shim sockets in /run/containerd/s whatever its state dir is;
        // remember whether those directories were ours to remove afterwards.
        let run_dirs = ["/run/containerd", "/run/containerd/s"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|d| !d.exists())
            .collect();
        let mut daemon = Daemon {
            socket: dir.join("c.sock"),
            dir,
            child: None,
            run_dirs,
            cgroups: Mutex::new(CgroupBook::default()),
        };
        let config = daemon.dir.join("config.toml");
        fs::write(&config, daemon.config()).context("writing containerd's config")?;
        let log = fs::File::create(daemon.dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        daemon.child = Some(child);
        daemon.wait_ready()?;
        daemon.import_image()?;

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let channel = rt.block_on(cri::connect_channel(&daemon.socket, cri::TIMEOUT))?;
        // ExecSync runs a workload, which on a busy CI machine takes more than the two seconds
        // slabtrace gives its own lookups: its own channel, bounded by CALL_TIMEOUT.
        let exec = rt.block_on(cri::connect_channel(&daemon.socket, CALL_TIMEOUT))?;
        let me = Self {
            runtime_client: RuntimeServiceClient::new(channel.clone()),
            exec_client: RuntimeServiceClient::new(exec),
            image_client: ImageServiceClient::new(channel),
            rt,
            daemon,
        };
        me.wait_image()?;
        Ok(me)
    }

    /// The CRI socket.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.daemon.socket
    }

    /// Runs a pod sandbox the way kubelet's cgroupfs driver would: host network, the kubelet
    /// labels, cgroup parent `<qos_cgroup_parent>/pod<uid>` (e.g. `kubepods/besteffort`).
    ///
    /// runc resolves a relative parent against the test process's own cgroup in each hierarchy
    /// (the root, from a root shell; on this project's VM the v1 memory controller is the
    /// exception), an absolute one (`/kubepods/besteffort`, what kubelet passes) against the
    /// hierarchy's root. [`Pod::cgroup2_dir`] says where it went; cleanup handles both.
    pub fn run_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        qos_cgroup_parent: &str,
    ) -> Result<Pod<'_>> {
        self.run_pod_with(namespace, name, uid, qos_cgroup_parent, |_| {})
    }

    /// [`Containerd::run_pod`], with `tweak` applied to the sandbox config first (a log
    /// directory, say).
    pub fn run_pod_with(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        qos_cgroup_parent: &str,
        tweak: impl FnOnce(&mut PodSandboxConfig),
    ) -> Result<Pod<'_>> {
        let cgroup_parent = format!("{}/pod{uid}", qos_cgroup_parent.trim_end_matches('/'));
        self.daemon.note_cgroup_parent(&cgroup_parent)?;
        let labels = HashMap::from([
            (cri::LABEL_POD_NAME.to_owned(), name.to_owned()),
            (cri::LABEL_POD_NAMESPACE.to_owned(), namespace.to_owned()),
            (cri::LABEL_POD_UID.to_owned(), uid.to_owned()),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            // Empty: the CRI allows (and containerd then uses the node's) only with host network.
            hostname: String::new(),
            labels,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let mut config = config;
        tweak(&mut config);
        let request = RunPodSandboxRequest { config: Some(config.clone()), ..Default::default() };
        let sandbox_id = self
            .call("RunPodSandbox", |mut c| async move { c.run_pod_sandbox(request).await })
            .with_context(|| format!("running pod {namespace}/{name}"))?
            .pod_sandbox_id;
        Ok(Pod { containerd: self, sandbox_id, uid: uid.to_owned(), cgroup_parent, config })
    }

    /// Creates and starts a container running `command` in `pod`; returns its id.
    pub fn create_container(&self, pod: &Pod<'_>, name: &str, command: &[&str]) -> Result<String> {
        let config = ContainerConfig {
            image: Some(ImageSpec { image: IMAGE.to_owned(), ..ImageSpec::default() }),
            command: command.iter().map(|&s| s.to_owned()).collect(),
            linux: Some(LinuxContainerConfig {
                // What kubelet gives a best-effort container.
                resources: Some(LinuxContainerResources {
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..LinuxContainerResources::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..LinuxContainerSecurityContext::default()
                }),
            }),
            ..ContainerConfig::default()
        };
        self.start_container(pod, name, config)
    }

    /// Creates and starts a container of `pod` from `config` as given (image, args, mounts,
    /// security context: nothing of [`Containerd::create_container`]'s defaults), adding only
    /// the metadata and kubelet's labels; returns its id.
    pub fn start_container(
        &self,
        pod: &Pod<'_>,
        name: &str,
        mut config: ContainerConfig,
    ) -> Result<String> {
        let meta = pod.config.metadata.clone().unwrap_or_default();
        config.metadata = Some(ContainerMetadata { name: name.to_owned(), attempt: 0 });
        config.labels.extend([
            (cri::LABEL_CONTAINER_NAME.to_owned(), name.to_owned()),
            (cri::LABEL_POD_NAME.to_owned(), meta.name),
            (cri::LABEL_POD_NAMESPACE.to_owned(), meta.namespace),
            (cri::LABEL_POD_UID.to_owned(), meta.uid),
        ]);
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .call("CreateContainer", |mut c| async move { c.create_container(request).await })
            .with_context(|| format!("creating container {name}"))?
            .container_id;
        let request = StartContainerRequest { container_id: id.clone() };
        self.call("StartContainer", |mut c| async move { c.start_container(request).await })
            .with_context(|| format!("starting container {name}"))?;
        Ok(id)
    }

    /// Stops a container as kubelet does: SIGTERM, then SIGKILL after `grace` (whole seconds).
    pub fn stop_container(&self, container_id: &str, grace: Duration) -> Result<()> {
        let request = StopContainerRequest {
            container_id: container_id.to_owned(),
            timeout: i64::try_from(grace.as_secs())?,
        };
        self.call("StopContainer", |mut c| async move { c.stop_container(request).await })
            .with_context(|| format!("stopping container {container_id}"))?;
        Ok(())
    }

    /// Removes a (stopped) container.
    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        let request = RemoveContainerRequest { container_id: container_id.to_owned() };
        self.call("RemoveContainer", |mut c| async move { c.remove_container(request).await })
            .with_context(|| format!("removing container {container_id}"))?;
        Ok(())
    }

    /// A container's status: its state, exit code, reason and message.
    pub fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let request =
            ContainerStatusRequest { container_id: container_id.to_owned(), verbose: false };
        self.call("ContainerStatus", |mut c| async move { c.container_status(request).await })?
            .status
            .with_context(|| format!("no status for container {container_id}"))
    }

    /// Imports an image archive (a docker archive, as `cargo xtask image --output` writes)
    /// into the CRI plugin's namespace with `ctr`, and waits until the CRI lists `image`.
    pub fn import_image(&self, archive: &Path, image: &str) -> Result<()> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", CRI_NAMESPACE, "images", "import"])
            .arg(archive)
            .output()
            .context("running ctr")?;
        ensure!(
            out.status.success(),
            "ctr images import {} failed: {}{}",
            archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_image_named(image)
    }

    /// Removes an image through the CRI (what kubelet's image garbage collection does).
    pub fn remove_image(&self, image: &str) -> Result<()> {
        let client = self.image_client.clone();
        let request = RemoveImageRequest {
            image: Some(ImageSpec { image: image.to_owned(), ..ImageSpec::default() }),
        };
        self.rt
            .block_on(async move {
                let mut client = client;
                tokio::time::timeout(CALL_TIMEOUT, client.remove_image(request)).await
            })
            .with_context(|| format!("RemoveImage {image}: no answer"))?
            .map_err(|s| anyhow::anyhow!("RemoveImage {image} failed: {}", s.message()))?;
        Ok(())
    }

    /// Runs `cmd` in a container and waits for it, at most `timeout` (whole seconds, at least 1).
    pub fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let request = ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd: cmd.iter().map(|&s| s.to_owned()).collect(),
            timeout: i64::try_from(timeout.as_secs().max(1))?,
        };
        let mut client = self.exec_client.clone();
        let answer = self
            .rt
            .block_on(async move {
                tokio::time::timeout(CALL_TIMEOUT, async move { client.exec_sync(request).await })
                    .await
            })
            .with_context(|| format!("ExecSync: no answer within {} s", CALL_TIMEOUT.as_secs()))?
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("ExecSync failed: {} ({:?})", s.message(), s.code()))
            .with_context(|| format!("exec {cmd:?} in {container_id}"))?;
        Ok(ExecOutput { exit_code: answer.exit_code, stdout: answer.stdout, stderr: answer.stderr })
    }

    /// A CRI client of slabtrace's own, on this daemon's socket.
    pub fn cri_client(&self) -> Result<CriClient> {
        Ok(CriClient::connect(self.socket())?)
    }

    /// One runtime-service call, bounded by [`CALL_TIMEOUT`].
    fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.runtime_client.clone();
        let answer = self
            .rt
            .block_on(async move { tokio::time::timeout(CALL_TIMEOUT, f(client)).await })
            .with_context(|| format!("{what}: no answer within {} s", CALL_TIMEOUT.as_secs()))?;
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("{what} failed: {} ({:?})", s.message(), s.code()))
    }

    /// Waits until the CRI plugin has seen the imported image: it learns of images from
    /// containerd's events, a moment after `ctr import` returns.
    fn wait_image(&self) -> Result<()> {
        self.wait_image_named(IMAGE)
    }

    /// Waits until the CRI plugin lists `image`.
    fn wait_image_named(&self, image: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let client = self.image_client.clone();
            let request = ImageStatusRequest {
                image: Some(ImageSpec { image: image.to_owned(), ..ImageSpec::default() }),
                verbose: false,
            };
            let answer = self.rt.block_on(async move {
                let mut client = client;
                tokio::time::timeout(CALL_TIMEOUT, client.image_status(request)).await
            });
            let last = match answer {
                Ok(Ok(status)) if status.get_ref().image.is_some() => return Ok(()),
                Ok(Ok(_)) => "not listed".to_owned(),
                Ok(Err(status)) => format!("{} ({:?})", status.message(), status.code()),
                Err(_) => format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            };
            ensure!(Instant::now() < deadline, "the CRI plugin never saw {image}: {last}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops and removes every sandbox still there (a test that failed half-way leaves some).
    fn remove_all_sandboxes(&self) {
        let request = ListPodSandboxRequest { filter: None };
        let Ok(list) =
            self.call("ListPodSandbox", |mut c| async move { c.list_pod_sandbox(request).await })
        else {
            return;
        };
        for sandbox in list.items {
            self.remove_sandbox(&sandbox.id);
        }
    }

    /// `StopPodSandbox` then `RemovePodSandbox`, errors only reported: this runs in destructors.
    fn remove_sandbox(&self, id: &str) {
        let stop = StopPodSandboxRequest { pod_sandbox_id: id.to_owned() };
        if let Err(e) =
            self.call("StopPodSandbox", |mut c| async move { c.stop_pod_sandbox(stop).await })
        {
            eprintln!("warning: {e:#}");
        }
        let remove = RemovePodSandboxRequest { pod_sandbox_id: id.to_owned() };
        if let Err(e) =
            self.call("RemovePodSandbox", |mut c| async move { c.remove_pod_sandbox(remove).await })
        {
            eprintln!("warning: {e:#}");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all_sandboxes();
        // The daemon field then stops containerd and cleans up after it.
    }
}

impl Pod<'_> {
    /// The pod-level cgroup2 directory (`.../kubepods/besteffort/pod<uid>`), wherever runc
    /// resolved the cgroup parent.
    #[must_use]
    pub fn cgroup2_dir(&self) -> Option<PathBuf> {
        let base = cgroup_bases(&self.cgroup_parent).into_iter().rfind(|(v2, _)| *v2)?.1;
        Some(base.join(self.cgroup_parent.trim_start_matches('/')))
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        self.containerd.remove_sandbox(&self.sandbox_id);
        remove_cgroup_everywhere(&self.cgroup_parent);
    }
}

/// The namespaces kubelet asks for with `hostNetwork: true`.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node.into(),
        pid: NamespaceMode::Container.into(),
        ipc: NamespaceMode::Pod.into(),
        ..NamespaceOption::default()
    }
}

/// Fails with the apt command to run unless the tools are installed.
fn require_tools() -> Result<()> {
    for tool in ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "tar"] {
        ensure!(
            which::which(tool).is_ok(),
            "{tool} is missing: the containerd tests need `apt-get install -y containerd runc \
             busybox-static`"
        );
    }
    let busybox = fs::read("/bin/busybox")
        .context("/bin/busybox is missing: `apt-get install -y busybox-static`")?;
    // A dynamically linked busybox (Debian's `busybox` package) would need a libc in the image.
    ensure!(
        !has_interpreter(&busybox),
        "/bin/busybox is dynamically linked: `apt-get install -y busybox-static`"
    );
    Ok(())
}

/// Whether an ELF file names a program interpreter (`PT_INTERP`), i.e. is dynamically linked.
/// Anything that is not a 64-bit ELF file counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    use object::{
        elf::PT_INTERP,
        read::elf::{ElfFile64, ProgramHeader as _},
    };
    let Ok(file) = ElfFile64::<object::Endianness>::parse(elf) else { return true };
    file.elf_program_headers().iter().any(|p| p.p_type(file.endian()) == PT_INTERP)
}

/// The cgroup directories the daemon's pods created, to remove at the end.
#[derive(Default)]
struct CgroupBook {
    /// Pod-level cgroups (`kubepods/besteffort/pod<uid>`).
    pods: Vec<String>,
    /// Top-level directories (`<hierarchy>/kubepods`) that did not exist before the first pod.
    fresh_tops: Vec<PathBuf>,
}

/// The containerd process and everything on disk that belongs to it.
struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    /// Directories under /run that did not exist before this daemon.
    run_dirs: Vec<PathBuf>,
    cgroups: Mutex<CgroupBook>,
}

impl Daemon {
    fn config(&self) -> String {
        let d = self.dir.display();
        let sock = self.socket.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Not /etc/containerd/config.toml's imports, nor any other system file.
imports = []
# Snapshotters and services the tests do not need, which only log noise when they fail to load.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # The sandbox gets oom_score_adj -998, which this process may not be allowed to set.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroupfs, as kubelet's cgroupfs driver: kubepods/<qos>/pod<uid>/<container id>.
        SystemdCgroup = false
        Root = "{d}/runc"

  # Pods use the host network, so no CNI plugin ever runs; point it at empty directories.
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        )
    }

    /// Waits until the CRI answers `Version` on the socket.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("containerd exited at start ({status}):\n{}", self.log_tail(40));
            }
            if self.socket.exists() {
                match CriClient::connect(&self.socket).and_then(|c| c.version()) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => {
                        bail!(
                            "containerd's CRI did not answer within 30 s: {e}\n{}",
                            self.log_tail(40)
                        );
                    }
                    Err(_) => {}
                }
            }
            ensure!(
                Instant::now() < deadline,
                "containerd's socket did not appear within 30 s:\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Builds the busybox image as a docker archive and imports it with `ctr`.
    fn import_image(&self) -> Result<()> {
        let archive = build_image(&self.dir.join("image"))?;
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CRI_NAMESPACE, "images", "import"])
            .arg(&archive)
            .output()
            .context("running ctr")?;
        ensure!(
            out.status.success(),
            "ctr images import failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Records a pod cgroup, and which top-level cgroup directories it will create.
    fn note_cgroup_parent(&self, cgroup_parent: &str) -> Result<()> {
        let top = cgroup_parent.trim_start_matches('/').split('/').next().unwrap_or_default();
        let mut book = self.cgroups.lock().map_err(|_| anyhow::anyhow!("cgroup book poisoned"))?;
        for (_, base) in cgroup_bases(cgroup_parent) {
            let dir = base.join(top);
            if !dir.exists() && !book.fresh_tops.contains(&dir) {
                book.fresh_tops.push(dir);
            }
        }
        book.pods.push(cgroup_parent.to_owned());
        Ok(())
    }

    /// The last `lines` lines of containerd's log.
    fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 5 s; then the shims it left (they outlive containerd).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill has no memory-safety preconditions; the pid is our own child's,
                // not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in shims_of(&self.socket) {
            // SAFETY: as above; the pid is a shim started by our containerd for our socket.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("containerd's log (last 40 lines):\n{}", self.log_tail(40));
        }
        self.stop();
        let book = std::mem::take(
            &mut *self.cgroups.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for pod in &book.pods {
            remove_cgroup_everywhere(pod);
        }
        // A top-level directory may hold other tests' pods, still running: remove what is
        // empty of it and kill nothing (the pods above were this daemon's). The last daemon
        // of the process to stop removes what is left.
        let mut tops = FRESH_TOPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tops.extend(book.fresh_tops);
        tops.retain(|top| !remove_empty_tree(top));
        unmount_under(&self.dir);
        if mounts_under(&self.dir).is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("warning: could not remove {}: {e}", self.dir.display());
            }
        } else {
            // Never recurse into a mount: it could reach outside the test's directory.
            eprintln!("warning: mounts left under {}; not removing it", self.dir.display());
        }
        // Deepest first; remove_dir fails (harmlessly) if a system containerd now uses them.
        for dir in self.run_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Writes rootfs, layer, config and manifest under `dir` and returns the docker archive.
fn build_image(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "dev", "etc", "proc", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copying /bin/busybox")?;
    let applets = Command::new("/bin/busybox").arg("--list").output()?;
    ensure!(applets.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
    }
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let diff_id = format!("sha256:{:x}", Sha256::digest(fs::read(&layer)?));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            // The sandbox runs the image's command: `sleep` stands in for `pause`.
            "Cmd": ["/bin/sleep", "1000000"],
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    fs::write(dir.join("config.json"), serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!([
        { "Config": "config.json", "RepoTags": [IMAGE], "Layers": ["layer.tar"] }
    ]);
    fs::File::create(dir.join("manifest.json"))?.write_all(&serde_json::to_vec(&manifest)?)?;
    let archive = dir.join("image.tar");
    run(Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(&archive).args([
        "manifest.json",
        "config.json",
        "layer.tar",
    ]))?;
    Ok(archive)
}

/// Runs a command, failing with its stderr.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The directories a cgroup path from a pod config can end up under, in every hierarchy (v1
/// controllers and v2): the hierarchy's root, and for a relative path also this process's own
/// cgroup there, because runc resolves a relative `cgroupsPath` against the cgroup of its
/// caller (the shim, which inherits containerd's, which inherits ours).
/// Each comes with whether it is in the cgroup2 hierarchy; the last of a hierarchy's bases is
/// where runc puts the path.
fn cgroup_bases(cgroup_path: &str) -> Vec<(bool, PathBuf)> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut bases = Vec::new();
    for m in mountinfo().into_iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2") {
        let v2 = m.fstype == "cgroup2";
        bases.push((v2, m.target.clone()));
        if cgroup_path.starts_with('/') {
            continue;
        }
        // /proc/self/cgroup lines are `id:controllers:path`; v2's has no controllers.
        let mut mine = own.lines().filter_map(|l| {
            let mut fields = l.splitn(3, ':').skip(1);
            Some((fields.next()?, fields.next()?))
        });
        let path = mine.find_map(|(controllers, path)| {
            let matches = if v2 {
                controllers.is_empty()
            } else {
                !controllers.is_empty()
                    && controllers.split(',').all(|c| m.options.split(',').any(|o| o == c))
            };
            matches.then_some(path)
        });
        if let Some(path) = path
            && let Ok(inside) = Path::new(path).strip_prefix(&m.root)
            && !inside.as_os_str().is_empty()
        {
            bases.push((v2, m.target.join(inside)));
        }
    }
    bases
}

/// Removes `cgroup_path` (and anything below it) wherever it was created (see
/// [`cgroup_bases`]), after killing what still runs there: these are the test's own pods.
fn remove_cgroup_everywhere(cgroup_path: &str) {
    for (_, base) in cgroup_bases(cgroup_path) {
        let dir = base.join(cgroup_path.trim_start_matches('/'));
        if dir.exists() {
            remove_tree(&dir);
        }
    }
}

/// Removes a cgroup directory tree deepest first, killing its processes; retries for a while
/// because killed processes take a moment to leave.
/// Top-level cgroup directories (`<hierarchy>/kubepods`) this test process's daemons created,
/// not yet removed because some other daemon's pods were still in them.
static FRESH_TOPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the cgroup directory `dir` and those below it that hold no process, deepest
/// first; true if `dir` is gone.
fn remove_empty_tree(dir: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    fs::remove_dir(dir).is_ok() || !dir.exists()
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    for _ in 0..50 {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions; the process is in a cgroup
                // of the test's own pods.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("warning: could not remove cgroup {}", dir.display());
}

/// Pids of containerd shims serving `socket` (their command line has `-address <socket>`).
fn shims_of(socket: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let socket = socket.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args.windows(2).any(|w| w[0] == b"-address" && w[1] == socket)
        })
        .collect()
}

/// One line of /proc/self/mountinfo.
struct Mount {
    /// The directory within its file system that is mounted (`/` unless a bind mount).
    root: PathBuf,
    target: PathBuf,
    fstype: String,
    /// Super-block options; for cgroup v1, the controllers (`rw,cpu,cpuacct`).
    options: String,
}

fn mountinfo() -> Vec<Mount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split_whitespace();
            let root = left.nth(3)?;
            let target = left.next()?;
            let mut right = right.split_whitespace();
            Some(Mount {
                root: PathBuf::from(unescape(root)),
                target: PathBuf::from(unescape(target)),
                fstype: right.next()?.to_owned(),
                options: right.nth(1).unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> =
        mountinfo().into_iter().map(|m| m.target).filter(|m| m.starts_with(dir)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// Lazily unmounts everything at or below `dir`.
fn unmount_under(dir: &Path) {
    for mount in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&mount).status();
    }
}
