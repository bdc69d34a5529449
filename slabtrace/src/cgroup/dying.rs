//! Dying ("zombie") memory cgroups: cgroups that were removed but that the kernel cannot free
//! yet, because memory charged to them is still in use, and the pods they belonged to.
//!
//! A pod's cgroup is removed when the pod is deleted, but its memcg lives on while anything
//! charged to it does: page cache of files it wrote, per-CPU allocations, and before Linux 5.9
//! (v2) its slab objects (dentries and inodes), which are not reparented on older kernels and
//! on cgroup v1. Each dying memcg also holds its own per-CPU statistics (`Percpu` in
//! /proc/meminfo grows with them), so thousands of them are memory no pod is charged for.
//!
//! What the kernel tells, and where:
//! - cgroup v2: every cgroup's `cgroup.stat` has `nr_descendants` and `nr_dying_descendants`,
//!   so dying cgroups are counted per parent; a parent's `memory.stat` includes its dying
//!   descendants' charges, so the parent's figures less its live children's estimate what
//!   they pin.
//! - cgroup v1 (the memory controller of hybrid nodes): no `cgroup.stat`; /proc/cgroups'
//!   `num_cgroups` for `memory` counts dying memcgs too (a dying memcg holds its cgroup), so
//!   that less the directories of the hierarchy is the node's count, and no per-parent one.
//!   The cgroup2 hierarchy of a hybrid node has no memory controller, so its cgroups die at
//!   once: its `nr_dying_descendants` stays near 0 whatever the memcgs do.
//!
//! Which pod a dying cgroup was is not in the kernel: slabtrace names the pods it saw live
//! under each parent that are gone now ([`PodsSeen`]), the likely owners.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::cgroup::{
    charged::{Charged, MemcgBooks, Source},
    kubepods::{Identity, identify},
};

/// What a cgroup's `cgroup.stat` says of its descendants; `None` where the kernel does not
/// print the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStat {
    /// `nr_descendants`: live descendant cgroups.
    pub nr_descendants: Option<u64>,
    /// `nr_dying_descendants`: removed descendants the kernel has not freed yet.
    pub nr_dying_descendants: Option<u64>,
}

/// Parses a `cgroup.stat` (`key value` lines). Unknown keys (`nr_subsys_*`, which newer
/// kernels add) and lines that are not `key number` are skipped; the first line of a key wins.
#[must_use]
pub fn parse_cgroup_stat(text: &str) -> CgroupStat {
    let mut stat = CgroupStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else { continue };
        let slot = match key {
            "nr_descendants" => &mut stat.nr_descendants,
            "nr_dying_descendants" => &mut stat.nr_dying_descendants,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    stat
}

/// `cgroup.stat` of the cgroup directory `dir`; `Ok(None)` when it is not there (removed, or
/// a cgroup v1 hierarchy, which has no such file).
pub fn read_cgroup_stat(dir: &Path) -> io::Result<Option<CgroupStat>> {
    match std::fs::read_to_string(dir.join("cgroup.stat")) {
        Ok(text) => Ok(Some(parse_cgroup_stat(&text))),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Not there, or removed while its file was open (ENODEV).
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// `num_cgroups` of the `memory` line of a /proc/cgroups text: every memory cgroup the kernel
/// holds, dying ones included.
#[must_use]
pub fn parse_proc_cgroups_memory(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.first() == Some(&"memory")).then(|| f.get(2)?.parse().ok()).flatten()
    })
}

/// Directories at most counted in a cgroup v1 memory hierarchy (a node has a few hundred):
/// beyond, the count is unknown rather than slow.
pub const MAX_WALK: usize = 65_536;

