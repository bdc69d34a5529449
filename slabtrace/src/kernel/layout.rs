//! The kernel facts the BPF programs depend on, read from BTF: the tracepoints' signatures,
//! `struct kmem_cache` field offsets, and GFP and slab flag bits; and, for the optional OOM
//! programs, the task, cgroup and `oom_control` fields they follow from a victim to its cgroups;
//! for the optional shrinker programs, the shrinker tracepoints and `struct shrinker`'s fields.
//!
//! Probe the feature, then fall back, then say so: flag bits that older kernels define only as
//! macros (and so not in BTF) fall back to their long-stable values, with a log line. A kernel
//! without what the OOM programs read still traces slab; [`KernelLayout::oom`] says why not.

use log::{info, warn};
use slabtrace_common::Config;

use super::btf::Btf;

/// A tracepoint slabtrace attaches to and the leading arguments it reads, spelled as
/// [`Btf::tracepoint_args`] spells them (the `void *` context left out).
#[derive(Debug)]
pub struct Tracepoint {
    /// Name under `kmem:` and of the BPF program.
    pub name: &'static str,
    /// The programs that take events nested in a run of the first, which the kernel's
    /// recursion guard keeps from it (see the BPF side's `account::Nesting`), if any.
    pub nested: &'static [&'static str],
    /// The empty program on the same tracepoint (the bench's floor).
    pub floor: &'static str,
    /// The arguments the program reads, in order; later ones may follow.
    pub args: &'static [&'static str],
}

/// The kmem tracepoints, each with the leading arguments every supported kernel passes (as
/// [`Btf::tracepoint_args`] spells them, compared with [`args_match`]), and its programs:
/// `kmem_cache_alloc` as on Linux 6.1 and later (before, see [`CacheAlloc::Fexit`]);
/// `kmem_cache_free` gained the cache as a third argument in 6.1 ([`KmemHooks::free_has_cache`]).
pub const TRACEPOINTS: [Tracepoint; 4] = [
    Tracepoint {
        name: "kmem_cache_alloc",
        nested: &[],
        floor: "floor_kmem_cache_alloc",
        args: &["unsigned long", "const void *", "struct kmem_cache *", "gfp_t"],
    },
    Tracepoint {
        name: "kmem_cache_free",
        nested: &["kmem_cache_free_nested"],
        floor: "floor_kmem_cache_free",
        args: &["unsigned long", "const void *"],
    },
    Tracepoint {
        name: "kmalloc",
        nested: &[],
        floor: "floor_kmalloc",
        args: &["unsigned long", "const void *", "size_t", "size_t", "gfp_t"],
    },
    Tracepoint {
        name: "kfree",
        nested: &[],
        floor: "floor_kfree",
        args: &["unsigned long", "const void *"],
    },
];

/// `kmem_cache_free`'s third argument from Linux 6.1 on: the cache.
const FREE_CACHE_ARG: &str = "const struct kmem_cache *";

/// Before Linux 6.1, kmalloc calls that named a NUMA node had a tracepoint of their own, with
/// `kmalloc`'s arguments and the node after them.
const KMALLOC_NODE_TRACEPOINT: &str = "kmalloc_node";

/// The allocation functions traced on return where the `kmem_cache_alloc` tracepoint carries no
/// cache (before Linux 6.1): (function, program, parameters). The program reads the object
/// returned right after the last parameter, so the parameters must match exactly.
pub const FEXIT_HOOKS: [(&str, &str, &[&str]); 3] = [
    ("kmem_cache_alloc", "kmem_cache_alloc_exit", &["struct kmem_cache *", "gfp_t"]),
    (
        "kmem_cache_alloc_node",
        "kmem_cache_alloc_node_exit",
        &["struct kmem_cache *", "gfp_t", "int"],
    ),
    (
        "kmem_cache_alloc_lru",
        "kmem_cache_alloc_lru_exit",
        &["struct kmem_cache *", "struct list_lru *", "gfp_t"],
    ),
];

/// How the kmem programs attach on this kernel, decided from its BTF before anything loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmemHooks {
    /// How allocations from named caches are seen.
    pub cache_alloc: CacheAlloc,
    /// The tracepoints the kmalloc program goes on: `kmalloc`, and `kmalloc_node` before 6.1.
    pub kmalloc: Vec<&'static str>,
    /// Whether `kmem_cache_free` names the cache (Linux 6.1 and later); without it, frees of
    /// objects allocated before tracing are counted without a cache.
    pub free_has_cache: bool,
}

/// Where allocations from named caches are seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheAlloc {
    /// The `kmem_cache_alloc` tracepoint, which carries the cache (Linux 6.1 and later).
    Tracepoint,
    /// The allocation functions on return (`fexit`), as (function, program), those of
    /// [`FEXIT_HOOKS`] this kernel has: before 6.1 the tracepoint has no cache pointer.
    Fexit(Vec<(&'static str, &'static str)>),
}

