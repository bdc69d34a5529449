//! Load the BPF object, size its maps, write the load-time constant, attach the probes, and
//! turn every way that can fail into one sentence that says what to do.

pub mod caps;
mod error;

use std::path::Path;

use aya::{Btf as AyaBtf, Ebpf, EbpfLoader, programs::BtfTracePoint};
use log::{debug, info};
use slabtrace_common::Config;

pub use error::ProbeError;

use crate::{
    kernel::layout::{KernelLayout, TRACEPOINTS},
    maps::fdinfo::BpfFootprint,
};

/// The BPF object built by build.rs from `slabtrace-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slabtrace"));

/// Map sizes; each is a hard bound on the kernel memory slabtrace uses.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries of the (cgroup, cache) counters map.
    pub max_keys: u32,
    /// Entries of the sampled live-object LRU.
    pub max_live: u32,
}

/// Which programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
    /// Ids of the programs whose skipped runs are lost events: those alone on their
    /// tracepoint. (A skipped run of one of `kmem_cache_free`'s programs is a nested interrupt
    /// event, which one of the others takes.)
    lossy: Vec<u32>,
}

impl Tracer {
    /// Checks privileges, loads the BPF object with `config` and `limits`, and attaches every
    /// probe. `btf_path` is the kernel's BTF (normally /sys/kernel/btf/vmlinux).
    pub fn start(
        layout: &KernelLayout,
        config: Config,
        limits: Limits,
        btf_path: &Path,
        set: ProbeSet,
    ) -> Result<Self, ProbeError> {
        caps::check()?;
        raise_memlock_limit();
        let btf = AyaBtf::parse_file(btf_path, aya::Endianness::default())
            .map_err(|source| ProbeError::Btf { path: btf_path.to_owned(), source })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("CONFIG", &config, true)
            .map_max_entries("COUNTERS", limits.max_keys)
            .map_max_entries("LIVE", limits.max_live)
            .load(BPF_OBJECT)
            .map_err(ProbeError::from_load)?;
        let mut lossy = Vec::new();
        for tp in TRACEPOINTS {
            layout.check_tracepoint(tp.name)?;
            let names: Vec<&'static str> = match set {
                // The interrupt programs only exist to take events the task program's
                // recursion guard would drop; without interrupt detection the task program
                // handles everything.
                ProbeSet::Slabtrace if layout.task_stack.is_some() => {
                    std::iter::once(tp.name).chain(tp.irq.iter().copied()).collect()
                }
                ProbeSet::Slabtrace => vec![tp.name],
                ProbeSet::Floor => vec![tp.floor],
            };
            for &name in &names {
                let program: &mut BtfTracePoint = ebpf
                    .program_mut(name)
                    .ok_or(ProbeError::MissingProgram(name))?
                    .try_into()
                    .map_err(|source| ProbeError::program(name, source))?;
                program.load(tp.name, &btf).map_err(|source| ProbeError::program(name, source))?;
                program.attach().map_err(|source| ProbeError::program(name, source))?;
                // A program alone on its tracepoint loses what it skips; with twins, what one
                // skips another takes (only a double nesting is lost, and no counter sees it).
                if names.len() == 1 {
                    lossy.push(
                        program.info().map_err(|source| ProbeError::program(name, source))?.id(),
                    );
                }
                debug!("attached {name} to tp_btf/{}", tp.name);
            }
        }
        info!(
            "tracing kmem tracepoints; tracking 1 in {} objects' addresses",
            config.sample_mask + 1
        );
        Ok(Self { ebpf, config, lossy })
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

    /// Events no program saw: the skipped runs of the programs that had no twin to take them.
    #[must_use]
    pub fn lost_events(&self, footprint: &BpfFootprint) -> u64 {
        footprint.misses_of(&self.lossy)
    }

    /// The load-time constant in use.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Kernels before 5.11 charge BPF maps against `RLIMIT_MEMLOCK`; later ones use memcg and ignore
/// it. Raising it is harmless either way.
fn raise_memlock_limit() {
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