/// The cgroup directories under `root`, itself included; `None` past `limit` or unreadable.
fn count_dirs(root: &Path, limit: usize) -> Option<u64> {
    let mut stack = vec![root.to_owned()];
    let mut n = 0usize;
    while let Some(dir) = stack.pop() {
        n += 1;
        if n > limit {
            return None;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed during the walk: it is not live.
            Err(e) if gone(&e) => {
                n -= 1;
                continue;
            }
            Err(_) => return None,
        };
        stack.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    Some(n as u64)
}

/// Gone pods listed per parent at most; the rest are counted.
pub const MAX_GONE_LISTED: usize = 20;

/// Gone pods remembered at most (the oldest forgotten first).
pub const MAX_GONE_KEPT: usize = 4_096;

/// A pod slabtrace saw live that is gone now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct GonePod {
    /// The pod's uid.
    pub uid: String,
    /// Its namespace, when the runtime named it while it was live.
    pub namespace: Option<String>,
    /// Its name, likewise.
    pub name: Option<String>,
}

/// The pods seen live under each parent, and those gone since: the likely owners of the
/// parent's dying cgroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsSeen {
    /// Pod uid → its parent's path, for pods live at the last update.
    live: BTreeMap<String, String>,
    /// Pod uid → (parent's path, update number it went at).
    gone: BTreeMap<String, (String, u64)>,
    updates: u64,
}

impl PodsSeen {
    /// Takes the pod cgroups among `paths` (live cgroup2 paths) as the live ones now: those
    /// live before and not now are gone; one seen again is live again.
    pub fn update<'a>(&mut self, paths: impl Iterator<Item = &'a str>) {
        self.updates += 1;
        let mut live = BTreeMap::new();
        for path in paths {
            if let Identity::Pod { pod_uid, .. } = identify(path) {
                live.insert(pod_uid, parent_of(path).to_owned());
            }
        }
        for (uid, parent) in std::mem::take(&mut self.live) {
            if !live.contains_key(&uid) {
                self.gone.insert(uid, (parent, self.updates));
            }
        }
        self.gone.retain(|uid, _| !live.contains_key(uid));
        if self.gone.len() > MAX_GONE_KEPT {
            let mut by_age: Vec<(u64, String)> =
                self.gone.iter().map(|(uid, (_, n))| (*n, uid.clone())).collect();
            by_age.sort();
            for (_, uid) in by_age.into_iter().take(self.gone.len() - MAX_GONE_KEPT) {
                self.gone.remove(&uid);
            }
        }
        self.live = live;
    }

    /// Forgets the gone pods of `parent`: its dying cgroups are all freed.
    pub fn forget_under(&mut self, parent: &str) {
        self.gone.retain(|_, (p, _)| p != parent);
    }

    /// Uids of the pods gone from under `parent`, most recently gone first.
    #[must_use]
    pub fn gone_under(&self, parent: &str) -> Vec<String> {
        let mut uids: Vec<(u64, &String)> =
            self.gone.iter().filter(|(_, (p, _))| p == parent).map(|(u, (_, n))| (*n, u)).collect();
        uids.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        uids.into_iter().map(|(_, u)| u.clone()).collect()
    }

    /// Parents that have gone pods.
    #[must_use]
    pub fn parents(&self) -> Vec<String> {
        let mut p: Vec<String> = self.gone.values().map(|(p, _)| p.clone()).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// The path of the cgroup above `path` (`/` for a top-level one).
fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

/// The parents whose dying descendants are counted, among `top_level` (the cgroup2 root's
/// children, `/system.slice`, `/user.slice`, `/kubepods`, ...) and `live` (live cgroup2
/// paths): the top-level ones and every Kubernetes quality-of-service parent, in both the
/// cgroupfs and the systemd layout. Pods are not among them: the metric's label must stay a
/// handful of values.
#[must_use]
pub fn parents<'a>(top_level: &[String], live: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = top_level.to_vec();
    out.extend(
        live.filter(|p| matches!(identify(p), Identity::KubepodsSlice { .. })).map(str::to_owned),
    );
    out.sort();
    out.dedup();
    out
}

