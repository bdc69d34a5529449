//! The bookkeeping every probe shares: count an allocation, credit a free.
//!
//! Hot-path budget: an allocation costs the cgroup id, one per-CPU hash lookup and, for the
//! sampled 1 in N, one LRU insert; a free of an unsampled address costs a multiply and a
//! compare, and a sampled free one lookup, one delete and one per-CPU hash lookup.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_current_task_btf},
    },
};
use slabtrace_common::{
    CallSiteKey, CounterKey, Counters, LiveObject, Stat,
    key::{IRQ_CGROUP, UNTRACKED_CGROUP},
};

use crate::{
    config,
    maps::{CALL_SITES, COUNTERS, IRQ_FREE_SEEN, LIVE, bump},
};

/// Argument `n` of the event whose context pointer is `ctx`. Tracing programs of every type
/// slabtrace uses get their arguments the same way, as an array of u64: BTF tracepoints
/// (`tp_btf`), raw tracepoints (`raw_tp`) and `fexit` (there the return value follows the
/// last argument). The verifier types a `tp_btf` or `fexit` load by the argument's BTF type,
/// and refuses some (a `const void *` before Linux 6.x): the loader picks the program type the
/// kernel accepts.
#[inline(always)]
pub fn arg(ctx: *const core::ffi::c_void, n: usize) -> u64 {
    // SAFETY: the context is the kernel's argument array; the verifier checks the offset
    // against the tracepoint's or function's arguments.
    unsafe { core::ptr::read_volatile(ctx.cast::<u64>().add(n)) }
}

/// Whether the object at `addr` is in the deterministic sample. Alloc and free of one address
/// always agree, which is what lets a free find its allocation.
#[inline(always)]
pub fn sampled(addr: u64) -> bool {
    // Fibonacci hashing: the multiply spreads the address's low bits (slab objects are
    // aligned, so those are mostly zero) into the high half.
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) & config::sample_mask() == 0
}

/// The context an event happened in.
///
/// The kernel skips a program that fires while the same program is already running on that
/// CPU (its recursion guard). A softirq that runs a batch of RCU callbacks (dentries, inodes)
/// on the way out of an interrupt that arrived during a `kmem_cache_free` program would lose
/// every free in the batch (2,000 of 12,000 inode frees in one test run here). So that
/// tracepoint has a task-context program and two interrupt-context ones, attached in that
/// order: a batch nested in the task program goes to the first interrupt program; one nested
/// in the first interrupt program's brief run for a task-context free goes to the second,
/// which takes an interrupt-context free only if the first did not mark it (`IRQ_FREE_SEEN`);
/// one nested in the second's run finds the first idle. The other tracepoints keep one program
/// each: every extra program costs every event another entry (about 30 ns), and their nested
/// events are few; their skipped runs are counted as lost events.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The current task's own work.
    Task,
    /// Hard or soft interrupt: `current` is just whichever task was interrupted.
    Interrupt,
}

impl Context {
    /// The context of the event whose context pointer is `ctx`.
    #[inline(always)]
    pub fn of(ctx: *const core::ffi::c_void) -> Self {
        if in_interrupt(ctx) { Self::Interrupt } else { Self::Task }
    }

    /// Whether a free program for this context handles the event whose context pointer is
    /// `ctx`. Without interrupt detection only the task program is attached, and it takes all.
    #[inline(always)]
    pub fn handles(self, ctx: *const core::ffi::c_void) -> bool {
        in_interrupt(ctx) == (self == Self::Interrupt)
    }

    /// The cgroup to charge for an allocation this program handles.
    #[inline(always)]
    pub fn cgroup(self) -> u64 {
        match self {
            Self::Interrupt => {
                bump(Stat::IrqAllocs);
                IRQ_CGROUP
            }
            // SAFETY: a helper with no arguments.
            Self::Task => unsafe { bpf_get_current_cgroup_id() },
        }
    }
}

/// Notes that the first interrupt-context free program took the free of `ptr` on this CPU.
#[inline(always)]
pub fn mark_irq_free(ptr: u64) {
    if let Some(slot) = IRQ_FREE_SEEN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; the second program reads it only on this CPU.
        unsafe { *slot = ptr };
    }
}

/// Whether the first interrupt-context free program took the free of `ptr` on this CPU.
#[inline(always)]
pub fn irq_free_marked(ptr: u64) -> bool {
    // SAFETY: this CPU's slot, read once.
    IRQ_FREE_SEEN.get_ptr(0).is_some_and(|slot| unsafe { *slot } == ptr)
}

/// Whether the tracepoint fired on an interrupt stack rather than the current task's stack.
///
/// Rust BPF cannot read the per-CPU `preempt_count` (that needs typed ksyms), but x86-64 runs
/// hard and soft interrupts on per-CPU interrupt stacks, and a BTF tracepoint's context (its
/// argument array) lives in the frame of the kernel function that fired it, on the stack in
/// use. (The program's own frame will not do: since Linux 6.13 the JIT may give tracing
/// programs a private per-CPU stack.) So: is `ctx` inside `current->stack .. + THREAD_SIZE`?
/// The loader sets `thread_size` to 0 where this does not hold, which turns the check off.
#[inline(always)]
fn in_interrupt(ctx: *const core::ffi::c_void) -> bool {
    let thread_size = u64::from(config::thread_size());
    if thread_size == 0 {
        return false;
    }
    let base = if config::task_btf() != 0 {
        // SAFETY: a helper with no arguments; it returns a trusted task_struct pointer, and
        // the load is at a constant offset the verifier checks against BTF.
        unsafe {
            let task = bpf_get_current_task_btf().cast::<u8>();
            core::ptr::read_volatile(task.add(config::off_task_stack() as usize).cast::<u64>())
        }
    } else {
        // Before 5.11: the task as a plain address, its field read through the helper that
        // checks the address.
        // SAFETY: a helper with no arguments, then a checked read of kernel memory.
        unsafe {
            let task = bpf_get_current_task() as *const u8;
            bpf_probe_read_kernel(task.add(config::off_task_stack() as usize).cast::<u64>())
                .unwrap_or(0)
        }
    };
    if base == 0 {
        return false; // unreadable: charge the task, as without detection
    }
    // Compare the pointer with scalars only: the verifier allows that for privileged programs,
    // while arithmetic on a context pointer is refused.
    let end = core::hint::black_box(base.wrapping_add(thread_size));
    let addr = ctx as u64;
    !(addr >= base && addr < end)
}

