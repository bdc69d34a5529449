//! The least privilege that works, found by trying: the daemon runs as UID 0 with only
//! `CAP_BPF`, `CAP_PERFMON` and `CAP_SYSLOG` (what the `DaemonSet` grants), pins its maps and
//! attributes a workload; each capability taken away either stops it with one sentence naming
//! that capability or, for `CAP_SYSLOG`, costs only the kernel symbol names, with a warning that
//! says so.
//!
//! UID 0 rather than a user: /proc/slabinfo is 0400 root, pinning writes root's /sys/fs/bpf,
//! and the CRI socket is root's; a non-root daemon would need `CAP_DAC_OVERRIDE` on top, which
//! grants more than UID 0 without it. Capabilities are dropped with util-linux's `setpriv`.

use std::{
    fs,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Result, ensure};
use slabtrace_integration::{
    Cgroup, PinDir, Tmpfs, cache_of, cgroup, daemon::Daemon, num, require_root, slabtrace_bin,
    workload,
};

/// The `DaemonSet`'s capabilities (deploy/kubernetes/daemonset.yaml).
const DAEMONSET_CAPS: &[&str] = &["bpf", "perfmon", "syslog"];

/// Capability bits (include/uapi/linux/capability.h).
fn bit(cap: &str) -> u64 {
    match cap {
        "sys_resource" => 1 << 24,
        "syslog" => 1 << 34,
        "perfmon" => 1 << 38,
        "bpf" => 1 << 39,
        other => panic!("no bit for {other}"),
    }
}

/// Whether this kernel charges BPF maps to `RLIMIT_MEMLOCK` (before Linux 5.11): raising it
/// then needs `CAP_SYS_RESOURCE` on top of the `DaemonSet`'s capabilities.
fn memlock_kernel() -> Result<bool> {
    let btf =
        slabtrace::kernel::btf::Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux"))?;
    Ok(slabtrace::kernel::layout::KernelLayout::from_btf(&btf)?.memlock_maps)
}