/// One parent's dying descendants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DyingParent {
    /// The parent cgroup's path relative to the cgroup2 root (`/kubepods/burstable`).
    pub parent: String,
    /// `nr_descendants` of its `cgroup.stat` (cgroup2): live descendants.
    pub nr_descendants: Option<u64>,
    /// `nr_dying_descendants` of its `cgroup.stat` (cgroup2). On a hybrid node (memory
    /// controller on cgroup v1) this counts cgroup2 cgroups, which die at once: the node's
    /// dying memcgs are `memcg_nr_dying`.
    pub nr_dying: Option<u64>,
    /// An estimate of the memory its dying descendants pin (cgroup v2 only): the parent's
    /// charged slab and percpu less its live children's. Processes in the parent itself, if
    /// any, count here too.
    pub pinned_estimate_bytes: Option<u64>,
    /// Pods slabtrace saw live directly under this parent that are gone now, most recently
    /// gone first (at most 20): the likely owners of its dying cgroups.
    pub gone_pods: Vec<GonePod>,
    /// Gone pods beyond those listed.
    pub gone_pods_more: u64,
}

/// The report's `dying_cgroups`: removed cgroups the kernel still holds, per parent.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct DyingCgroups {
    /// The memory controller's books: `cgroup_v2`, `cgroup_v1` (hybrid node), `null` (none).
    pub source: Option<Source>,
    /// The cgroup2 root's `nr_dying_descendants`.
    pub nr_dying: Option<u64>,
    /// Dying memory cgroups node-wide: the cgroup2 root's count on cgroup v2; on cgroup v1,
    /// /proc/cgroups' `num_cgroups` for `memory` less the hierarchy's directories.
    pub memcg_nr_dying: Option<u64>,
    /// /proc/meminfo `Percpu`, bytes: grows with dying cgroups (each keeps its per-CPU
    /// statistics).
    pub percpu_bytes: Option<u64>,
    /// The top-level cgroups and Kubernetes quality-of-service parents, then the live pods
    /// that have dying descendants (containers restarted in them).
    pub parents: Vec<DyingParent>,
    /// Files read for these figures.
    pub files_read: u64,
    /// Cgroups left unread (the reads share the charged figures' bound per interval).
    pub skipped: u64,
}

/// Where to read: the cgroup2 root, the memory controller's hierarchy, /proc.
#[derive(Clone, Copy, Debug)]
pub struct Roots<'a> {
    /// The cgroup2 mount.
    pub cgroup2: &'a Path,
    /// The memory controller's hierarchy, if any.
    pub memcg: Option<&'a MemcgBooks>,
    /// /proc.
    pub proc_root: &'a Path,
}

