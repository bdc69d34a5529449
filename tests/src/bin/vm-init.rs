//! The init (PID 1) of `cargo xtask vm`'s test VMs: sets up what a cgroup-v2-only Kubernetes
//! node has, runs the root integration tests the initramfs holds, one process per test, and
//! powers the VM off.
//!
//! It mounts proc, sysfs, devtmpfs, tmpfs on /run, the BPF filesystem, tracefs, debugfs,
//! securityfs (where `AppArmor` profiles are loaded, as systemd mounts it on a node), and
//! cgroup2 alone at /sys/fs/cgroup (the kernel boots with `cgroup_no_v1=all`) with every
//! controller it offers enabled for the children, memory among them; it mounts the scratch
//! disk (ext4 on `NVMe`, which the cloud kernels build in) at /vm/scratch, with a world-writable
//! `tmp` in it for `$TMPDIR`, since tests need a disk filesystem there (tmpfs keeps no negative
//! dentries), and not on /tmp, which would hide a checkout under /tmp; and it brings `lo` up,
//! for the tests' loopback TCP. Then it reads `/vm/plan`:
//!
//! ```text
//! env NAME=VALUE                      set for every test
//! mkdir PATH                          created once the scratch disk is mounted
//! timeout SECONDS                     per test; the test's process group is killed after it
//! test GROUP PATH NAME                run `PATH NAME --exact --test-threads=1 --nocapture`
//! ```
//!
//! and prints, besides the tests' own output, lines the runner parses:
//! `SLABTRACE-VM booted RELEASE`, `SLABTRACE-VM start GROUP NAME`,
//! `SLABTRACE-VM result GROUP NAME ok|FAILED|TIMEOUT SECONDS`, `SLABTRACE-VM warning TEXT`,
//! `SLABTRACE-VM error TEXT` and `SLABTRACE-VM done`. Anywhere but as PID 1 it does nothing.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::Path,
    process::{Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The line prefix the runner looks for.
const MARK: &str = "SLABTRACE-VM";
/// Where the runner puts the plan.
const PLAN: &str = "/vm/plan";
/// The scratch disk the runner attaches (`-device nvme`), and where it is mounted.
const DISK: &str = "/dev/nvme0n1";
const SCRATCH: &str = "/vm/scratch";

fn main() -> ExitCode {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        eprintln!("vm-init is the init of `cargo xtask vm`'s test VMs; it does nothing elsewhere");
        return ExitCode::from(2);
    }
    if let Err(e) = run() {
        say(&format!("error {e}"));
    }
    power_off()
}

fn say(line: &str) {
    // One write per line, so kernel messages do not split it.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{MARK} {line}\n").as_bytes());
    let _ = out.flush();
}

fn run() -> Result<(), String> {
    setup()?;
    let plan = fs::read_to_string(PLAN).map_err(|e| format!("cannot read {PLAN}: {e}"))?;
    let plan = Plan::parse(&plan)?;
    for dir in &plan.mkdirs {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    }
    let (mut passed, mut failed) = (0, 0);
    for test in &plan.tests {
        say(&format!("start {} {}", test.group, test.name));
        let started = Instant::now();
        let outcome = run_test(test, &plan.env, plan.timeout);
        let secs = started.elapsed().as_secs_f64();
        if outcome == "ok" {
            passed += 1;
        } else {
            failed += 1;
        }
        say(&format!("result {} {} {outcome} {secs:.1}", test.group, test.name));
    }
    say(&format!("done {passed} passed, {failed} failed"));
    Ok(())
}

/// What `/vm/plan` says.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    env: Vec<(String, String)>,
    mkdirs: Vec<String>,
    timeout: Duration,
    tests: Vec<Test>,
}

#[derive(Debug, PartialEq)]
struct Test {
    group: String,
    path: String,
    name: String,
}

impl Plan {
    fn parse(text: &str) -> Result<Self, String> {
        let mut plan = Self { timeout: Duration::from_mins(10), ..Self::default() };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            match verb {
                "env" => {
                    let (k, v) = rest.split_once('=').ok_or(format!("bad plan line {line:?}"))?;
                    plan.env.push((k.to_owned(), v.to_owned()));
                }
                "mkdir" => plan.mkdirs.push(rest.to_owned()),
                "timeout" => {
                    let secs = rest.parse().map_err(|_| format!("bad plan line {line:?}"))?;
                    plan.timeout = Duration::from_secs(secs);
                }
                "test" => {
                    let mut words = rest.split_whitespace().map(str::to_owned);
                    let (Some(group), Some(path), Some(name), None) =
                        (words.next(), words.next(), words.next(), words.next())
                    else {
                        return Err(format!("bad plan line {line:?}"));
                    };
                    plan.tests.push(Test { group, path, name });
                }
                _ => return Err(format!("bad plan line {line:?}")),
            }
        }
        Ok(plan)
    }
}

/// Runs one test in a process group of its own; "ok", "FAILED" or "TIMEOUT".
fn run_test(test: &Test, env: &[(String, String)], timeout: Duration) -> &'static str {
    let child = Command::new(&test.path)
        .args([test.name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            say(&format!("warning cannot start {}: {e}", test.path));
            return "FAILED";
        }
    };
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let deadline = Instant::now() + timeout;
    loop {
        // PID 1 reaps every orphan (daemons and workloads the tests started); the test's own
        // exit status comes out of the same loop.
        if let Some(status) = reap_until(pid) {
            kill_group(pid);
            return if status == 0 { "ok" } else { "FAILED" };
        }
        if Instant::now() >= deadline {
            say(&format!(
                "warning {} {} ran past {}s: killed",
                test.group,
                test.name,
                timeout.as_secs()
            ));
            kill_group(pid);
            while reap_until(pid).is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            return "TIMEOUT";
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Reaps every exited child; the wait status of `pid` if it was among them.
fn reap_until(pid: i32) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        let reaped = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
        if reaped <= 0 {
            return found;
        }
        if reaped == pid {
            found = Some(status);
        }
    }
}

