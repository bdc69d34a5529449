//! Load the BPF object, size its maps, write the load-time constant, attach the probes, and
//! turn every way that can fail into one sentence that says what to do.
//!
//! The OOM programs are optional: a kernel that cannot run them still traces slab, with one
//! warning saying why OOM kills will not be reported. So are the shrinker programs, with one
//! warning saying reclaim activity will not be reported.

pub(crate) mod caps;
mod error;
pub(crate) mod kmem;
pub mod pin;
mod self_check;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
};

use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    programs::{BtfTracePoint, ProgramError},
};
use log::{debug, info, warn};
use slabtrace_common::{CALL_SITES_CAPACITY, Config, LIVE_WAYS, ShrinkerStats, map_names};

#[expect(clippy::cast_possible_truncation, reason = "eight")]
const WAYS: u32 = LIVE_WAYS as u32;

pub use error::ProbeError;
pub use kmem::{Loaded, TracepointPrograms};
pub use pin::PinError;

use crate::{
    kernel::layout::{
        CacheAlloc, KernelLayout, OOM_RECLAIM_TRACEPOINT, OOM_TRACEPOINT, OomLayoutError,
        SHRINKER_TRACEPOINTS, ShrinkerLayoutError,
    },
    maps::{fdinfo::BpfFootprint, shrinkers::read_shrinkers, snapshot::MapReadError},
    node::oom::{OomKill, OomReader, OomReaderError, OomSymbols, find_memcg_root},
};

/// The OOM programs, in the order they are attached: the reclaim program first, so that the
/// memcg of every memcg OOM `mark_victim` sees is on record.
const OOM_PROGRAMS: [(&str, &str); 2] =
    [("oom_memcg_reclaim", OOM_RECLAIM_TRACEPOINT), ("mark_victim", OOM_TRACEPOINT.name)];

/// Why OOM kills are not reported on this kernel (slab tracing is unaffected), in one sentence.
#[derive(Debug, thiserror::Error)]
pub enum OomUnavailable {
    /// BTF lacks what the programs read.
    #[error(transparent)]
    Layout(#[from] OomLayoutError),
    /// Loading or attaching a program failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The ring buffer could not be mapped.
    #[error(transparent)]
    Reader(#[from] OomReaderError),
    /// The bench's floor programs were asked for, which have no OOM twin.
    #[error("the overhead floor measures the kmem programs alone")]
    Floor,
    /// The bench measures slabtrace without them.
    #[error("left out to measure slabtrace without them (--bench-without oom)")]
    Ablation,
}

/// The program that keeps the per-CPU cache of cgroup ids right (a task moved: every entry is
/// out of date).
const CGROUP_CACHE_PROGRAMS: [(&str, &str); 1] = [("cgroup_attach_task", "cgroup_attach_task")];

/// The shrinker programs, in the order they are attached: the end program first, so that every
/// call whose start is counted has its end counted too (an end without a start adds nothing).
const SHRINKER_PROGRAMS: [(&str, &str); 2] = [
    ("shrink_slab_end", SHRINKER_TRACEPOINTS[1].name),
    ("shrink_slab_start", SHRINKER_TRACEPOINTS[0].name),
];

/// Why shrinker activity is not reported on this kernel (slab tracing is unaffected), in one
/// sentence.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkersUnavailable {
    /// BTF lacks what the programs read.
    #[error(transparent)]
    Layout(#[from] ShrinkerLayoutError),
    /// Loading or attaching a program failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The bench's floor programs were asked for, which have no shrinker twin.
    #[error("the overhead floor measures the kmem programs alone")]
    Floor,
    /// The bench measures slabtrace without them.
    #[error("left out to measure slabtrace without them (--bench-without shrinkers)")]
    Ablation,
}

/// An optional program group could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A build problem.
    #[error("the BPF object has no program {0}; rebuild slabtrace")]
    MissingProgram(&'static str),
    /// The verifier refused a program, or attaching failed.
    #[error("cannot load or attach the BPF program {program} on tp_btf/{target}: {source}")]
    Program {
        /// Which program.
        program: &'static str,
        /// The tracepoint it goes on.
        target: &'static str,
        /// Why.
        #[source]
        source: ProgramError,
    },
}

/// The BPF object built by build.rs from `slabtrace-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slabtrace"));

/// Map sizes; each is a hard bound on the kernel memory slabtrace uses.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries of the (cgroup, cache) counters map.
    pub max_keys: u32,
    /// At most this many slots in the sampled live-object table (see [`Self::live_slots`]).
    pub max_live: u32,
}

impl Limits {
    /// The live-object table's slots: `max_live` rounded down to a power of two (the table is
    /// `2^bits` sets of [`LIVE_WAYS`] slots), at least two sets.
    #[must_use]
    pub fn live_slots(&self) -> u32 {
        self.live_sets() * WAYS
    }

