//! The kernel facts the BPF programs depend on, read from BTF: the tracepoints' signatures,
//! `struct kmem_cache` field offsets, and GFP and slab flag bits.
//!
//! Probe the feature, then fall back, then say so: flag bits that older kernels define only as
//! macros (and so not in BTF) fall back to their long-stable values, with a log line.

use log::warn;
use slabtrace_common::Config;

use super::btf::Btf;

/// A tracepoint slabtrace attaches to and the leading arguments it reads, spelled as
/// [`Btf::tracepoint_args`] spells them (the `void *` context left out).
#[derive(Debug)]
pub struct Tracepoint {
    /// Name under `kmem:` and of the BPF program.
    pub name: &'static str,
    /// The programs for events in interrupt context, if this tracepoint has them (attached
    /// when interrupt context can be told apart).
    pub irq: &'static [&'static str],
    /// The empty program on the same tracepoint (the bench's floor).
    pub floor: &'static str,
    /// The arguments the program reads, in order; later ones may follow.
    pub args: &'static [&'static str],
}

/// Every tracepoint slabtrace needs, with the signature its program was written against
/// (include/trace/events/kmem.h, Linux 6.1 and later).
pub const TRACEPOINTS: [Tracepoint; 4] = [
    Tracepoint {
        name: "kmem_cache_alloc",
        irq: &[],
        floor: "floor_kmem_cache_alloc",
        args: &["unsigned long", "const void *", "struct kmem_cache *", "gfp_t"],
    },
    Tracepoint {
        name: "kmem_cache_free",
        irq: &["kmem_cache_free_irq", "kmem_cache_free_irq2"],
        floor: "floor_kmem_cache_free",
        args: &["unsigned long", "const void *", "const struct kmem_cache *"],
    },
    Tracepoint {
        name: "kmalloc",
        irq: &[],
        floor: "floor_kmalloc",
        args: &["unsigned long", "const void *", "size_t", "size_t", "gfp_t"],
    },
    Tracepoint {
        name: "kfree",
        irq: &[],
        floor: "floor_kfree",
        args: &["unsigned long", "const void *"],
    },
];

/// A kernel slabtrace cannot trace, said in one sentence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// No `btf_trace_<name>` in BTF.
    #[error(
        "the kernel has no tracepoint kmem:{0} in its BTF: slabtrace needs Linux 6.1 or later \
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
    /// Each tracepoint's arguments as BTF spells them, or None if BTF lacks it.
    pub tracepoint_args: Vec<(&'static str, Option<Vec<String>>)>,
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
        let bit = |name: &str, fallback: u64| match btf.enum_value(name) {
            Some(bit) if (0..64).contains(&bit) => 1u64 << bit,
            _ => {
                warn!(
                    "{name} not in the kernel's BTF; assuming {fallback:#x}, its value before Linux 6.8"
                );
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
        };
        let tracepoint_args =
            TRACEPOINTS.iter().map(|tp| (tp.name, btf.tracepoint_args(tp.name))).collect();
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
        Ok(Self { tracepoint_args, cache_offsets, gfp, slab, task_stack })
    }

    /// Fails unless tracepoint `name` exists with the arguments its program reads.
    pub fn check_tracepoint(&self, name: &'static str) -> Result<(), LayoutError> {
        let expected = TRACEPOINTS.iter().find(|tp| tp.name == name).map_or(&[][..], |tp| tp.args);
        let found = self
            .tracepoint_args
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, args)| args.as_ref())
            .ok_or(LayoutError::MissingTracepoint(name))?;
        let matches =
            found.len() >= expected.len() && found.iter().zip(expected).all(|(f, e)| f == e);
        if matches {
            Ok(())
        } else {
            Err(LayoutError::TracepointLayout {
                name,
                found: found.join(", "),
                expected: expected.join(", "),
            })
        }
    }

    /// The load-time constant for these facts and a sample of 1 in `sample` (a power of two).
    #[must_use]
    pub fn config(&self, sample: u32) -> Config {
        let [name, size, object_size, flags] = self.cache_offsets;
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(args: Vec<(&'static str, Option<Vec<String>>)>) -> KernelLayout {
        KernelLayout {
            tracepoint_args: args,
            cache_offsets: [96, 24, 28, 8],
            gfp: GfpBits { account: 1 << 22, reclaimable: 1 << 4, dma: 1 },
            slab: SlabFlags { account: 1 << 26, reclaim_account: 1 << 17 },
            task_stack: Some((32, 16384)),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_6_18_signature_is_accepted() {
        let l = layout(vec![(
            "kmem_cache_alloc",
            Some(strings(&[
                "unsigned long",
                "const void *",
                "struct kmem_cache *",
                "gfp_t",
                "int",
            ])),
        )]);
        assert_eq!(l.check_tracepoint("kmem_cache_alloc"), Ok(()));
    }

    #[test]
    fn an_older_signature_is_refused_with_both_spelled_out() {
        // Linux 5.x: (call_site, ptr, bytes_req, bytes_alloc, gfp_flags, node).
        let l = layout(vec![(
            "kmem_cache_alloc",
            Some(strings(&["unsigned long", "const void *", "size_t", "size_t", "gfp_t", "int"])),
        )]);
        let err = l.check_tracepoint("kmem_cache_alloc").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("size_t, size_t"), "{text}");
        assert!(text.contains("struct kmem_cache *"), "{text}");
    }

    #[test]
    fn a_missing_tracepoint_is_named() {
        let l = layout(vec![("kfree", None)]);
        assert_eq!(l.check_tracepoint("kfree"), Err(LayoutError::MissingTracepoint("kfree")));
        assert_eq!(l.check_tracepoint("kmalloc"), Err(LayoutError::MissingTracepoint("kmalloc")));
    }

    #[test]
    fn config_carries_offsets_and_the_sample_mask() {
        let c = layout(vec![]).config(64);
        assert_eq!(c.sample_mask, 63);
        assert_eq!(c.off_cache_name, 96);
        assert_eq!(c.off_cache_flags, 8);
        assert_eq!(c.gfp_account, 1 << 22);
        assert_eq!(layout(vec![]).config(1).sample_mask, 0);
        assert_eq!((c.off_task_stack, c.thread_size), (32, 16384));
        let no_irq = KernelLayout { task_stack: None, ..layout(vec![]) };
        assert_eq!(no_irq.config(1).thread_size, 0);
    }

    #[test]
    fn reads_the_running_kernel() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: no {}", path.display());
            return;
        }
        let btf = Btf::from_file(path).expect("parse vmlinux BTF");
        let l = KernelLayout::from_btf(&btf).expect("layout");
        for tp in TRACEPOINTS {
            l.check_tracepoint(tp.name).expect(tp.name);
        }
        let [name, size, object_size, flags] = l.cache_offsets;
        assert!(name != size && size != object_size && object_size != flags);
        assert_eq!(l.gfp.account.count_ones(), 1);
    }
}
