//! Shrinker activity per interval: which shrinkers reclaim called, how many objects they
//! scanned and freed, and which slab caches those figures speak for.
//!
//! The BPF side keeps running totals per `struct shrinker *` ([`ShrinkerStats`], read with
//! [`crate::probe::Tracer::shrinkers`]). Here, pure functions turn two reads into:
//! - [`delta`]: what each shrinker did in between;
//! - [`symbolize`]: the same, with the shrinker's scan function named from /proc/kallsyms;
//! - [`reclaim_for_cache`]: the [`Reclaim`] figures of the shrinkers that free a slab cache's
//!   objects, for the growth classifier ([`crate::node::growth`]);
//! - [`summarize`]: one line per kind of shrinker, node-wide, for the report.
//!
//! # Which shrinkers reclaim which caches
//!
//! A shrinker is known by its scan function (`shrinker.scan_objects`, named through kallsyms;
//! `struct shrinker` has a name only with `CONFIG_SHRINKER_DEBUG`, which production kernels
//! leave off). The mapping is deliberately short: a cache is listed only where the scan
//! function frees that cache's objects itself or by dropping the last reference to them, so
//! "scanned > 0" really means reclaim worked on that cache (Linux 6.18, mm/ and fs/):
//!
//! | scan function | shrinker name | caches |
//! |---|---|---|
//! | `super_cache_scan` | `sb-<fstype>` | `dentry`; filesystem inode caches (below) |
//! | `ext4_es_scan` | `ext4-es:<dev>` | `ext4_extent_status` |
//! | `mb_cache_scan` | `mbcache-shrinker` | `mbcache` |
//! | `scan_shadow_nodes` | `mm-shadow` | `radix_tree_node` |
//! | `xfs_buftarg_shrink_scan` | `xfs-buf:<dev>` | `xfs_buf` |
//! | `xfs_qm_shrink_scan` | `xfs-qm:<dev>` | `xfs_dquot` |
//! | `zswap_shrinker_scan` | `mm-zswap` | `zswap_entry` |
//!
//! - `super_cache_scan` is every superblock's shrinker. It splits its budget between the
//!   superblock's dentry LRU (`prune_dcache_sb`), its inode LRU (`prune_icache_sb`) and the
//!   filesystem's own cached objects (XFS inodes) and returns one freed count for all three,
//!   so its figures cannot be split per cache; and without shrinker names nothing tells one
//!   superblock's shrinker from another's. So every superblock shrinker's figures count for
//!   `dentry` and for every inode cache, summed.
//! - An inode cache is a cache marked reclaimable (`SLAB_RECLAIM_ACCOUNT`) named `inode_cache`
//!   or ending in `_inode_cache` or `_inode` (`ext4_inode_cache`, `proc_inode_cache`,
//!   `xfs_inode`, `ovl_inode`, `fuse_inode`, and the generic `inode_cache` of sysfs, cgroupfs
//!   and debugfs), except `sock_inode_cache`. Inodes are freed when pruning a dentry drops their
//!   last reference (procfs, whose inodes are never cached unreferenced) or from the inode LRU
//!   (disk filesystems); either way by the superblock shrinker. Socket inodes are not: sockfs
//!   dentries are never kept unused (`DCACHE_DONTCACHE`), so a socket's inode is freed when the
//!   socket closes, and reclaim cannot touch it. Caches not marked reclaimable
//!   (`shmem_inode_cache`, `hugetlbfs_inode_cache`, `mqueue_inode_cache`, `jbd2_inode`) hold
//!   inodes that live as long as their file: no reclaim figures.
//! - `radix_tree_node`: the workingset shrinker frees xarray nodes that hold only shadow
//!   entries of evicted page cache. Nodes holding live pages are freed by page reclaim, which is
//!   not a shrinker, so for this cache the figures show shrinker reclaim only.
//! - Left out: shrinkers whose objects are not slab (`deferred_split_scan` and
//!   `shrink_huge_zero_folio_scan`: huge pages; `zs_shrinker_scan`: zsmalloc pages), those that
//!   free objects of any cache (`kfree_rcu_shrink_scan`, `lazy_rcu_shrink_scan`: they flush RCU
//!   callbacks), those whose freed count is not a count of one cache's objects
//!   (`jbd2_journal_shrink_scan` counts checkpointed buffers, whose journal heads may stay),
//!   and those that report nothing (`vmap_node_shrink_scan` frees pooled `vmap_area`s but
//!   returns `SHRINK_STOP`, so it shows calls and never a scanned or freed object).
//!
//! Every other cache gets no figures ([`Reclaim::default`]), even a reclaimable one: giving it
//! the superblock shrinkers' figures would say reclaim worked on it when nothing in the kernel
//! says so.
//!
//! When /proc/kallsyms cannot name scan functions (`kptr_restrict`), a kernel with
//! `CONFIG_SHRINKER_DEBUG` is matched by the shrinker names in the table instead.

