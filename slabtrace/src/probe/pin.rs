//! Pinned maps: the live-object, counter and cache maps kept on the BPF filesystem, so that a
//! restarted or upgraded daemon picks up where the last one stopped. Without them, every object
//! allocated before a restart is freed into nobody's books, and a rolling update of the
//! `DaemonSet` forgets who holds the node's slab.
//!
//! Layout: `<pin path>/<state>/{COUNTERS,LIVE,CACHES}`, where `<state>` names everything that
//! decides what the maps' bytes mean: [`MAP_LAYOUT_VERSION`], the sample rate and the sampling
//! salt (`v2-sample16-salt0123456789abcdef`). The salt is drawn at random when the maps are
//! created and read back from the name on a restart, so the restarted daemon samples the same
//! addresses as the one that filled the maps. A directory of another version or sample rate was
//! written by an incompatible slabtrace (or another `--sample`) and is removed, with a warning;
//! anything else under the pin path is not slabtrace's and is left alone (another agent's
//! pins, when the path is shared). Maps of the right state whose shape (type, key and value sizes,
//! capacity) differs, say after `--max-live` changed, are replaced together, also with a
//! warning: counters without their live objects would credit nothing, and live objects without
//! their counters would make frees outrun allocations.
//!
//! One daemon at a time: the pin path is locked (`flock`) for as long as the maps are in use, so
//! a second daemon cannot double-count into the same maps.

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use log::{info, warn};
use slabtrace_common::{
    CACHES_CAPACITY, CacheInfo, CounterKey, Counters, LiveSet, MAP_LAYOUT_VERSION, map_names,
};

use super::Limits;

/// `statfs` magic of the BPF filesystem (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What makes a map's bytes readable by this slabtrace: checked before a pinned map is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Bytes per key.
    pub key_size: u32,
    /// Bytes per value (per CPU, for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub flags: u32,
}

/// The pinned maps, with the shapes this build and these limits give them.
#[must_use]
pub fn pinned_maps(limits: Limits) -> [(&'static str, MapShape); 3] {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    [
        (
            map_names::COUNTERS,
            MapShape {
                map_type: MapType::PerCpuHash as u32,
                key_size: size(size_of::<CounterKey>()),
                value_size: size(size_of::<Counters>()),
                max_entries: limits.max_keys,
                flags: 0,
            },
        ),
        (
            map_names::LIVE,
            MapShape {
                map_type: MapType::Array as u32,
                key_size: size(size_of::<u32>()),
                value_size: size(size_of::<LiveSet>()),
                max_entries: limits.live_sets(),
                flags: 0,
            },
        ),
        (
            map_names::CACHES,
            MapShape {
                map_type: MapType::Hash as u32,
                key_size: size(size_of::<u64>()),
                value_size: size(size_of::<CacheInfo>()),
                max_entries: CACHES_CAPACITY,
                flags: 0,
            },
        ),
    ]
}

/// The directory name for maps whose bytes mean what this slabtrace, sampling 1 in `sample`
/// with `salt`, thinks they mean.
#[must_use]
pub fn state_dir_name(sample: u64, salt: u64) -> String {
    format!("{}{salt:016x}", state_prefix(sample))
}

/// What every compatible state directory's name starts with; the salt follows.
fn state_prefix(sample: u64) -> String {
    format!("v{MAP_LAYOUT_VERSION}-sample{sample}-salt")
}

/// Whether `name` is a state directory of any slabtrace, compatible or not:
/// `v<layout>-sample<N>-salt<16 hex digits>`, or `v<layout>-sample<N>` as layouts before the
/// salt named them. Only those are slabtrace's to remove.
#[must_use]
pub fn is_state_dir(name: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_prefix('v') else { return false };
    let Some((layout, rest)) = rest.split_once("-sample") else { return false };
    let (sample, salt) = rest.split_once("-salt").unwrap_or((rest, "0123456789abcdef"));
    number(layout)
        && number(sample)
        && salt.len() == 16
        && salt.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The salt a compatible state directory's name carries, if `name` is one.
#[must_use]
pub fn salt_of(name: &str, sample: u64) -> Option<u64> {
    let hex = name.strip_prefix(&state_prefix(sample))?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// A new sampling salt, from the kernel's random source (or, should that fail, the clock: the
/// salt only has to differ between runs, not to be secret).
#[must_use]
pub fn new_salt() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom into a buffer we own, of the length given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_secs().rotate_left(30) ^ u64::from(d.subsec_nanos()))
            ^ u64::from(std::process::id()).rotate_left(32)
    }
}

