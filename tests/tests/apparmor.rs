//! The `DaemonSet` under the container runtimes' default `AppArmor` profile, on a kernel that
//! enforces it: containerd's `cri-containerd.apparmor.d` (tests/apparmor/, rendered as
//! containerd renders it on a Debian 12 node; CRI-O's `crio-default` has the same /sys rules)
//! is loaded with `apparmor_parser`, and the daemon runs confined by it the way runc confines
//! a container's process (`exec <profile>` written to `/proc/self/attr/exec` just before the
//! exec, here by `setpriv --apparmor-profile`), with the `DaemonSet`'s capabilities and no
//! other.
//!
//! - With the pins where the `DaemonSet` puts them, a directory of the BPF filesystem bind
//!   mounted at `/var/lib/slabtrace/pins`, the daemon starts, pins its maps and serves.
//! - With the pins under `/sys/fs/bpf` itself, the profile's `deny /sys/fs/[^c]*/** wklx`
//!   refuses them: the daemon stops with one sentence that names the security module and the
//!   way out, and nothing is created there. The same daemon unconfined pins there: the
//!   refusal is the profile's.
//!
//! VM only (xtask's `VM_ONLY_TESTS`): it needs `AppArmor` enabled, which every kernel of the
//! matrix has (Debian builds it in as the default security module) and a development host need
//! not; where it is not enabled, the test fails saying so rather than passing.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use slabtrace::probe::pin::is_state_dir;
use slabtrace_common::map_names;
use slabtrace_integration::{PinDir, daemon::Daemon, require_root};

/// The profile's name, as containerd's CRI plugin loads and applies it.
const PROFILE: &str = "cri-containerd.apparmor.d";

/// Its text (see the header of the file for its source).
const PROFILE_TEXT: &str = include_str!("../apparmor/cri-containerd.apparmor.d");

/// Where the `DaemonSet` mounts the host's /sys/fs/bpf/slabtrace in the container
/// (deploy/kubernetes/daemonset.yaml, `SLABTRACE_PIN_PATH`; tests/tests/deploy.rs checks that
/// the manifests and the chart mount it there and nothing writable under /sys).
const CONTAINER_PINS: &str = "/var/lib/slabtrace/pins";

/// The `DaemonSet`'s capabilities, and `sys_resource` where the kernel charges BPF maps to
/// `RLIMIT_MEMLOCK` (before 5.11; see tests/tests/privileges.rs).
fn daemonset_caps() -> Result<Vec<&'static str>> {
    let btf = slabtrace::kernel::btf::Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))?;
    let memlock = slabtrace::kernel::layout::KernelLayout::from_btf(&btf)?.memlock_maps;
    let mut caps = vec!["bpf", "perfmon", "syslog"];
    if memlock {
        caps.push("sys_resource");
    }
    Ok(caps)
}

/// `setpriv` keeping exactly `caps` and, if `profile` is given, confining what it runs by that
/// `AppArmor` profile from its exec on, as runc does.
fn wrapper(caps: &[&str], profile: Option<&str>) -> Vec<String> {
    let keep: String = caps.iter().flat_map(|c| [",+", c]).collect();
    let mut args = vec![
        "setpriv".to_owned(),
        "--inh-caps=-all".to_owned(),
        "--ambient-caps=-all".to_owned(),
        format!("--bounding-set=-all{keep}"),
    ];
    if let Some(profile) = profile {
        args.extend(["--apparmor-profile".to_owned(), profile.to_owned()]);
    }
    args.push("--".to_owned());
    args
}

/// Fails unless `AppArmor` is enabled and enforcing here, saying what the kernel has instead.
fn require_apparmor() -> Result<()> {
    let lsm = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let on = lsm.split(',').any(|m| m.trim() == "apparmor")
        && Path::new("/sys/kernel/security/apparmor/profiles").exists();
    ensure!(
        on,
        "AppArmor is not enabled on this kernel (security modules: {:?}; securityfs must be at \
         /sys/kernel/security): this test runs in `cargo xtask vm`, whose Debian kernels enable \
         AppArmor, or on a host that has it",
        lsm.trim()
    );
    Ok(())
}