/// Counts one allocation of `cache` at `addr` by `cgroup_id`. Returns true when the key was new,
/// so the caller can record what it needs to know about the cache once.
#[inline(always)]
pub fn record_alloc(cgroup_id: u64, cache: u64, flags: u32, addr: u64) -> bool {
    bump(Stat::AllocEvents);
    let key = CounterKey { cgroup_id, cache, flags, padding: 0 };
    let sample = sampled(addr);
    let new_key = add(&key, 1, u64::from(sample), 0);
    if sample {
        track(addr, LiveObject { cgroup_id, cache, flags, padding: 0 });
    }
    new_key
}

/// Credits the free of the object at `addr` to the cgroup that allocated it. `cache` is the
/// cache the free names (0 when the tracepoint does not say, as `kfree`'s does not).
#[inline(always)]
pub fn record_free(addr: u64, cache: u64) {
    bump(Stat::FreeEvents);
    if !sampled(addr) {
        return;
    }
    let key = match LIVE.get_ptr(addr) {
        Some(obj) => {
            // SAFETY: the pointer came from a successful lookup; the entry is copied out before
            // it is deleted.
            let obj = unsafe { *obj };
            let _ = LIVE.remove(addr);
            bump(Stat::LiveDeletes);
            CounterKey { cgroup_id: obj.cgroup_id, cache: obj.cache, flags: obj.flags, padding: 0 }
        }
        // Allocated before tracing started, or evicted: credited to no one, per cache.
        None => CounterKey { cgroup_id: UNTRACKED_CGROUP, cache, flags: 0, padding: 0 },
    };
    add(&key, 0, 0, 1);
}

/// Remembers a sampled object. An address still in the map means its free was never seen (a
/// free path without a tracepoint): the old owner is credited with that free, so its live
/// count stays right, and the miss is counted.
#[inline(always)]
fn track(addr: u64, obj: LiveObject) {
    match LIVE.insert(addr, obj, u64::from(BPF_NOEXIST)) {
        Ok(()) => bump(Stat::LiveInserts),
        Err(_) => {
            if let Some(old) = LIVE.get_ptr(addr) {
                // SAFETY: pointer from a successful lookup, copied at once.
                let old = unsafe { *old };
                bump(Stat::MissedFrees);
                let owner = CounterKey {
                    cgroup_id: old.cgroup_id,
                    cache: old.cache,
                    flags: old.flags,
                    padding: 0,
                };
                add(&owner, 0, 0, 1);
                if LIVE.insert(addr, obj, 0).is_err() {
                    bump(Stat::LiveInsertFailed);
                }
            } else {
                bump(Stat::LiveInsertFailed);
            }
        }
    }
}

/// Adds to a key's per-CPU counters, creating the key if needed. Returns true if it was new.
#[inline(always)]
fn add(key: &CounterKey, allocs: u64, sampled_allocs: u64, sampled_frees: u64) -> bool {
    let value = Counters { allocs, sampled_allocs, sampled_frees };
    if add_existing(key, &value) {
        return false;
    }
    // NOEXIST: another CPU may have created the key meanwhile; then one retry of the update
    // path is enough (this CPU's copy of a new key starts at zero).
    if COUNTERS.insert(key, &value, u64::from(BPF_NOEXIST)).is_ok() {
        return true;
    }
    if !add_existing(key, &value) {
        bump(Stat::CountersFull);
    }
    false
}

/// Adds `delta` to this CPU's copy of an existing key; false if the key is not there.
#[inline(always)]
fn add_existing(key: &CounterKey, delta: &Counters) -> bool {
    let Some(c) = COUNTERS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: this CPU's copy of the value; see maps::bump on nesting.
    unsafe {
        (*c).allocs += delta.allocs;
        (*c).sampled_allocs += delta.sampled_allocs;
        (*c).sampled_frees += delta.sampled_frees;
    }
    true
}

/// With `--call-sites`, counts the allocation under its kernel call site too. The option is a
/// load-time constant: when it is off the verifier drops this code from the program.
#[inline(always)]
pub fn record_call_site(cgroup_id: u64, cache: u64, call_site: u64) {
    // 0: the hook has no call site (fexit, before Linux 6.1).
    if config::call_sites() == 0 || call_site == 0 {
        return;
    }
    let key = CallSiteKey { cgroup_id, cache, call_site };
    match CALL_SITES.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy; programs of one type do not nest on a CPU.
        Some(n) => unsafe { *n += 1 },
        None => {
            if CALL_SITES.insert(&key, &1, u64::from(BPF_NOEXIST)).is_err() {
                bump(Stat::CallSitesFull);
            }
        }
    }
}
