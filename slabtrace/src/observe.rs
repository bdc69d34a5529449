//! Building the observation of a window from what the session read: the attribution joined
//! with the caches' flags, slabinfo and SLUB's aliases, rolled up into pods, slabtrace's own
//! figures, and the reconciliation with the kernel's books. Pure: the session does the
//! reading.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use slabtrace_common::{CacheInfo, Stat};

use crate::{
    attribution::{self, Attribution},
    kernel::layout::SlabFlags,
    maps::{Snapshot, fdinfo::BpfFootprint},
    node::{
        oom::OomStats,
        reconcile::{self, CacheBooks, CacheReconciliation, Reconciliation},
        shrinkers::ShrinkerLosses,
        slabinfo::SlabInfo,
    },
    observation::{NodeCache, Observation, Sampling, SelfStats, SlabinfoChange},
    probe::Loaded,
    rollup,
};

/// What the report needs of one /proc/slabinfo line.
#[derive(Clone, Copy, Debug)]
pub struct SlabinfoLine {
    /// `active_objs`.
    pub active_objs: u64,
    /// `objperslab`.
    pub objects_per_slab: u64,
}

/// /proc/slabinfo now (empty, with a warning, if unreadable).
/// The lines of a slabinfo reading the books need, by cache name.
#[must_use]
pub fn slabinfo_lines(entries: &[SlabInfo]) -> BTreeMap<String, SlabinfoLine> {
    entries
        .iter()
        .map(|e| {
            let line = SlabinfoLine { active_objs: e.active_objs, objects_per_slab: e.objperslab };
            (e.name.clone(), line)
        })
        .collect()
}

/// slabtrace's own figures for the report, with warnings for what it could not do.
#[must_use]
pub fn self_stats(
    snap: &Snapshot,
    footprint: &BpfFootprint,
    lost_events: u64,
    (sample, max_live, max_keys): (u64, u64, u64),
    interrupt_detection: bool,
    (program_type, fexit): (Loaded, bool),
    mut warnings: Vec<String>,
) -> SelfStats {
    let s = &snap.stats;
    let live_entries = snap.live_entries;
    let evictions = s.get(Stat::LiveEvictions);
    let counters_full = s.get(Stat::CountersFull);
    if counters_full > 0 {
        warnings.push(format!(
            "{counters_full} events were not counted because the counters map was full: raise --max-keys"
        ));
    }
    let new_keys_lost = s.get(Stat::NewKeysLost);
    if new_keys_lost > 0 {
        warnings.push(format!(
            "{new_keys_lost} new (cgroup, cache) keys came faster than slabtrace named their cgroups between intervals: a cgroup created and removed within one interval may show by id only"
        ));
    }
    if evictions > 0 {
        warnings.push(format!(
            "{evictions} tracked objects were pushed out of the full live-object table, so their owners' live figures may be short by up to evicted_objects and their frees count as untracked: raise --max-live or --sample"
        ));
    }
    let oom = OomStats::from_stats(s);
    let shrinkers = ShrinkerLosses::from_stats(s);
    let call_sites_full = s.get(Stat::CallSitesFull);
    if call_sites_full > 0 {
        warnings.push(format!(
            "{call_sites_full} allocations were left out of the call-site counts because that map was full: the call sites shown are the first ones seen"
        ));
    }
    if oom.events_lost > 0 {
        warnings.push(format!(
            "{} OOM kills did not fit in the ring buffer to userspace and are not reported",
            oom.events_lost
        ));
    }
    if shrinkers.insert_failed > 0 {
        warnings.push(format!(
            "{} shrinkers got no entry in the shrinker map: their reclaim is not in the reclaim figures",
            shrinkers.insert_failed
        ));
    }
    if !interrupt_detection {
        warnings.push(
            "allocations in interrupt context are charged to the interrupted task's cgroup: slabtrace cannot tell them apart on this kernel (see its log)"
                .to_owned(),
        );
    }
    if fexit {
        warnings.push(
            "this kernel's kmem tracepoints name no cache (before Linux 6.1): allocations from \
             named caches are traced on return from the allocation functions, without their \
             call sites, and frees of objects allocated before tracing are counted without a cache"
                .to_owned(),
        );
    }
    SelfStats {
        sample_rate: sample,
        map_bytes: footprint.map_bytes,
        prog_bytes: footprint.prog_bytes,
        alloc_events: s.get(Stat::AllocEvents),
        free_events: s.get(Stat::FreeEvents),
        lost_events,
        live_entries,
        live_capacity: max_live,
        evictions,
        missed_frees: s.get(Stat::MissedFrees),
        counters_full,
        counters_entries: snap.counters.len() as u64,
        counters_capacity: max_keys,
        new_keys_lost,
        retired_counters: 0,
        caches_full: s.get(Stat::CachesFull),
        live_insert_failed: s.get(Stat::LiveInsertFailed),
        live_torn: s.get(Stat::LiveTorn),
        call_sites_full,
        oom_events_lost: oom.events_lost,
        oom_read_failed: oom.read_failed,
        oom_stack_failed: oom.stack_failed,
        shrinker_insert_failed: shrinkers.insert_failed,
        shrinker_read_failed: shrinkers.read_failed,
        interrupt_detection,
        kmem_programs: match program_type {
            Loaded::Btf => "tp_btf",
            Loaded::Raw => "raw_tp",
        }
        .to_owned(),
        cache_allocs: if fexit { "fexit" } else { "tracepoint" }.to_owned(),
        pinned_maps: None,
        resumed: false,
        runtime_connected: false,
        warnings,
    }
}

