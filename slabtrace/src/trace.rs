//! A tracing session: start the probes, watch for a while, read the maps, join, report.
//!
//! The session resolves cgroup ids every second while it runs, so a cgroup removed before the
//! report is written keeps the path it had.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use log::{debug, info, warn};
use slabtrace_common::{
    Stat,
    key::{IRQ_CGROUP, UNTRACKED_CGROUP},
};

use crate::{
    attribution::{self, Attribution, Context},
    cgroup::{
        kubepods::{Identity, identify},
        mount::find_cgroup2_mount,
        resolve::CgroupResolver,
    },
    cli::{Format, ReportArgs},
    kernel::{btf::Btf, layout::KernelLayout},
    maps::{Snapshot, delta, fdinfo},
    node::{aliases::read_aliases, meminfo::read_meminfo, slabinfo::read_slabinfo},
    output::{
        report::{
            KernelMemory, MeminfoChange, NodeCache, Report, SCHEMA, Sampling, SelfStats,
            SlabinfoChange,
        },
        table::{self, TableLimits},
    },
    probe::{Limits, ProbeError, ProbeSet, Tracer},
    rollup::{self, Directory},
    runtime::cri::{CriClient, CriError},
};

/// How often the session looks at the maps while it runs (to name new cgroups).
const TICK: Duration = Duration::from_secs(1);

/// Pods whose names are kept at most (the least recently listed are forgotten first).
const MAX_KNOWN_PODS: usize = 10_000;