    /// The live-object table's sets (its map's entries).
    #[must_use]
    pub fn live_sets(&self) -> u32 {
        1 << self.live_set_bits()
    }

    /// log2 of the live-object table's number of sets (1 to 27).
    #[must_use]
    pub fn live_set_bits(&self) -> u32 {
        let sets = (self.max_live / WAYS).max(2);
        (u32::BITS - 1 - sets.leading_zeros()).min(27)
    }
}

/// The optional parts of slabtrace's programs: all of them, but in the bench's ablation runs,
/// which measure what each costs by leaving it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Parts {
    /// `kmem_cache_free`'s second program, for frees nested in a run of the first.
    pub nested_free: bool,
    /// The OOM programs.
    pub oom: bool,
    /// The shrinker programs.
    pub shrinkers: bool,
}

impl Parts {
    /// Every part.
    pub const ALL: Self = Self { nested_free: true, oom: true, shrinkers: true };
}

/// Which programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum ProbeSet {
    /// slabtrace's programs.
    #[default]
    Slabtrace,
    /// Empty programs on the same tracepoints: the overhead floor, for the bench.
    Floor,
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Tracer {
    ebpf: Ebpf,
    config: Config,
    /// Which programs' skipped runs are lost events (see [`kmem::Misses`]).
    misses: kmem::MissAccount,
    /// The OOM victims' reader, or why the OOM programs are not attached.
    oom: Result<OomReader, OomUnavailable>,
    /// The cgroup ids of keys new to the counters map (None if the ring cannot be opened:
    /// new cgroups are then named at each interval's full read only).
    new_keys: Option<RingBuf<MapData>>,
    /// Whether the shrinker programs are attached, or why not.
    shrinkers: Result<(), ShrinkersUnavailable>,
    /// The pinned maps' directory and its lock, when the maps are pinned.
    pins: Option<pin::Pins>,
    /// How the kmem programs were loaded: the tracepoint program type, and whether
    /// allocations from named caches are traced on return from functions (before Linux 6.1).
    kmem: (Loaded, bool),
}

impl Tracer {
    /// Whether allocations in interrupt context are told apart: the architecture allows it and
    /// the start-up self-check passed.
    #[must_use]
    pub fn interrupt_detection(&self) -> bool {
        self.config.thread_size != 0
    }
}