/// Reads the dying cgroups of `parents` and of the live pod cgroups `pods` (those with some
/// only; at most `limit` files in all, parents first), names their gone pods from
/// `seen` with `names` (uid → namespace and name), and forgets the gone pods of a parent the
/// memory controller's own hierarchy says has no dying descendant.
#[must_use]
pub fn read(
    roots: Roots<'_>,
    parents: &[String],
    pods: &[String],
    seen: &mut PodsSeen,
    names: impl Fn(&str) -> Option<(String, String)>,
    limit: usize,
) -> DyingCgroups {
    let mut out = DyingCgroups { source: roots.memcg.map(|m| m.source), ..DyingCgroups::default() };
    let mut budget = limit;
    out.nr_dying =
        stat_of(roots.cgroup2, "/", &mut budget, &mut out).and_then(|s| s.nr_dying_descendants);
    let v2 = roots.memcg.filter(|m| m.source == Source::CgroupV2);
    out.memcg_nr_dying = match roots.memcg {
        Some(m) if m.source == Source::CgroupV2 => out.nr_dying,
        Some(m) => std::fs::read_to_string(roots.proc_root.join("cgroups"))
            .ok()
            .and_then(|t| parse_proc_cgroups_memory(&t))
            .zip(count_dirs(&m.root, MAX_WALK))
            .map(|(all, live)| all.saturating_sub(live)),
        None => None,
    };
    out.percpu_bytes =
        crate::node::meminfo::read_meminfo(roots.proc_root).ok().and_then(|m| m.get("Percpu"));
    let mut all: Vec<String> = parents.to_vec();
    all.extend(seen.parents());
    all.sort();
    all.dedup();
    for parent in all {
        let stat = stat_of(roots.cgroup2, &parent, &mut budget, &mut out);
        let pinned_estimate_bytes = v2.and_then(|m| {
            let (files, pinned) = pinned_estimate(m, &parent, budget)?;
            budget = budget.saturating_sub(files);
            out.files_read += files as u64;
            pinned
        });
        if v2.is_some() && stat.and_then(|s| s.nr_dying_descendants) == Some(0) {
            seen.forget_under(&parent);
        }
        let gone = seen.gone_under(&parent);
        let more = gone.len().saturating_sub(MAX_GONE_LISTED) as u64;
        let gone_pods = gone
            .into_iter()
            .take(MAX_GONE_LISTED)
            .map(|uid| {
                let (namespace, name) = names(&uid).unzip();
                GonePod { uid, namespace, name }
            })
            .collect();
        out.parents.push(DyingParent {
            parent,
            nr_descendants: stat.and_then(|s| s.nr_descendants),
            nr_dying: stat.and_then(|s| s.nr_dying_descendants),
            pinned_estimate_bytes,
            gone_pods,
            gone_pods_more: more,
        });
    }
    // Live pods too: a container restarted in a pod leaves its old memcg dying under the pod.
    // Listed only when they hold some, so the list stays as long as the trouble.
    for pod in pods {
        let stat = stat_of(roots.cgroup2, pod, &mut budget, &mut out);
        let Some(nr_dying) = stat.and_then(|s| s.nr_dying_descendants).filter(|&n| n > 0) else {
            continue;
        };
        let pinned_estimate_bytes = v2.and_then(|m| {
            let (files, pinned) = pinned_estimate(m, pod, budget)?;
            budget = budget.saturating_sub(files);
            out.files_read += files as u64;
            pinned
        });
        out.parents.push(DyingParent {
            parent: pod.clone(),
            nr_descendants: stat.and_then(|s| s.nr_descendants),
            nr_dying: Some(nr_dying),
            pinned_estimate_bytes,
            gone_pods: Vec::new(),
            gone_pods_more: 0,
        });
    }
    out
}

/// `cgroup.stat` of `relative` under `cgroup2`, one file of `budget` (else counted skipped).
fn stat_of(
    cgroup2: &Path,
    relative: &str,
    budget: &mut usize,
    out: &mut DyingCgroups,
) -> Option<CgroupStat> {
    if *budget == 0 {
        out.skipped += 1;
        return None;
    }
    *budget -= 1;
    out.files_read += 1;
    let dir = cgroup_dir(cgroup2, relative)?;
    read_cgroup_stat(&dir).unwrap_or_else(|e| {
        log::debug!("cannot read {}/cgroup.stat: {e}", dir.display());
        None
    })
}

/// `relative` under `root`, refusing a path that climbs out (`..`).
fn cgroup_dir(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = relative.trim_start_matches('/');
    (!relative.split('/').any(|c| c == "..")).then(|| root.join(relative))
}