/// SIGKILL to what is left of a test's process group.
fn kill_group(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// Mounts, cgroups, loopback, the scratch disk.
fn setup() -> Result<(), String> {
    mount("proc", "/proc", "proc", "")?;
    mount("sysfs", "/sys", "sysfs", "")?;
    mount("devtmpfs", "/dev", "devtmpfs", "")?;
    mount("tmpfs", "/run", "tmpfs", "mode=0755")?;
    mount("bpf", "/sys/fs/bpf", "bpf", "")?;
    mount("tracefs", "/sys/kernel/tracing", "tracefs", "")?;
    mount("debugfs", "/sys/kernel/debug", "debugfs", "")?;
    mount("securityfs", "/sys/kernel/security", "securityfs", "")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", "")?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!("booted {}", release.trim()));
    enable_controllers()?;
    loopback_up()?;
    hostname("slabtrace-vm");
    raise_open_files();
    scratch_disk()?;
    Ok(())
}

/// The kernel starts init with 1024 open files at most (4096 hard); container runtimes give
/// their containers 1048576, and tests open thousands (eventfds) as they may on a node.
fn raise_open_files() {
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1_048_576);
    let limit = libc::rlimit { rlim_cur: nr_open, rlim_max: nr_open };
    // SAFETY: setrlimit reads one rlimit through a pointer to a live one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
        say(&format!("warning cannot raise RLIMIT_NOFILE: {}", std::io::Error::last_os_error()));
    }
}

fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (source_c, target_c, fstype_c, data_c) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: four NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            data_c.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount -t {fstype} {source} {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Every controller the root offers, enabled for its children, one at a time so that one the
/// kernel refuses does not keep the others off. The memory controller is required.
fn enable_controllers() -> Result<(), String> {
    let root = Path::new("/sys/fs/cgroup");
    let offered = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for controller in offered.split_whitespace() {
        if let Err(e) = fs::write(root.join("cgroup.subtree_control"), format!("+{controller}")) {
            say(&format!("warning cannot enable the {controller} controller: {e}"));
        }
    }
    let enabled = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    if !enabled.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "the memory controller is not enabled on cgroup2 (offered: {offered:?})"
        ));
    }
    say(&format!("cgroup2 controllers: {}", enabled.trim()));
    Ok(())
}

/// `ip link set lo up`, with the ioctl: the kernel then gives it 127.0.0.1/8 and `::1`.
fn loopback_up() -> Result<(), String> {
    // SAFETY: socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).unwrap_or(0);
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write one ifreq that outlives the calls;
    // the flags member of its union is the one these requests use.
    let rc = unsafe {
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &raw mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= i16::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(0);
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &raw const req);
        }
        libc::close(fd);
        rc
    };
    if rc != 0 {
        return Err(format!("bringing lo up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn hostname(name: &str) {
    // SAFETY: a pointer and length of a live buffer.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// The scratch disk at [`SCRATCH`] with a world-writable, sticky `tmp`, else a tmpfs there,
/// with a warning.
fn scratch_disk() -> Result<(), String> {
    // NVMe probes asynchronously: give the device node a moment to appear.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(DISK).exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let on_disk = Path::new(DISK).exists() && mount(DISK, SCRATCH, "ext4", "").is_ok();
    if !on_disk {
        say(&format!(
            "warning no scratch disk at {DISK}: {SCRATCH} is a tmpfs, so tests that need \
             negative dentries on a disk filesystem will fail"
        ));
        mount("tmpfs", SCRATCH, "tmpfs", "")?;
    }
    let tmp = Path::new(SCRATCH).join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(|e| e.to_string())
}

fn power_off() -> ExitCode {
    // SAFETY: sync and reboot have no memory-safety preconditions; as PID 1 with
    // CAP_SYS_BOOT, RB_POWER_OFF ends the VM (qemu exits).
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Only if the kernel refused: PID 1 exiting panics it, and `panic=-1` reboots, which
    // `-no-reboot` turns into qemu exiting.
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_parses_and_a_bad_line_is_refused() {
        let plan = Plan::parse(
            "# comment\nenv SLABTRACE_BIN=/vm/bin/slabtrace\nenv A=b=c\nmkdir /tmp/x\n\
             timeout 90\ntest oom /vm/tests/deps/oom-1 a_memcg_oom_kill\n",
        )
        .unwrap();
        assert_eq!(
            plan,
            Plan {
                env: vec![
                    ("SLABTRACE_BIN".into(), "/vm/bin/slabtrace".into()),
                    ("A".into(), "b=c".into())
                ],
                mkdirs: vec!["/tmp/x".into()],
                timeout: Duration::from_secs(90),
                tests: vec![Test {
                    group: "oom".into(),
                    path: "/vm/tests/deps/oom-1".into(),
                    name: "a_memcg_oom_kill".into()
                }],
            }
        );
        assert!(Plan::parse("test a b").is_err());
        assert!(Plan::parse("timeout soon").is_err());
        assert!(Plan::parse("reboot").is_err());
    }
}