/// `caps`, plus `sys_resource` where the kernel charges maps to `RLIMIT_MEMLOCK`.
fn on_this_kernel(caps: &[&'static str]) -> Result<Vec<&'static str>> {
    let mut caps = caps.to_vec();
    if memlock_kernel()? {
        caps.push("sys_resource");
    }
    Ok(caps)
}

/// `setpriv` keeping exactly `caps` (as root: the bounding set limits what exec grants).
fn setpriv(caps: &[&str]) -> Vec<String> {
    let keep: String = caps.iter().flat_map(|c| [",+", c]).collect();
    vec![
        "setpriv".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        format!("--bounding-set=-all{keep}"),
        "--".into(),
    ]
}

/// `slabtrace report --duration 1` with exactly `caps`.
fn report_with(caps: &[&str]) -> Result<Output> {
    report_with_args(caps, &[])
}

/// `slabtrace report --duration 1 ARGS` with exactly `caps`.
fn report_with_args(caps: &[&str], args: &[&str]) -> Result<Output> {
    let wrapper = setpriv(caps);
    Ok(Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(slabtrace_bin())
        .args(["report", "--duration", "1"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

/// Whether `text` holds a kernel address: 16 hex digits starting `ffff`, with or without 0x.
fn kernel_address_in(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 16 && w.to_ascii_lowercase().starts_with("ffff"))
}

#[test]
fn without_kernel_symbols_no_kernel_address_is_shown() -> Result<()> {
    require_root()?;
    // Without CAP_SYSLOG /proc/kallsyms reads as zeros: call sites cannot be named.
    let caps = on_this_kernel(&["bpf", "perfmon"])?;
    for format in ["json", "table"] {
        let out = report_with_args(&caps, &["--call-sites", "--format", format])?;
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "it failed without CAP_SYSLOG: {stderr}");
        for (what, text) in [("output", &stdout), ("log", &stderr)] {
            ensure!(
                kernel_address_in(text).is_none(),
                "a kernel address ({:?}) in the {format} {what}:\n{text}",
                kernel_address_in(text)
            );
        }
        if format == "json" {
            let report: serde_json::Value = serde_json::from_str(&stdout)?;
            let sites: Vec<&str> = report["cgroups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|cg| cg["caches"].as_array().into_iter().flatten())
                .flat_map(|c| c["call_sites"].as_array().into_iter().flatten())
                .filter_map(|s| s["site"].as_str())
                .collect();
            ensure!(!sites.is_empty(), "no call sites with --call-sites");
            ensure!(
                sites.iter().all(|s| s.starts_with("unnamed-")),
                "call sites not hidden: {sites:?}"
            );
        }
    }
    Ok(())
}

/// The effective capabilities of process `pid`.
fn cap_eff(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap_or_default();
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

#[test]
fn the_daemonset_capabilities_are_enough_for_the_daemon() -> Result<()> {
    require_root()?;
    let pins = PinDir::new("caps")?;
    let fs = Tmpfs::mount("caps")?;
    let a = Cgroup::create("caps-a")?;
    let caps = on_this_kernel(DAEMONSET_CAPS)?;
    let wrapper = setpriv(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = Daemon::start_under(
        "caps",
        &wrapper,
        &["--interval", "1s", "--sample", "1", "--pin-path", pins.arg()],
        |_| {},
    )?;
    let want: u64 = caps.iter().map(|c| bit(c)).sum();
    let eff = cap_eff(daemon.pid())?;
    ensure!(eff == want, "the daemon runs with CapEff {eff:#x}, not only {want:#x}");
    a.run(Command::new(workload()).arg("create").arg(fs.path()).arg("3000"))?;
    let report = daemon.report_when("the daemon to see A's files", |r| {
        num(cache_of(cgroup(r, a.relative()), "shmem_inode_cache"), "live_objects") >= 3000
    })?;
    let in_a = cache_of(cgroup(&report, a.relative()), "shmem_inode_cache");
    ensure!(num(in_a, "allocs") >= 3000, "A's files were not attributed: {in_a:?}");
    ensure!(num(in_a, "live_objects") >= 3000, "A's files are not live: {in_a:?}");
    let (status, _) = daemon.get("/healthz")?;
    ensure!(status == 200, "/healthz answered {status}");
    let log = daemon.stderr();
    ensure!(log.contains("pinning the live-object"), "it did not pin: {log}");
    ensure!(!log.contains("kallsyms"), "CAP_SYSLOG did not give kernel symbols: {log}");
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    Ok(())
}

#[test]
fn each_capability_taken_away_is_named() -> Result<()> {
    require_root()?;
    for (missing, kept) in
        [("CAP_BPF", &["perfmon", "syslog"]), ("CAP_PERFMON", &["bpf", "syslog"])]
    {
        let out = report_with(kept)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "it ran without {missing}: {err}");
        ensure!(err.lines().count() == 1, "more than one sentence: {err}");
        ensure!(
            err.contains(&format!("needs {missing}"))
                && err.contains("grant CAP_BPF and CAP_PERFMON"),
            "the error does not name {missing}: {err}"
        );
    }
    if memlock_kernel()? {
        // Before 5.11 the maps count against RLIMIT_MEMLOCK, which only CAP_SYS_RESOURCE
        // raises: without it, one sentence that says so.
        let out = report_with(DAEMONSET_CAPS)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "it ran with a 64 KiB memlock limit: {err}");
        let last = err.lines().last().unwrap_or_default();
        ensure!(
            last.contains("RLIMIT_MEMLOCK") && last.contains("CAP_SYS_RESOURCE"),
            "the error does not name the memlock limit: {err}"
        );
    }
    // Without CAP_SYSLOG it traces, and says what it cannot do.
    let out = report_with(&on_this_kernel(&["bpf", "perfmon"])?)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "it failed without CAP_SYSLOG: {err}");
    ensure!(err.contains("CAP_SYSLOG"), "no warning naming CAP_SYSLOG: {err}");
    ensure!(String::from_utf8_lossy(&out.stdout).contains("CACHE"), "no report");
    Ok(())
}
