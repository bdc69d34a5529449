//! A tracing session: the probes attached, cgroup ids named while they exist, pod names asked
//! of the runtime, and a [`Report`] built from whatever counters the caller hands in.
//!
//! `slabtrace report` runs one session for a window; `slabtrace daemon` and `slabtrace top`
//! run one for as long as they live and build a report every interval. Both read the maps
//! through [`Session::read`], which also names every cgroup it sees while its directory may
//! still exist.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use log::{debug, info, warn};
use slabtrace_common::{
    Config, CounterKey, Counters, Stat,
    key::{IRQ_CGROUP, UNTRACKED_CGROUP},
};

use crate::{
    attribution::{self, Context},
    cgroup::{
        charged::{self, MemcgBooks, NodeCharged},
        dying,
        kubepods::{Identity, identify},
        mount::find_cgroup2_mount,
        resolve::CgroupResolver,
    },
    kernel::{btf::Btf, layout::KernelLayout},
    maps::{Snapshot, fdinfo},
    node::{
        aliases::read_aliases,
        meminfo::read_meminfo,
        slabinfo::{SlabInfo, read_slabinfo},
    },
    observation::{KernelMemory, MeminfoChange},
    observe::{
        NodeBooks, SlabinfoLine, Window, observe, reconcile_books, self_stats, slabinfo_lines,
    },
    output::report::{Report, SCHEMA},
    probe::{Limits, Loaded, Parts, ProbeError, ProbeSet, Tracer},
    rollup::{self, Directory},
    runtime::cri::{CriClient, CriError},
};

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
    /// Writing output failed.
    #[error("cannot write {what}: {source}")]
    Write {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Something else the user has to fix, said in one sentence.
    #[error("{0}")]
    Usage(String),
    /// Something the node must provide is missing, unreachable or in use (a port, a socket,
    /// a daemon to read from, a kernel file), said in one sentence.
    #[error("{0}")]
    Unavailable(String),
    /// Tracing failed on the way, said in one sentence.
    #[error("{0}")]
    Failed(String),
}

/// Exit statuses, one per kind of failure (README "Exit codes"), so scripts and init systems
/// can tell a typo from a kernel that cannot be traced.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed while running: reading the maps, writing the output.
    pub const FAILED: u8 = 1;
    /// A flag or its value is wrong (clap's own errors exit 2 as well).
    pub const USAGE: u8 = 2;
    /// Not permitted: root, `CAP_BPF`/`CAP_PERFMON` or the memlock limit are missing.
    pub const NOT_PERMITTED: u8 = 3;
    /// This kernel cannot be traced: no BTF, or a tracepoint, field or program type missing.
    pub const UNSUPPORTED_KERNEL: u8 = 4;
    /// Something the node must provide is missing or in use: no cgroup2 mount, the pins held
    /// by another daemon, a port taken, an event socket or a daemon not there.
    pub const UNAVAILABLE: u8 = 5;
}

impl TraceError {
    /// The exit status for this failure.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Btf { .. } | Self::Layout(_) => exit::UNSUPPORTED_KERNEL,
            Self::Probe(probe) => match probe {
                ProbeError::NotPrivileged { .. } | ProbeError::MemlockLimit { .. } => {
                    exit::NOT_PERMITTED
                }
                ProbeError::Btf { .. }
                | ProbeError::Layout(_)
                | ProbeError::Verifier { .. }
                | ProbeError::NoPrograms(_) => exit::UNSUPPORTED_KERNEL,
                ProbeError::Pin(_) => exit::UNAVAILABLE,
                _ => exit::FAILED,
            },
            Self::Cgroup(_) | Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::Usage(_) => exit::USAGE,
            Self::Maps(_) | Self::Write { .. } | Self::Failed(_) => exit::FAILED,
        }
    }
}

/// Where the kernel's files are (a container may mount the host's elsewhere).
#[derive(Clone, Debug)]
pub struct Roots {
    /// The kernel's BTF.
    pub btf: PathBuf,
    /// procfs (slabinfo, meminfo, mountinfo).
    pub proc_root: PathBuf,
    /// sysfs (the slab merge aliases under kernel/slab).
    pub sys_root: PathBuf,
    /// The cgroup2 mount; found from mountinfo when None.
    pub cgroup_root: Option<PathBuf>,
    /// The memory controller's hierarchy (cgroup v1 `memory` or cgroup2); found from
    /// mountinfo when None.
    pub memcg_root: Option<PathBuf>,
}