/// How often the runtime is asked again while some pod has no name.
const RUNTIME_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between tries while the runtime fails.
const RUNTIME_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// BTF missing or unreadable.
    #[error(
        "cannot read the kernel's BTF at {path} ({source}): slabtrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y, or --btf with the path of this kernel's BTF"
    )]
    Btf {
        /// Where.
        path: PathBuf,
        /// Why.
        source: crate::kernel::btf::BtfError,
    },
    /// The kernel lacks something the probes need.
    #[error(transparent)]
    Layout(#[from] crate::kernel::layout::LayoutError),
    /// Loading or attaching failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Reading a map failed.
    #[error(transparent)]
    Maps(#[from] crate::maps::snapshot::MapReadError),
    /// No cgroup2 mount.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::mount::CgroupError),
    /// Writing the report or the ready file failed.
    #[error("cannot write {what}: {source}")]
    Write {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `slabtrace report`: trace for `args.duration` seconds (or until SIGINT/SIGTERM), then print
/// the report.
pub fn report(args: &ReportArgs) -> Result<(), TraceError> {
    let roots = &args.roots;
    let btf = Btf::from_file(&roots.btf)
        .map_err(|source| TraceError::Btf { path: roots.btf.clone(), source })?;
    let layout = KernelLayout::from_btf(&btf)?;
    drop(btf);
    let cgroup_root = match &roots.cgroup_root {
        Some(root) => root.clone(),
        None => find_cgroup2_mount(&roots.proc_root)?,
    };
    let mut resolver = CgroupResolver::new(cgroup_root);
    let mut warnings = Vec::new();
    let slabinfo_before = read_slabinfo_or_warn(&roots.proc_root, &mut warnings);
    let meminfo_before = read_kernel_memory(&roots.proc_root);

    let config = layout.config(args.tracer.sample);
    let limits = Limits { max_keys: args.tracer.max_keys, max_live: args.tracer.max_live };
    let started_wall = SystemTime::now();
    let set = if args.floor { ProbeSet::Floor } else { ProbeSet::Slabtrace };
    let tracer = Tracer::start(&layout, config, limits, &roots.btf, set)?;
    let started = Instant::now();
    if let Some(path) = &args.ready_file {
        fs::write(path, b"attached\n")
            .map_err(|source| TraceError::Write { what: path.display().to_string(), source })?;
    }

    // Names now, while pods that may be deleted during the window still exist; again at the end.
    let cri = connect_runtime(args.runtime.cri_socket.as_deref(), &mut warnings);
    let mut directory = Directory::default();
    if let Some(listing) = cri.as_ref().and_then(|c| runtime_directory(c, &mut warnings)) {
        directory.merge(listing, Instant::now());
    }

    let mut last_asked = Instant::now();
    let mut retry = RUNTIME_RETRY;
    let stop = stop_flag();
    let deadline = started + Duration::from_secs(args.duration);
    let mut next_tick = started + TICK;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_tick {
            next_tick += TICK;
            let snap = Snapshot::read(tracer.ebpf(), false)?;
            let pods = name_cgroups(&snap, &mut resolver);
            // A pod the runtime has not named yet: ask now, while it exists (it may be gone by
            // the end). Its cgroup can show up while the runtime is still creating it, before
            // it lists it, so ask again later, at most every RUNTIME_RETRY.
            if let Some(c) = &cri {
                let unknown: Vec<String> =
                    pods.into_iter().filter(|uid| !directory.pods.contains_key(uid)).collect();
                if !unknown.is_empty() && last_asked.elapsed() >= retry {
                    debug!("asking the runtime about pods {unknown:?}");
                    last_asked = Instant::now();
                    // A runtime that fails is asked less and less often (each try may wait
                    // for a timeout); one that answers, every RUNTIME_RETRY again.
                    retry = match runtime_directory(c, &mut warnings) {
                        Some(listing) => {
                            directory.merge(listing, Instant::now());
                            RUNTIME_RETRY
                        }
                        None => (retry * 2).min(RUNTIME_RETRY_MAX),
                    };
                }
                directory.expire(Instant::now(), args.runtime.gone_pod_ttl(), MAX_KNOWN_PODS);
            }
        }
    }
    let duration = started.elapsed();
    let snap = Snapshot::read(tracer.ebpf(), true)?;
    name_cgroups(&snap, &mut resolver);
    // Liveness as of now: cgroups removed during the window keep their path, marked gone.
    resolver.rescan();
    let footprint = fdinfo::read_self(&roots.proc_root);
    let lost_events = tracer.lost_events(&footprint);
    drop(tracer);
    info!("traced for {:.1}s", duration.as_secs_f64());

    if let Some(listing) = cri.as_ref().and_then(|c| runtime_directory(c, &mut warnings)) {
        directory.merge(listing, Instant::now());
    }
    let slabinfo_after = read_slabinfo_or_warn(&roots.proc_root, &mut warnings);
    let meminfo = match (meminfo_before, read_kernel_memory(&roots.proc_root)) {
        (Some(before), Some(after)) => Some(MeminfoChange::new(before, after)),
        _ => None,
    };
    let aliases = read_aliases(&roots.sys_root.join("kernel/slab")).unwrap_or_else(|e| {
        warn!("no slab merge aliases: {e}");
        BTreeMap::new()
    });

    let sample = u64::from(args.tracer.sample);
    let totals = delta(&BTreeMap::new(), &snap.counters);
    let ctx = Context { caches: &snap.caches, sample, slab_flags: layout.slab };
    let attribution =
        attribution::attribute(&totals, &ctx, |id| (resolver.resolve(id), resolver.is_alive(id)));
    let self_stats =
        self_stats(&snap, &footprint, lost_events, args, layout.task_stack.is_some(), warnings);
    let mut report = build_report(
        attribution,
        &snap,
        &layout,
        &NodeBooks { before: &slabinfo_before, after: &slabinfo_after, aliases: &aliases },
        &Window { started: started_wall, duration, sample },
        self_stats,
    );
    rollup::apply_names(&mut report.pods, &directory);
    report.meminfo = meminfo;
    write_report(&report, args)
}

/// The container runtime's client: the given socket, or the first usual one that answers.
/// Without one, pods keep their uids only; the warning says so once.
fn connect_runtime(socket: Option<&Path>, warnings: &mut Vec<String>) -> Option<CriClient> {
    let client = match socket {
        Some(socket) => CriClient::connect(socket).and_then(|c| c.version().map(|v| (c, v))),
        None => CriClient::detect().and_then(|c| c.version().map(|v| (c, v))),
    };
    match client {
        Ok((client, version)) => {
            info!("pod names from {version} at {}", client.socket().display());
            Some(client)
        }
        Err(e) => {
            // No runtime on a plain Linux host is normal: say it at info level there.
            if socket.is_some() || !matches!(e, CriError::NotFound { .. }) {
                warn!("{e}");
                warnings.push(e.to_string());
            } else {
                info!("{e}");
            }
            None
        }
    }
}

/// Pod and container names as the runtime knows them now; None if it failed, which is said
/// once (log and report warning), however often it fails.
fn runtime_directory(client: &CriClient, warnings: &mut Vec<String>) -> Option<Directory> {
    let listed = client.pods().and_then(|pods| client.containers().map(|c| (pods, c)));
    match listed {
        Ok((pods, containers)) => Some(Directory {
            sandboxes: pods.iter().map(|p| p.sandbox_id.clone()).collect(),
            owner: pods
                .iter()
                .map(|p| (p.sandbox_id.clone(), p.uid.clone()))
                .chain(containers.iter().map(|c| (c.id.clone(), c.pod_uid.clone())))
                .collect(),
            pods: pods.into_iter().map(|p| (p.uid, (p.namespace, p.name))).collect(),
            containers: containers.into_iter().map(|c| (c.id, c.name)).collect(),
            seen: BTreeMap::new(),
        }),
        Err(e) => {
            warn_once(warnings, e.to_string());
            None
        }
    }
}

/// Logs `warning` and adds it to the report's warnings, unless it was said already: a failure
/// that repeats every tick is said once.
fn warn_once(warnings: &mut Vec<String>, warning: String) {
    if !warnings.contains(&warning) {
        warn!("{warning}");
        warnings.push(warning);
    }
}

/// Sets a flag on SIGINT or SIGTERM.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            warn!("cannot handle signal {signal}: {e}");
        }
    }
    stop
}