impl KmemHooks {
    /// Reads from `tracepoint_args` (each kmem tracepoint's arguments, or None if BTF lacks
    /// it) and `function_args` (a function's parameters, or None) how this kernel can be
    /// traced, or says in one sentence why it cannot.
    pub fn detect(
        tracepoint_args: impl Fn(&str) -> Option<Vec<String>>,
        function_args: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<Self, LayoutError> {
        let mut found = Vec::new();
        for tp in &TRACEPOINTS {
            let args = tracepoint_args(tp.name).ok_or(LayoutError::MissingTracepoint(tp.name))?;
            found.push(args);
        }
        // The programs of these three read the same leading arguments on every kernel.
        for (tp, args) in TRACEPOINTS.iter().zip(&found).skip(1) {
            if !args_match(args, tp.args) {
                return Err(LayoutError::TracepointLayout {
                    name: tp.name,
                    found: args.join(", "),
                    expected: tp.args.join(", "),
                });
            }
        }
        let (alloc, free) = (&found[0], &found[1]);
        let cache_alloc = if args_match(alloc, TRACEPOINTS[0].args) {
            CacheAlloc::Tracepoint
        } else {
            let hooks: Vec<(&str, &str)> = FEXIT_HOOKS
                .iter()
                .filter(|(function, _, params)| {
                    function_args(function).is_some_and(|found| {
                        found.len() == params.len() && args_match(&found, params)
                    })
                })
                .map(|&(function, program, _)| (function, program))
                .collect();
            if !hooks.iter().any(|(function, _)| *function == "kmem_cache_alloc") {
                return Err(LayoutError::TracepointLayout {
                    name: TRACEPOINTS[0].name,
                    found: alloc.join(", "),
                    expected: TRACEPOINTS[0].args.join(", "),
                });
            }
            CacheAlloc::Fexit(hooks)
        };
        let mut kmalloc_tracepoints = vec![TRACEPOINTS[2].name];
        if tracepoint_args(KMALLOC_NODE_TRACEPOINT)
            .is_some_and(|a| args_match(&a, TRACEPOINTS[2].args))
        {
            kmalloc_tracepoints.push(KMALLOC_NODE_TRACEPOINT);
        }
        let free_has_cache = free.get(2).is_some_and(|a| normalize(a) == normalize(FREE_CACHE_ARG));
        Ok(Self { cache_alloc, kmalloc: kmalloc_tracepoints, free_has_cache })
    }
}

/// An argument's spelling without what does not change how a program reads it: `const`, and
/// the typedefs of the same integer (`gfp_t` is an `unsigned int`, `size_t` an `unsigned
/// long`), which kernels have swapped over the years.
fn normalize(arg: &str) -> String {
    let bare = arg.replace("const ", "").replace(" const", "");
    match bare.trim() {
        "gfp_t" | "unsigned int" | "u32" => "unsigned int".to_owned(),
        "size_t" | "unsigned long" | "u64" => "unsigned long".to_owned(),
        other => other.to_owned(),
    }
}

/// Whether `found` (a signature from BTF) starts with `expected`, tolerating [`normalize`]'s
/// cosmetic differences: a tracepoint may gain arguments at the end, and its types may change
/// their spelling without changing what the program reads.
#[must_use]
pub fn args_match(found: &[String], expected: &[&str]) -> bool {
    found.len() >= expected.len()
        && found.iter().zip(expected).all(|(f, e)| normalize(f) == normalize(e))
}

/// The OOM victim tracepoint and the leading arguments its program reads (as
/// [`Btf::tracepoint_args`] spells them), as on Linux 6.18; until at least 6.8 it took only
/// `int pid`.
pub const OOM_TRACEPOINT: Tracepoint = Tracepoint {
    name: "mark_victim",
    nested: &[],
    floor: "",
    args: &["struct task_struct *", "uid_t"],
};

/// The tracepoint at the start of every memcg reclaim (`try_to_free_mem_cgroup_pages`); its
/// program reads no argument, only `current->reclaim_state`.
pub const OOM_RECLAIM_TRACEPOINT: &str = "mm_vmscan_memcg_reclaim_begin";

/// The shrinker tracepoints and the leading arguments their programs read (as
/// [`Btf::tracepoint_args`] spells them), as on Linux 6.18 and long before: the start program
/// reads the shrinker and `total_scan`, the end program the shrinker, the objects freed and
/// `total_scan`; the arguments in between are checked so that those are where it reads them.
pub const SHRINKER_TRACEPOINTS: [Tracepoint; 2] = [
    Tracepoint {
        name: "mm_shrink_slab_start",
        nested: &[],
        floor: "",
        args: &[
            "struct shrinker *",
            "struct shrink_control *",
            "long",
            "unsigned long",
            "unsigned long long",
            "unsigned long",
        ],
    },
    Tracepoint {
        name: "mm_shrink_slab_end",
        nested: &[],
        floor: "",
        args: &["struct shrinker *", "int", "int", "long", "long", "long"],
    },
];

/// A kernel slabtrace cannot trace, said in one sentence.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// No `btf_trace_<name>` in BTF.
    #[error(
        "the kernel has no tracepoint kmem:{0} in its BTF: slabtrace needs Linux 5.10 or later \
         with CONFIG_TRACEPOINTS and CONFIG_DEBUG_INFO_BTF"
    )]
    MissingTracepoint(&'static str),
    /// The signature differs from the one the program reads.
    #[error(
        "tracepoint kmem:{name} has arguments ({found}) but slabtrace was written for ({expected}): \
         this kernel's layout is not supported yet, please report it"
    )]
    TracepointLayout {
        /// Which tracepoint.
        name: &'static str,
        /// What BTF says.
        found: String,
        /// What we read.
        expected: String,
    },
    /// A struct field the programs read is not in BTF.
    #[error(
        "the kernel's BTF has no field {0}, which slabtrace reads: this kernel's layout is not \
         supported yet, please report it"
    )]
    MissingField(&'static str),
}

