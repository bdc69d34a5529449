//! The load-time constant, read field by field.
//!
//! `aya_ebpf::Global<T>` makes bpf-linker 0.10 emit BTF the kernel rejects ("Invalid name"), so
//! this is a plain static read with `read_volatile`, which stops the compiler from folding the
//! zero initialiser. The loader overwrites it before load and freezes `.rodata`, so the verifier
//! sees constants.

use slabtrace_common::Config;

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    sample_mask: 0,
    gfp_account: 0,
    gfp_reclaimable: 0,
    gfp_dma: 0,
    off_cache_name: 0,
    off_cache_size: 0,
    off_cache_object_size: 0,
    off_cache_flags: 0,
    off_task_stack: 0,
    thread_size: 0,
};

macro_rules! field {
    ($name:ident, $t:ty) => {
        #[inline(always)]
        pub fn $name() -> $t {
            // SAFETY: CONFIG is a valid, aligned static; volatile keeps the loader's value.
            unsafe { core::ptr::read_volatile(&raw const CONFIG.$name) }
        }
    };
}

field!(sample_mask, u64);
field!(gfp_account, u64);
field!(gfp_reclaimable, u64);
field!(gfp_dma, u64);
field!(off_cache_name, u32);
field!(off_cache_size, u32);
field!(off_cache_object_size, u32);
field!(off_cache_flags, u32);
field!(off_task_stack, u32);
field!(thread_size, u32);