use std::collections::BTreeMap;

use serde::Serialize;
use slabtrace_common::{ShrinkerStats, Stat};

use crate::{
    kernel::kallsyms::Kallsyms,
    maps::{
        Stats,
        delta::{Totals, since},
    },
    node::growth::Reclaim,
};

/// What the shrinker programs could not do, from the BPF side's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShrinkerLosses {
    /// Shrinkers that did not get an entry in the shrinker map: their reclaim went uncounted.
    pub insert_failed: u64,
    /// Failed reads of a shrinker's scan function or name: it shows unnamed.
    pub read_failed: u64,
}

impl ShrinkerLosses {
    /// The shrinker counters of a statistics snapshot.
    #[must_use]
    pub fn from_stats(stats: &Stats) -> Self {
        Self {
            insert_failed: stats.get(Stat::ShrinkerInsertFailed),
            read_failed: stats.get(Stat::ShrinkerReadFailed),
        }
    }
}

/// One shrinker's activity over an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerDelta {
    /// Its scan function's address (`shrinker.scan_objects`); 0 if unknown.
    pub scan_fn: u64,
    /// `shrinker.name`, on kernels that keep names (`CONFIG_SHRINKER_DEBUG`).
    pub name: Option<String>,
    /// Calls of `do_shrink_slab()`.
    pub calls: u64,
    /// Objects scanned.
    pub scanned: u64,
    /// Objects freed.
    pub freed: u64,
}

/// What each shrinker did between two reads of the shrinker map, by `struct shrinker *`;
/// shrinkers reclaim did not call in between are left out.
///
/// Totals only grow, so each figure is `after - before` (the rule of [`Totals`]). A record that went back (a call count
/// lower than before) or changed scan function is another shrinker at a reused address, or one
/// evicted and seen again: its totals are all new, and taken whole. Objects scanned are the
/// planned minus the left unscanned; a call in flight at a read makes that briefly off, and it
/// is never taken below zero.
#[must_use]
pub fn delta(
    before: &BTreeMap<u64, ShrinkerStats>,
    after: &BTreeMap<u64, ShrinkerStats>,
) -> BTreeMap<u64, ShrinkerDelta> {
    after
        .iter()
        .filter_map(|(&shrinker, now)| {
            let d = since(before.get(&shrinker), now);
            let scanned = u64::try_from(d.planned.wrapping_sub(d.left).cast_signed()).unwrap_or(0);
            (d.calls > 0 || scanned > 0 || d.freed > 0).then(|| {
                let delta = ShrinkerDelta {
                    scan_fn: now.scan_fn,
                    name: name(&now.name),
                    calls: d.calls,
                    scanned,
                    freed: d.freed,
                };
                (shrinker, delta)
            })
        })
        .collect()
}

/// A shrinker's totals continue the earlier read unless its call count went back or its scan
/// function changed: another shrinker at a reused address, or one evicted and seen again.
impl Totals for ShrinkerStats {
    fn continues(&self, earlier: &Self) -> bool {
        self.calls >= earlier.calls && !another_shrinker(earlier.scan_fn, self.scan_fn)
    }

    /// `planned` and `left` wrap (see [`ShrinkerStats`]); `freed` is never taken below zero.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            calls: self.calls - earlier.calls,
            planned: self.planned.wrapping_sub(earlier.planned),
            left: self.left.wrapping_sub(earlier.left),
            freed: self.freed.saturating_sub(earlier.freed),
            ..*self
        }
    }
}

/// Two scan functions that are both known and differ: two different shrinkers.
fn another_shrinker(before: u64, now: u64) -> bool {
    before != 0 && now != 0 && before != now
}