/// Resolves every cgroup id in the snapshot while its directory may still exist.
/// Returns the uids of the pods the snapshot's cgroups belong to.
fn name_cgroups(snap: &Snapshot, resolver: &mut CgroupResolver) -> BTreeSet<String> {
    let mut pods = BTreeSet::new();
    let mut last = None;
    for key in snap.counters.keys() {
        if last == Some(key.cgroup_id)
            || key.cgroup_id == IRQ_CGROUP
            || key.cgroup_id == UNTRACKED_CGROUP
        {
            continue;
        }
        last = Some(key.cgroup_id);
        match resolver.resolve(key.cgroup_id) {
            Some(path) => match identify(&path) {
                Identity::Container { pod_uid, .. } | Identity::Pod { pod_uid, .. } => {
                    pods.insert(pod_uid);
                }
                _ => {}
            },
            None => debug!("cgroup id {} has no directory under the cgroup2 mount", key.cgroup_id),
        }
    }
    pods
}

fn read_slabinfo_or_warn(proc_root: &Path, warnings: &mut Vec<String>) -> BTreeMap<String, u64> {
    match read_slabinfo(proc_root) {
        Ok(entries) => entries.into_iter().map(|e| (e.name, e.active_objs)).collect(),
        Err(e) => {
            warn_once(warnings, format!("no /proc/slabinfo comparison: {e}"));
            BTreeMap::new()
        }
    }
}

