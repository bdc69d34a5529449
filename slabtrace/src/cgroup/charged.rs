//! What the memory controller has charged each cgroup now, from its own books: the kernel
//! memory a pod holds, objects allocated before slabtrace started included.
//!
//! Traced figures only know objects allocated while the probes run; a node that has been
//! growing for days holds most of its slab from before. The memory controller charges every
//! `SLAB_ACCOUNT` / `__GFP_ACCOUNT` allocation to the allocating task's memcg and keeps the
//! books per cgroup, hierarchically (a pod's figures include its containers'):
//!
//! - cgroup v2, `memory.stat`: `slab_reclaimable`, `slab_unreclaimable`, `sock`, `percpu`,
//!   `kernel_stack` on every kernel slabtrace supports, and `kernel` (all kernel memory
//!   charged, slab included) since Linux 5.18, so 5.10 has no `kernel` line: a key a kernel does
//!   not print is `None`, never 0;
//! - cgroup v1 (the memory controller of hybrid nodes): `memory.kmem.usage_in_bytes`, all
//!   kernel memory charged (slab, stacks, page tables, ...). v1's `memory.stat` has no slab
//!   lines at all, so there is no split: only `kmem` is known there.
//!
//! A pod's cgroup has the same path relative to the memory hierarchy's root as to cgroup2's: on
//! a v2 node the two roots are one, and on a hybrid node the kubelet (cgroupfs driver) and
//! systemd (systemd driver) create each cgroup under every controller's mount. Cgroups come and
//! go: a file that is not there (or whose cgroup was removed while it was read) is `Ok(None)`.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    cgroup::{
        kubepods::{Identity, Qos, Runtime, identify},
        mount::cgroup2_mount,
    },
    node::oom::memcg_mount,
};

/// Which of the memory controller's books the figures come from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// cgroup v2 `memory.stat`.
    CgroupV2,
    /// cgroup v1 `memory.kmem.usage_in_bytes`.
    CgroupV1,
}

/// What one cgroup (with its descendants) is charged for now, in bytes; `null` where this
/// kernel's or hierarchy's books do not say.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Charged {
    /// Which books: `cgroup_v2` (`memory.stat`) or `cgroup_v1` (`memory.kmem.usage_in_bytes`).
    pub source: Source,
    /// `slab_reclaimable` (v2): slab the kernel can reclaim (dentries, inodes).
    pub slab_reclaimable: Option<u64>,
    /// `slab_unreclaimable` (v2).
    pub slab_unreclaimable: Option<u64>,
    /// `slab_reclaimable + slab_unreclaimable` (v2), when both are known.
    pub slab: Option<u64>,
    /// `sock` (v2): socket buffers.
    pub sock: Option<u64>,
    /// `percpu` (v2): per-CPU allocations.
    pub percpu: Option<u64>,
    /// `kernel_stack` (v2).
    pub kernel_stack: Option<u64>,
    /// `kernel` (v2, Linux 5.18 and later): all kernel memory charged, slab included.
    pub kernel: Option<u64>,
    /// `memory.kmem.usage_in_bytes` (v1): all kernel memory charged; v1 has no slab split.
    pub kmem: Option<u64>,
}

impl Charged {
    /// Nothing known yet, from `source`'s books.
    #[must_use]
    pub const fn unknown(source: Source) -> Self {
        Self {
            source,
            slab_reclaimable: None,
            slab_unreclaimable: None,
            slab: None,
            sock: None,
            percpu: None,
            kernel_stack: None,
            kernel: None,
            kmem: None,
        }
    }

    /// The cgroup's kernel memory as far as its books tell: `kmem` on v1, `kernel` on v2
    /// where the kernel prints it.
    #[must_use]
    pub fn kernel_total(&self) -> Option<u64> {
        self.kmem.or(self.kernel)
    }

    /// The figure a cgroup's books are ranked and followed by: charged slab on cgroup v2, all
    /// kernel memory where the books have no slab figure (v1's `kmem`).
    #[must_use]
    pub fn slab_or_kernel(&self) -> Option<u64> {
        self.slab.or_else(|| self.kernel_total())
    }

