//! How much of the kernel's own books slabtrace explains: per cache, the change of
//! `/proc/slabinfo`'s active objects over the window against slabtrace's net change
//! (allocations − credited frees − untracked frees), and in total, the change of `Slab:` in
//! `/proc/meminfo` against slabtrace's net bytes, plus the share of the node's slab that is
//! attributed to someone now.
//!
//! What cannot be explained is stated with the figures that bound it, not guessed at:
//! objects in SLUB's per-CPU slabs count as active in slabinfo whether used or not (up to
//! about a slab per CPU per cache), sampled frees carry their error bound, some free paths
//! have no tracepoint (`missed_frees`), and events may be lost (`lost_events`). Objects
//! allocated before tracing started are never attributed: the attributed share of the node's
//! slab grows as the daemon runs.
//!
//! Pure: figures in, figures out.

use serde::Serialize;

/// One cache's figures over the window, as gathered for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheBooks {
    /// Bytes per object.
    pub object_size: u64,
    /// `/proc/slabinfo` active objects at the start and the end of the window.
    pub slabinfo: Option<(u64, u64)>,
    /// Objects per slab (from /proc/slabinfo), for the per-CPU slack.
    pub objects_per_slab: u64,
    /// slabtrace's net change: allocations − credited frees − untracked frees.
    pub traced_net_objects: i64,
    /// ± bound of the sampled part of that net change.
    pub error_objects: u64,
    /// A kmalloc cache: frees of objects allocated before tracing are `kfree`s that do not
    /// name their cache, so they are counted under the unknown entry, not here.
    pub kmalloc: bool,
}

/// One cache, reconciled.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CacheReconciliation {
    /// Cache name.
    pub cache: String,
    /// Change of slabinfo's active objects over the window.
    pub kernel_delta_objects: i64,
    /// slabtrace's net change.
    pub traced_net_objects: i64,
    /// `kernel_delta_objects − traced_net_objects`.
    pub unexplained_objects: i64,
    /// 100 × traced / kernel, when the kernel's change is larger than its own noise; `null`
    /// otherwise (a change within the per-CPU slack explains nothing either way).
    pub coverage_pct: Option<f64>,
    /// How far slabinfo's count may be off: one slab's objects per CPU (objects in per-CPU
    /// slabs count as active).
    pub percpu_slack_objects: u64,
    /// ± bound of slabtrace's sampled figure.
    pub sampling_error_objects: u64,
    /// Whether the unexplained part is within slack + sampling error.
    pub within_bounds: bool,
    /// A kmalloc cache: `kfree`s of objects from before tracing do not name their cache, so
    /// `traced_net_objects` is too high by however many of those there were (they are under
    /// the unknown entry) and the totals leave kmalloc caches out.
    pub kmalloc: bool,
}

/// Node totals, reconciled.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct TotalReconciliation {
    /// Change of `Slab:` in /proc/meminfo over the window, bytes (for context: it also
    /// moves with empty slabs kept or given back, which no object count explains).
    pub kernel_slab_delta_bytes: i64,
    /// Change of slabinfo's active objects × object size over the named (non-kmalloc) caches
    /// slabtrace saw, bytes.
    pub kernel_delta_bytes: i64,
    /// slabtrace's net change over the same caches, bytes.
    pub traced_net_bytes: i64,
    /// 100 × traced / kernel when the kernel's change is at least a MiB; `null` otherwise.
    pub coverage_pct: Option<f64>,
    /// `Slab:` now, bytes.
    pub node_slab_bytes: u64,
    /// Live bytes slabtrace attributes to cgroups and interrupt context now.
    pub attributed_live_bytes: u64,
    /// 100 × attributed / node slab (objects from before tracing are nobody's).
    pub attributed_share_pct: f64,
}

/// The whole reconciliation, as the report carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Reconciliation {
    /// Node totals; `null` without /proc/meminfo.
    pub total: Option<TotalReconciliation>,
    /// Caches whose slabinfo count or traced count moved, largest kernel change first.
    pub caches: Vec<CacheReconciliation>,
}

/// Coverage of a change by a traced figure; None when the change is within `noise`.
fn coverage(kernel: i64, traced: i64, noise: u64) -> Option<f64> {
    (kernel.unsigned_abs() > noise && kernel != 0).then(|| 100.0 * traced as f64 / kernel as f64)
}