impl Tracer {
    /// Checks privileges, loads the BPF object with `config` and `limits`, and attaches every
    /// probe. `btf_path` is the kernel's BTF (normally /sys/kernel/btf/vmlinux). With
    /// `pin_path`, the live-object, counter and cache maps are pinned there, and maps a
    /// compatible slabtrace pinned there before are reused (see [`pin`]).
    ///
    /// The OOM and shrinker programs are attached too when the kernel allows (with
    /// [`ProbeSet::Slabtrace`]); if it does not, one warning each says why and tracing goes on
    /// without them. `programs` chooses the kmem tracepoint programs' type (see [`kmem`]);
    /// `parts` leaves optional ones out (the bench's ablation runs).
    ///
    /// The loader sets the sampling salt (kept with pinned maps, else new each run) and the
    /// live-object table's geometry in `config`.
    #[expect(clippy::too_many_arguments, reason = "each is one independent choice of the caller")]
    pub fn start(
        layout: &KernelLayout,
        config: Config,
        limits: Limits,
        btf_path: &Path,
        set: ProbeSet,
        parts: Parts,
        programs: TracepointPrograms,
        pin_path: Option<&Path>,
    ) -> Result<Self, ProbeError> {
        caps::check()?;
        let hooks = layout.kmem.clone()?;
        let memlock = raise_memlock_limit();
        let btf = AyaBtf::parse_file(btf_path, aya::Endianness::default())
            .map_err(|source| ProbeError::Btf { path: btf_path.to_owned(), source })?;
        let pins = pin_path
            .map(|root| pin::Pins::prepare(root, config.sample_mask + 1, limits))
            .transpose()?;
        let mut config = config;
        config.self_tgid = std::process::id();
        config.sample_salt = pins.as_ref().map_or_else(pin::new_salt, |p| p.salt);
        config.live_set_bits = limits.live_set_bits();
        let load = |config: &Config| {
            let mut loader = EbpfLoader::new();
            loader
                .btf(Some(&btf))
                .override_global("CONFIG", config, true)
                .map_max_entries(map_names::COUNTERS, limits.max_keys)
                .map_max_entries(map_names::LIVE, limits.live_sets())
                // Preallocated (see the map): one entry unless call sites are counted.
                .map_max_entries(
                    map_names::CALL_SITES,
                    if config.call_sites == 0 { 1 } else { CALL_SITES_CAPACITY },
                );
            if let Some(pins) = &pins {
                for (name, _) in pin::pinned_maps(limits) {
                    loader.map_pin_path(name, pins.path_of(name));
                }
            }
            loader.load(BPF_OBJECT).map_err(|e| match (ProbeError::from_load(e), memlock) {
                // A map refused for want of privilege, where maps count against a limit that
                // could not be raised: that limit is what is missing.
                (ProbeError::NotPrivileged { .. }, Err(limit)) if layout.memlock_maps => {
                    ProbeError::MemlockLimit { limit }
                }
                (other, _) => other,
            })
        };
        let mut ebpf = load(&config)?;
        if config.thread_size != 0 && !self_check::task_context_is_task(&mut ebpf) {
            // The constant is frozen into the loaded object: load it again without the test.
            warn!(
                "this kernel's task stacks are not where its BTF suggests (THREAD_SIZE {}): \
                 allocations in interrupt context are charged to the interrupted task's cgroup",
                config.thread_size
            );
            config.thread_size = 0;
            drop(ebpf);
            ebpf = load(&config)?;
        }
        let (program_type, misses) =
            kmem::attach(&mut ebpf, &btf, &hooks, set, parts.nested_free, programs)?;
        let fexit = matches!(hooks.cache_alloc, CacheAlloc::Fexit(_));
        if program_type == Loaded::Raw && programs == TracepointPrograms::Auto {
            info!("this kernel refuses the BTF tracepoint programs: using raw tracepoints");
        }
        if fexit {
            info!(
                "the kmem_cache_alloc tracepoint has no cache here (before Linux 6.1): tracing the \
                 allocation functions on return instead"
            );
        }
        info!(
            "tracing kmem tracepoints; tracking 1 in {} objects' addresses",
            config.sample_mask + 1
        );
        if set == ProbeSet::Slabtrace {
            start_cgroup_cache(&mut ebpf, &btf, &config);
        }
        let oom = match set {
            ProbeSet::Slabtrace if parts.oom => {
                attach_oom(&mut ebpf, layout, &btf).inspect_err(|e| {
                    warn!("not reporting OOM kills on this kernel: {e}");
                })
            }
            ProbeSet::Slabtrace => Err(OomUnavailable::Ablation),
            // The bench measures the kmem programs alone.
            ProbeSet::Floor => Err(OomUnavailable::Floor),
        };
        let shrinkers = match set {
            ProbeSet::Slabtrace if parts.shrinkers => attach_shrinkers(&mut ebpf, layout, &btf)
                .inspect_err(|e| {
                    warn!("not reporting shrinker activity (reclaim) on this kernel: {e}");
                }),
            ProbeSet::Slabtrace => Err(ShrinkersUnavailable::Ablation),
            ProbeSet::Floor => Err(ShrinkersUnavailable::Floor),
        };
        let new_keys = ebpf
            .take_map(map_names::NEW_KEYS)
            .map(RingBuf::try_from)
            .transpose()
            .inspect_err(|e| warn!("cannot open the new-keys ring buffer: {e}"))
            .ok()
            .flatten();
        Ok(Self {
            ebpf,
            config,
            misses,
            oom,
            new_keys,
            shrinkers,
            pins,
            kmem: (program_type, fexit),
        })
    }

    /// How the kmem programs were loaded: the tracepoint program type, and whether allocations
    /// from named caches are traced on return from the allocation functions (before 6.1).
    #[must_use]
    pub fn kmem_programs(&self) -> (Loaded, bool) {
        self.kmem
    }