    /// The figures by name, as the metrics' `kind` label and the table show them; unknown
    /// ones left out.
    #[must_use]
    pub fn kinds(&self) -> Vec<(&'static str, u64)> {
        [
            ("slab_reclaimable", self.slab_reclaimable),
            ("slab_unreclaimable", self.slab_unreclaimable),
            ("sock", self.sock),
            ("percpu", self.percpu),
            ("kernel_stack", self.kernel_stack),
            ("kernel", self.kernel),
            ("kmem", self.kmem),
        ]
        .into_iter()
        .filter_map(|(kind, v)| v.map(|v| (kind, v)))
        .collect()
    }
}

/// Parses a cgroup v2 `memory.stat` (`key value` lines, values in bytes for these keys).
///
/// Lines that are not `key number` are skipped, as is a value that does not fit a u64: one odd
/// line must not hide the others, and a number the kernel never prints is not a figure. The
/// first line of a key wins.
#[must_use]
pub fn parse_memory_stat(text: &str) -> Charged {
    let mut c = Charged::unknown(Source::CgroupV2);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else { continue };
        let slot = match key {
            "slab_reclaimable" => &mut c.slab_reclaimable,
            "slab_unreclaimable" => &mut c.slab_unreclaimable,
            "sock" => &mut c.sock,
            "percpu" => &mut c.percpu,
            "kernel_stack" => &mut c.kernel_stack,
            "kernel" => &mut c.kernel,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    c.slab = c.slab_reclaimable.zip(c.slab_unreclaimable).and_then(|(r, u)| r.checked_add(u));
    c
}

/// Parses a cgroup v1 `memory.kmem.usage_in_bytes` (one number); `kmem` is `None` when the
/// text is not one.
#[must_use]
pub fn parse_kmem_usage(text: &str) -> Charged {
    Charged { kmem: text.trim().parse().ok(), ..Charged::unknown(Source::CgroupV1) }
}

/// The memory controller's hierarchy: where it is mounted and which version it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgBooks {
    /// The mount point (or a fixture tree).
    pub root: PathBuf,
    /// Its books' kind.
    pub source: Source,
}

impl MemcgBooks {
    /// Where the memory controller is, from a `/proc/self/mountinfo` text: a cgroup v1 mount
    /// with the `memory` controller (hybrid and v1 nodes), else the cgroup2 mount. Whether
    /// cgroup2 has the controller at all is the caller's to check ([`Self::find`] does).
    #[must_use]
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        // The OOM reader's finder, so memcgs are named and read in the same hierarchy.
        let root = memcg_mount(mountinfo)?;
        let source = if cgroup2_mount(mountinfo).as_ref() == Some(&root) {
            Source::CgroupV2
        } else {
            Source::CgroupV1
        };
        Some(Self { root, source })
    }

    /// The hierarchy mounted at `root` (`--memcg-root`): cgroup2 when it has
    /// `cgroup.controllers`, cgroup v1 otherwise.
    #[must_use]
    pub fn at(root: PathBuf) -> Self {
        let source = if root.join("cgroup.controllers").exists() {
            Source::CgroupV2
        } else {
            Source::CgroupV1
        };
        Self { root, source }
    }

    /// [`Self::from_mountinfo`] on `proc_root/self/mountinfo`; a cgroup2 tree whose root does
    /// not list `memory` in `cgroup.controllers` has no books to read, and is `None` too.
    #[must_use]
    pub fn find(proc_root: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
        let books = Self::from_mountinfo(&text)?;
        if books.source == Source::CgroupV2 {
            let controllers =
                std::fs::read_to_string(books.root.join("cgroup.controllers")).ok()?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return None;
            }
        }
        Some(books)
    }

    /// What the cgroup at `relative` (a cgroup2 path such as `/kubepods/besteffort/pod<uid>`)
    /// is charged now. `Ok(None)` when it is not there: removed, or not created in this
    /// hierarchy. A path that climbs out of the root (`..`) is refused as not there.
    pub fn read(&self, relative: &str) -> io::Result<Option<Charged>> {
        let relative = relative.trim_start_matches('/');
        if relative.split('/').any(|c| c == "..") {
            return Ok(None);
        }
        let dir = self.root.join(relative);
        let (file, parse): (&str, fn(&str) -> Charged) = match self.source {
            Source::CgroupV2 => ("memory.stat", parse_memory_stat),
            Source::CgroupV1 => ("memory.kmem.usage_in_bytes", parse_kmem_usage),
        };
        match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => Ok(Some(parse(&text))),
            // ENODEV: the cgroup was removed while its file was open.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The names of the root's child cgroups (their books sum to everything charged to any
    /// cgroup), at most `limit`, and how many more there were.
    pub fn top_level(&self, limit: usize) -> io::Result<(Vec<String>, usize)> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| format!("/{}", e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        let more = names.len().saturating_sub(limit);
        names.truncate(limit);
        Ok((names, more))
    }
}