/// The BPF side's settings.
#[derive(Clone, Debug)]
pub struct TracerOptions {
    /// One object address in N is tracked from allocation to free.
    pub sample: u32,
    /// Live-object table slots at most.
    pub max_live: u32,
    /// Counters map entries.
    pub max_keys: u32,
    /// Count allocations per kernel call site too.
    pub call_sites: bool,
    /// The kmem tracepoint programs' type.
    pub tracepoint_programs: crate::probe::TracepointPrograms,
    /// What the bench's ablation runs leave out of the load-time constant (each `false`
    /// turns that part off) and of the programs.
    pub ablation: Ablation,
}

/// The parts of the BPF side the bench can leave out; everything on by default.
#[derive(Clone, Copy, Debug)]
#[expect(clippy::struct_excessive_bools, reason = "independent switches, one per bench part")]
pub struct Ablation {
    /// Tracking sampled objects from allocation to free.
    pub live: bool,
    /// The interrupt-context test.
    pub interrupts: bool,
    /// The per-event statistics.
    pub stats: bool,
    /// Every allocation counted (off: a random 1 in `--sample`, plus the sampled addresses).
    pub exact_counts: bool,
    /// The per-CPU cache of the current task's cgroup id.
    pub cgroup_cache: bool,
    /// Optional programs.
    pub parts: Parts,
}

impl Default for Ablation {
    fn default() -> Self {
        Self {
            live: true,
            interrupts: true,
            stats: true,
            exact_counts: true,
            cgroup_cache: true,
            parts: Parts::ALL,
        }
    }
}

impl TracerOptions {
    /// The load-time constant's settings and the programs' parts these options choose, on
    /// top of what the kernel's layout decided (`config`).
    #[must_use]
    pub fn apply(&self, mut config: Config) -> (Config, Parts) {
        config.call_sites = u32::from(self.call_sites);
        let a = self.ablation;
        if !a.live {
            config.track_live = 0;
        }
        if !a.interrupts {
            config.thread_size = 0;
        }
        if !a.stats {
            config.count_events = 0;
        }
        if !a.cgroup_cache {
            config.cgroup_cache = 0;
        }
        if !a.exact_counts {
            #[expect(clippy::cast_possible_truncation, reason = "the sampling mask is below 2^32")]
            let mask = config.sample_mask as u32;
            config.count_sample_mask = mask;
        }
        (config, a.parts)
    }
}

/// Where pod and container names come from.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The CRI socket; the usual ones are tried when None.
    pub cri_socket: Option<PathBuf>,
    /// How long a pod the runtime no longer lists keeps its names.
    pub gone_pod_ttl: Duration,
}

/// What a session needs: plain options, whatever the command line looked like.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Filesystem roots.
    pub roots: Roots,
    /// BPF-side settings.
    pub tracer: TracerOptions,
    /// Pod names.
    pub runtime: RuntimeOptions,
    /// Which programs.
    pub set: ProbeSet,
    /// Where to pin the maps that outlive a restart (the daemon's `--pin-path`); None keeps
    /// them private to this process.
    pub pin_path: Option<PathBuf>,
}

/// A running session.
pub struct Session {
    layout: KernelLayout,
    tracer: Option<Tracer>,
    resolver: CgroupResolver,
    runtime: PodNames,
    warnings: Vec<String>,
    sample: u64,
    max_live: u64,
    max_keys: u64,
    proc_root: PathBuf,
    sys_root: PathBuf,
    started: Instant,
    started_wall: SystemTime,
    slabinfo_before: BTreeMap<String, SlabinfoLine>,
    meminfo_before: Option<KernelMemory>,
    /// The footprint and lost events as of detaching (the tracer is gone after that).
    detached: Option<(fdinfo::BpfFootprint, u64)>,
    /// Kernel symbols, to name call sites and shrinker callbacks; None when restricted.
    /// Read on first use: only call sites and shrinker names need it (a few MiB to parse).
    kallsyms: std::cell::OnceCell<Option<crate::kernel::kallsyms::Kallsyms>>,
    /// Per cache, the net objects the counters already held at the start, when they were
    /// resumed from an earlier daemon's pinned maps: the kernel's books (slabinfo at this
    /// start) know nothing of them, so the reconciliation leaves them out.
    resumed_net: BTreeMap<String, i64>,
    /// The pin directory and whether its maps were resumed, for the report.
    pins: Option<(String, bool)>,
    /// How the kmem programs were loaded (see [`Tracer::kmem_programs`]).
    kmem_programs: (Loaded, bool),
    /// Whether interrupt context is told apart (see [`Tracer::interrupt_detection`]).
    interrupt_detection: bool,
    /// The memory controller's books, per pod and container; None without the controller.
    memcg: Option<MemcgBooks>,
    /// The cgroup2 mount, where `cgroup.stat` counts dying cgroups.
    cgroup_root: PathBuf,
    /// Pods seen live and gone since, the likely owners of dying cgroups.
    pods_seen: dying::PodsSeen,
}

