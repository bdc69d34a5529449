//! The running kernel's BTF read as slabtrace reads it at start-up: how the kmem programs attach
//! here, `struct kmem_cache`'s fields, and what the optional OOM and shrinker programs need.
//! A root test rather than a unit test because it reads this machine's kernel; it runs on every
//! kernel of the VM matrix too, where the answers differ (fexit before 6.1, say).

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use slabtrace::kernel::{
    btf::Btf,
    layout::{CacheAlloc, KernelLayout},
};
use slabtrace_integration::require_root;

#[test]
fn the_running_kernels_layout_is_read_and_consistent() -> Result<()> {
    require_root()?;
    let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).context("parse vmlinux BTF")?;
    let l = KernelLayout::from_btf(&btf)?;
    let hooks = l.kmem.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("kmem hooks: {hooks:?}; get_current_task_btf: {}", l.task_btf);
    match &hooks.cache_alloc {
        // Linux 6.1 and later: the tracepoint names the cache, and so does the free's.
        CacheAlloc::Tracepoint => ensure!(hooks.free_has_cache, "{hooks:?}"),
        CacheAlloc::Fexit(functions) => ensure!(
            functions.iter().any(|(f, _)| *f == "kmem_cache_alloc"),
            "fexit without kmem_cache_alloc: {functions:?}"
        ),
    }
    ensure!(hooks.kmalloc.first() == Some(&"kmalloc"), "{hooks:?}");
    let [name, size, object_size, flags] = l.cache_offsets;
    ensure!(name != size && size != object_size && object_size != flags, "{:?}", l.cache_offsets);
    ensure!(l.gfp.account.is_power_of_two(), "{:?}", l.gfp);
    let c = l.config(1);
    ensure!(
        c.task_btf == u32::from(l.task_btf) && c.free_has_cache == u32::from(hooks.free_has_cache)
    );
    // The optional groups: where they can run, their fields are where BTF says.
    match &l.oom {
        Ok(oom) => {
            ensure!(oom.task_tgid == oom.task_pid + 4, "{oom:?}");
            ensure!(oom.task_comm > oom.task_tgid && oom.task_cgroups > 0, "{oom:?}");
            ensure!(oom.sc_reclaim_state != oom.sc_target_memcg, "{oom:?}");
            ensure!((c.off_task_tgid, c.off_kernfs_node_id) == (oom.task_tgid, oom.kernfs_node_id));
        }
        Err(e) => eprintln!("no OOM programs on this kernel: {e}"),
    }
    match &l.shrinker {
        Ok(shrinker) => {
            ensure!(
                Some(shrinker.scan_objects) == btf.member_offset("shrinker", "scan_objects"),
                "{shrinker:?}"
            );
            ensure!(shrinker.name == btf.member_offset("shrinker", "name"), "{shrinker:?}");
            ensure!(c.off_shrinker_scan_objects == shrinker.scan_objects);
        }
        Err(e) => eprintln!("no shrinker programs on this kernel: {e}"),
    }
    Ok(())
}
