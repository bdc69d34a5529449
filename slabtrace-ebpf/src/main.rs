//! slabtrace's BPF programs: count slab allocations per (cgroup, cache) and credit every free
//! to the cgroup that allocated the object.
//!
//! One file per tracepoint under `probes/`; the bookkeeping they share is in `account.rs`, the
//! maps in `maps.rs`, the load-time constant in `config.rs`.
#![no_std]
#![no_main]

mod account;
mod caches;
mod config;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_kernel` is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