impl Session {
    /// Reads the kernel's layout, attaches the probes and asks the runtime for pod names.
    pub fn start(opts: &SessionOptions) -> Result<Self, TraceError> {
        let roots = &opts.roots;
        let btf = Btf::from_file(&roots.btf)
            .map_err(|source| TraceError::Btf { path: roots.btf.clone(), source })?;
        let layout = KernelLayout::from_btf(&btf)?;
        drop(btf);
        let cgroup_root = match &roots.cgroup_root {
            Some(root) => root.clone(),
            None => find_cgroup2_mount(&roots.proc_root)?,
        };
        let memcg = match &roots.memcg_root {
            Some(root) => Some(MemcgBooks::at(root.clone())),
            None => MemcgBooks::find(&roots.proc_root),
        };
        match &memcg {
            Some(m) => debug!("memory controller books: {:?} at {}", m.source, m.root.display()),
            None => info!("no hierarchy has the memory controller: pods' charged memory unknown"),
        }
        let mut warnings = Vec::new();
        let (config, parts) = opts.tracer.apply(layout.config(opts.tracer.sample));
        let limits = Limits { max_keys: opts.tracer.max_keys, max_live: opts.tracer.max_live };
        let started_wall = SystemTime::now();
        let tracer = Tracer::start(
            &layout,
            config,
            limits,
            &roots.btf,
            opts.set,
            parts,
            opts.tracer.tracepoint_programs,
            opts.pin_path.as_deref(),
        )?;
        // The kernel's books from when tracing runs, not before: what is allocated while the
        // programs load (seconds on a busy node) is in no traced figure, and was unexplained.
        let slabinfo_before =
            slabinfo_lines(&read_slabinfo_or_warn(&roots.proc_root, &mut warnings));
        let meminfo_before = read_kernel_memory(&roots.proc_root);
        let pins = tracer.pin_dir().map(|d| (d.display().to_string(), tracer.resumed()));
        let kmem_programs = tracer.kmem_programs();
        let interrupt_detection = tracer.interrupt_detection();
        let started = Instant::now();

        // Names now, while pods that may be deleted during the window still exist.
        let runtime = PodNames::connect(&opts.runtime, &mut warnings);
        let mut session = Self {
            layout,
            tracer: Some(tracer),
            resolver: CgroupResolver::new(cgroup_root.clone()),
            cgroup_root,
            pods_seen: dying::PodsSeen::default(),
            runtime,
            warnings,
            sample: u64::from(opts.tracer.sample),
            max_live: u64::from(limits.live_slots()),
            max_keys: u64::from(opts.tracer.max_keys),
            proc_root: roots.proc_root.clone(),
            sys_root: roots.sys_root.clone(),
            started,
            started_wall,
            slabinfo_before,
            meminfo_before,
            detached: None,
            kallsyms: std::cell::OnceCell::new(),
            resumed_net: BTreeMap::new(),
            pins,
            kmem_programs,
            interrupt_detection,
            memcg,
        };
        session.runtime.list(&mut session.warnings);
        if session.tracer.as_ref().is_some_and(Tracer::resumed) {
            let snap = session.read()?;
            let books = session.read_books(&snap);
            let report = session.report(&snap, &snap.counters, books);
            session.resumed_net = report
                .observation
                .caches
                .into_iter()
                .map(|c| (c.totals.cache, c.totals.net_objects))
                .collect();
        }
        Ok(session)
    }

    /// When the probes were attached.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Reads the maps, names every cgroup in them while it may still exist, and asks the
    /// runtime about pods it has not named yet.
    pub fn read(&mut self) -> Result<Snapshot, TraceError> {
        let tracer = self.tracer.as_ref().ok_or_else(|| {
            TraceError::Failed("the probes are detached; nothing more to read".to_owned())
        })?;
        let snap = Snapshot::read(tracer.ebpf())?;
        let pods = name_cgroups(snap.counters.keys().map(|k| k.cgroup_id), &mut self.resolver);
        self.runtime.name_pods(&pods, &mut self.warnings);
        Ok(snap)
    }