/// The NUL-padded name as text; None when empty.
fn name(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// A [`ShrinkerDelta`] with its scan function named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedShrinkerDelta {
    /// The `struct shrinker *`.
    pub shrinker: u64,
    /// `shrinker.name`, on kernels that keep names.
    pub name: Option<String>,
    /// The scan function as kallsyms names it (`super_cache_scan`, `xfs_qm_shrink_scan [xfs]`),
    /// or `unnamed-<hash>` when it cannot be named (never the address).
    pub scan_fn: String,
    /// Calls of `do_shrink_slab()`.
    pub calls: u64,
    /// Objects scanned.
    pub scanned: u64,
    /// Objects freed.
    pub freed: u64,
}

/// Names each shrinker's scan function with `kallsyms` (None: unreadable, so addresses are
/// shown as `unnamed-<hash>`). Ordered by shrinker address.
#[must_use]
pub fn symbolize(
    deltas: &BTreeMap<u64, ShrinkerDelta>,
    kallsyms: Option<&Kallsyms>,
) -> Vec<NamedShrinkerDelta> {
    deltas
        .iter()
        .map(|(&shrinker, d)| {
            let symbol = kallsyms.filter(|_| d.scan_fn != 0).and_then(|k| k.lookup(d.scan_fn));
            let scan_fn = match symbol {
                // A function pointer points at the start of its function.
                Some(s) if s.offset == 0 => s.name.to_owned(),
                Some(s) => s.to_string(),
                None if d.scan_fn == 0 => "(unknown)".to_owned(),
                None => crate::kernel::kallsyms::unnamed(d.scan_fn),
            };
            NamedShrinkerDelta {
                shrinker,
                name: d.name.clone(),
                scan_fn,
                calls: d.calls,
                scanned: d.scanned,
                freed: d.freed,
            }
        })
        .collect()
}

// The shrinkers that reclaim slab caches, by scan function and, for kernels whose scan
// functions cannot be named, by the prefix of their `CONFIG_SHRINKER_DEBUG` name. The caches
// each one covers are in `scan_fn_for`; the module doc says why.
const SUPER: (&str, &str) = ("super_cache_scan", "sb-");
const EXT4_ES: (&str, &str) = ("ext4_es_scan", "ext4-es");
const MBCACHE: (&str, &str) = ("mb_cache_scan", "mbcache");
const SHADOW: (&str, &str) = ("scan_shadow_nodes", "mm-shadow");
const XFS_BUF: (&str, &str) = ("xfs_buftarg_shrink_scan", "xfs-buf");
const XFS_QM: (&str, &str) = ("xfs_qm_shrink_scan", "xfs-qm");
const ZSWAP: (&str, &str) = ("zswap_shrinker_scan", "mm-zswap");

/// The shrinker (scan function, name prefix) that frees `cache`'s objects, if any.
fn scan_fn_for(cache: &str, reclaimable: bool) -> Option<(&'static str, &'static str)> {
    if !reclaimable {
        return None;
    }
    match cache {
        "dentry" => Some(SUPER),
        "ext4_extent_status" => Some(EXT4_ES),
        "mbcache" => Some(MBCACHE),
        "radix_tree_node" => Some(SHADOW),
        "xfs_buf" => Some(XFS_BUF),
        "xfs_dquot" => Some(XFS_QM),
        "zswap_entry" => Some(ZSWAP),
        // Socket inodes die with their socket; reclaim never sees them.
        "sock_inode_cache" => None,
        c if c == "inode_cache" || c.ends_with("_inode_cache") || c.ends_with("_inode") => {
            Some(SUPER)
        }
        _ => None,
    }
}

/// The bare function name in a kallsyms name: without `[module]`, `+offset`, or a compiler
/// suffix (`.llvm.123`, `.isra.0`) that LTO or GCC may add to a static function.
fn function(symbol: &str) -> &str {
    symbol.split([' ', '+', '.']).next().unwrap_or(symbol)
}

/// Whether `s` is the shrinker `(scan_fn, name_prefix)`: by its scan function when kallsyms
/// named it, by its name only when it did not.
fn is(s: &NamedShrinkerDelta, (scan_fn, name_prefix): (&str, &str)) -> bool {
    if s.scan_fn.starts_with("0x") {
        s.name.as_deref().is_some_and(|n| n.starts_with(name_prefix))
    } else {
        function(&s.scan_fn) == scan_fn
    }
}