/// Files read per interval at most: a node runs at most a few hundred pods, so this is only
/// reached on a node with something wrong (thousands of leaked pod cgroups), where the rest
/// is counted as skipped instead of making every interval slower.
pub const MAX_FILES: usize = 4_096;

/// Top-level cgroups summed for the node's figures at most (a node has a few dozen).
pub const MAX_TOP_LEVEL: usize = 256;

/// A cgroup whose books are read: a pod's own cgroup or one of its containers'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its path relative to the cgroup2 root.
    pub path: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The pod's quality-of-service class.
    pub qos: Qos,
    /// The container's id and runtime; `None` for the pod-level cgroup.
    pub container: Option<(String, Runtime)>,
}

/// The pods' and containers' cgroups among `paths` (live cgroup2 paths), pods first, then
/// containers, each by path. A container's own cgroup is the one directly under its pod's:
/// what a container makes below it (crun's `container` sub-cgroup) is in that one's books,
/// which are hierarchical.
#[must_use]
pub fn targets<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<Target> {
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for path in paths {
        match identify(path) {
            Identity::Pod { pod_uid, qos } => {
                pods.push(Target { path: path.to_owned(), pod_uid, qos, container: None });
            }
            Identity::Container { pod_uid, qos, container_id, runtime, .. } => {
                let parent = path.trim_end_matches('/').rsplit_once('/').map_or("", |(p, _)| p);
                if matches!(identify(parent), Identity::Pod { .. }) {
                    containers.push(Target {
                        path: path.to_owned(),
                        pod_uid,
                        qos,
                        container: Some((container_id, runtime)),
                    });
                }
            }
            _ => {}
        }
    }
    pods.sort_by(|a, b| a.path.cmp(&b.path));
    containers.sort_by(|a, b| a.path.cmp(&b.path));
    pods.extend(containers);
    pods
}

/// One pod's books: its pod-level cgroup (with its containers, hierarchically) and each
/// container's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodBooks {
    /// The pod's quality-of-service class. from the path.
    pub qos: Qos,
    /// The pod-level cgroup's figures; `None` when unread (gone, or skipped).
    pub pod: Option<Charged>,
    /// Container id → its runtime and figures.
    pub containers: BTreeMap<String, (Runtime, Option<Charged>)>,
}

/// What one interval read of the memory controller's books.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Which books; `None` where no hierarchy has the memory controller.
    pub source: Option<Source>,
    /// Pod uid → its books.
    pub pods: BTreeMap<String, PodBooks>,
    /// The sum of the top-level cgroups' books: everything charged to any cgroup.
    pub cgroups: Option<Charged>,
    /// Files read.
    pub files_read: u64,
    /// Cgroups not read because of [`MAX_FILES`] and [`MAX_TOP_LEVEL`].
    pub skipped: u64,
    /// Files that could not be read (other than gone), said at debug level.
    pub failed: u64,
}