/// What to do with the pinned maps found, given what each should look like.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// None were there: create and pin them.
    Fresh,
    /// All are there with the right shapes: reuse them.
    Resume,
    /// Some are missing or misshapen: remove those there and start afresh. The reason names
    /// the first culprit.
    Replace(String),
}

/// Decides from each map's name, the shape it should have and the shape found (None: not
/// pinned).
#[must_use]
pub fn plan(found: &[(&str, MapShape, Option<MapShape>)]) -> Plan {
    if found.iter().all(|(.., f)| f.is_none()) {
        return Plan::Fresh;
    }
    // A misshapen map says more about what happened (an upgrade, a resize) than a missing one.
    for (name, want, got) in found {
        if let Some(got) = got.filter(|got| got != want) {
            return Plan::Replace(format!(
                "{name} has another shape (type {}, key {} B, value {} B, {} entries, flags \
                 {:#x}; this slabtrace wants type {}, key {} B, value {} B, {} entries, flags \
                 {:#x})",
                got.map_type,
                got.key_size,
                got.value_size,
                got.max_entries,
                got.flags,
                want.map_type,
                want.key_size,
                want.value_size,
                want.max_entries,
                want.flags
            ));
        }
    }
    if let Some((name, ..)) = found.iter().find(|(.., got)| got.is_none()) {
        return Plan::Replace(format!("{name} is missing"));
    }
    Plan::Resume
}

/// Why the maps could not be pinned, in one sentence that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The path is not on a BPF filesystem.
    #[error(
        "cannot pin maps under {0}: it is not on a BPF filesystem; mount one there (mount -t bpf \
         bpf /sys/fs/bpf, or in a container mount the host's /sys/fs/bpf), or pass \
         --pin-path off to keep no state across restarts"
    )]
    NotBpffs(PathBuf),
    /// Another slabtrace holds the maps.
    #[error(
        "another slabtrace is using the maps pinned under {0}; stop it, or give this one another \
         --pin-path (or --pin-path off)"
    )]
    Busy(PathBuf),
    /// A write refused to root: not the file modes, but a security module.
    #[error(
        "cannot pin maps under {path}: {source} although slabtrace runs as root, so a security \
         module refuses it (the default AppArmor profile of containerd and CRI-O denies writes \
         under /sys/fs/ except cgroup); mount the pin directory outside /sys, as the DaemonSet \
         does at /var/lib/slabtrace/pins, or pass --pin-path off"
    )]
    Denied {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A filesystem call failed.
    #[error(
        "cannot use the pinned maps under {path} ({source}); check that slabtrace can write \
         there (root, or the host's /sys/fs/bpf mounted read-write), or pass --pin-path off"
    )]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    // SAFETY: geteuid has no preconditions.
    move |source| io_error_as(path.to_owned(), source, unsafe { libc::geteuid() } == 0)
}

/// The error of a filesystem call on `path` that failed with `source`, made by root or not:
/// permission refused to root is a security module's doing (`AppArmor`, `SELinux`), since UID 0
/// owns the BPF filesystem; to anyone else, it may be the file modes.
fn io_error_as(path: PathBuf, source: io::Error, root: bool) -> PinError {
    let denied = matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    if denied && root { PinError::Denied { path, source } } else { PinError::Io { path, source } }
}

/// The pin directory, locked, with its maps checked. Keep it for as long as the maps are in use.
#[derive(Debug)]
pub struct Pins {
    /// Where the maps go.
    pub dir: PathBuf,
    /// Whether the maps there were left by an earlier slabtrace and are reused.
    pub resumed: bool,
    /// The sampling salt the maps there were (or are to be) filled with.
    pub salt: u64,
    /// Holds the lock on the pin path.
    _lock: File,
}