/// The kernel's books at both ends of the window.
pub struct NodeBooks<'a> {
    /// slabinfo when the window started, by cache name.
    pub before: &'a BTreeMap<String, SlabinfoLine>,
    /// slabinfo now.
    pub after: &'a BTreeMap<String, SlabinfoLine>,
    /// SLUB's merged names per cache (/sys/kernel/slab).
    pub aliases: &'a BTreeMap<String, Vec<String>>,
}

/// When and how the window was traced.
pub struct Window {
    /// The node's name.
    pub node: String,
    /// When tracing started.
    pub started: SystemTime,
    /// For how long.
    pub duration: Duration,
    /// N of the address sample.
    pub sample: u64,
}

/// The observation of a window: the attribution joined with the caches' flags and the
/// kernel's books, rolled up into pods. The meminfo change and the reconciliation are added
/// by the caller (see [`reconcile_books`]).
#[must_use]
pub fn observe(
    attribution: Attribution,
    caches_seen: &BTreeMap<u64, CacheInfo>,
    slab: SlabFlags,
    books: &NodeBooks<'_>,
    window: &Window,
    self_stats: SelfStats,
) -> Observation {
    // Cache flags by name, for the node-wide view.
    let flags: BTreeMap<String, u32> = caches_seen
        .values()
        .filter_map(|info| attribution::cache_name(info).map(|n| (n, info.flags)))
        .collect();
    let caches = attribution
        .caches
        .into_iter()
        .map(|mut totals| {
            totals.aliases = books.aliases.get(&totals.cache).cloned().unwrap_or_default();
            let f = flags.get(&totals.cache).copied().unwrap_or(0);
            let slabinfo = match (books.before.get(&totals.cache), books.after.get(&totals.cache)) {
                (Some(b), Some(a)) => Some(SlabinfoChange::new(b.active_objs, a.active_objs)),
                _ => None,
            };
            let slab_account = f & slab.account != 0 || totals.cache.starts_with("kmalloc-cg-");
            NodeCache { slab_account, reclaimable: f & slab.reclaim_account != 0, slabinfo, totals }
        })
        .collect();
    Observation {
        node: window.node.clone(),
        started_at: humantime::format_rfc3339_seconds(window.started).to_string(),
        duration_seconds: window.duration.as_secs_f64(),
        sampling: Sampling {
            rate: window.sample,
            estimated: window.sample > 1,
            error_bound: "live_objects_error is three standard deviations of the sampled estimate"
                .into(),
        },
        pods: rollup::pods(&attribution.cgroups, window.sample),
        cgroups: attribution.cgroups,
        interrupt: attribution.interrupt,
        caches,
        meminfo: None,
        reconciliation: Reconciliation::default(),
        charged: None,
        dying_cgroups: None,
        slabinfo: Vec::new(),
        self_stats,
    }
}

/// The report's figures against the kernel's books over the same window; `resumed_net` is what
/// each cache's net objects were at the start (nonzero only for resumed pinned counters).
/// `cpus` bounds the per-CPU slabs' slack in the kernel's counts.
#[must_use]
pub fn reconcile_books(
    report: &Observation,
    books: &NodeBooks<'_>,
    resumed_net: &BTreeMap<String, i64>,
    cpus: u64,
) -> Reconciliation {
    let all: Vec<(&str, CacheBooks)> = report
        .caches
        .iter()
        .map(|c| {
            let t = &c.totals;
            let books = CacheBooks {
                object_size: t.object_size,
                slabinfo: c.slabinfo.map(|s| (s.active_objs_before, s.active_objs_after)),
                objects_per_slab: books.after.get(&t.cache).map_or(0, |l| l.objects_per_slab),
                traced_net_objects: t.net_objects - resumed_net.get(&t.cache).copied().unwrap_or(0),
                error_objects: attribution::error_bound(
                    t.frees + t.untracked_frees,
                    report.sampling.rate,
                ),
                kmalloc: t.cache.contains("kmalloc-"),
            };
            (t.cache.as_str(), books)
        })
        .collect();
    let mut caches: Vec<CacheReconciliation> = all
        .iter()
        .filter_map(|(name, books)| reconcile::cache(name, books, cpus))
        .filter(|r| r.kernel_delta_objects != 0 || r.traced_net_objects != 0)
        .collect();
    caches.sort_by_key(|r| std::cmp::Reverse(r.kernel_delta_objects.unsigned_abs()));
    let attributed =
        report.cgroups.iter().chain(&report.interrupt).map(|c| c.totals.live_bytes).sum();
    let books: Vec<CacheBooks> = all.into_iter().map(|(_, b)| b).collect();
    let total =
        report.meminfo.map(|m| reconcile::total((m.before.slab, m.after.slab), &books, attributed));
    Reconciliation { total, caches }
}