/// Reads the books of `targets` (at most `limit` files) and of the top-level cgroups.
#[must_use]
pub fn read(books: &MemcgBooks, targets: &[Target], limit: usize) -> Reading {
    let mut reading = Reading { source: Some(books.source), ..Reading::default() };
    let once = |relative: &str, reading: &mut Reading| {
        reading.files_read += 1;
        books.read(relative).unwrap_or_else(|e| {
            log::debug!("cannot read the memory books of {relative}: {e}");
            reading.failed += 1;
            None
        })
    };
    match books.top_level(MAX_TOP_LEVEL) {
        Ok((names, more)) => {
            reading.skipped += more as u64;
            let read: Vec<Charged> = names.iter().filter_map(|n| once(n, &mut reading)).collect();
            reading.cgroups = sum(books.source, &read);
        }
        Err(e) => log::debug!("cannot list {}: {e}", books.root.display()),
    }
    for (i, t) in targets.iter().enumerate() {
        let charged = if i < limit {
            once(&t.path, &mut reading)
        } else {
            reading.skipped += 1;
            None
        };
        let pod = reading.pods.entry(t.pod_uid.clone()).or_insert_with(|| PodBooks {
            qos: t.qos,
            pod: None,
            containers: BTreeMap::new(),
        });
        match &t.container {
            None => pod.pod = pod.pod.or(charged),
            Some((id, runtime)) => {
                pod.containers.insert(id.clone(), (*runtime, charged));
            }
        }
    }
    reading
}

/// The sum of `charged` per figure: known where any of them knows it; `None` for no books.
#[must_use]
pub fn sum(source: Source, charged: &[Charged]) -> Option<Charged> {
    if charged.is_empty() {
        return None;
    }
    let add = |f: fn(&Charged) -> Option<u64>| {
        charged
            .iter()
            .filter_map(f)
            .fold(None, |acc: Option<u64>, v| Some(acc.unwrap_or(0).saturating_add(v)))
    };
    Some(Charged {
        source,
        slab_reclaimable: add(|c| c.slab_reclaimable),
        slab_unreclaimable: add(|c| c.slab_unreclaimable),
        slab: add(|c| c.slab),
        sock: add(|c| c.sock),
        percpu: add(|c| c.percpu),
        kernel_stack: add(|c| c.kernel_stack),
        kernel: add(|c| c.kernel),
        kmem: add(|c| c.kmem),
    })
}

/// The node's slab against what its cgroups are charged: the report's `charged`.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct NodeCharged {
    /// Which books were read: `cgroup_v2` or `cgroup_v1`; `null` where no hierarchy has the
    /// memory controller (then every `charged` is `null`).
    pub source: Option<Source>,
    /// The node's `Slab` (/proc/meminfo) when the books were read.
    pub node_slab_bytes: Option<u64>,
    /// The books of the top-level cgroups summed: everything charged to any cgroup.
    pub cgroups: Option<Charged>,
    /// `node_slab_bytes − cgroups.slab` (v2): slab no cgroup is charged for (tasks in the root
    /// cgroup, kernel threads, interrupts, caches without `SLAB_ACCOUNT`). `null` on v1, whose
    /// books have no slab figure (`cgroups.kmem` is all kernel memory charged).
    pub uncharged_slab_bytes: Option<u64>,
    /// Memory-controller files read for this report.
    pub files_read: u64,
    /// Pod and container cgroups left unread (at most 4,096 files are read per interval);
    /// their `charged` is `null`.
    pub skipped: u64,
}

