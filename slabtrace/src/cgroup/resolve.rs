//! cgroup id → path under the cgroup2 root, by walking the tree and matching inode numbers.
//!
//! `bpf_get_current_cgroup_id()` returns the cgroup's kernfs node id. Since Linux 5.5 that id is
//! also the inode number of the cgroup's directory on 64-bit kernels (kernfs uses the 64-bit id
//! as `i_ino`; 32-bit kernels split it into inode and generation), so one `stat` per directory
//! builds the whole id → path table without any BPF or ioctl help.
//!
//! Cgroups come and go all the time (every pod and container is one) and slab objects outlive
//! the cgroup that allocated them, so a cgroup that vanished keeps its last-known path: the
//! memory it allocated is still there and still needs a name. [`CgroupResolver::is_alive`] tells
//! the two apart. Unknown ids trigger a rescan, but rescans are rate-limited so that a burst of
//! ids for short-lived cgroups does not turn into a burst of tree walks.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{DirEntryExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often, at most, an unknown id may trigger a rescan unless configured otherwise.
const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Maps cgroup ids to paths relative to a cgroup2 root (`/`, `/kubepods.slice/...`).
#[derive(Debug)]
pub struct CgroupResolver {
    /// The cgroup2 mount point (see [`super::mount`]) or a fixture tree.
    root: PathBuf,
    /// Id → last-known path: every live cgroup, and the vanished ones somebody asked about
    /// (until [`Self::retain_vanished`] lets them go).
    paths: HashMap<u64, String>,
    /// Ids [`Self::resolve`] was asked about: their paths outlive their cgroups.
    asked: HashSet<u64>,
    /// Ids present in the most recent scan.
    alive: HashSet<u64>,
    /// When the most recent scan started; `None` before the first one.
    last_scan: Option<Instant>,
    /// Minimum time between rescans triggered by unknown ids.
    rescan_interval: Duration,
}

impl CgroupResolver {
    /// A resolver for the cgroup2 tree mounted at `root`. Nothing is read until the first
    /// [`Self::resolve`] or [`Self::rescan`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            paths: HashMap::new(),
            asked: HashSet::new(),
            alive: HashSet::new(),
            last_scan: None,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }

    /// Sets the minimum time between rescans triggered by unknown ids (default 1 s). Zero
    /// rescans on every miss.
    pub fn set_rescan_interval(&mut self, interval: Duration) {
        self.rescan_interval = interval;
    }

    /// The path of cgroup `id` relative to the root: `"/"` for the root itself, `"/a/b"` for
    /// `root/a/b`.
    ///
    /// An unknown id rescans the tree (at most once per rescan interval) and looks again; if it
    /// is still unknown, `None`: the cgroup was created and removed between scans, or the id is
    /// not from this hierarchy. A cgroup that has vanished keeps its last-known path.
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        self.asked.insert(id);
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        let due = self.last_scan.is_none_or(|last| last.elapsed() >= self.rescan_interval);
        if !due {
            return None;
        }
        self.rescan();
        self.paths.get(&id).cloned()
    }

    /// Whether `id` was present in the most recent scan (false before the first scan).
    #[must_use]
    pub fn is_alive(&self, id: u64) -> bool {
        self.alive.contains(&id)
    }

    /// The paths of the cgroups present in the most recent scan.
    pub fn live_paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().filter(|(id, _)| self.alive.contains(id)).map(|(_, p)| p.as_str())
    }

    /// Walks the tree now, regardless of the rescan interval, refreshing paths and
    /// [`Self::is_alive`]. Only unknown ids trigger scans on their own, so a caller that needs
    /// current liveness calls this once per tick.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let (found, complete) = scan(&self.root);
        self.alive = still_alive(&self.alive, &found, complete);
        // Existing entries are overwritten: a renamed cgroup (rename(2) works on cgroupfs) gets
        // its new path, a vanished one keeps its old one if somebody asked for it. The others
        // go: a node creates and removes cgroups for ever (pods, sessions, transient units).
        self.paths.extend(found);
        let (alive, asked) = (&self.alive, &self.asked);
        self.paths.retain(|id, _| alive.contains(id) || asked.contains(id));
        // An id asked about that no scan found (gone before one could) has nothing to keep.
        let paths = &self.paths;
        self.asked.retain(|id| paths.contains_key(id));
    }

    /// Forgets vanished cgroups for which `keep` returns false, so that the table does not grow
    /// with every pod a long-running daemon has ever seen. Live cgroups are always kept. The
    /// caller decides, because only it knows whether any memory is still charged to an id.
    pub fn retain_vanished(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let alive = &self.alive;
        self.paths.retain(|id, _| alive.contains(id) || keep(*id));
        let paths = &self.paths;
        self.asked.retain(|id| paths.contains_key(id) || alive.contains(id));
    }

    /// How many paths are kept (live cgroups and the vanished ones still wanted).
    #[cfg(test)]
    #[must_use]
    pub fn len(&self) -> usize {
        self.paths.len()
    }
}

