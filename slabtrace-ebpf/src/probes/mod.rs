//! One file per tracepoint.

mod cgroup_attach;
mod floor;
mod kfree;
mod kmalloc;
mod kmem_cache_alloc;
mod kmem_cache_free;
mod oom;
mod self_check;
mod shrink_slab;