fn self_stats(
    snap: &Snapshot,
    footprint: &fdinfo::BpfFootprint,
    lost_events: u64,
    args: &ReportArgs,
    interrupt_detection: bool,
    mut warnings: Vec<String>,
) -> SelfStats {
    let s = &snap.stats;
    let live_entries = snap.live_entries.unwrap_or(0);
    // Entries leave the LRU by a seen free (delete) or by eviction; what is neither is there.
    let evictions = s
        .get(Stat::LiveInserts)
        .saturating_sub(s.get(Stat::LiveDeletes))
        .saturating_sub(live_entries);
    let counters_full = s.get(Stat::CountersFull);
    if counters_full > 0 {
        warnings.push(format!(
            "{counters_full} events were not counted because the counters map was full: raise --max-keys"
        ));
    }
    if evictions > 0 {
        warnings.push(format!(
            "{evictions} tracked objects were evicted from the full live-object map, so their frees count as untracked: raise --max-live or --sample"
        ));
    }
    if !interrupt_detection {
        warnings.push(
            "allocations in interrupt context are charged to the interrupted task's cgroup: this kernel's architecture gives no way to tell them apart"
                .to_owned(),
        );
    }
    SelfStats {
        sample_rate: u64::from(args.tracer.sample),
        map_bytes: footprint.map_bytes,
        prog_bytes: footprint.prog_bytes,
        alloc_events: s.get(Stat::AllocEvents),
        free_events: s.get(Stat::FreeEvents),
        lost_events,
        live_entries,
        live_capacity: u64::from(args.tracer.max_live),
        evictions,
        missed_frees: s.get(Stat::MissedFrees),
        counters_full,
        caches_full: s.get(Stat::CachesFull),
        live_insert_failed: s.get(Stat::LiveInsertFailed),
        interrupt_detection,
        warnings,
    }
}

/// The kernel's books at both ends of the window.
struct NodeBooks<'a> {
    before: &'a BTreeMap<String, u64>,
    after: &'a BTreeMap<String, u64>,
    aliases: &'a BTreeMap<String, Vec<String>>,
}

/// When and how the window was traced.
struct Window {
    started: SystemTime,
    duration: Duration,
    sample: u64,
}

fn build_report(
    attribution: Attribution,
    snap: &Snapshot,
    layout: &KernelLayout,
    books: &NodeBooks<'_>,
    window: &Window,
    self_stats: SelfStats,
) -> Report {
    // Cache flags by name, for the node-wide view.
    let flags: BTreeMap<String, u32> = snap
        .caches
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
                (Some(&b), Some(&a)) => Some(SlabinfoChange::new(b, a)),
                _ => None,
            };
            let slab_account =
                f & layout.slab.account != 0 || totals.cache.starts_with("kmalloc-cg-");
            NodeCache {
                slab_account,
                reclaimable: f & layout.slab.reclaim_account != 0,
                slabinfo,
                totals,
            }
        })
        .collect();
    Report {
        schema: SCHEMA,
        node: hostname(),
        started_at: humantime::format_rfc3339_seconds(window.started).to_string(),
        duration_seconds: window.duration.as_secs_f64(),
        sampling: Sampling {
            rate: window.sample,
            estimated: window.sample > 1,
            error_bound: "live_objects_error is three standard deviations of the sampled estimate",
        },
        pods: rollup::pods(&attribution.cgroups, window.sample),
        cgroups: attribution.cgroups,
        interrupt: attribution.interrupt,
        caches,
        meminfo: None,
        self_stats,
    }
}

/// The kernel memory lines of /proc/meminfo, or None (logged) if unreadable.
fn read_kernel_memory(proc_root: &Path) -> Option<KernelMemory> {
    match read_meminfo(proc_root) {
        Ok(m) => Some(KernelMemory::from_meminfo(&m)),
        Err(e) => {
            warn!("no /proc/meminfo figures: {e}");
            None
        }
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned())
}

fn write_report(report: &Report, args: &ReportArgs) -> Result<(), TraceError> {
    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).map_err(|e| TraceError::Write {
                what: "the JSON report".to_owned(),
                source: e.into(),
            })?;
            s.push('\n');
            s
        }
        Format::Table => table::render(
            report,
            TableLimits { rows: args.top, caches_per_row: 5, node_caches: 15, by: args.by },
        ),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|source| TraceError::Write { what: "standard output".to_owned(), source })
}