/// The cgroups alive after a scan that found `found`: those, and when the scan was not
/// `complete` also those alive before. A scan cut short (out of file descriptors, a directory
/// unreadable) proves nothing gone: taking its word would end live pods (`pod.gone`) and
/// delete their counters.
fn still_alive(
    before: &HashSet<u64>,
    found: &HashMap<u64, String>,
    complete: bool,
) -> HashSet<u64> {
    let mut alive: HashSet<u64> = found.keys().copied().collect();
    if !complete {
        alive.extend(before);
    }
    alive
}

/// Walks the tree under `root`, returning inode → relative path for every directory including
/// the root, and whether the walk was complete. Failures are logged and skipped: a cgroup
/// removed mid-walk (ENOENT) is routine and leaves the walk complete; any other failure makes
/// it partial, and a partial table is more useful than none.
fn scan(root: &Path) -> (HashMap<u64, String>, bool) {
    let mut found = HashMap::new();
    let mut complete = true;
    match std::fs::metadata(root) {
        Ok(metadata) => {
            found.insert(metadata.ino(), "/".to_owned());
        }
        Err(err) => {
            log_walk_error(root, &err);
            return (found, false);
        }
    }

    // Depth-first with an explicit stack: cgroup trees are shallow, but nothing here should
    // depend on that.
    let mut pending = vec![(root.to_owned(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                complete &= log_walk_error(&dir, &err);
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    complete &= log_walk_error(&dir, &err);
                    continue;
                }
            };
            // The type and the inode number come with the directory entry (d_type, d_ino): no
            // stat of each of the dozens of control files in every cgroup (at 1,000 pods that
            // was a few percent of a core). Neither follows symlinks; cgroupfs has none, and a
            // fixture tree's symlinks must not create loops. kernfs gives a directory entry
            // the inode number stat gives, the cgroup id.
            let is_dir = match entry.file_type() {
                Ok(file_type) => file_type.is_dir(),
                Err(err) => {
                    complete &= log_walk_error(&entry.path(), &err);
                    continue;
                }
            };
            if !is_dir {
                continue;
            }
            let ino = entry.ino();
            // Kubernetes and systemd cgroup names are ASCII; lossy keeps an odd name visible
            // rather than dropping the cgroup.
            let path = format!("{relative}/{}", entry.file_name().to_string_lossy());
            found.insert(ino, path.clone());
            pending.push((entry.path(), path));
        }
    }
    (found, complete)
}