impl Pins {
    /// Locks `root` (creating it), removes what an incompatible slabtrace left there, checks the
    /// maps a compatible one left, and returns the directory to pin `limits`-sized maps in.
    pub fn prepare(root: &Path, sample: u64, limits: Limits) -> Result<Self, PinError> {
        require_bpffs(root)?;
        fs::create_dir_all(root).map_err(io_error(root))?;
        let lock = File::open(root).map_err(io_error(root))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                PinError::Busy(root.to_owned())
            } else {
                PinError::Io { path: root.to_owned(), source: e }
            });
        }
        // The salt of the compatible maps there, if any; else a new one.
        let mut salt = None;
        for entry in fs::read_dir(root).map_err(io_error(root))? {
            let name = entry.map_err(io_error(root))?.file_name();
            salt = salt.or_else(|| salt_of(&name.to_string_lossy(), sample));
        }
        let salt = salt.unwrap_or_else(new_salt);
        let state = state_dir_name(sample, salt);
        for entry in fs::read_dir(root).map_err(io_error(root))? {
            let entry = entry.map_err(io_error(root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !is_state_dir(&name) {
                // Not slabtrace's: another agent's pins (Cilium, Calico) when the pin path is
                // shared or the whole BPF filesystem. Removing them could take down the node's
                // networking; they are left alone.
                info!("leaving {} alone: not pinned by slabtrace", entry.path().display());
                continue;
            }
            if name != state.as_str() {
                let path = entry.path();
                warn!(
                    "removing {}: maps pinned by a slabtrace with another map layout or sample \
                     rate (this one is {state}); objects allocated before this start will not \
                     be credited to their cgroups",
                    path.display()
                );
                remove(&path)?;
            }
        }
        let dir = root.join(&state);
        let expected = pinned_maps(limits);
        let found: Vec<(&str, MapShape, Option<MapShape>)> =
            expected.iter().map(|&(name, want)| (name, want, shape_of(&dir.join(name)))).collect();
        let resumed = match plan(&found) {
            Plan::Fresh => {
                info!("pinning the live-object and counter maps under {}", dir.display());
                false
            }
            Plan::Resume => {
                info!(
                    "resuming from the maps an earlier slabtrace pinned under {}: objects it saw \
                     allocated are still credited to their cgroups when freed",
                    dir.display()
                );
                true
            }
            Plan::Replace(why) => {
                warn!(
                    "replacing the maps pinned under {}: {why}; objects allocated before this \
                     start will not be credited to their cgroups",
                    dir.display()
                );
                for (name, _) in &expected {
                    let path = dir.join(name);
                    if path.exists() {
                        remove(&path)?;
                    }
                }
                false
            }
        };
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(Self { dir, resumed, salt, _lock: lock })
    }

    /// Where the map `name` is pinned.
    #[must_use]
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The shape of the map pinned at `path`, or None if nothing readable is pinned there.
fn shape_of(path: &Path) -> Option<MapShape> {
    if !path.exists() {
        return None;
    }
    match MapInfo::from_pin(path) {
        Ok(info) => Some(MapShape {
            map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }),
        Err(e) => {
            // Something is pinned there that we cannot read as a map (a program, say): an
            // impossible shape, so that it is replaced.
            warn!("cannot read the map pinned at {}: {e}", path.display());
            Some(MapShape {
                map_type: u32::MAX,
                key_size: 0,
                value_size: 0,
                max_entries: 0,
                flags: 0,
            })
        }
    }
}

/// Whether `root` is (or could be created) on a BPF filesystem.
#[must_use]
pub fn on_bpffs(root: &Path) -> bool {
    require_bpffs(root).is_ok()
}

/// Checks that `root`, or the nearest ancestor of it that exists, is on a BPF filesystem: the
/// ancestor, because creating directories on sysfs (/sys/fs/bpf with no BPF filesystem
/// mounted) fails with a less helpful ENOENT.
fn require_bpffs(root: &Path) -> Result<(), PinError> {
    let path = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| PinError::Io { path: path.to_owned(), source: io::Error::other(e) })?;
    // SAFETY: statfs with a NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(PinError::Io { path: path.to_owned(), source: io::Error::last_os_error() });
    }
    #[allow(clippy::unnecessary_cast, clippy::cast_lossless)] // f_type's width varies by arch
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs(root.to_owned()));
    }
    Ok(())
}