/// Reconciles one cache; None without slabinfo figures for it.
#[must_use]
pub fn cache(name: &str, books: &CacheBooks, cpus: u64) -> Option<CacheReconciliation> {
    let (before, after) = books.slabinfo?;
    let kernel =
        i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
    let slack = books.objects_per_slab * cpus.max(1);
    let unexplained = kernel - books.traced_net_objects;
    Some(CacheReconciliation {
        cache: name.to_owned(),
        kernel_delta_objects: kernel,
        traced_net_objects: books.traced_net_objects,
        unexplained_objects: unexplained,
        coverage_pct: coverage(kernel, books.traced_net_objects, slack),
        percpu_slack_objects: slack,
        sampling_error_objects: books.error_objects,
        within_bounds: unexplained.unsigned_abs() <= slack + books.error_objects,
        kmalloc: books.kmalloc,
    })
}

/// Reconciles the totals. `slab` is /proc/meminfo's `Slab:` at the start and the end;
/// `caches` the per-cache books (kmalloc caches are left out of the byte totals).
#[must_use]
pub fn total(
    slab: (u64, u64),
    caches: &[CacheBooks],
    attributed_live_bytes: u64,
) -> TotalReconciliation {
    let (before, after) = slab;
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let (mut kernel, mut traced) = (0i64, 0i64);
    for c in caches.iter().filter(|c| !c.kmalloc) {
        let Some((b, a)) = c.slabinfo else { continue };
        kernel += (signed(a) - signed(b)) * signed(c.object_size);
        traced += c.traced_net_objects * signed(c.object_size);
    }
    TotalReconciliation {
        kernel_slab_delta_bytes: signed(after) - signed(before),
        kernel_delta_bytes: kernel,
        traced_net_bytes: traced,
        coverage_pct: coverage(kernel, traced, 1 << 20),
        node_slab_bytes: after,
        attributed_live_bytes,
        attributed_share_pct: if after > 0 {
            100.0 * attributed_live_bytes as f64 / after as f64
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books(before: u64, after: u64, traced: i64, error: u64) -> CacheBooks {
        CacheBooks {
            object_size: 752,
            slabinfo: Some((before, after)),
            objects_per_slab: 21,
            traced_net_objects: traced,
            error_objects: error,
            kmalloc: false,
        }
    }

    #[test]
    fn a_known_workload_is_explained() {
        // 8,000 files kept: the kernel's count moved by 8,013, slabtrace saw 8,000 net.
        let r = cache("shmem_inode_cache", &books(10_000, 18_013, 8_000, 0), 2).unwrap();
        assert_eq!(r.kernel_delta_objects, 8_013);
        assert_eq!(r.unexplained_objects, 13);
        assert_eq!(r.percpu_slack_objects, 42);
        assert!(r.within_bounds);
        let pct = r.coverage_pct.unwrap();
        assert!((pct - 99.84).abs() < 0.01, "{pct}");
    }

    #[test]
    fn what_lies_outside_the_bounds_says_so() {
        // Bulk frees without a tracepoint: the kernel freed 5,000 more than slabtrace saw.
        let r = cache("maple_node", &books(20_000, 15_000, 0, 100), 2).unwrap();
        assert_eq!(r.unexplained_objects, -5_000);
        assert!(!r.within_bounds);
        assert_eq!(r.coverage_pct, Some(0.0));
    }

    #[test]
    fn a_change_within_the_noise_has_no_coverage() {
        let r = cache("dentry", &books(1_000, 1_030, 2, 0), 2).unwrap();
        assert_eq!(r.coverage_pct, None);
        assert!(r.within_bounds);
        assert_eq!(cache("x", &CacheBooks::default(), 2), None);
    }

    #[test]
    fn totals_compare_named_caches_and_give_the_attributed_share() {
        let mut inodes = books(0, 4 << 10, 3686, 0);
        inodes.object_size = 1024;
        let mut kmalloc = books(0, 1 << 20, 1 << 20, 0);
        kmalloc.kmalloc = true;
        // 4 MiB of inodes in the kernel's books, 3.6 MiB traced; kmalloc left out.
        let t = total((300 << 20, 340 << 20), &[inodes, kmalloc], 85 << 20);
        assert_eq!(t.kernel_slab_delta_bytes, 40 << 20);
        assert_eq!((t.kernel_delta_bytes, t.traced_net_bytes), (4 << 20, 3686 << 10));
        assert!((t.coverage_pct.unwrap() - 90.0).abs() < 0.01);
        assert!((t.attributed_share_pct - 25.0).abs() < 1e-9);
        assert_eq!(total((100, 100), &[], 0).coverage_pct, None);
        assert!(total((0, 0), &[], 0).attributed_share_pct.abs() < f64::EPSILON);
    }
}