/// Logs a failure of the walk; true if it leaves the walk complete (the path vanished).
fn log_walk_error(path: &Path, err: &io::Error) -> bool {
    if err.kind() == io::ErrorKind::NotFound {
        log::debug!("{} vanished during the cgroup scan", path.display());
        true
    } else {
        log::warn!(
            "skipping {} in the cgroup scan: {err}; until a scan completes, no cgroup is taken \
             for gone",
            path.display()
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;

    fn ino(path: &Path) -> u64 {
        std::fs::metadata(path).expect("stat").ino()
    }

    /// root/{a/b/c, a/d, e} plus a file and a symlink, which are not cgroups.
    fn fixture_tree() -> TempDir {
        let tree = TempDir::new("cgroup-tree");
        for dir in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(tree.path().join(dir)).expect("mkdir");
        }
        std::fs::write(tree.path().join("a/cgroup.procs"), "").expect("write");
        std::os::unix::fs::symlink(tree.path(), tree.path().join("a/loop")).expect("symlink");
        tree
    }

    #[test]
    fn root_is_slash_and_nested_paths_resolve() {
        let tree = fixture_tree();
        let mut resolver = CgroupResolver::new(tree.path());
        assert_eq!(resolver.resolve(ino(tree.path())).as_deref(), Some("/"));
        assert_eq!(resolver.resolve(ino(&tree.path().join("a/b/c"))).as_deref(), Some("/a/b/c"));
        assert_eq!(resolver.resolve(ino(&tree.path().join("a/d"))).as_deref(), Some("/a/d"));
        assert_eq!(resolver.resolve(ino(&tree.path().join("e"))).as_deref(), Some("/e"));
        // Files are not cgroups; the symlink back to the root is not followed.
        assert_eq!(resolver.resolve(ino(&tree.path().join("a/cgroup.procs"))), None);
        assert_eq!(resolver.paths.len(), 6);
        assert!(resolver.is_alive(ino(&tree.path().join("a/b"))));
    }

    #[test]
    fn unknown_id_is_none() {
        let tree = fixture_tree();
        let mut resolver = CgroupResolver::new(tree.path());
        assert!(!resolver.is_alive(ino(tree.path())), "nothing is alive before the first scan");
        // Inode 0 is never a directory's.
        assert_eq!(resolver.resolve(0), None);
        assert!(resolver.last_scan.is_some(), "a miss scans");
    }

    #[test]
    fn new_cgroup_is_found_by_rescan_and_rescans_are_rate_limited() {
        let tree = fixture_tree();
        let mut resolver = CgroupResolver::new(tree.path());
        resolver.set_rescan_interval(Duration::MAX);
        assert_eq!(resolver.resolve(ino(tree.path())).as_deref(), Some("/"));

        let late = tree.path().join("a/late");
        std::fs::create_dir(&late).expect("mkdir");
        let late_id = ino(&late);
        // Inside the interval, a miss does not walk again.
        assert_eq!(resolver.resolve(late_id), None);

        resolver.set_rescan_interval(Duration::ZERO);
        assert_eq!(resolver.resolve(late_id).as_deref(), Some("/a/late"));
        assert!(resolver.is_alive(late_id));
    }

    #[test]
    fn vanished_cgroup_keeps_its_path_but_is_not_alive() {
        let tree = fixture_tree();
        let mut resolver = CgroupResolver::new(tree.path());
        let c = tree.path().join("a/b/c");
        let c_id = ino(&c);
        assert_eq!(resolver.resolve(c_id).as_deref(), Some("/a/b/c"));

        std::fs::remove_dir(&c).expect("rmdir");
        resolver.rescan();
        assert!(!resolver.is_alive(c_id));
        assert_eq!(resolver.resolve(c_id).as_deref(), Some("/a/b/c"));
        assert!(resolver.is_alive(ino(&tree.path().join("a/b"))));

        // Until the caller says it no longer needs the name.
        resolver.retain_vanished(|id| id != c_id);
        resolver.set_rescan_interval(Duration::MAX);
        assert_eq!(resolver.resolve(c_id), None);
        assert_eq!(resolver.resolve(ino(tree.path())).as_deref(), Some("/"));
    }

    #[test]
    fn vanished_cgroups_nobody_asked_about_are_forgotten() {
        let tree = fixture_tree();
        let mut resolver = CgroupResolver::new(tree.path());
        resolver.rescan();
        let before = resolver.len();
        let c = tree.path().join("a/b/c");
        let c_id = ino(&c);
        std::fs::remove_dir(&c).expect("rmdir");
        resolver.rescan();
        assert_eq!(resolver.len(), before - 1, "a vanished, unwanted path was kept");
        resolver.set_rescan_interval(Duration::MAX);
        assert_eq!(resolver.resolve(c_id), None);
    }

    #[test]
    fn a_partial_scan_ends_no_cgroup() {
        let before: HashSet<u64> = [1, 2, 3].into();
        let found: HashMap<u64, String> = [(1, "/".to_owned()), (4, "/new".to_owned())].into();
        let sorted = |s: HashSet<u64>| {
            let mut v: Vec<u64> = s.into_iter().collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(still_alive(&before, &found, true)), [1, 4]);
        assert_eq!(sorted(still_alive(&before, &found, false)), [1, 2, 3, 4]);
        // A root that cannot be read at all is a partial scan too.
        let (nothing, complete) = scan(Path::new("/nonexistent/cgroup/root"));
        assert!(nothing.is_empty() && !complete);
    }

    #[test]
    fn missing_root_resolves_nothing() {
        let tree = TempDir::new("cgroup-missing");
        let mut resolver = CgroupResolver::new(tree.path().join("absent"));
        assert_eq!(resolver.resolve(1), None);
        assert!(!resolver.is_alive(1));
    }

    /// A cgroup directory that is removed when dropped, even if the test panics first.
    struct CgroupGuard(PathBuf);

    impl CgroupGuard {
        fn create(path: PathBuf) -> io::Result<Self> {
            std::fs::create_dir(&path)?;
            Ok(Self(path))
        }
    }

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            // cgroupfs directories are removed with rmdir even though they list files.
            if let Err(err) = std::fs::remove_dir(&self.0) {
                eprintln!("could not remove test cgroup {}: {err}", self.0.display());
            }
        }
    }

    /// The kernfs id as the kernel hands it out in file handles (what libbpf's
    /// `get_cgroup_id` uses), to check the inode premise this module rests on.
    fn kernfs_id(path: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt as _;
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: [u8; 8],
        }
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut handle = Handle { bytes: 8, kind: 0, id: [0; 8] };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `handle` starts with the `file_handle` header and has room for the 8 bytes
        // announced in `bytes`; `c_path` is NUL-terminated; both outlive the call.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                (&raw mut handle).cast::<libc::file_handle>(),
                &raw mut mount_id,
                0,
            )
        };
        (rc == 0 && handle.bytes == 8).then(|| u64::from_ne_bytes(handle.id))
    }

    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn resolves_a_real_cgroup() {
        let root = crate::cgroup::mount::find_cgroup2_mount(Path::new("/proc"))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = root.as_path();
        let name = format!("slabtrace-test-{}", std::process::id());
        let parent = CgroupGuard::create(root.join(&name)).expect("create test cgroup");
        // Declared after `parent`, so dropped (removed) first.
        let child = CgroupGuard::create(parent.0.join("child")).expect("create child cgroup");

        let child_id = ino(&child.0);
        if let Some(id) = kernfs_id(&child.0) {
            assert_eq!(id, child_id, "kernfs id is the inode number");
        }
        let mut resolver = CgroupResolver::new(root);
        assert_eq!(resolver.resolve(ino(root)).as_deref(), Some("/"));
        assert_eq!(resolver.resolve(child_id), Some(format!("/{name}/child")));
        assert!(resolver.is_alive(child_id));

        drop(child);
        resolver.rescan();
        assert!(!resolver.is_alive(child_id));
        assert_eq!(resolver.resolve(child_id), Some(format!("/{name}/child")));
    }
}