/// What slabtrace learned about the running kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// How the kmem programs attach here, or why slabtrace cannot trace this kernel.
    pub kmem: Result<KmemHooks, LayoutError>,
    /// Whether the kernel has `bpf_get_current_task_btf` (5.11 and later).
    pub task_btf: bool,
    /// Whether BPF maps are charged to `RLIMIT_MEMLOCK` (`struct bpf_map` has `memory`: before
    /// Linux 5.11), so that raising that limit needs `CAP_SYS_RESOURCE`.
    pub memlock_maps: bool,
    /// `struct kmem_cache` offsets: name, size, `object_size`, flags.
    pub cache_offsets: [u32; 4],
    /// `__GFP_ACCOUNT`, `__GFP_RECLAIMABLE`, `__GFP_DMA` masks.
    pub gfp: GfpBits,
    /// `SLAB_ACCOUNT` and `SLAB_RECLAIM_ACCOUNT` masks of `kmem_cache.flags`.
    pub slab: SlabFlags,
    /// Offset of `task_struct.stack` and the task stack size, when interrupt context can be
    /// told apart by the stack the probe runs on (x86-64, where interrupts have their own
    /// stacks); None elsewhere.
    pub task_stack: Option<(u32, u32)>,
    /// What the OOM programs read, or why they cannot run on this kernel.
    pub oom: Result<OomLayout, OomLayoutError>,
    /// What the shrinker programs read, or why they cannot run on this kernel.
    pub shrinker: Result<ShrinkerLayout, ShrinkerLayoutError>,
}

/// Why the shrinker programs cannot run on this kernel (slab tracing still can), in one
/// sentence.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShrinkerLayoutError {
    /// No `btf_trace_<name>`.
    #[error("the kernel has no tracepoint vmscan:{0} in its BTF")]
    MissingTracepoint(&'static str),
    /// Another signature than the programs read.
    #[error(
        "tracepoint vmscan:{name} has arguments ({found}) but slabtrace reads ({expected}), as on \
         Linux 6.18"
    )]
    TracepointLayout {
        /// Which tracepoint.
        name: &'static str,
        /// What BTF says.
        found: String,
        /// What the program reads.
        expected: String,
    },
    /// `struct shrinker` has no `scan_objects`, or not a pointer.
    #[error(
        "the kernel's BTF has no pointer field shrinker.scan_objects, which the shrinker programs read"
    )]
    MissingScanObjects,
}

/// Field offsets the shrinker programs read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkerLayout {
    /// `shrinker.scan_objects`.
    pub scan_objects: u32,
    /// `shrinker.name`, which exists only with `CONFIG_SHRINKER_DEBUG` (Linux 6.0 and later).
    pub name: Option<u32>,
}

impl ShrinkerLayout {
    /// Reads the shrinker programs' facts from `btf`: both tracepoints' signatures, and
    /// `scan_objects` (and `name`, if there) as 8-byte pointers.
    pub fn from_btf(btf: &Btf) -> Result<Self, ShrinkerLayoutError> {
        for tp in &SHRINKER_TRACEPOINTS {
            let found = btf
                .tracepoint_args(tp.name)
                .ok_or(ShrinkerLayoutError::MissingTracepoint(tp.name))?;
            if !args_match(&found, tp.args) {
                return Err(ShrinkerLayoutError::TracepointLayout {
                    name: tp.name,
                    found: found.join(", "),
                    expected: tp.args.join(", "),
                });
            }
        }
        let pointer = |member: &str| {
            let offset = btf.member_offset("shrinker", member)?;
            (btf.member_size("shrinker", member) == Some(8)).then_some(offset)
        };
        let scan_objects =
            pointer("scan_objects").ok_or(ShrinkerLayoutError::MissingScanObjects)?;
        Ok(Self { scan_objects, name: pointer("name") })
    }
}

/// Why the OOM programs cannot run on this kernel (slab tracing still can), in one sentence.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum OomLayoutError {
    /// No `btf_trace_<name>`.
    #[error("the kernel has no tracepoint {0} in its BTF")]
    MissingTracepoint(&'static str),
    /// The older `mark_victim(int pid)`, or something newer.
    #[error(
        "tracepoint oom:mark_victim has arguments ({found}) but slabtrace reads ({expected}), as \
         on Linux 6.18"
    )]
    TracepointLayout {
        /// What BTF says.
        found: String,
        /// What the program reads.
        expected: String,
    },
    /// A field the OOM programs read is not in BTF.
    #[error("the kernel's BTF has no field {0}, which the OOM programs read")]
    MissingField(&'static str),
    /// A field the OOM programs read has another size than they read.
    #[error("{field} is {found} bytes in the kernel's BTF, but the OOM programs read {expected}")]
    FieldSize {
        /// Which field.
        field: &'static str,
        /// Its size in BTF (0 if BTF does not say).
        found: u32,
        /// The size read.
        expected: u32,
    },
}

/// Field offsets the OOM programs read, each checked for the size they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomLayout {
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `signal_struct.oom_score_adj`.
    pub signal_oom_score_adj: u32,
    /// `css_set.dfl_cgrp`.
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kernfs_node_id: u32,
    /// `task_struct.reclaim_state`.
    pub task_reclaim_state: u32,
    /// `scan_control.reclaim_state` (embedded).
    pub sc_reclaim_state: u32,
    /// `scan_control.target_mem_cgroup`.
    pub sc_target_memcg: u32,
    /// `mem_cgroup.css` + `cgroup_subsys_state.cgroup`.
    pub memcg_cgroup: u32,
}