#[cfg(test)]
mod tests {
    use slabtrace_common::{CounterKey, Counters};

    use super::*;

    const DENTRY: u64 = 0xffff_8880_0100_0000;
    const SLAB: SlabFlags =
        SlabFlags { account: 1 << 26, reclaim_account: 1 << 17, kmalloc_cgroup: true };

    fn caches() -> BTreeMap<u64, CacheInfo> {
        let mut info =
            CacheInfo { size: 192, object_size: 192, flags: 1 << 17, ..CacheInfo::default() };
        info.name[..6].copy_from_slice(b"dentry");
        BTreeMap::from([(DENTRY, info)])
    }

    fn line(active_objs: u64) -> SlabinfoLine {
        SlabinfoLine { active_objs, objects_per_slab: 21 }
    }

    #[test]
    fn the_observation_joins_flags_aliases_slabinfo_and_the_kernels_books() {
        let caches = caches();
        let ctx = attribution::Context { caches: &caches, sample: 1, slab_flags: SLAB };
        // A cgroup outside kubepods allocated 1,000 dentries and freed 400.
        let key = CounterKey { cgroup_id: 7, cache: DENTRY, flags: 0, padding: 0 };
        let totals = BTreeMap::from([(
            key,
            Counters { allocs: 1000, sampled_allocs: 1000, sampled_frees: 400, sampled_evicted: 0 },
        )]);
        let attribution = attribution::attribute(&totals, &ctx, |_| {
            (Some("/system.slice/x.service".into()), true)
        });
        let before = BTreeMap::from([("dentry".to_owned(), line(5_000))]);
        let after = BTreeMap::from([("dentry".to_owned(), line(5_600))]);
        let aliases = BTreeMap::from([("dentry".to_owned(), vec!["ext4_dentry".to_owned()])]);
        let books = NodeBooks { before: &before, after: &after, aliases: &aliases };
        let window = Window {
            node: "node-a".into(),
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(10),
            sample: 1,
        };
        let o = observe(attribution, &caches, SLAB, &books, &window, SelfStats::default());
        assert_eq!((o.node.as_str(), o.duration_seconds), ("node-a", 10.0));
        assert!(o.pods.is_empty(), "a system unit is no pod: {:?}", o.pods);
        let dentry = &o.caches[0];
        assert_eq!(dentry.totals.aliases, ["ext4_dentry"]);
        assert!(dentry.reclaimable && !dentry.slab_account);
        assert_eq!(dentry.slabinfo.map(|s| s.active_objs_delta), Some(600));
        // The kernel's count grew by 600, exactly what slabtrace saw stay live.
        let r = reconcile_books(&o, &books, &BTreeMap::new(), 2);
        assert_eq!(r.caches.len(), 1, "{r:?}");
        let c = &r.caches[0];
        assert_eq!(
            (c.kernel_delta_objects, c.traced_net_objects, c.unexplained_objects),
            (600, 600, 0)
        );
        assert!(c.within_bounds, "{c:?}");
        // What an earlier daemon's counters already held is not this window's.
        let resumed = BTreeMap::from([("dentry".to_owned(), 100)]);
        let r = reconcile_books(&o, &books, &resumed, 2);
        assert_eq!(r.caches[0].traced_net_objects, 500);
    }

    #[test]
    fn every_bpf_side_loss_is_a_field_and_the_serious_ones_a_warning() {
        let mut snap = Snapshot::default();
        for (stat, n) in [
            (Stat::CallSitesFull, 3),
            (Stat::OomEventsLost, 2),
            (Stat::OomReadFailed, 4),
            (Stat::OomStackFailed, 5),
            (Stat::ShrinkerInsertFailed, 1),
            (Stat::ShrinkerReadFailed, 6),
            (Stat::LiveTorn, 7),
        ] {
            snap.stats.0[stat as usize] = n;
        }
        let s = self_stats(
            &snap,
            &BpfFootprint::default(),
            0,
            (1, 1024, 1024),
            true,
            (Loaded::Btf, false),
            Vec::new(),
        );
        assert_eq!(
            (
                s.call_sites_full,
                s.oom_events_lost,
                s.oom_read_failed,
                s.oom_stack_failed,
                s.shrinker_insert_failed,
                s.shrinker_read_failed,
                s.live_torn
            ),
            (3, 2, 4, 5, 1, 6, 7)
        );
        let said = s.warnings.join("\n");
        for needle in ["3 allocations", "2 OOM kills", "1 shrinkers"] {
            assert!(said.contains(needle), "{needle} not in {said}");
        }
    }
}
