//! Do we have the capabilities to load tracing programs? Checked before loading, so the user
//! gets one sentence instead of an EPERM from deep inside the loader.

use std::{fs, path::Path};

use super::ProbeError;

/// Capability bit numbers (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities missing from an effective set (`CapEff` in /proc/self/status) to load and
/// attach BTF tracepoints: `CAP_BPF` and `CAP_PERFMON`, or `CAP_SYS_ADMIN` (which implies both on
/// kernels before 5.8 that lack them).
#[must_use]
pub fn missing(cap_eff: u64) -> Vec<&'static str> {
    let has = |bit: u32| cap_eff & (1 << bit) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Parses the `CapEff:` line of a /proc/<pid>/status text.
#[must_use]
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Fails with [`ProbeError::NotPrivileged`] if this process cannot load the probes. If the
/// status file cannot be read, lets the loader find out.
pub fn check() -> Result<(), ProbeError> {
    let Ok(status) = fs::read_to_string(Path::new("/proc/self/status")) else {
        return Ok(());
    };
    let Some(eff) = parse_cap_eff(&status) else {
        return Ok(());
    };
    let missing = missing(eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::NotPrivileged { missing: missing.join(" and ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing(0x1ff_ffff_ffff).is_empty());
    }

    #[test]
    fn sys_admin_alone_is_enough() {
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn bpf_and_perfmon_are_enough() {
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
    }

    #[test]
    fn an_ordinary_user_lacks_both() {
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
