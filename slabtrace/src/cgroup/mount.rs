//! Where the cgroup2 hierarchy is mounted, from `/proc/self/mountinfo`.
//!
//! cgroup ids from BPF are cgroup2 ids, so names for them come from the cgroup2 tree wherever it
//! is: `/sys/fs/cgroup` on a v2-only (unified) node, `/sys/fs/cgroup/unified` on a systemd
//! hybrid node where the v1 controllers hold `/sys/fs/cgroup/<controller>`. mountinfo is parsed
//! rather than guessing paths because a path that exists is not necessarily a cgroup2 mount (on a
//! hybrid node `/sys/fs/cgroup` itself is a tmpfs).

use std::io;
use std::path::{Path, PathBuf};

/// Why the cgroup2 mount could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no cgroup2 filesystem is mounted (according to {}); slabtrace needs cgroup2 mounted, \
         e.g. at /sys/fs/cgroup or /sys/fs/cgroup/unified",
        path.display()
    )]
    NoCgroup2 { path: PathBuf },
}

/// One line of `/proc/self/mountinfo`, as far as slabtrace needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// The filesystem type (`cgroup2`, `cgroup`, ...).
    pub fstype: &'a str,
    /// The superblock's options, comma-separated (a cgroup v1 mount's controllers are there).
    pub super_options: &'a str,
}

/// The mounts of a `/proc/self/mountinfo` text.
///
/// A mountinfo line is `id parent major:minor root mount-point options [optional fields...] -
/// fstype source super-options` (proc(5)). The optional fields vary in number, so the fs type
/// is found after the lone `-`, not by position from the start. Lines that do not have that
/// shape are skipped: one odd line must not hide a good one.
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The separator comes after the six fixed fields.
        let separator = fields.iter().skip(6).position(|field| *field == "-")? + 6;
        Some(Mount {
            mount_point: PathBuf::from(unescape(fields.get(4)?)),
            fstype: fields.get(separator + 1)?,
            super_options: fields.get(separator + 3).copied().unwrap_or(""),
        })
    })
}

/// The mount point of the first cgroup2 filesystem in a `/proc/self/mountinfo` text.
#[must_use]
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mounts(mountinfo).find(|m| m.fstype == "cgroup2").map(|m| m.mount_point)
}

/// Reads `proc_root/self/mountinfo` and returns the first cgroup2 mount point.
pub fn find_cgroup2_mount(proc_root: &Path) -> Result<PathBuf, CgroupError> {
    let path = proc_root.join("self").join("mountinfo");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| CgroupError::Io { path: path.clone(), source })?;
    cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2 { path })
}

/// Undoes the kernel's octal escaping of mount points (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash; `mangle_path` in `fs/seq_file.c`). Anything that is not a valid three-digit
/// escape is kept as written.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'\\' => bytes.get(i + 1..i + 4).and_then(octal_byte),
            _ => None,
        };
        if let Some(value) = escaped {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII escapes are decoded into single bytes, and the input was UTF-8, so this is
    // lossless in practice; lossy is the safe fallback for a mangled name.
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |value, digit| match digit {
        b'0'..=b'7' => value.checked_mul(8)?.checked_add(digit - b'0'),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mountinfo-hybrid"));
    const V2: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mountinfo-v2"));
    const NONE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mountinfo-none"));

    #[test]
    fn hybrid_node_uses_unified() {
        assert_eq!(cgroup2_mount(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn v2_only_node_uses_sys_fs_cgroup() {
        // Its lines carry optional fields ("shared:4") before the separator.
        assert_eq!(cgroup2_mount(V2), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn none_when_only_v1() {
        // This fixture also has a tmpfs whose *source* is named "cgroup2".
        assert_eq!(cgroup2_mount(NONE), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    #[test]
    fn first_cgroup2_mount_wins() {
        let text =
            "1 0 0:1 / /first rw - cgroup2 cgroup2 rw\n2 0 0:1 / /second rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/first")));
    }

    #[test]
    fn unescapes_mount_point() {
        let text = "30 22 0:26 / /run/my\\040cgroups\\134x rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/run/my cgroups\\x")));
        assert_eq!(unescape("a\\011b\\012c"), "a\tb\nc");
        // Not a valid escape: kept as written.
        assert_eq!(unescape("a\\09b\\"), "a\\09b\\");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        // No separator at all, and a separator too early to follow the six fixed fields (so the
        // line has no mount point): neither hides the good line after them.
        let text = "garbage\n\
                    1 0 0:1 / - cgroup2 cgroup2 rw\n\
                    2 0 0:2 / /good rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/good")));
        // A separator with nothing after it.
        assert_eq!(cgroup2_mount("1 0 0:1 / /x rw -\n"), None);
    }

    #[test]
    fn find_reports_missing_file_with_path() {
        let err = find_cgroup2_mount(Path::new("/nonexistent-slabtrace-proc")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-slabtrace-proc/self/mountinfo"), "{err}");
    }

    #[test]
    fn no_cgroup2_error_says_what_to_do() {
        let err = CgroupError::NoCgroup2 { path: "/proc/self/mountinfo".into() };
        let message = err.to_string();
        assert!(message.contains("cgroup2 mounted"), "{message}");
        assert!(message.contains("/sys/fs/cgroup/unified"), "{message}");
    }

    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn finds_real_mount() {
        let mount = find_cgroup2_mount(Path::new("/proc")).unwrap_or_else(|e| panic!("{e}"));
        assert!(mount.is_dir(), "{}", mount.display());
    }
}