/// What reclaim did for the slab cache `cache` (reclaimable: `SLAB_RECLAIM_ACCOUNT`), summed
/// over the shrinkers that free its objects; [`Reclaim::default`] for a cache no shrinker is
/// known to free (see the module doc for the mapping and why).
#[must_use]
pub fn reclaim_for_cache(
    cache: &str,
    reclaimable: bool,
    shrinkers: &[NamedShrinkerDelta],
) -> Reclaim {
    let Some(shrinker) = scan_fn_for(cache, reclaimable) else {
        return Reclaim::default();
    };
    shrinkers.iter().filter(|s| is(s, shrinker)).fold(Reclaim::default(), |acc, s| Reclaim {
        scanned: acc.scanned.saturating_add(s.scanned),
        freed: acc.freed.saturating_add(s.freed),
    })
}

/// One kind of shrinker's activity over an interval, node-wide: all shrinkers with one scan
/// function and name (every ext4 superblock's, say) together.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ShrinkerSummary {
    /// Their name, on kernels that keep names (`CONFIG_SHRINKER_DEBUG`).
    pub name: Option<String>,
    /// Their scan function (see [`NamedShrinkerDelta::scan_fn`]).
    pub scan_fn: String,
    /// How many shrinkers reclaim called.
    pub shrinkers: u64,
    /// Calls of `do_shrink_slab()`.
    pub calls: u64,
    /// Objects scanned.
    pub scanned: u64,
    /// Objects freed.
    pub freed: u64,
}

/// One line per kind of shrinker, the most scanned first (then the most freed, then by scan
/// function and name, so the order is stable).
#[must_use]
pub fn summarize(shrinkers: &[NamedShrinkerDelta]) -> Vec<ShrinkerSummary> {
    let mut groups: BTreeMap<(&str, Option<&str>), ShrinkerSummary> = BTreeMap::new();
    for s in shrinkers {
        let g = groups.entry((&s.scan_fn, s.name.as_deref())).or_insert_with(|| ShrinkerSummary {
            name: s.name.clone(),
            scan_fn: s.scan_fn.clone(),
            ..ShrinkerSummary::default()
        });
        g.shrinkers += 1;
        g.calls = g.calls.saturating_add(s.calls);
        g.scanned = g.scanned.saturating_add(s.scanned);
        g.freed = g.freed.saturating_add(s.freed);
    }
    let mut out: Vec<ShrinkerSummary> = groups.into_values().collect();
    // Ties keep the map's (scan function, name) order: the sort is stable.
    out.sort_by(|a, b| b.scanned.cmp(&a.scanned).then(b.freed.cmp(&a.freed)));
    out
}

#[cfg(test)]
mod tests {
    use slabtrace_common::shrinker::SHRINKER_NAME_LEN;

    use super::*;

    const SUPER_SCAN: u64 = 0xffff_ffff_816b_f630;
    const SHADOW_SCAN: u64 = 0xffff_ffff_815d_6ed0;
    const XFS_QM_SCAN: u64 = 0xffff_ffff_c000_2000;

    fn kallsyms() -> Kallsyms {
        Kallsyms::parse(
            "ffffffff815d6ed0 t scan_shadow_nodes\n\
             ffffffff816bf620 t __pfx_super_cache_scan\n\
             ffffffff816bf630 t super_cache_scan\n\
             ffffffffc0002000 t xfs_qm_shrink_scan\t[xfs]\n",
        )
    }

    fn stats(scan_fn: u64, calls: u64, planned: u64, left: i64, freed: u64) -> ShrinkerStats {
        ShrinkerStats {
            scan_fn,
            calls,
            planned,
            left: left.cast_unsigned(),
            freed,
            name: [0; SHRINKER_NAME_LEN],
        }
    }