impl NodeCharged {
    /// The report's figures from a reading and the node's `Slab` then.
    #[must_use]
    pub fn of(reading: &Reading, node_slab: Option<u64>) -> Self {
        let slab = reading.cgroups.and_then(|c| c.slab);
        Self {
            source: reading.source,
            node_slab_bytes: node_slab,
            cgroups: reading.cgroups,
            uncharged_slab_bytes: node_slab.zip(slab).map(|(n, c)| n.saturating_sub(c)),
            files_read: reading.files_read,
            skipped: reading.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `memory.stat` of a Debian bullseye 5.10 pod cgroup: `slab` is printed, `kernel` is not.
    const V2_5_10: &str = "anon 1622016\nfile 8110080\nkernel_stack 49152\npercpu 5760\n\
        sock 0\nshmem 0\nfile_mapped 2568192\nfile_dirty 0\nfile_writeback 0\nanon_thp 0\n\
        file_thp 0\nshmem_thp 0\ninactive_anon 1486848\nactive_anon 135168\n\
        inactive_file 5406720\nactive_file 2703360\nunevictable 0\nslab_reclaimable 4123456\n\
        slab_unreclaimable 312840\nslab 4436296\nworkingset_refault_anon 0\n\
        workingset_refault_file 0\nworkingset_activate_anon 0\nworkingset_activate_file 0\n\
        workingset_restore_anon 0\nworkingset_restore_file 0\nworkingset_nodereclaim 0\n\
        pgfault 8991\npgmajfault 0\npgrefill 0\npgscan 0\npgsteal 0\npgactivate 0\n\
        pgdeactivate 0\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n";

    /// 6.1 (bookworm): `kernel` first among the kernel lines, no `slab` sum.
    const V2_6_1: &str = "anon 2048000\nfile 4096\nkernel 5394432\nkernel_stack 65536\n\
        pagetables 118784\npercpu 11520\nsock 8192\nvmalloc 0\nshmem 0\nzswap 0\nzswapped 0\n\
        file_mapped 0\nfile_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\n\
        shmem_thp 0\ninactive_anon 2043904\nactive_anon 4096\ninactive_file 4096\n\
        active_file 0\nunevictable 0\nslab_reclaimable 4721720\nslab_unreclaimable 380808\n\
        slab 5102528\nworkingset_refault_anon 0\nworkingset_refault_file 0\npgscan 0\n\
        pgsteal 0\npgfault 1234\npgmajfault 0\nthp_fault_alloc 0\n";

    /// 6.12: more lines (`sec_pagetables`, `zswpin`, `pgpromote_success`, hugetlb...).
    const V2_6_12: &str = "anon 0\nfile 0\nkernel 21741568\nkernel_stack 0\npagetables 0\n\
        sec_pagetables 0\npercpu 1440\nsock 0\nvmalloc 0\nshmem 0\nzswap 0\nzswapped 0\n\
        file_mapped 0\nfile_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\n\
        shmem_thp 0\ninactive_anon 0\nactive_anon 0\ninactive_file 0\nactive_file 0\n\
        unevictable 0\nslab_reclaimable 21250632\nslab_unreclaimable 488496\nslab 21739128\n\
        workingset_refault_anon 0\npgdemote_kswapd 0\npgpromote_success 0\nhugetlb 0\n";

    /// A v1 `memory.stat`: no slab lines at all (this host, 6.18, hybrid).
    const V1_STAT: &str = "cache 10338304\nrss 4161536\nrss_huge 0\nshmem 9990144\n\
        mapped_file 8355840\ntotal_cache 1389527040\ntotal_rss 251453440\n";

    #[test]
    fn v2_on_5_10_has_no_kernel_line() {
        let c = parse_memory_stat(V2_5_10);
        assert_eq!(c.source, Source::CgroupV2);
        assert_eq!(c.slab_reclaimable, Some(4_123_456));
        assert_eq!(c.slab_unreclaimable, Some(312_840));
        assert_eq!(c.slab, Some(4_436_296));
        assert_eq!((c.sock, c.percpu, c.kernel_stack), (Some(0), Some(5760), Some(49_152)));
        assert_eq!(c.kernel, None, "absent, not 0");
        assert_eq!(c.kmem, None);
        assert_eq!(c.kernel_total(), None);
    }

    #[test]
    fn v2_on_6_1_and_6_12_has_kernel() {
        let c = parse_memory_stat(V2_6_1);
        assert_eq!(c.kernel, Some(5_394_432));
        assert_eq!(c.slab, Some(4_721_720 + 380_808));
        assert_eq!((c.sock, c.percpu, c.kernel_stack), (Some(8192), Some(11_520), Some(65_536)));
        let c = parse_memory_stat(V2_6_12);
        assert_eq!(c.kernel, Some(21_741_568));
        assert_eq!(c.slab, Some(21_739_128));
        assert_eq!(c.kernel_total(), Some(21_741_568));
        assert_eq!(c.kinds().len(), 6);
    }

    #[test]
    fn v1_memory_stat_has_no_slab_split() {
        let c = parse_memory_stat(V1_STAT);
        assert_eq!(c, Charged::unknown(Source::CgroupV2));
        assert!(c.kinds().is_empty());
    }

    #[test]
    fn v1_kmem_usage() {
        let c = parse_kmem_usage("87703552\n");
        assert_eq!((c.source, c.kmem, c.slab), (Source::CgroupV1, Some(87_703_552), None));
        assert_eq!(c.kernel_total(), Some(87_703_552));
        assert_eq!(c.kinds(), [("kmem", 87_703_552)]);
        assert_eq!(parse_kmem_usage("").kmem, None);
        assert_eq!(parse_kmem_usage("-1\n").kmem, None);
        assert_eq!(parse_kmem_usage("99999999999999999999999\n").kmem, None);
    }

    #[test]
    fn hostile_memory_stat() {
        let text = "garbage\n\nslab_reclaimable\nslab_reclaimable x\n\
            slab_reclaimable 1 2\nslab_unreclaimable 99999999999999999999999\n\
            sock -5\npercpu 18446744073709551615\nkernel_stack 7\nkernel_stack 9\n\
            \u{0}\u{202e} 3\nslab_reclaimable 10\n";
        let c = parse_memory_stat(text);
        // The only well-formed slab_reclaimable line is the last one.
        assert_eq!(c.slab_reclaimable, Some(10));
        assert_eq!(c.slab_unreclaimable, None, "too large for a u64");
        assert_eq!(c.slab, None, "no sum of one half");
        assert_eq!(c.sock, None);
        assert_eq!(c.percpu, Some(u64::MAX));
        assert_eq!(c.kernel_stack, Some(7), "the first line of a key wins");
        // Two halves whose sum overflows: no sum rather than a wrong one.
        let c = parse_memory_stat("slab_reclaimable 18446744073709551615\nslab_unreclaimable 1\n");
        assert_eq!(c.slab, None);
        assert_eq!(parse_memory_stat(""), Charged::unknown(Source::CgroupV2));
    }

    const HYBRID: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mountinfo-hybrid"));
    const V2: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/mountinfo-v2"));

    #[test]
    fn the_memory_controller_is_v1_on_hybrid_nodes_and_cgroup2_on_unified_ones() {
        let hybrid = MemcgBooks::from_mountinfo(HYBRID).expect("a memory mount");
        assert_eq!(hybrid.source, Source::CgroupV1);
        assert_eq!(hybrid.root, PathBuf::from("/sys/fs/cgroup/memory"));
        let v2 = MemcgBooks::from_mountinfo(V2).expect("cgroup2");
        assert_eq!((v2.source, v2.root), (Source::CgroupV2, PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(MemcgBooks::from_mountinfo(""), None);
    }

    /// A fixture tree under the test's own temporary directory.
    fn tree(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("slabtrace-charged-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_v2_and_v1_trees_and_a_gone_cgroup_is_none() {
        let root = tree("v2");
        let pod = root.join("kubepods/besteffort/podx");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("memory.stat"), V2_6_1).unwrap();
        let books = MemcgBooks { root: root.clone(), source: Source::CgroupV2 };
        let c = books.read("/kubepods/besteffort/podx").unwrap().expect("there");
        assert_eq!(c.kernel, Some(5_394_432));
        assert_eq!(books.read("/kubepods/besteffort/gone").unwrap(), None);
        assert_eq!(books.read("/../etc").unwrap(), None, "never out of the root");
        let (top, more) = books.top_level(10).unwrap();
        assert_eq!((top, more), (vec!["/kubepods".to_owned()], 0));
        assert_eq!(books.top_level(0).unwrap(), (Vec::new(), 1));
        std::fs::remove_dir_all(&root).unwrap();

        let root = tree("v1");
        std::fs::create_dir_all(root.join("kubepods")).unwrap();
        std::fs::write(root.join("kubepods/memory.kmem.usage_in_bytes"), "4096\n").unwrap();
        let books = MemcgBooks { root: root.clone(), source: Source::CgroupV1 };
        assert_eq!(books.read("/kubepods").unwrap().and_then(|c| c.kmem), Some(4096));
        assert_eq!(books.read("/nothing").unwrap(), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    const UID: &str = "0f7e3b2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b";
    const CID: &str = "3b8c6f1e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";

    #[test]
    fn targets_are_pods_then_their_containers_own_cgroups() {
        let pod = format!("/kubepods/burstable/pod{UID}");
        let container = format!("{pod}/{CID}");
        let below = format!("{container}/container");
        let slice = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let paths = [
            "/".to_owned(),
            "/system.slice/kubelet.service".to_owned(),
            "/kubepods/burstable".to_owned(),
            below,
            container.clone(),
            pod.clone(),
            slice.clone(),
        ];
        let t = targets(paths.iter().map(String::as_str));
        let got: Vec<(&str, bool)> =
            t.iter().map(|t| (t.path.as_str(), t.container.is_some())).collect();
        // Pods first, then containers, each by path ('.' sorts before '/').
        assert_eq!(
            got,
            [(pod.as_str(), false), (slice.as_str(), true), (container.as_str(), true)]
        );
        assert_eq!(t[2].container, Some((CID.to_owned(), Runtime::Unknown)));
        assert_eq!((t[2].pod_uid.as_str(), t[2].qos), (UID, Qos::Burstable));
        assert_eq!(t[1].container, Some((CID.to_owned(), Runtime::Containerd)));
    }

    #[test]
    fn a_reading_is_bounded_and_sums_the_top_level() {
        let root = tree("read");
        let pod = format!("/kubepods/besteffort/pod{UID}");
        let container = format!("{pod}/{CID}");
        for (dir, text) in [
            ("kubepods".to_owned(), "slab_reclaimable 100\nslab_unreclaimable 20\n"),
            ("system.slice".to_owned(), "slab_reclaimable 1\nslab_unreclaimable 2\nkernel 9\n"),
            (pod.clone(), "slab_reclaimable 60\nslab_unreclaimable 6\n"),
            (container.clone(), "slab_reclaimable 50\nslab_unreclaimable 5\n"),
        ] {
            let d = root.join(dir.trim_start_matches('/'));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("memory.stat"), text).unwrap();
        }
        let books = MemcgBooks { root: root.clone(), source: Source::CgroupV2 };
        let gone = format!("{pod}/{}", "a".repeat(64));
        let paths = [pod.clone(), container.clone(), gone];
        let t = targets(paths.iter().map(String::as_str));
        let r = read(&books, &t, 10);
        assert_eq!((r.files_read, r.skipped, r.failed), (5, 0, 0));
        let p = &r.pods[UID];
        assert_eq!(p.pod.and_then(|c| c.slab), Some(66));
        assert_eq!(p.containers[CID].1.and_then(|c| c.slab), Some(55));
        assert_eq!(p.containers[&"a".repeat(64)].1, None, "gone between scan and read");
        let all = r.cgroups.expect("top-level books");
        assert_eq!((all.slab, all.kernel), (Some(123), Some(9)), "kernel from the one that has it");
        let node = NodeCharged::of(&r, Some(1000));
        assert_eq!(node.uncharged_slab_bytes, Some(877));
        assert_eq!(NodeCharged::of(&r, Some(100)).uncharged_slab_bytes, Some(0));
        assert_eq!(NodeCharged::of(&r, None).uncharged_slab_bytes, None);

        // One file allowed: the pod is read, its containers skipped and counted.
        let r = read(&books, &t, 1);
        assert_eq!((r.files_read, r.skipped), (3, 2));
        assert_eq!(r.pods[UID].containers[CID].1, None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sums_know_what_any_part_knows() {
        assert_eq!(sum(Source::CgroupV1, &[]), None);
        let a = Charged { kmem: Some(u64::MAX), ..Charged::unknown(Source::CgroupV1) };
        let s = sum(Source::CgroupV1, &[a, a]).expect("a sum");
        assert_eq!((s.kmem, s.slab), (Some(u64::MAX), None), "saturates; unknown stays unknown");
    }

    #[test]
    fn find_without_a_mountinfo_is_none() {
        assert_eq!(MemcgBooks::find(Path::new("/nonexistent-slabtrace-proc")), None);
    }
}