    /// The directory the maps are pinned in, if they are.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.as_path())
    }

    /// Whether the maps were pinned by an earlier slabtrace and are reused: the counters then
    /// hold what it counted, and its live objects are credited when freed.
    #[must_use]
    pub fn resumed(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.resumed)
    }

    /// Whether the shrinker programs are attached, so that [`Self::shrinkers`] sees reclaim.
    #[must_use]
    pub fn shrinkers_attached(&self) -> bool {
        self.shrinkers.is_ok()
    }

    /// Why the shrinker programs are not attached, if they are not.
    #[must_use]
    pub fn shrinkers_unavailable(&self) -> Option<&ShrinkersUnavailable> {
        self.shrinkers.as_ref().err()
    }

    /// Every shrinker's totals so far, by `struct shrinker *` (see
    /// [`crate::node::shrinkers`] for deltas and names); empty when the shrinker programs are
    /// not attached.
    pub fn shrinkers(&self) -> Result<BTreeMap<u64, ShrinkerStats>, MapReadError> {
        if self.shrinkers.is_err() {
            return Ok(BTreeMap::new());
        }
        read_shrinkers(&self.ebpf)
    }

    /// Whether the OOM programs are attached, so that [`Self::oom_kills`] can report kills.
    #[must_use]
    pub fn oom_attached(&self) -> bool {
        self.oom.is_ok()
    }

    /// Why the OOM programs are not attached, if they are not.
    #[must_use]
    pub fn oom_unavailable(&self) -> Option<&OomUnavailable> {
        self.oom.as_ref().err()
    }

    /// Every OOM victim since the last call, oldest first, without blocking; always empty when
    /// the OOM programs are not attached. Victims the ring buffer had no room for are counted
    /// in `Stat::OomEventsLost`.
    pub fn oom_kills(&mut self) -> Vec<OomKill> {
        self.oom.as_mut().map_or_else(|_| Vec::new(), OomReader::drain)
    }

    /// The cgroup ids of keys new to the counters map since the last call, in order, with
    /// repeats (one per new key). Never blocks.
    pub fn new_cgroups(&mut self) -> Vec<u64> {
        let mut ids = Vec::new();
        if let Some(ring) = self.new_keys.as_mut() {
            while let Some(item) = ring.next() {
                match <[u8; 8]>::try_from(&*item) {
                    Ok(bytes) => ids.push(u64::from_ne_bytes(bytes)),
                    Err(_) => warn!(
                        "skipping a new-key record of {} bytes, expected 8: slabtrace and its BPF object disagree",
                        item.len()
                    ),
                }
            }
        }
        ids
    }

    /// The OOM reader (to name memcgs under another root, say), if the programs are attached.
    pub fn oom_reader_mut(&mut self) -> Option<&mut OomReader> {
        self.oom.as_mut().ok()
    }

    /// A descriptor that polls readable while OOM victims wait to be drained.
    #[must_use]
    pub fn oom_fd(&self) -> Option<BorrowedFd<'_>> {
        self.oom.as_ref().ok().map(|reader| reader.as_fd())
    }

    /// The BPF object, for the map readers.
    #[must_use]
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The BPF object, for the one writer of the maps (retiring finished counters).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Events no program saw: the skipped runs of the programs alone on their events, and the
    /// nested frees `kmem_cache_free`'s second program could not take (it was busy too).
    /// `nested_frees` is what the second took (`Stat::NestedFrees`).
    #[must_use]
    pub fn lost_events(&self, footprint: &BpfFootprint, nested_frees: u64) -> u64 {
        let nested = self
            .misses
            .nested
            .map_or(0, |id| footprint.misses_of(&[id]).saturating_sub(nested_frees));
        footprint.misses_of(&self.misses.lost) + nested
    }

    /// The load-time constant in use.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Loads and attaches the OOM programs and opens their ring buffer. On failure the programs
/// already loaded are unloaded again, so nothing runs for a feature that is off.
fn attach_oom(
    ebpf: &mut Ebpf,
    layout: &KernelLayout,
    btf: &AyaBtf,
) -> Result<OomReader, OomUnavailable> {
    layout.oom.as_ref().map_err(|e| OomUnavailable::Layout(e.clone()))?;
    attach_group(ebpf, btf, &OOM_PROGRAMS)?;
    let proc_root = Path::new("/proc");
    let symbols = OomSymbols::read(proc_root);
    if symbols.is_none() {
        warn!(
            "cannot read kernel symbol addresses from /proc/kallsyms (they need CAP_SYSLOG, or \
             kernel.kptr_restrict=0): OOM kills will be reported with an unknown scope"
        );
    }
    match OomReader::new(ebpf, symbols, find_memcg_root(proc_root)) {
        Ok(reader) => {
            debug!("attached the OOM programs");
            Ok(reader)
        }
        Err(e) => {
            unload_group(ebpf, &OOM_PROGRAMS);
            Err(e.into())
        }
    }
}