    fn named(name: &str, s: ShrinkerStats) -> ShrinkerStats {
        let mut bytes = [0; SHRINKER_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        ShrinkerStats { name: bytes, ..s }
    }

    fn d(scan_fn: u64, calls: u64, scanned: u64, freed: u64) -> ShrinkerDelta {
        ShrinkerDelta { scan_fn, name: None, calls, scanned, freed }
    }

    #[test]
    fn deltas_between_two_reads() {
        type Reads = Vec<(u64, ShrinkerStats)>;
        type Deltas = Vec<(u64, ShrinkerDelta)>;
        let cases: [(&str, Reads, Reads, Deltas); 8] = [
            ("empty", vec![], vec![], vec![]),
            (
                "zero interval: nothing ran",
                vec![(1, stats(SUPER_SCAN, 4, 900, 100, 700))],
                vec![(1, stats(SUPER_SCAN, 4, 900, 100, 700))],
                vec![],
            ),
            (
                "a shrinker ran",
                vec![(1, stats(SUPER_SCAN, 4, 900, 100, 700))],
                vec![(1, stats(SUPER_SCAN, 6, 1500, 150, 1200))],
                vec![(1, d(SUPER_SCAN, 2, 550, 500))],
            ),
            (
                "a shrinker seen for the first time counts whole",
                vec![],
                vec![(2, stats(SHADOW_SCAN, 3, 64, 0, 10))],
                vec![(2, d(SHADOW_SCAN, 3, 64, 10))],
            ),
            (
                "its address reused by another shrinker: taken whole",
                vec![(1, stats(SUPER_SCAN, 40, 9000, 100, 7000))],
                vec![(1, stats(SHADOW_SCAN, 41, 9100, 100, 7001))],
                vec![(1, d(SHADOW_SCAN, 41, 9000, 7001))],
            ),
            (
                "reset (evicted, seen again): counters went back, taken whole",
                vec![(1, stats(SUPER_SCAN, 40, 9000, 100, 7000))],
                vec![(1, stats(SUPER_SCAN, 2, 300, 20, 250))],
                vec![(1, d(SUPER_SCAN, 2, 280, 250))],
            ),
            (
                // A call in flight at the first read: its start counted there, its end now.
                "an end after the read: never below zero",
                vec![(1, stats(SUPER_SCAN, 1, 100, 0, 0))],
                vec![(1, stats(SUPER_SCAN, 1, 100, 130, 5))],
                vec![(1, d(SUPER_SCAN, 0, 0, 5))],
            ),
            (
                // Scanning more than planned leaves total_scan negative.
                "an overshooting shrinker, and counters past 2^64",
                vec![(1, stats(SUPER_SCAN, 1, u64::MAX - 9, 5, 0))],
                vec![(1, stats(SUPER_SCAN, 2, 20, 5 - 3, 3))],
                vec![(1, d(SUPER_SCAN, 1, 33, 3))],
            ),
        ];
        for (what, before, after, expected) in cases {
            let got = delta(&before.into_iter().collect(), &after.into_iter().collect());
            assert_eq!(got, expected.into_iter().collect(), "{what}");
        }
    }

    #[test]
    fn losses_come_from_the_stats() {
        let mut stats = Stats::default();
        stats.0[Stat::ShrinkerInsertFailed as usize] = 2;
        stats.0[Stat::ShrinkerReadFailed as usize] = 1;
        stats.0[Stat::OomStackFailed as usize] = 7;
        assert_eq!(
            ShrinkerLosses::from_stats(&stats),
            ShrinkerLosses { insert_failed: 2, read_failed: 1 }
        );
    }

    #[test]
    fn names_come_with_the_delta() {
        let after = [(1, named("sb-ext4", stats(SUPER_SCAN, 1, 10, 0, 9)))].into();
        let got = delta(&BTreeMap::new(), &after);
        assert_eq!(got[&1].name.as_deref(), Some("sb-ext4"));
        assert_eq!(name(&[b'x'; SHRINKER_NAME_LEN]).map(|n| n.len()), Some(SHRINKER_NAME_LEN));
        assert_eq!(name(&[0; 4]), None);
    }

    #[test]
    fn scan_functions_are_named() {
        let deltas: BTreeMap<u64, ShrinkerDelta> = [
            (1, d(SUPER_SCAN, 1, 2, 3)),
            (2, d(XFS_QM_SCAN, 1, 2, 3)),
            (3, d(SUPER_SCAN + 4, 1, 2, 3)),
            (4, d(0, 1, 2, 3)),
            (5, d(0x1000, 1, 2, 3)),
        ]
        .into();
        let k = kallsyms();
        let names: Vec<String> =
            symbolize(&deltas, Some(&k)).into_iter().map(|s| s.scan_fn).collect();
        assert_eq!(
            names,
            [
                "super_cache_scan",
                "xfs_qm_shrink_scan [xfs]",
                "super_cache_scan+0x4",
                "(unknown)",
                &crate::kernel::kallsyms::unnamed(0x1000)
            ]
        );
        let unnamed: Vec<String> =
            symbolize(&deltas, None).into_iter().map(|s| s.scan_fn).collect();
        // Without kallsyms no address is shown.
        assert_eq!(unnamed[0], crate::kernel::kallsyms::unnamed(SUPER_SCAN));
        let one = &symbolize(&deltas, Some(&k))[0];
        assert_eq!((one.shrinker, one.calls, one.scanned, one.freed), (1, 1, 2, 3));
    }

    fn shrinker(scan_fn: &str, name: Option<&str>, scanned: u64, freed: u64) -> NamedShrinkerDelta {
        NamedShrinkerDelta {
            shrinker: 0,
            name: name.map(str::to_owned),
            scan_fn: scan_fn.to_owned(),
            calls: 1,
            scanned,
            freed,
        }
    }

    #[test]
    fn reclaim_per_cache() {
        let node = [
            shrinker("super_cache_scan", None, 1000, 800),
            shrinker("super_cache_scan", None, 50, 10),
            shrinker("scan_shadow_nodes", None, 64, 3),
            shrinker("ext4_es_scan", None, 7, 7),
            shrinker("xfs_qm_shrink_scan [xfs]", None, 5, 1),
            shrinker("deferred_split_scan", None, 512, 512),
            shrinker("kfree_rcu_shrink_scan", None, 99, 99),
        ];
        let sb = Reclaim { scanned: 1050, freed: 810 };
        let nothing = Reclaim::default();
        let cases: [(&str, bool, Reclaim); 17] = [
            ("dentry", true, sb),
            ("ext4_inode_cache", true, sb),
            ("proc_inode_cache", true, sb),
            ("inode_cache", true, sb),
            ("xfs_inode", true, sb),
            ("ovl_inode", true, sb),
            ("sock_inode_cache", true, nothing),
            ("shmem_inode_cache", false, nothing),
            ("jbd2_inode", false, nothing),
            // Not reclaimable: no shrinker counts, whatever its name.
            ("dentry", false, nothing),
            ("radix_tree_node", true, Reclaim { scanned: 64, freed: 3 }),
            ("ext4_extent_status", true, Reclaim { scanned: 7, freed: 7 }),
            ("xfs_dquot", true, Reclaim { scanned: 5, freed: 1 }),
            ("mbcache", true, nothing),
            ("kernfs_node_cache", true, nothing),
            ("kmalloc-64", false, nothing),
            ("inode_cachex", true, nothing),
        ];
        for (cache, reclaimable, expected) in cases {
            assert_eq!(reclaim_for_cache(cache, reclaimable, &node), expected, "{cache}");
        }
        assert_eq!(reclaim_for_cache("dentry", true, &[]), nothing);
    }

    #[test]
    fn compiler_suffixes_and_unnamed_kernels() {
        // ThinLTO renames static functions; without kallsyms, CONFIG_SHRINKER_DEBUG names do.
        let node = [
            shrinker("super_cache_scan.llvm.4417", None, 10, 1),
            shrinker("0xffffffff816bf630", Some("sb-tmpfs"), 20, 2),
            shrinker("0xffffffff815d6ed0", Some("mm-shadow"), 30, 3),
            shrinker("0xffffffff815d6ed0", None, 40, 4),
        ];
        assert_eq!(reclaim_for_cache("dentry", true, &node), Reclaim { scanned: 30, freed: 3 });
        assert_eq!(
            reclaim_for_cache("radix_tree_node", true, &node),
            Reclaim { scanned: 30, freed: 3 }
        );
        assert_eq!(function("xfs_qm_shrink_scan [xfs]"), "xfs_qm_shrink_scan");
        assert_eq!(function("super_cache_scan+0x4"), "super_cache_scan");
    }

    #[test]
    fn summary_per_kind_most_scanned_first() {
        let node = [
            shrinker("super_cache_scan", Some("sb-ext4"), 1000, 800),
            shrinker("scan_shadow_nodes", Some("mm-shadow"), 64, 3),
            shrinker("super_cache_scan", Some("sb-proc"), 70, 60),
            shrinker("super_cache_scan", Some("sb-ext4"), 50, 10),
            shrinker("ext4_es_scan", Some("ext4-es:vda"), 64, 9),
        ];
        let summary = summarize(&node);
        let got: Vec<(Option<&str>, u64, u64, u64)> =
            summary.iter().map(|s| (s.name.as_deref(), s.shrinkers, s.scanned, s.freed)).collect();
        assert_eq!(
            got,
            [
                (Some("sb-ext4"), 2, 1050, 810),
                (Some("sb-proc"), 1, 70, 60),
                (Some("ext4-es:vda"), 1, 64, 9),
                (Some("mm-shadow"), 1, 64, 3),
            ]
        );
        assert_eq!(summarize(&[]), []);
        let one = &summarize(&node[..1])[0];
        assert_eq!((one.scan_fn.as_str(), one.calls), ("super_cache_scan", 1));
    }
}