/// What a parent's dying descendants pin by the v2 books: its charged slab and percpu less
/// its live children's. `None` when the children are more than `budget` files; else the files
/// read and the estimate (`None` when the parent's books are unread).
fn pinned_estimate(
    books: &MemcgBooks,
    parent: &str,
    budget: usize,
) -> Option<(usize, Option<u64>)> {
    let dir = cgroup_dir(&books.root, parent)?;
    let children: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| format!("{}/{}", parent.trim_end_matches('/'), e.file_name().to_string_lossy()))
        .collect();
    if children.len() + 1 > budget {
        return None;
    }
    let of = |c: Option<Charged>| c.map(|c| c.slab.unwrap_or(0) + c.percpu.unwrap_or(0));
    let own = of(books.read(parent).ok().flatten());
    let live: u64 = children.iter().filter_map(|c| of(books.read(c).ok().flatten())).sum();
    Some((children.len() + 1, own.map(|o| o.saturating_sub(live))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_stat_keys_and_unknown_lines() {
        let s = parse_cgroup_stat(
            "nr_descendants 12\nnr_subsys_memory 40\nnr_dying_descendants 31\nodd\nnr_dying_descendants 1\n",
        );
        assert_eq!(s.nr_descendants, Some(12));
        assert_eq!(s.nr_dying_descendants, Some(31), "the first line of a key wins");
        assert_eq!(parse_cgroup_stat(""), CgroupStat::default());
        assert_eq!(parse_cgroup_stat("nr_descendants x\n").nr_descendants, None);
    }

    #[test]
    fn missing_cgroup_stat_is_none() {
        let dir = crate::testutil::TempDir::new("dying-stat");
        assert_eq!(read_cgroup_stat(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("cgroup.stat"),
            "nr_descendants 1\nnr_dying_descendants 2\n",
        )
        .unwrap();
        let s = read_cgroup_stat(dir.path()).unwrap().unwrap();
        assert_eq!((s.nr_descendants, s.nr_dying_descendants), (Some(1), Some(2)));
    }

    #[test]
    fn proc_cgroups_memory_count() {
        let text =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t3\t1\nmemory\t4\t99\t1\n";
        assert_eq!(parse_proc_cgroups_memory(text), Some(99));
        assert_eq!(parse_proc_cgroups_memory("cpu 1 3 1\n"), None);
    }

    const A: &str = "/kubepods/burstable/pod0f7e1a2b-0000-4000-8000-00000000000a";
    const B: &str = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f7e1a2b_0000_4000_8000_00000000000b.slice";

    #[test]
    fn pods_gone_are_listed_under_their_parent_until_seen_again() {
        let mut seen = PodsSeen::default();
        seen.update([A, B, "/system.slice"].into_iter());
        assert!(seen.parents().is_empty());
        seen.update([B].into_iter());
        assert_eq!(seen.parents(), ["/kubepods/burstable"]);
        let gone = seen.gone_under("/kubepods/burstable");
        assert_eq!(gone.len(), 1);
        assert!(gone[0].ends_with("00000000000a"), "{gone:?}");
        seen.update([].into_iter());
        assert_eq!(seen.gone_under("/kubepods.slice/kubepods-besteffort.slice").len(), 1);
        seen.update([A].into_iter());
        assert!(seen.gone_under("/kubepods/burstable").is_empty(), "live again");
        seen.forget_under("/kubepods.slice/kubepods-besteffort.slice");
        assert!(seen.parents().is_empty());
    }

    #[test]
    fn parents_are_top_level_and_qos_classes_never_pods() {
        let top = vec!["/system.slice".to_owned(), "/kubepods".to_owned()];
        let live = ["/kubepods", "/kubepods/burstable", "/kubepods/besteffort", A];
        assert_eq!(
            parents(&top, live.into_iter()),
            ["/kubepods", "/kubepods/besteffort", "/kubepods/burstable", "/system.slice"]
        );
    }

    /// A cgroup2 fixture with a quality-of-service parent holding one live pod and a gone one.
    #[test]
    fn read_counts_estimates_and_names_on_v2() {
        let root = crate::testutil::TempDir::new("dying");
        let r = root.path();
        let w = |rel: &str, file: &str, text: &str| {
            let d = r.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), text).unwrap();
        };
        w("/", "cgroup.controllers", "memory\n");
        w("/", "cgroup.stat", "nr_descendants 3\nnr_dying_descendants 5\n");
        w("/kubepods/burstable", "cgroup.stat", "nr_descendants 1\nnr_dying_descendants 4\n");
        w(
            "/kubepods/burstable",
            "memory.stat",
            "slab_reclaimable 1000\nslab_unreclaimable 500\npercpu 300\n",
        );
        w(A, "memory.stat", "slab_reclaimable 400\nslab_unreclaimable 100\npercpu 100\n");
        w("/proc", "meminfo", "Percpu:   2 kB\n");
        let books = MemcgBooks::at(r.to_owned());
        let mut seen = PodsSeen::default();
        let gone = "/kubepods/burstable/pod0f7e1a2b-0000-4000-8000-00000000000c";
        seen.update([A, gone].into_iter());
        seen.update([A].into_iter());
        let roots = Roots { cgroup2: r, memcg: Some(&books), proc_root: &r.join("proc") };
        let parents = parents(&[], ["/kubepods/burstable"].into_iter());
        let d = read(roots, &parents, &[], &mut seen, |_| Some(("ns".into(), "web".into())), 100);
        assert_eq!((d.nr_dying, d.memcg_nr_dying, d.percpu_bytes), (Some(5), Some(5), Some(2048)));
        let p = &d.parents[0];
        assert_eq!((p.parent.as_str(), p.nr_dying), ("/kubepods/burstable", Some(4)));
        assert_eq!(p.pinned_estimate_bytes, Some(1800 - 600));
        assert_eq!(p.gone_pods.len(), 1);
        assert_eq!(p.gone_pods[0].name.as_deref(), Some("web"));

        // No dying descendant left: the gone pods are forgotten.
        w("/kubepods/burstable", "cgroup.stat", "nr_descendants 1\nnr_dying_descendants 0\n");
        let d = read(roots, &parents, &[], &mut seen, |_| None, 100);
        assert!(d.parents[0].gone_pods.is_empty());

        // A live pod with a restarted container's memcg dying under it is listed; one
        // without is not.
        w(A, "cgroup.stat", "nr_descendants 1\nnr_dying_descendants 1\n");
        let quiet = "/kubepods/burstable/pod0f7e1a2b-0000-4000-8000-00000000000d";
        w(quiet, "cgroup.stat", "nr_descendants 1\nnr_dying_descendants 0\n");
        let d = read(roots, &parents, &[A.to_owned(), quiet.to_owned()], &mut seen, |_| None, 100);
        let listed: Vec<&str> = d.parents.iter().map(|p| p.parent.as_str()).collect();
        assert_eq!(listed, ["/kubepods/burstable", A]);
        assert_eq!(d.parents[1].nr_dying, Some(1));

        // A bound of one file: the root's, the rest skipped.
        let d = read(roots, &parents, &[], &mut seen, |_| None, 1);
        assert_eq!((d.files_read, d.skipped), (1, 1));
    }

    /// A cgroup v1 memory hierarchy: dying memcgs are /proc/cgroups' count less its dirs.
    #[test]
    fn v1_memcgs_dying_from_proc_cgroups() {
        let root = crate::testutil::TempDir::new("dying-v1");
        let r = root.path();
        let memcg = r.join("memory");
        std::fs::create_dir_all(memcg.join("kubepods/burstable")).unwrap();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::write(r.join("proc/cgroups"), "memory\t4\t10\t1\n").unwrap();
        let books = MemcgBooks::at(memcg);
        assert_eq!(books.source, Source::CgroupV1);
        let roots =
            Roots { cgroup2: &r.join("unified"), memcg: Some(&books), proc_root: &r.join("proc") };
        let d = read(roots, &[], &[], &mut PodsSeen::default(), |_| None, 100);
        assert_eq!(d.memcg_nr_dying, Some(10 - 3));
        assert_eq!((d.nr_dying, d.percpu_bytes), (None, None));
    }
}