impl OomLayout {
    /// Reads the OOM programs' facts from `btf`: both tracepoints and every field, with the
    /// size the programs read (pointers are read as 8 bytes).
    pub fn from_btf(btf: &Btf) -> Result<Self, OomLayoutError> {
        let found = btf
            .tracepoint_args(OOM_TRACEPOINT.name)
            .ok_or(OomLayoutError::MissingTracepoint("oom:mark_victim"))?;
        let expected = OOM_TRACEPOINT.args;
        if !args_match(&found, expected) {
            return Err(OomLayoutError::TracepointLayout {
                found: found.join(", "),
                expected: expected.join(", "),
            });
        }
        btf.tracepoint_args(OOM_RECLAIM_TRACEPOINT)
            .ok_or(OomLayoutError::MissingTracepoint("vmscan:mm_vmscan_memcg_reclaim_begin"))?;
        let field = |s: &str, m: &str, what: &'static str, size: u32| {
            let offset = btf.member_offset(s, m).ok_or(OomLayoutError::MissingField(what))?;
            match btf.member_size(s, m) {
                Some(found) if found == size => Ok(offset),
                found => Err(OomLayoutError::FieldSize {
                    field: what,
                    found: found.unwrap_or(0),
                    expected: size,
                }),
            }
        };
        // Embedded structs: only their offsets matter.
        let embedded = |s: &str, m: &str, what: &'static str| {
            btf.member_offset(s, m).ok_or(OomLayoutError::MissingField(what))
        };
        let memcg_css = embedded("mem_cgroup", "css", "mem_cgroup.css")?;
        let css_cgroup = field("cgroup_subsys_state", "cgroup", "cgroup_subsys_state.cgroup", 8)?;
        Ok(Self {
            task_tgid: field("task_struct", "tgid", "task_struct.tgid", 4)?,
            task_pid: field("task_struct", "pid", "task_struct.pid", 4)?,
            task_comm: field("task_struct", "comm", "task_struct.comm", 16)?,
            task_cgroups: field("task_struct", "cgroups", "task_struct.cgroups", 8)?,
            task_signal: field("task_struct", "signal", "task_struct.signal", 8)?,
            signal_oom_score_adj: field(
                "signal_struct",
                "oom_score_adj",
                "signal_struct.oom_score_adj",
                2,
            )?,
            css_set_dfl_cgrp: field("css_set", "dfl_cgrp", "css_set.dfl_cgrp", 8)?,
            cgroup_kn: field("cgroup", "kn", "cgroup.kn", 8)?,
            kernfs_node_id: field("kernfs_node", "id", "kernfs_node.id", 8)?,
            task_reclaim_state: field(
                "task_struct",
                "reclaim_state",
                "task_struct.reclaim_state",
                8,
            )?,
            sc_reclaim_state: embedded(
                "scan_control",
                "reclaim_state",
                "scan_control.reclaim_state",
            )?,
            sc_target_memcg: field(
                "scan_control",
                "target_mem_cgroup",
                "scan_control.target_mem_cgroup",
                8,
            )?,
            memcg_cgroup: memcg_css + css_cgroup,
        })
    }
}

/// x86-64's `THREAD_SIZE`: 16 KiB, doubled under KASAN.
const X86_64_THREAD_SIZE: u32 = 16 * 1024;

/// GFP bits as masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GfpBits {
    /// `__GFP_ACCOUNT`.
    pub account: u64,
    /// `__GFP_RECLAIMABLE`.
    pub reclaimable: u64,
    /// `__GFP_DMA`.
    pub dma: u64,
}

/// Slab cache flag bits as masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabFlags {
    /// `SLAB_ACCOUNT`: every object is charged to the allocating memcg.
    pub account: u32,
    /// `SLAB_RECLAIM_ACCOUNT`: objects are reclaimable (`SReclaimable` in /proc/meminfo).
    pub reclaim_account: u32,
    /// Whether accounted kmallocs have caches of their own, `kmalloc-cg-*` (Linux 5.14 and
    /// later: `KMALLOC_CGROUP` in BTF); before, they share the plain `kmalloc-*` caches.
    pub kmalloc_cgroup: bool,
}