/// Loads (or replaces) the profile, as containerd does at start, and checks it enforces.
fn load_profile() -> Result<()> {
    require_apparmor()?;
    let mut parser = Command::new("apparmor_parser")
        .arg("--replace")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run apparmor_parser (Debian's apparmor package)")?;
    parser.stdin.take().context("no stdin")?.write_all(PROFILE_TEXT.as_bytes())?;
    let out = parser.wait_with_output()?;
    ensure!(
        out.status.success(),
        "apparmor_parser --replace refused the profile ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = fs::read_to_string("/sys/kernel/security/apparmor/profiles")?;
    ensure!(
        loaded.lines().any(|l| l == format!("{PROFILE} (enforce)")),
        "{PROFILE} is not loaded in enforce mode:\n{loaded}"
    );
    Ok(())
}

/// The `AppArmor` label of process `pid`.
fn label_of(pid: u32) -> Result<String> {
    // The AppArmor-specific file (Linux 5.8+), else the one of the first major module.
    let specific = format!("/proc/{pid}/attr/apparmor/current");
    let path =
        if Path::new(&specific).exists() { specific } else { format!("/proc/{pid}/attr/current") };
    Ok(fs::read_to_string(&path).with_context(|| format!("reading {path}"))?.trim().to_owned())
}

/// `source` bind mounted at `target` (created), unmounted on drop, as the kubelet mounts a
/// hostPath volume into a container.
struct BindMount(PathBuf);

impl BindMount {
    fn new(source: &Path, target: &Path) -> Result<Self> {
        fs::create_dir_all(target)?;
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        ensure!(
            !mounts.lines().any(|l| l.split(' ').nth(1) == target.to_str()),
            "something is mounted at {} already",
            target.display()
        );
        let status = Command::new("mount").arg("--bind").arg(source).arg(target).status()?;
        ensure!(status.success(), "mount --bind {} {}", source.display(), target.display());
        Ok(Self(target.to_owned()))
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The maps pinned under `dir`: the entries of its one slabtrace state directory.
fn pinned_under(dir: &Path) -> Result<Vec<String>> {
    let states: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| is_state_dir(&n.to_string_lossy())))
        .collect();
    let [state] = states.as_slice() else {
        bail!("not one slabtrace state directory under {}: {states:?}", dir.display());
    };
    let mut maps: Vec<String> = fs::read_dir(state)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    maps.sort();
    Ok(maps)
}

#[test]
fn the_daemonset_pins_outside_sys_under_the_runtime_profile() -> Result<()> {
    require_root()?;
    load_profile()?;
    // The host's /sys/fs/bpf/slabtrace (a hostPath volume, DirectoryOrCreate), seen by the
    // container at /var/lib/slabtrace/pins. Dropped in reverse order: unmounted, then removed.
    let host = PinDir::new("apparmor")?;
    fs::create_dir_all(host.path())?;
    let _mount = BindMount::new(host.path(), Path::new(CONTAINER_PINS))?;
    let wrapper = wrapper(&daemonset_caps()?, Some(PROFILE));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = Daemon::start_under(
        "apparmor",
        &wrapper,
        &["--interval", "1s", "--pin-path", CONTAINER_PINS],
        |_| {},
    )?;
    let label = label_of(daemon.pid())?;
    ensure!(label == format!("{PROFILE} (enforce)"), "the daemon is not confined: {label:?}");
    let (status, body) = daemon.get("/healthz")?;
    ensure!(status == 200, "/healthz answered {status}: {body}");
    let report = daemon.report_when("the daemon's first report", |r| r["self"].is_object())?;
    ensure!(
        report["self"]["pinned_maps"].as_str().is_some_and(|d| d.starts_with(CONTAINER_PINS)),
        "the report does not say the maps are pinned under {CONTAINER_PINS}: {}",
        report["self"]
    );
    // The pins are on the host's side of the mount, as the next pod would find them.
    let mut want = [map_names::CACHES, map_names::COUNTERS, map_names::LIVE];
    want.sort_unstable();
    let maps = pinned_under(host.path())?;
    ensure!(maps == want, "pinned under {}: {maps:?}, not {want:?}", host.path().display());
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(30))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    ensure!(stopped.stderr.contains("pinning the live-object"), "{}", stopped.stderr);
    Ok(())
}

#[test]
fn the_runtime_profile_refuses_pins_under_sys_fs_bpf_in_one_sentence() -> Result<()> {
    require_root()?;
    load_profile()?;
    let caps = daemonset_caps()?;
    let pins = PinDir::new("apparmor-sys")?;
    let confined = wrapper(&caps, Some(PROFILE));
    let confined: Vec<&str> = confined.iter().map(String::as_str).collect();
    let refused = match Daemon::start_under(
        "apparmor-sys",
        &confined,
        &["--interval", "1s", "--pin-path", pins.arg()],
        |_| {},
    ) {
        Ok(daemon) => bail!(
            "the confined daemon started with its pins under {}: {}",
            pins.arg(),
            daemon.stderr()
        ),
        Err(e) => format!("{e:#}"),
    };
    // "slabtrace daemon exited before attaching (STATUS): STDERR", its log lines in brackets.
    let (status, stderr) = refused.split_once("): ").context(refused.clone())?;
    ensure!(status.ends_with("exit status: 5"), "not the exit code of a refused probe: {refused}");
    let said: Vec<&str> =
        stderr.lines().filter(|l| !l.starts_with('[') && !l.trim().is_empty()).collect();
    let [sentence] = said.as_slice() else {
        bail!("not one error sentence: {refused}");
    };
    eprintln!("what the confined daemon said: {sentence}");
    ensure!(sentence.starts_with("slabtrace: "), "{sentence}");
    for part in [pins.arg(), "Permission denied", "security module", "AppArmor", CONTAINER_PINS] {
        ensure!(sentence.contains(part), "the sentence does not say {part:?}: {sentence}");
    }
    ensure!(!pins.path().exists(), "{} was created despite the profile", pins.arg());

    // The same daemon, unconfined: it pins there, so the refusal above was the profile's.
    let unconfined = wrapper(&caps, None);
    let unconfined: Vec<&str> = unconfined.iter().map(String::as_str).collect();
    let daemon = Daemon::start_under(
        "apparmor-unconfined",
        &unconfined,
        &["--interval", "1s", "--pin-path", pins.arg()],
        |_| {},
    )?;
    ensure!(label_of(daemon.pid())? == "unconfined", "{}", label_of(daemon.pid())?);
    ensure!(pinned_under(pins.path())?.len() == 3, "{}", daemon.stderr());
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(30))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    Ok(())
}