    /// Names the cgroups of keys new since the last call, while they exist, and asks the
    /// runtime about their pods: what a daemon does between intervals, without reading the
    /// counters map (which, at 200,000 keys, costs most of a core each time).
    pub fn peek(&mut self) {
        let Some(tracer) = self.tracer.as_mut() else { return };
        let ids = tracer.new_cgroups();
        if ids.is_empty() {
            return;
        }
        let pods = name_cgroups(ids.into_iter(), &mut self.resolver);
        self.runtime.name_pods(&pods, &mut self.warnings);
    }

    /// Brings liveness up to date: walks the cgroup tree again and asks the runtime for its
    /// listing. Done at the end of a window and once per daemon interval.
    pub fn refresh(&mut self) {
        self.resolver.rescan();
        self.runtime.list(&mut self.warnings);
    }

    /// Detaches the probes (the maps go with them), keeping the footprint for the report.
    pub fn detach(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            let footprint = fdinfo::read_self(&self.proc_root);
            let lost = tracer.lost_events(&footprint, nested_frees(&tracer));
            self.detached = Some((footprint, lost));
            info!("traced for {:.1}s", self.started.elapsed().as_secs_f64());
        }
    }

    /// A cgroup's last-known path and whether it exists (as of the latest scan).
    pub fn cgroup(&mut self, id: u64) -> (Option<String>, bool) {
        (self.resolver.resolve(id), self.resolver.is_alive(id))
    }

    /// Deletes finished keys from the counters map; returns how many were deleted.
    pub fn delete_counters(&mut self, keys: &[CounterKey]) -> Result<usize, TraceError> {
        match &mut self.tracer {
            Some(tracer) => Ok(crate::maps::delete_counters(tracer.ebpf_mut(), keys)?),
            None => Ok(0),
        }
    }

    /// Deletes the call-site counts (`--call-sites`) of `keys` from the kernel's map.
    pub fn delete_call_sites(
        &mut self,
        keys: &[slabtrace_common::CallSiteKey],
    ) -> Result<usize, TraceError> {
        match &mut self.tracer {
            Some(tracer) => Ok(crate::maps::snapshot::delete_keys::<_, u64>(
                tracer.ebpf_mut(),
                slabtrace_common::map_names::CALL_SITES,
                keys,
            )?),
            None => Ok(0),
        }
    }

    /// Every shrinker's totals so far (empty when the shrinker programs are not attached or
    /// the map cannot be read, which is logged).
    #[must_use]
    pub fn shrinkers(&self) -> std::collections::BTreeMap<u64, slabtrace_common::ShrinkerStats> {
        match self.tracer.as_ref().map(Tracer::shrinkers) {
            Some(Ok(stats)) => stats,
            Some(Err(e)) => {
                debug!("no shrinker figures this interval: {e}");
                std::collections::BTreeMap::new()
            }
            None => std::collections::BTreeMap::new(),
        }
    }

    /// OOM kills since the last call (empty when the OOM programs are not attached).
    pub fn oom_kills(&mut self) -> Vec<crate::node::oom::OomKill> {
        self.tracer.as_mut().map(Tracer::oom_kills).unwrap_or_default()
    }

    /// Kernel symbols, if /proc/kallsyms shows addresses.
    #[must_use]
    pub fn kallsyms(&self) -> Option<&crate::kernel::kallsyms::Kallsyms> {
        self.kallsyms
            .get_or_init(|| {
                crate::kernel::kallsyms::Kallsyms::read(&self.proc_root)
                    .map_err(|e| {
                        warn!("kernel call sites and shrinker callbacks stay unnamed: {e}");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Whether a cgroup exists, as of the latest scan.
    #[must_use]
    pub fn alive(&self, id: u64) -> bool {
        self.resolver.is_alive(id)
    }

    /// Forgets the paths of vanished cgroups `keep` says nobody needs any more.
    pub fn forget_cgroups(&mut self, keep: impl FnMut(u64) -> bool) {
        self.resolver.retain_vanished(keep);
    }

    /// Reads what the kernel's books say now, for [`Session::report`]: slabtrace's own
    /// footprint and lost events, /proc/slabinfo, /proc/meminfo, SLUB's merge aliases and the
    /// node's name. `snap` (read just before) gives the nested frees the lost events net out.
    pub fn read_books(&self, snap: &Snapshot) -> Books {
        // Read right after `snap`: what changes between the two is in one book and not the
        // other (a busy node allocates thousands of objects while pods are listed).
        let (footprint, lost_events) = match (&self.detached, &self.tracer) {
            (Some(d), _) => d.clone(),
            (None, Some(tracer)) => {
                let footprint = fdinfo::read_self(&self.proc_root);
                // The snapshot's statistics, read just before: a nested free taken since then
                // only makes the lost figure an upper bound for that moment.
                let lost = tracer.lost_events(&footprint, snap.stats.get(Stat::NestedFrees));
                (footprint, lost)
            }
            (None, None) => (fdinfo::BpfFootprint::default(), 0),
        };
        let mut warnings = self.warnings.clone();
        let slabinfo = read_slabinfo_or_warn(&self.proc_root, &mut warnings);
        let aliases = read_aliases(&self.sys_root.join("kernel/slab")).unwrap_or_else(|e| {
            debug!("no slab merge aliases: {e}");
            BTreeMap::new()
        });
        Books {
            footprint,
            lost_events,
            slabinfo,
            meminfo: read_kernel_memory(&self.proc_root),
            aliases,
            warnings,
            node: hostname(),
            charged: charged::Reading::default(),
            dying: None,
        }
    }

    /// Reads the memory controller's books of every pod and container cgroup alive as of the
    /// latest scan (see [`Session::refresh`]) into `books`: part of an interval's reading.
    pub fn read_charged(&self, books: &mut Books) {
        let Some(memcg) = &self.memcg else { return };
        let targets = charged::targets(self.resolver.live_paths());
        books.charged = charged::read(memcg, &targets, charged::MAX_FILES);
        if books.charged.skipped > 0 {
            debug!("{} cgroups' memory books left unread this interval", books.charged.skipped);
        }
    }

    /// Reads the dying cgroups under the node's top-level cgroups and quality-of-service
    /// parents into `books`, after [`Session::read_charged`] (whose bound of files per
    /// interval they share), and notes which pods went since the last scan.
    pub fn read_dying(&mut self, books: &mut Books) {
        self.pods_seen.update(self.resolver.live_paths());
        // The cgroup2 root's children, listed as the charged reading lists the memcg root's.
        let top = match MemcgBooks::at(self.cgroup_root.clone()).top_level(charged::MAX_TOP_LEVEL) {
            Ok((names, _)) => names,
            Err(e) => {
                debug!("cannot list {}: {e}", self.cgroup_root.display());
                Vec::new()
            }
        };
        let parents = dying::parents(&top, self.resolver.live_paths());
        let pods: Vec<String> = self
            .resolver
            .live_paths()
            .filter(|p| matches!(identify(p), Identity::Pod { .. }))
            .map(str::to_owned)
            .collect();
        let roots = dying::Roots {
            cgroup2: &self.cgroup_root,
            memcg: self.memcg.as_ref(),
            proc_root: &self.proc_root,
        };
        let directory = &self.runtime.directory;
        let limit = usize::try_from(books.charged.files_read)
            .map_or(0, |read| charged::MAX_FILES.saturating_sub(read));
        books.dying = Some(dying::read(
            roots,
            &parents,
            &pods,
            &mut self.pods_seen,
            |uid| directory.pods.get(uid).cloned(),
            limit,
        ));
    }

    /// The report of `totals` (counters per key since the session started, or whatever window
    /// the caller accumulated), with the kernel's `books` as read now next to those at the
    /// start. `snap` gives the caches, the BPF-side statistics and the live-map count. Reads
    /// nothing but cgroup paths (cached) and, with call sites, kallsyms (once).
    pub fn report(
        &mut self,
        snap: &Snapshot,
        totals: &BTreeMap<CounterKey, Counters>,
        books: Books,
    ) -> Report {
        let Books {
            footprint,
            lost_events,
            slabinfo,
            meminfo,
            aliases,
            warnings,
            node,
            charged,
            dying,
        } = books;
        let slabinfo_after = slabinfo_lines(&slabinfo);
        let meminfo = match (self.meminfo_before, meminfo) {
            (Some(before), Some(after)) => Some(MeminfoChange::new(before, after)),
            _ => None,
        };
        let ctx =
            Context { caches: &snap.caches, sample: self.sample, slab_flags: self.layout.slab };
        let resolver = &mut self.resolver;
        let mut attribution = attribution::attribute(totals, &ctx, |id| {
            (resolver.resolve(id), resolver.is_alive(id))
        });
        let kallsyms = if snap.call_sites.is_empty() { None } else { self.kallsyms() };
        attribution::apply_call_sites(
            &mut attribution.cgroups,
            attribution.interrupt.as_mut(),
            &snap.call_sites,
            &ctx,
            |addr| {
                kallsyms.map_or_else(|| crate::kernel::kallsyms::unnamed(addr), |k| k.name(addr))
            },
        );
        let self_stats = self_stats(
            snap,
            &footprint,
            lost_events,
            (self.sample, self.max_live, self.max_keys),
            self.interrupt_detection,
            self.kmem_programs,
            warnings,
        );
        let books =
            NodeBooks { before: &self.slabinfo_before, after: &slabinfo_after, aliases: &aliases };
        let observation = observe(
            attribution,
            &snap.caches,
            self.layout.slab,
            &books,
            &Window {
                node,
                started: self.started_wall,
                duration: self.started.elapsed(),
                sample: self.sample,
            },
            self_stats,
        );
        let mut report = Report { schema: SCHEMA.into(), observation, ..Report::default() };
        if charged.source.is_some() {
            rollup::attach_charged(&mut report.pods, &charged.pods);
        }
        report.charged = Some(NodeCharged::of(&charged, meminfo.map(|m| m.after.slab)));
        report.observation.dying_cgroups = dying;
        rollup::apply_names(&mut report.pods, &self.runtime.directory);
        report.meminfo = meminfo;
        report.self_stats.runtime_connected = self.runtime.answering;
        if let Some((dir, resumed)) = &self.pins {
            report.self_stats.pinned_maps = Some(dir.clone());
            report.self_stats.resumed = *resumed;
        }
        // SAFETY: sysconf has no preconditions.
        let cpus = u64::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1);
        report.reconciliation = reconcile_books(&report, &books, &self.resumed_net, cpus);
        report.slabinfo = slabinfo;
        report
    }
}

/// The kernel's books at the end of an interval, as [`Session::read_books`] read them.
pub struct Books {
    footprint: fdinfo::BpfFootprint,
    lost_events: u64,
    slabinfo: Vec<SlabInfo>,
    meminfo: Option<KernelMemory>,
    aliases: BTreeMap<String, Vec<String>>,
    /// The session's warnings, with any the reading added.
    warnings: Vec<String>,
    node: String,
    /// The memory controller's books ([`Session::read_charged`]); empty until read.
    charged: charged::Reading,
    /// The dying cgroups ([`Session::read_dying`]); `None` until read.
    dying: Option<dying::DyingCgroups>,
}

impl Books {
    /// Adds the session's warnings that came after the books were read (a runtime found gone
    /// when names were refreshed), each once.
    pub fn add_warnings_of(&mut self, session: &Session) {
        for w in &session.warnings {
            if !self.warnings.contains(w) {
                self.warnings.push(w.clone());
            }
        }
    }
}

/// Pod names from the container runtime, if there is one.
struct PodNames {
    cri: Option<CriClient>,
    /// `--cri-socket`, or None to look for the usual ones.
    socket: Option<PathBuf>,
    /// Failed attempts to connect so far.
    tries: u32,
    /// Whether the runtime answered the last time it was asked.
    answering: bool,
    directory: Directory,
    gone_pod_ttl: Duration,
    last_asked: Instant,
    retry: Duration,
    /// Pods logged as named (at debug level only), so each is logged once; pruned with the
    /// directory.
    logged: BTreeSet<String>,
}

impl PodNames {
    /// The container runtime's client: the given socket, or the first usual one that answers.
    /// Without one, pods keep their uids only; the warning says so once, and the runtime is
    /// asked again later (see [`PodNames::name_pods`]): one that was down or restarting when
    /// slabtrace started names pods once it answers.
    fn connect(args: &RuntimeOptions, warnings: &mut Vec<String>) -> Self {
        let mut names = Self {
            cri: None,
            socket: args.cri_socket.clone(),
            tries: 0,
            answering: false,
            directory: Directory::default(),
            gone_pod_ttl: args.gone_pod_ttl,
            last_asked: Instant::now(),
            retry: RUNTIME_RETRY,
            logged: BTreeSet::new(),
        };
        names.reconnect(warnings);
        names
    }

    /// Connects to the runtime if not connected; true if connected now.
    fn reconnect(&mut self, warnings: &mut Vec<String>) -> bool {
        if self.cri.is_some() {
            return true;
        }
        let socket = self.socket.as_deref();
        let client = match socket {
            Some(socket) => CriClient::connect(socket).and_then(|c| c.version().map(|v| (c, v))),
            None => CriClient::detect().and_then(|c| c.version().map(|v| (c, v))),
        };
        match client {
            Ok((client, version)) => {
                info!("pod names from {version} at {}", client.socket().display());
                self.cri = Some(client);
                self.answering = true;
                true
            }
            Err(e) => {
                // No runtime on a plain Linux host is normal: say it at info level there.
                if socket.is_some() || !matches!(e, CriError::NotFound { .. }) {
                    warn_once(warnings, e.to_string());
                } else if self.tries == 0 {
                    info!("{e}");
                } else {
                    debug!("{e}");
                }
                self.tries += 1;
                false
            }
        }
    }

    /// Asks for the runtime's listing now and merges it; true if it answered.
    fn list(&mut self, warnings: &mut Vec<String>) -> bool {
        self.last_asked = Instant::now();
        if !self.reconnect(warnings) {
            return false;
        }
        let Some(client) = &self.cri else { return false };
        let listed = client.pods().and_then(|pods| client.containers().map(|c| (pods, c)));
        // One instant for the listing and the expiry: a pod just listed is never older than
        // the TTL, even `--gone-pod-ttl 0` (with two readings of the clock, every name was
        // forgotten as soon as it was learnt: found by the soak).
        let now = Instant::now();
        let answered = match listed {
            Ok((pods, containers)) => {
                let listing = Directory {
                    sandboxes: pods.iter().map(|p| p.sandbox_id.clone()).collect(),
                    owner: pods
                        .iter()
                        .map(|p| (p.sandbox_id.clone(), p.uid.clone()))
                        .chain(containers.iter().map(|c| (c.id.clone(), c.pod_uid.clone())))
                        .collect(),
                    pods: pods.into_iter().map(|p| (p.uid, (p.namespace, p.name))).collect(),
                    containers: containers.into_iter().map(|c| (c.id, c.name)).collect(),
                    seen: BTreeMap::new(),
                };
                self.directory.merge(listing, now);
                self.answering = true;
                true
            }
            Err(e) => {
                warn_once(warnings, e.to_string());
                self.answering = false;
                false
            }
        };
        let known = log::log_enabled!(log::Level::Debug)
            .then(|| self.directory.pods.keys().cloned().collect::<Vec<_>>());
        self.directory.expire(now, self.gone_pod_ttl, MAX_KNOWN_PODS);
        // What the tests (and an engineer with RUST_LOG=slabtrace::session=debug) can watch
        // for: a name learnt or forgotten. Uids come from cgroup names: escaped.
        for uid in known.iter().flatten().filter(|uid| !self.directory.pods.contains_key(*uid)) {
            debug!("forgot the names of pod {uid:?}");
        }
        let pods = &self.directory.pods;
        self.logged.retain(|uid| pods.contains_key(uid));
        answered
    }

    /// A pod the runtime has not named yet: ask now, while it exists (it may be gone by the
    /// end). Its cgroup can show up while the runtime is still creating it, before it lists
    /// it, so ask again later, at most every `RUNTIME_RETRY`; a runtime that fails is asked less
    /// and less often (each try may wait for a timeout).
    fn name_pods(&mut self, pods: &BTreeSet<String>, warnings: &mut Vec<String>) {
        let unknown: Vec<&String> =
            pods.iter().filter(|uid| !self.directory.pods.contains_key(*uid)).collect();
        if !unknown.is_empty() && self.last_asked.elapsed() >= self.retry {
            debug!("asking the runtime about pods {unknown:?}");
            self.retry = if self.list(warnings) {
                RUNTIME_RETRY
            } else {
                (self.retry * 2).min(RUNTIME_RETRY_MAX)
            };
        }
        // What a test (or an engineer with RUST_LOG=slabtrace::session=debug) can watch for:
        // a pod seen in its cgroups and named, once each. Uids come from cgroup names: escaped.
        if log::log_enabled!(log::Level::Debug) {
            for uid in pods.iter().filter(|uid| self.directory.pods.contains_key(*uid)) {
                if self.logged.insert(uid.clone()) {
                    debug!("pod {uid:?} is seen and named");
                }
            }
        }
    }
}

/// Logs `warning` and adds it to the report's warnings, unless it was said already: a failure
/// that repeats every tick is said once.
/// Distinct warnings kept for the report at most, the last slot saying that more are in the
/// log only: a warning's text can vary (a runtime's error names what failed), and every
/// report and stats line carries the list.
const MAX_WARNINGS: usize = 32;

/// The last warning kept when there are more.
const MORE_WARNINGS: &str = "more warnings than the report keeps: the later ones are in the log";

/// Logs `warning` and keeps it for the report, unless it is kept already (or the list is full).
fn warn_once(warnings: &mut Vec<String>, warning: String) {
    if warnings.contains(&warning) {
        return;
    }
    warn!("{warning}");
    if warnings.len() + 1 < MAX_WARNINGS {
        warnings.push(warning);
    } else if warnings.len() + 1 == MAX_WARNINGS {
        warnings.push(MORE_WARNINGS.to_owned());
    }
}

/// Resolves every cgroup id among `keys` while its directory may still exist.
/// Returns the uids of the pods those cgroups belong to.
/// Resolves each cgroup id to its path (the resolver remembers it), and returns the uids of
/// the pods among them.
fn name_cgroups(ids: impl Iterator<Item = u64>, resolver: &mut CgroupResolver) -> BTreeSet<String> {
    let mut pods = BTreeSet::new();
    let mut last = None;
    for id in ids {
        if last == Some(id) || id == IRQ_CGROUP || id == UNTRACKED_CGROUP {
            continue;
        }
        last = Some(id);
        match resolver.resolve(id) {
            Some(path) => match identify(&path) {
                Identity::Container { pod_uid, .. } | Identity::Pod { pod_uid, .. } => {
                    pods.insert(pod_uid);
                }
                _ => {}
            },
            None => debug!("cgroup id {id} has no directory under the cgroup2 mount"),
        }
    }
    pods
}

fn read_slabinfo_or_warn(proc_root: &Path, warnings: &mut Vec<String>) -> Vec<SlabInfo> {
    read_slabinfo(proc_root).unwrap_or_else(|e| {
        warn_once(warnings, format!("no /proc/slabinfo comparison: {e}"));
        Vec::new()
    })
}

/// The frees `kmem_cache_free`'s second program took (0 if the statistics cannot be read: the
/// lost-event figure is then an upper bound).
fn nested_frees(tracer: &Tracer) -> u64 {
    crate::maps::snapshot::read_stats(tracer.ebpf()).map_or(0, |s| s.get(Stat::NestedFrees))
}

/// The kernel memory lines of /proc/meminfo, or None (logged) if unreadable.
#[must_use]
pub fn read_kernel_memory(proc_root: &Path) -> Option<KernelMemory> {
    match read_meminfo(proc_root) {
        Ok(m) => Some(KernelMemory::from_meminfo(&m)),
        Err(e) => {
            warn!("no /proc/meminfo figures: {e}");
            None
        }
    }
}

/// This node's name: `$NODE_NAME` (the `DaemonSet` sets it from the downward API), else the
/// hostname.
#[must_use]
pub fn hostname() -> String {
    if let Ok(name) = std::env::var("NODE_NAME")
        && !name.is_empty()
    {
        return name;
    }
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned())
}

#[cfg(test)]
mod exit_tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let btf = TraceError::Btf {
            path: "/x".into(),
            source: crate::kernel::btf::BtfError::BadMagic { found: 0 },
        };
        assert_eq!(btf.exit_code(), exit::UNSUPPORTED_KERNEL);
        assert_eq!(TraceError::Usage(String::new()).exit_code(), exit::USAGE);
        assert_eq!(TraceError::Unavailable(String::new()).exit_code(), exit::UNAVAILABLE);
        assert_eq!(TraceError::Failed(String::new()).exit_code(), exit::FAILED);
        let codes = [
            exit::OK,
            exit::FAILED,
            exit::USAGE,
            exit::NOT_PERMITTED,
            exit::UNSUPPORTED_KERNEL,
            exit::UNAVAILABLE,
        ];
        assert!(codes.iter().enumerate().all(|(i, c)| !codes[..i].contains(c)), "{codes:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_kept_once_and_bounded() {
        let mut warnings = Vec::new();
        warn_once(&mut warnings, "the runtime is down".to_owned());
        warn_once(&mut warnings, "the runtime is down".to_owned());
        assert_eq!(warnings, ["the runtime is down"]);
        for i in 0..1000 {
            warn_once(&mut warnings, format!("call {i} failed"));
        }
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert_eq!(warnings.last().map(String::as_str), Some(MORE_WARNINGS));
        assert_eq!(warnings[1], "call 0 failed");
    }
}