/// Removes a pin or a directory of pins (unlinking a pin drops the map once nothing else holds
/// it).
fn remove(path: &Path) -> Result<(), PinError> {
    let result = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    result.map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_keys: 100, max_live: 200 };

    fn found(
        tweak: impl Fn(&str, MapShape) -> Option<MapShape>,
    ) -> Vec<(&'static str, MapShape, Option<MapShape>)> {
        pinned_maps(LIMITS).into_iter().map(|(n, s)| (n, s, tweak(n, s))).collect()
    }

    #[test]
    fn permission_refused_to_root_names_a_security_module() {
        let denied = |errno| {
            io_error_as(PathBuf::from("/sys/fs/bpf/x"), io::Error::from_raw_os_error(errno), true)
                .to_string()
        };
        for errno in [libc::EACCES, libc::EPERM] {
            let text = denied(errno);
            assert!(
                text.contains("/sys/fs/bpf/x")
                    && text.contains("security module")
                    && text.contains("AppArmor")
                    && text.contains("/var/lib/slabtrace/pins")
                    && text.contains("--pin-path off")
                    && !text.contains('\n'),
                "{text}"
            );
        }
        // Anything else, or the same refused to another user, is not blamed on a module.
        let other = denied(libc::EROFS);
        assert!(!other.contains("security module"), "{other}");
        let user =
            io_error_as(PathBuf::from("/x"), io::Error::from_raw_os_error(libc::EACCES), false)
                .to_string();
        assert!(!user.contains("security module") && user.contains("can write there"), "{user}");
    }

    #[test]
    fn nothing_pinned_is_a_fresh_start() {
        assert_eq!(plan(&found(|_, _| None)), Plan::Fresh);
    }

    #[test]
    fn all_pinned_with_the_right_shapes_resume() {
        assert_eq!(plan(&found(|_, s| Some(s))), Plan::Resume);
    }

    #[test]
    fn a_resized_map_replaces_them_all() {
        let p = plan(&found(|n, s| {
            Some(if n == "LIVE" { MapShape { max_entries: 7, ..s } } else { s })
        }));
        let Plan::Replace(why) = p else { panic!("{p:?}") };
        assert!(why.starts_with("LIVE has another shape"), "{why}");
        assert!(why.contains("7 entries") && why.contains("16 entries"), "{why}");
    }

    #[test]
    fn another_value_layout_replaces_them_all() {
        let p = plan(&found(|n, s| {
            Some(if n == "COUNTERS" { MapShape { value_size: 16, ..s } } else { s })
        }));
        assert!(matches!(p, Plan::Replace(ref why) if why.starts_with("COUNTERS")), "{p:?}");
    }

    #[test]
    fn a_missing_map_replaces_the_rest() {
        let p = plan(&found(|n, s| (n != "CACHES").then_some(s)));
        assert_eq!(p, Plan::Replace("CACHES is missing".to_owned()));
    }

    #[test]
    fn only_slabtrace_state_directories_are_slabtraces() {
        assert!(is_state_dir(&state_dir_name(16, 0x0123_4567_89ab_cdef)));
        assert!(is_state_dir("v1-sample64-salt00000000000000ff"));
        assert!(is_state_dir("v0-sample1"));
        for foreign in [
            "tc",
            "cilium",
            "calico",
            "ip",
            "xdp",
            "v2-sample",
            "v2-sample16-salt",
            "v2-sample16-salt0123",
            "vx-sample16-salt0123456789abcdef",
            "v2-samplex-salt0123456789abcdef",
            "v2-sample16-salt0123456789abcdeg",
            "COUNTERS",
        ] {
            assert!(!is_state_dir(foreign), "{foreign}");
        }
    }

    #[test]
    fn the_state_directory_names_layout_sample_and_salt() {
        let name = state_dir_name(16, 0xab);
        assert_eq!(name, format!("v{MAP_LAYOUT_VERSION}-sample16-salt00000000000000ab"));
        assert_eq!(salt_of(&name, 16), Some(0xab));
        // Another sample rate, version or a mangled salt is not this slabtrace's state.
        assert_eq!(salt_of(&name, 1), None);
        assert_eq!(salt_of("v1-sample16", 16), None);
        assert_eq!(salt_of(&format!("v{MAP_LAYOUT_VERSION}-sample16-saltxyz"), 16), None);
        assert_ne!(new_salt(), new_salt());
    }

    #[test]
    fn shapes_follow_the_limits_and_the_shared_types() {
        let maps = pinned_maps(LIMITS);
        assert_eq!(maps[0].1.max_entries, 100);
        // 200 slots at most: 16 sets of 8 ways.
        assert_eq!(maps[1].1.max_entries, 16);
        assert_eq!(maps[0].1.value_size, 32);
        assert_eq!(maps[1].1.value_size, 256);
        assert_eq!(maps[2].1.value_size, 80);
    }
}