impl KernelLayout {
    /// Reads everything from `btf`. Missing fields are an error; missing flag enums fall back
    /// to the values those flags had before they became enums (Linux 6.8/6.9).
    pub fn from_btf(btf: &Btf) -> Result<Self, LayoutError> {
        let offset = |member: &'static str, what: &'static str| {
            btf.member_offset("kmem_cache", member).ok_or(LayoutError::MissingField(what))
        };
        let cache_offsets = [
            offset("name", "kmem_cache.name")?,
            offset("size", "kmem_cache.size")?,
            offset("object_size", "kmem_cache.object_size")?,
            offset("flags", "kmem_cache.flags")?,
        ];
        let mut fallbacks = Vec::new();
        let mut bit = |name: &'static str, fallback: u64| match btf.enum_value(name) {
            Some(bit) if (0..64).contains(&bit) => 1u64 << bit,
            _ => {
                fallbacks.push(name);
                fallback
            }
        };
        let gfp = GfpBits {
            account: bit("___GFP_ACCOUNT_BIT", 0x40_0000),
            reclaimable: bit("___GFP_RECLAIMABLE_BIT", 0x10),
            dma: bit("___GFP_DMA_BIT", 0x01),
        };
        #[expect(clippy::cast_possible_truncation, reason = "slab flags are 32 bits wide")]
        let slab = SlabFlags {
            account: bit("_SLAB_ACCOUNT", 0x0400_0000) as u32,
            reclaim_account: bit("_SLAB_RECLAIM_ACCOUNT", 0x0002_0000) as u32,
            kmalloc_cgroup: btf.enum_value("KMALLOC_CGROUP").is_some(),
        };
        if !fallbacks.is_empty() {
            // Expected before Linux 6.8, where these were macros, which BTF does not carry.
            info!(
                "{} not in the kernel's BTF: using the values they have had since Linux 4.x",
                fallbacks.join(", ")
            );
        }
        let kmem = KmemHooks::detect(
            |tp| btf.tracepoint_args(tp),
            |function| btf.function_args(function).map(|(params, _)| params),
        );
        let task_btf = btf.enum_value("BPF_FUNC_get_current_task_btf").is_some();
        let memlock_maps = btf.member_offset("bpf_map", "memory").is_some();
        let task_stack = if cfg!(target_arch = "x86_64") {
            let kasan = btf.member_offset("kmem_cache", "kasan_info").is_some();
            let size = if kasan { 2 * X86_64_THREAD_SIZE } else { X86_64_THREAD_SIZE };
            btf.member_offset("task_struct", "stack").map(|off| (off, size))
        } else {
            None
        };
        if task_stack.is_none() {
            warn!(
                "cannot tell interrupt context apart on this kernel: allocations in interrupts are charged to the interrupted task's cgroup"
            );
        }
        let oom = OomLayout::from_btf(btf);
        let shrinker = ShrinkerLayout::from_btf(btf);
        Ok(Self {
            kmem,
            task_btf,
            memlock_maps,
            cache_offsets,
            gfp,
            slab,
            task_stack,
            oom,
            shrinker,
        })
    }

    /// The load-time constant for these facts and a sample of 1 in `sample` (a power of two).
    #[must_use]
    pub fn config(&self, sample: u32) -> Config {
        let [name, size, object_size, flags] = self.cache_offsets;
        let oom = self.oom.as_ref().ok();
        let shrinker = self.shrinker.as_ref().ok();
        Config {
            sample_mask: u64::from(sample.max(1) - 1),
            gfp_account: self.gfp.account,
            gfp_reclaimable: self.gfp.reclaimable,
            gfp_dma: self.gfp.dma,
            off_cache_name: name,
            off_cache_size: size,
            off_cache_object_size: object_size,
            off_cache_flags: flags,
            off_task_stack: self.task_stack.map_or(0, |(off, _)| off),
            thread_size: self.task_stack.map_or(0, |(_, size)| size),
            // Zeros when the OOM programs cannot run: they are not attached then.
            off_task_tgid: oom.map_or(0, |o| o.task_tgid),
            off_task_pid: oom.map_or(0, |o| o.task_pid),
            off_task_comm: oom.map_or(0, |o| o.task_comm),
            off_task_cgroups: oom.map_or(0, |o| o.task_cgroups),
            off_task_signal: oom.map_or(0, |o| o.task_signal),
            off_signal_oom_score_adj: oom.map_or(0, |o| o.signal_oom_score_adj),
            off_css_set_dfl_cgrp: oom.map_or(0, |o| o.css_set_dfl_cgrp),
            off_cgroup_kn: oom.map_or(0, |o| o.cgroup_kn),
            off_kernfs_node_id: oom.map_or(0, |o| o.kernfs_node_id),
            off_task_reclaim_state: oom.map_or(0, |o| o.task_reclaim_state),
            off_sc_reclaim_state: oom.map_or(0, |o| o.sc_reclaim_state),
            off_sc_target_memcg: oom.map_or(0, |o| o.sc_target_memcg),
            off_memcg_cgroup: oom.map_or(0, |o| o.memcg_cgroup),
            // Zeros when the shrinker programs cannot run: they are not attached then.
            off_shrinker_scan_objects: shrinker.map_or(0, |s| s.scan_objects),
            off_shrinker_name: shrinker.and_then(|s| s.name).unwrap_or(0),
            shrinker_has_name: u32::from(shrinker.is_some_and(|s| s.name.is_some())),
            call_sites: 0,
            free_has_cache: u32::from(self.kmem.as_ref().is_ok_and(|k| k.free_has_cache)),
            task_btf: u32::from(self.task_btf),
            // The loader writes its own pid, the salt and the table's geometry.
            self_tgid: 0,
            sample_salt: 0,
            live_set_bits: 1,
            track_live: 1,
            count_events: 1,
            count_sample_mask: 0,
            cgroup_cache: 1,
            padding: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KernelLayout {
        KernelLayout {
            kmem: Ok(KmemHooks {
                cache_alloc: CacheAlloc::Tracepoint,
                kmalloc: vec!["kmalloc"],
                free_has_cache: true,
            }),
            task_btf: true,
            memlock_maps: false,
            cache_offsets: [96, 24, 28, 8],
            gfp: GfpBits { account: 1 << 22, reclaimable: 1 << 4, dma: 1 },
            slab: SlabFlags { account: 1 << 26, reclaim_account: 1 << 17, kmalloc_cgroup: true },
            task_stack: Some((32, 16384)),
            oom: Err(OomLayoutError::MissingTracepoint("oom:mark_victim")),
            shrinker: Err(ShrinkerLayoutError::MissingScanObjects),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A kernel's kmem tracepoints and functions, as BTF spells them.
    struct Kernel {
        tracepoints: Vec<(&'static str, Vec<String>)>,
        functions: Vec<(&'static str, Vec<String>)>,
    }

    impl Kernel {
        fn detect(&self) -> Result<KmemHooks, LayoutError> {
            KmemHooks::detect(
                |tp| self.tracepoints.iter().find(|(n, _)| *n == tp).map(|(_, a)| a.clone()),
                |f| self.functions.iter().find(|(n, _)| *n == f).map(|(_, a)| a.clone()),
            )
        }

        /// Linux 6.1 to 6.18 (6.18's spelling).
        fn linux_6() -> Self {
            Self {
                tracepoints: vec![
                    (
                        "kmem_cache_alloc",
                        strings(&[
                            "unsigned long",
                            "const void *",
                            "struct kmem_cache *",
                            "gfp_t",
                            "int",
                        ]),
                    ),
                    (
                        "kmem_cache_free",
                        strings(&["unsigned long", "const void *", "const struct kmem_cache *"]),
                    ),
                    (
                        "kmalloc",
                        strings(&[
                            "unsigned long",
                            "const void *",
                            "size_t",
                            "size_t",
                            "gfp_t",
                            "int",
                        ]),
                    ),
                    ("kfree", strings(&["unsigned long", "const void *"])),
                ],
                functions: vec![],
            }
        }

        /// Linux 5.10 (5.15 differs only by `kmem_cache_free`'s `const char *name`).
        fn linux_5_10() -> Self {
            let kmalloc = strings(&["unsigned long", "const void *", "size_t", "size_t", "gfp_t"]);
            let mut node = kmalloc.clone();
            node.push("int".to_owned());
            Self {
                tracepoints: vec![
                    ("kmem_cache_alloc", kmalloc.clone()),
                    ("kmem_cache_alloc_node", node.clone()),
                    ("kmem_cache_free", strings(&["unsigned long", "const void *"])),
                    ("kmalloc", kmalloc),
                    ("kmalloc_node", node),
                    ("kfree", strings(&["unsigned long", "const void *"])),
                ],
                functions: vec![
                    ("kmem_cache_alloc", strings(&["struct kmem_cache *", "gfp_t"])),
                    ("kmem_cache_alloc_node", strings(&["struct kmem_cache *", "gfp_t", "int"])),
                ],
            }
        }
    }

    #[test]
    fn linux_6_has_every_tracepoint_it_needs() {
        let hooks = Kernel::linux_6().detect().unwrap();
        assert_eq!(hooks.cache_alloc, CacheAlloc::Tracepoint);
        assert_eq!(hooks.kmalloc, ["kmalloc"]);
        assert!(hooks.free_has_cache);
    }

    #[test]
    fn before_6_1_allocations_are_traced_on_return_from_the_functions_there() {
        let hooks = Kernel::linux_5_10().detect().unwrap();
        assert_eq!(
            hooks.cache_alloc,
            CacheAlloc::Fexit(vec![
                ("kmem_cache_alloc", "kmem_cache_alloc_exit"),
                ("kmem_cache_alloc_node", "kmem_cache_alloc_node_exit"),
            ])
        );
        assert_eq!(hooks.kmalloc, ["kmalloc", "kmalloc_node"]);
        assert!(!hooks.free_has_cache);
    }

    #[test]
    fn cosmetic_changes_of_a_signature_are_tolerated() {
        let mut k = Kernel::linux_6();
        // gfp_t spelled as its integer, size_t as unsigned long, const dropped.
        k.tracepoints[0].1[3] = "unsigned int".to_owned();
        k.tracepoints[2].1[2] = "unsigned long".to_owned();
        k.tracepoints[1].1[2] = "struct kmem_cache *".to_owned();
        let hooks = k.detect().unwrap();
        assert_eq!(hooks.cache_alloc, CacheAlloc::Tracepoint);
        assert!(hooks.free_has_cache);
    }

    #[test]
    fn an_unknown_signature_is_refused_with_both_spelled_out() {
        // A 5.x kmem_cache_alloc tracepoint without the functions fexit needs.
        let mut k = Kernel::linux_5_10();
        k.functions.clear();
        let text = k.detect().unwrap_err().to_string();
        assert!(text.contains("size_t, size_t"), "{text}");
        assert!(text.contains("struct kmem_cache *"), "{text}");
        // A kmalloc whose bytes_alloc is not where the program reads it.
        let mut k = Kernel::linux_6();
        k.tracepoints[2].1[3] = "struct foo *".to_owned();
        assert!(matches!(k.detect(), Err(LayoutError::TracepointLayout { name: "kmalloc", .. })));
    }

    #[test]
    fn a_missing_tracepoint_is_named() {
        let mut k = Kernel::linux_6();
        k.tracepoints.retain(|(n, _)| *n != "kfree");
        assert_eq!(k.detect(), Err(LayoutError::MissingTracepoint("kfree")));
    }

    #[test]
    fn config_carries_offsets_and_the_sample_mask() {
        let c = layout().config(64);
        assert_eq!(c.sample_mask, 63);
        assert_eq!(c.off_cache_name, 96);
        assert_eq!(c.off_cache_flags, 8);
        assert_eq!(c.gfp_account, 1 << 22);
        assert_eq!(layout().config(1).sample_mask, 0);
        assert_eq!((c.off_task_stack, c.thread_size), (32, 16384));
        let no_irq = KernelLayout { task_stack: None, ..layout() };
        assert_eq!(no_irq.config(1).thread_size, 0);
    }

    #[test]
    fn config_carries_oom_offsets_only_when_the_oom_programs_can_run() {
        let no_oom = layout().config(1);
        assert_eq!(
            (no_oom.off_task_tgid, no_oom.off_sc_target_memcg, no_oom.off_memcg_cgroup),
            (0, 0, 0)
        );
        let oom = OomLayout::from_btf(&oom_btf(OomKernel::Current)).expect("oom layout");
        let c = KernelLayout { oom: Ok(oom), ..layout() }.config(1);
        assert_eq!((c.off_task_pid, c.off_task_tgid, c.off_task_comm), (0, 4, 8));
        assert_eq!(
            (c.off_task_cgroups, c.off_task_signal, c.off_signal_oom_score_adj),
            (24, 32, 8)
        );
        assert_eq!((c.off_css_set_dfl_cgrp, c.off_cgroup_kn, c.off_kernfs_node_id), (16, 64, 32));
        assert_eq!(
            (c.off_task_reclaim_state, c.off_sc_reclaim_state, c.off_sc_target_memcg),
            (40, 112, 16)
        );
        assert_eq!((c.off_memcg_cgroup, c.self_tgid), (8 + 16, 0));
        // The kmem half is untouched.
        assert_eq!((c.off_cache_name, c.thread_size), (96, 16384));
    }

    /// Kernels the OOM layout is read from: 6.18's shape and the ways others differ.
    #[derive(Clone, Copy, Debug)]
    enum OomKernel {
        Current,
        /// `mark_victim(int pid)`, as until at least 6.8.
        PidOnly,
        NoTracepoint,
        NoReclaimTracepoint,
        /// A `kernfs_node` without `id`.
        NoKernfsId,
        /// `oom_score_adj` as an int.
        WideScoreAdj,
    }

    /// A BTF blob with just the types the OOM programs read, shaped like `kernel`.
    fn oom_btf(kernel: OomKernel) -> Btf {
        use crate::kernel::btf::tests::Builder;
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let uint = b.int("unsigned int", 4);
        let short = b.int("short", 2);
        let u64_ = b.int("long long unsigned int", 8);
        let ulong = b.int("long unsigned int", 8);
        let char_ = b.int("char", 1);
        let comm = b.ty("", 3, false, 0, 0, &[char_, int, 16]);
        let void_ptr = b.ptr(0);
        let kn_id = if matches!(kernel, OomKernel::NoKernfsId) { "ino" } else { "id" };
        let kn = b.composite("kernfs_node", false, false, 64, &[(kn_id, u64_, 256)]);
        let kn_ptr = b.ptr(kn);
        let cgroup = b.composite("cgroup", false, false, 128, &[("kn", kn_ptr, 512)]);
        let cgroup_ptr = b.ptr(cgroup);
        let css_set = b.composite("css_set", false, false, 64, &[("dfl_cgrp", cgroup_ptr, 128)]);
        let css_set_ptr = b.ptr(css_set);
        let css =
            b.composite("cgroup_subsys_state", false, false, 32, &[("cgroup", cgroup_ptr, 128)]);
        let memcg =
            b.composite("mem_cgroup", false, false, 64, &[("id", ulong, 0), ("css", css, 64)]);
        let memcg_ptr = b.ptr(memcg);
        let adj = if matches!(kernel, OomKernel::WideScoreAdj) { int } else { short };
        let signal = b.composite("signal_struct", false, false, 16, &[("oom_score_adj", adj, 64)]);
        let signal_ptr = b.ptr(signal);
        let reclaim_state =
            b.composite("reclaim_state", false, false, 8, &[("reclaimed", ulong, 0)]);
        let reclaim_state_ptr = b.ptr(reclaim_state);
        b.composite(
            "scan_control",
            false,
            false,
            120,
            &[
                ("nr_to_reclaim", ulong, 0),
                ("target_mem_cgroup", memcg_ptr, 128),
                ("reclaim_state", reclaim_state, 896),
            ],
        );
        let task = b.composite(
            "task_struct",
            false,
            false,
            48,
            &[
                ("pid", int, 0),
                ("tgid", int, 32),
                ("comm", comm, 64),
                ("cgroups", css_set_ptr, 192),
                ("signal", signal_ptr, 256),
                ("reclaim_state", reclaim_state_ptr, 320),
            ],
        );
        let task_ptr = b.ptr(task);
        let uid_t = b.typedef("uid_t", uint);
        let gfp_t = b.typedef("gfp_t", uint);
        let params: &[u32] = match kernel {
            OomKernel::PidOnly => &[void_ptr, int],
            _ => &[void_ptr, task_ptr, uid_t],
        };
        let proto = b.func_proto(0, params);
        let proto_ptr = b.ptr(proto);
        if !matches!(kernel, OomKernel::NoTracepoint) {
            b.typedef("btf_trace_mark_victim", proto_ptr);
        }
        let reclaim = b.func_proto(0, &[void_ptr, int, gfp_t]);
        let reclaim_ptr = b.ptr(reclaim);
        if !matches!(kernel, OomKernel::NoReclaimTracepoint) {
            b.typedef("btf_trace_mm_vmscan_memcg_reclaim_begin", reclaim_ptr);
        }
        Btf::parse(&b.build()).expect("fixture BTF")
    }

    #[test]
    fn oom_layout_reads_or_says_why_not() {
        let cases: [(OomKernel, Result<(), OomLayoutError>); 6] = [
            (OomKernel::Current, Ok(())),
            (
                OomKernel::PidOnly,
                Err(OomLayoutError::TracepointLayout {
                    found: "int".into(),
                    expected: "struct task_struct *, uid_t".into(),
                }),
            ),
            (OomKernel::NoTracepoint, Err(OomLayoutError::MissingTracepoint("oom:mark_victim"))),
            (
                OomKernel::NoReclaimTracepoint,
                Err(OomLayoutError::MissingTracepoint("vmscan:mm_vmscan_memcg_reclaim_begin")),
            ),
            (OomKernel::NoKernfsId, Err(OomLayoutError::MissingField("kernfs_node.id"))),
            (
                OomKernel::WideScoreAdj,
                Err(OomLayoutError::FieldSize {
                    field: "signal_struct.oom_score_adj",
                    found: 4,
                    expected: 2,
                }),
            ),
        ];
        for (kernel, expected) in cases {
            let got = OomLayout::from_btf(&oom_btf(kernel)).map(|_| ());
            assert_eq!(got, expected, "{kernel:?}");
        }
    }

    #[test]
    fn oom_layout_errors_are_one_sentence() {
        let e = OomLayoutError::TracepointLayout { found: "int".into(), expected: "x".into() };
        assert_eq!(
            e.to_string(),
            "tracepoint oom:mark_victim has arguments (int) but slabtrace reads (x), as on Linux 6.18"
        );
        assert_eq!(
            OomLayoutError::MissingTracepoint("oom:mark_victim").to_string(),
            "the kernel has no tracepoint oom:mark_victim in its BTF"
        );
    }

    /// Kernels the shrinker layout is read from: 6.18's shape and the ways others differ.
    #[derive(Clone, Copy, Debug)]
    enum ShrinkerKernel {
        /// Linux 6.18 without `CONFIG_SHRINKER_DEBUG`, as on the test machine.
        Current,
        /// With `CONFIG_SHRINKER_DEBUG`: `shrinker.name`.
        Debug,
        NoEndTracepoint,
        /// `mm_shrink_slab_end` before `nid` was added: the program would read the wrong
        /// arguments.
        EndWithoutNid,
        /// `scan_objects` under another name.
        NoScanObjects,
    }

    /// A BTF blob with just the types the shrinker programs read, shaped like `kernel`.
    fn shrinker_btf(kernel: ShrinkerKernel) -> Btf {
        use crate::kernel::btf::tests::Builder;
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let long = b.int("long int", 8);
        let ulong = b.int("long unsigned int", 8);
        let u64_ = b.int("long long unsigned int", 8);
        let char_ = b.int("char", 1);
        let const_char = b.konst(char_);
        let name_ptr = b.ptr(const_char);
        let void_ptr = b.ptr(0);
        let sc = b.composite("shrink_control", false, false, 8, &[("nr_to_scan", ulong, 0)]);
        let sc_ptr = b.ptr(sc);
        // The callbacks' prototypes only matter as pointers here.
        let scan_proto = b.func_proto(ulong, &[]);
        let scan_ptr = b.ptr(scan_proto);
        let scan_member =
            if matches!(kernel, ShrinkerKernel::NoScanObjects) { "scan" } else { "scan_objects" };
        let mut members = vec![("count_objects", scan_ptr, 0), (scan_member, scan_ptr, 64)];
        members.push(("batch", long, 128));
        if matches!(kernel, ShrinkerKernel::Debug) {
            members.push(("name", name_ptr, 192));
        }
        let shrinker = b.composite("shrinker", false, false, 32, &members);
        let shrinker_ptr = b.ptr(shrinker);
        let start =
            b.func_proto(0, &[void_ptr, shrinker_ptr, sc_ptr, long, ulong, u64_, ulong, int]);
        let start_ptr = b.ptr(start);
        b.typedef("btf_trace_mm_shrink_slab_start", start_ptr);
        let end_params: &[u32] = match kernel {
            ShrinkerKernel::EndWithoutNid => &[void_ptr, shrinker_ptr, int, long, long, long],
            _ => &[void_ptr, shrinker_ptr, int, int, long, long, long],
        };
        let end = b.func_proto(0, end_params);
        let end_ptr = b.ptr(end);
        if !matches!(kernel, ShrinkerKernel::NoEndTracepoint) {
            b.typedef("btf_trace_mm_shrink_slab_end", end_ptr);
        }
        Btf::parse(&b.build()).expect("fixture BTF")
    }

    #[test]
    fn shrinker_layout_reads_or_says_why_not() {
        let cases: [(ShrinkerKernel, Result<ShrinkerLayout, ShrinkerLayoutError>); 5] = [
            (ShrinkerKernel::Current, Ok(ShrinkerLayout { scan_objects: 8, name: None })),
            (ShrinkerKernel::Debug, Ok(ShrinkerLayout { scan_objects: 8, name: Some(24) })),
            (
                ShrinkerKernel::NoEndTracepoint,
                Err(ShrinkerLayoutError::MissingTracepoint("mm_shrink_slab_end")),
            ),
            (
                ShrinkerKernel::EndWithoutNid,
                Err(ShrinkerLayoutError::TracepointLayout {
                    name: "mm_shrink_slab_end",
                    found: "struct shrinker *, int, long, long, long".into(),
                    expected: "struct shrinker *, int, int, long, long, long".into(),
                }),
            ),
            (ShrinkerKernel::NoScanObjects, Err(ShrinkerLayoutError::MissingScanObjects)),
        ];
        for (kernel, expected) in cases {
            assert_eq!(ShrinkerLayout::from_btf(&shrinker_btf(kernel)), expected, "{kernel:?}");
        }
    }

    #[test]
    fn config_carries_shrinker_offsets_only_when_the_shrinker_programs_can_run() {
        let none = layout().config(1);
        assert_eq!(
            (none.off_shrinker_scan_objects, none.off_shrinker_name, none.shrinker_has_name),
            (0, 0, 0)
        );
        let unnamed = ShrinkerLayout { scan_objects: 8, name: None };
        let c = KernelLayout { shrinker: Ok(unnamed), ..layout() }.config(1);
        assert_eq!(
            (c.off_shrinker_scan_objects, c.off_shrinker_name, c.shrinker_has_name),
            (8, 0, 0)
        );
        let named = ShrinkerLayout { scan_objects: 8, name: Some(24) };
        let c = KernelLayout { shrinker: Ok(named), ..layout() }.config(1);
        assert_eq!(
            (c.off_shrinker_scan_objects, c.off_shrinker_name, c.shrinker_has_name, c.call_sites),
            (8, 24, 1, 0)
        );
        // The kmem half is untouched.
        assert_eq!((c.off_cache_name, c.thread_size), (96, 16384));
    }

    #[test]
    fn shrinker_layout_errors_are_one_sentence() {
        let e = ShrinkerLayoutError::TracepointLayout {
            name: "mm_shrink_slab_end",
            found: "a".into(),
            expected: "b".into(),
        };
        assert_eq!(
            e.to_string(),
            "tracepoint vmscan:mm_shrink_slab_end has arguments (a) but slabtrace reads (b), as on \
             Linux 6.18"
        );
    }
}