/// Turns on the allocation programs' per-CPU cache of cgroup ids, where the loaded programs
/// can use it, once the program that invalidates it on every cgroup move is attached; without
/// that program the cache stays off (every allocation asks the kernel's helper: slower, the
/// same ids).
fn start_cgroup_cache(ebpf: &mut Ebpf, btf: &AyaBtf, config: &Config) {
    let usable = config.cgroup_cache != 0
        && config.task_btf != 0
        && config.off_task_cgroups != 0
        && config.off_task_pid != 0;
    if !usable {
        return;
    }
    if let Err(e) = attach_group(ebpf, btf, &CGROUP_CACHE_PROGRAMS) {
        info!("not caching cgroup ids per CPU (each allocation asks the kernel): {e}");
        return;
    }
    let on = ebpf
        .map_mut(map_names::CGROUP_GENERATION)
        .ok_or_else(|| "no such map".to_owned())
        .and_then(|m| Array::<_, u64>::try_from(m).map_err(|e| e.to_string()))
        .and_then(|mut a| a.set(0, 1, 0).map_err(|e| e.to_string()));
    match on {
        Ok(()) => debug!("caching cgroup ids per CPU"),
        Err(e) => {
            unload_group(ebpf, &CGROUP_CACHE_PROGRAMS);
            info!("not caching cgroup ids per CPU (each allocation asks the kernel): {e}");
        }
    }
}

/// Loads and attaches every program of `group` (program, tracepoint), in order; if one fails,
/// unloads them all again, so nothing runs for a feature that is off.
fn attach_group(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    group: &[(&'static str, &'static str)],
) -> Result<(), AttachError> {
    let result = group.iter().try_for_each(|&(program, target)| {
        let failed = |source: ProgramError| {
            if let ProgramError::LoadError { verifier_log, .. } = &source {
                debug!("verifier log of {program}:\n{verifier_log}");
            }
            AttachError::Program { program, target, source }
        };
        let tp: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or(AttachError::MissingProgram(program))?
            .try_into()
            .map_err(failed)?;
        tp.load(target, btf).and_then(|()| tp.attach().map(drop)).map_err(failed)
    });
    if result.is_err() {
        unload_group(ebpf, group);
    }
    result
}

/// Unloads (and so detaches) the programs of `group` that are loaded.
fn unload_group(ebpf: &mut Ebpf, group: &[(&'static str, &'static str)]) {
    for (name, _) in group {
        let program: Option<&mut BtfTracePoint> =
            ebpf.program_mut(name).and_then(|p| p.try_into().ok());
        // Not loaded yet is an error too, and as good as unloaded.
        let _ = program.map(BtfTracePoint::unload);
    }
}

/// Loads and attaches the shrinker programs. On failure the programs already loaded are
/// unloaded again, so nothing runs for a feature that is off.
fn attach_shrinkers(
    ebpf: &mut Ebpf,
    layout: &KernelLayout,
    btf: &AyaBtf,
) -> Result<(), ShrinkersUnavailable> {
    layout.shrinker.as_ref().map_err(|e| ShrinkersUnavailable::Layout(e.clone()))?;
    attach_group(ebpf, btf, &SHRINKER_PROGRAMS)?;
    debug!("attached the shrinker programs");
    Ok(())
}

/// Kernels before 5.11 charge BPF maps against `RLIMIT_MEMLOCK`; later ones use memcg and ignore
/// it. Raising it is harmless either way; without `CAP_SYS_RESOURCE` it may fail, and then the
/// limit in force is returned.
fn raise_memlock_limit() -> Result<(), u64> {
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) } == 0 {
        return Ok(());
    }
    debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut now) };
    Err(now.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_has_the_maps_userspace_names_and_no_others() {
        let object = aya_obj::Object::parse(BPF_OBJECT).expect("the built BPF object parses");
        // Sections such as .rodata are maps to aya too; they are not named maps.
        let mut found: Vec<&str> =
            object.maps.keys().map(String::as_str).filter(|n| !n.starts_with('.')).collect();
        found.sort_unstable();
        let mut named = map_names::ALL.to_vec();
        named.sort_unstable();
        assert_eq!(found, named);
    }
}
