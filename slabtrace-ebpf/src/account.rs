//! The bookkeeping every probe shares: count an allocation, credit a free.
//!
//! Hot-path budget: an allocation costs the cgroup id, one per-CPU hash lookup and, for the
//! sampled 1 in N, two array lookups, up to sixteen compares and a slot write; a free of an
//! unsampled address costs a multiply and a compare, and a sampled free two array lookups, up
//! to sixteen compares and one per-CPU hash lookup.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_get_prandom_u32},
    },
};
use slabtrace_common::{
    CallSiteKey, CounterKey, Counters, Stat,
    key::{IRQ_CGROUP, UNTRACKED_CGROUP},
};

use crate::{
    config,
    maps::{
        CALL_SITES, CGROUP_GENERATION, CGROUP_OF_TASK, COUNTERS, FREE_NESTING, NEW_KEYS, bump,
        bump_event,
    },
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

/// The address with this run's salt, hashed (Fibonacci hashing: the multiply spreads the
/// address's low bits, mostly zero since slab objects are aligned, into the high half).
#[inline(always)]
fn mix(addr: u64) -> u64 {
    (addr ^ config::sample_salt()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether the object at `addr` is in this run's sample. Alloc and free of one address always
/// agree, which is what lets a free find its allocation.
#[inline(always)]
pub fn sampled(addr: u64) -> bool {
    config::track_live() != 0 && (mix(addr) >> 32) & config::sample_mask() == 0
}

/// Whether the allocation of `addr` is left uncounted: never, unless the bench measures
/// what exact counts cost (`count_sample_mask`); then all but a random 1 in N and the sampled
/// addresses are, counted as events only.
#[inline(always)]
pub fn uncounted(addr: u64) -> bool {
    let mask = config::count_sample_mask();
    // SAFETY: a helper with no arguments.
    if mask == 0 || sampled(addr) || unsafe { bpf_get_prandom_u32() } & mask == 0 {
        return false;
    }
    bump_event(Stat::AllocEvents);
    true
}

/// The context an allocation happened in: whom to charge it to.
///
/// The free programs do not need it: a free is credited to whoever allocated the object,
/// whatever context frees it.
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

    /// The cgroup to charge for an allocation in this context.
    #[inline(always)]
    pub fn cgroup(self) -> u64 {
        match self {
            Self::Interrupt => {
                bump(Stat::IrqAllocs);
                IRQ_CGROUP
            }
            Self::Task => current_cgroup_id(),
        }
    }
}

/// The current task's cgroup id, as `bpf_get_current_cgroup_id` gives it, from this CPU's
/// cache when the same task, in the same `css_set`, allocated last here and no task has moved
/// between cgroups since: a few loads from the task, which the kernel has just used, instead
/// of the helper's chain of `css_set`, cgroup and kernfs node, which the workload between two
/// allocations has usually pushed out of the CPU's caches (about 20 ns an allocation in the
/// bench, `--without cgroup-cache`).
///
/// Why the cached id is the helper's: a task's `css_set` is replaced, never changed, when the
/// task moves, and a `css_set`'s cgroup is fixed while it lives. A freed `css_set`'s address
/// can come back as another's, so the pointer alone could name a dead one; but a `css_set` is
/// only freed after its last task moved or exited. The pid rules out another task (pids are
/// not reused before they wrap), and the generation, moved on at every `cgroup_attach_task`,
/// rules out the same task back in a new `css_set` at the old address. Controller changes
/// move tasks to new `css_set`s of the same cgroup: the id stays right.
#[inline(always)]
fn current_cgroup_id() -> u64 {
    let generation = CGROUP_GENERATION
        .get_ptr(0)
        // SAFETY: a value of the array, read as one word.
        .map_or(0, |g| unsafe { core::ptr::read_volatile(g) });
    let slot = CGROUP_OF_TASK.get_ptr_mut(0);
    let (off_cgroups, off_pid) = (config::off_task_cgroups(), config::off_task_pid());
    let usable = generation != 0
        && config::cgroup_cache() != 0
        && config::task_btf() != 0
        && off_cgroups != 0
        && off_pid != 0;
    let (Some(slot), true) = (slot, usable) else {
        // SAFETY: a helper with no arguments.
        return unsafe { bpf_get_current_cgroup_id() };
    };
    // SAFETY: a helper with no arguments returning a trusted task_struct pointer; the loads
    // are at constant offsets the verifier checks against BTF. The slot is this CPU's: a
    // program nested in this one on this CPU (an interrupt's) runs to its end before this one
    // goes on.
    unsafe {
        let task = bpf_get_current_task_btf().cast::<u8>();
        let css_set = core::ptr::read_volatile(task.add(off_cgroups as usize).cast::<u64>());
        let pid = u64::from(core::ptr::read_volatile(task.add(off_pid as usize).cast::<u32>()));
        let seen = core::ptr::read_volatile(&raw const (*slot)[0]);
        let seen_pid = core::ptr::read_volatile(&raw const (*slot)[1]);
        let seen_generation = core::ptr::read_volatile(&raw const (*slot)[2]);
        let id = core::ptr::read_volatile(&raw const (*slot)[3]);
        // The pointer again after the rest: a nested run that rewrote the slot in between
        // for another task cleared it first, so the entry is not taken.
        let again = core::ptr::read_volatile(&raw const (*slot)[0]);
        if seen == css_set && again == css_set && seen_pid == pid && seen_generation == generation {
            return id;
        }
        let id = bpf_get_current_cgroup_id();
        // Cleared first and the pointer written last, so that a nested run never takes half
        // an entry.
        core::ptr::write_volatile(&raw mut (*slot)[0], 0);
        core::ptr::write_volatile(&raw mut (*slot)[1], pid);
        core::ptr::write_volatile(&raw mut (*slot)[2], generation);
        core::ptr::write_volatile(&raw mut (*slot)[3], id);
        core::ptr::write_volatile(&raw mut (*slot)[0], css_set);
        id
    }
}

/// A task moved to another cgroup: every CPU's cached cgroup id is out of date. The increment
/// is not atomic (the BPF target has none in Rust): two moves at once may add one between them,
/// and one change is all the entries need to be refused. Zero (the cache off) stays zero.
#[inline(always)]
pub fn cgroups_moved() {
    if let Some(g) = CGROUP_GENERATION.get_ptr_mut(0) {
        // SAFETY: a value of the array, read and written as one word.
        unsafe {
            let now = core::ptr::read_volatile(g);
            if now != 0 {
                core::ptr::write_volatile(g, now.wrapping_add(1).max(1));
            }
        }
    }
}

/// `kmem_cache_free`'s two programs.
///
/// The kernel skips a program that fires while the same program is already running on that
/// CPU (its recursion guard). A softirq that runs a batch of RCU callbacks (dentries, inodes)
/// on the way out of an interrupt that arrived during the free program would lose every free
/// in the batch (2.4% of all frees in the bench, as many with an empty program). So the
/// tracepoint has a second program, attached after the first. The first takes every event
/// the kernel runs it for, and notes on this CPU the address it took. The second takes an
/// event in interrupt context that the first did not note: one nested in a run of the first
/// (including the kernel's dispatch around it, where the first's own code cannot see it
/// coming). Task-context events it leaves alone, so a free the first took is never counted
/// twice even when an interrupt's free lands between the two programs; only an interrupt's
/// free nested in the second's run for another nested free is lost (the first's misses less
/// what the second took count it). Without interrupt detection the second takes events while
/// the first is inside its code, which misses those nested in the dispatch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// The first program: takes every event the kernel runs it for.
    First,
    /// The second: takes nested events the first was skipped for.
    Second,
}

impl Nesting {
    /// Credits the free of `addr` (of `cache`, 0 if unknown) if this program is the one to.
    /// `ctx` is the event's context pointer.
    #[inline(always)]
    pub fn free(self, ctx: *const core::ffi::c_void, addr: u64, cache: u64) {
        // Most frees are of addresses out of the sample: nothing to credit, so nothing to
        // note for the second program, which need not look further either (a nested free of
        // such an address is not counted by anyone). Only the first counts the event.
        if !sampled(addr) {
            if self == Self::First {
                bump_event(Stat::FreeEvents);
            }
            return;
        }
        let Some(state) = FREE_NESTING.get_ptr_mut(0) else {
            if self == Self::First {
                record_free(addr, cache);
            }
            return;
        };
        // SAFETY: this CPU's slot: [depth, address]. A nested run on this CPU completes
        // before the interrupted one goes on, so each read-modify-write sees a consistent
        // value.
        unsafe {
            match self {
                Self::First => {
                    (*state)[1] = addr;
                    (*state)[0] += 1;
                    record_free(addr, cache);
                    (*state)[0] -= 1;
                }
                Self::Second => {
                    let nested = if config::thread_size() != 0 {
                        in_interrupt(ctx)
                    } else {
                        (*state)[0] != 0
                    };
                    if nested && (*state)[1] != addr {
                        bump(Stat::NestedFrees);
                        record_free(addr, cache);
                    }
                }
            }
        }
    }
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
    bump_event(Stat::AllocEvents);
    let key = CounterKey { cgroup_id, cache, flags, padding: 0 };
    let sample = sampled(addr);
    let new_key = add(&key, &Counters { allocs: 1, sampled_allocs: u64::from(sample), ..ZERO });
    if sample {
        live::track(addr, cgroup_id, cache, flags);
    }
    new_key
}

/// Credits the free of the object at `addr` to the cgroup that allocated it. `cache` is the
/// cache the free names (0 when the tracepoint does not say, as `kfree`'s does not).
#[inline(always)]
pub fn record_free(addr: u64, cache: u64) {
    bump_event(Stat::FreeEvents);
    if !sampled(addr) {
        return;
    }
    // Allocated before tracing started, or evicted: credited to no one, per cache.
    let key = live::take(addr).unwrap_or(CounterKey {
        cgroup_id: UNTRACKED_CGROUP,
        cache,
        flags: 0,
        padding: 0,
    });
    add(&key, &Counters { sampled_frees: 1, ..ZERO });
}

const ZERO: Counters =
    Counters { allocs: 0, sampled_allocs: 0, sampled_frees: 0, sampled_evicted: 0 };

/// The live-object table: sampled addresses and their owners, in sets of [`LIVE_WAYS`] slots,
/// one set per array element. An address has two candidate sets (two hashes of it pick them)
/// and sits in any slot of either: with two choices a set overflows only when both are full,
/// which at a third full is about one insert in a million instead of one in a few hundred.
/// Nothing allocates, nothing locks; every way out of a slot is credited to the slot's
/// owner: its free (a free), the same address allocated again (a free never seen), or another
/// object needing the room (an eviction).
mod live {
    use slabtrace_common::{CounterKey, Counters, LIVE_WAYS, LiveSet, LiveSlot, Stat};

    use super::{ZERO, add};
    use crate::{
        config,
        maps::{LIVE, SCRATCH, bump},
    };

    /// `addr`'s two candidate sets, and a slot to evict if both are full (the first set's
    /// when its bit is 0).
    #[inline(always)]
    fn sets_of(addr: u64) -> (u32, u32, usize) {
        // Hashes independent of the sampling one, so that sampled objects spread over every
        // set (the sampled ones all share the sampling hash's low bits).
        let mut x = addr ^ config::sample_salt();
        x ^= x >> 31;
        let a = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let b = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        let shift = 64 - config::live_set_bits();
        #[expect(clippy::cast_possible_truncation, reason = "at most 27 bits after the shift")]
        let (first, second) = ((a >> shift) as u32, (b >> shift) as u32);
        // A u64 is a usize on the BPF target: nothing truncates.
        let victim = (a >> 7) as usize & (2 * LIVE_WAYS - 1);
        (first, second, victim)
    }

    /// The owner's key of a slot, or None if the slot is inconsistent.
    #[inline(always)]
    fn owner(slot: &LiveSlot) -> Option<CounterKey> {
        if slot.check == LiveSlot::check_of(slot.addr, slot.cgroup_id, slot.cache, slot.flags) {
            Some(CounterKey {
                cgroup_id: slot.cgroup_id,
                cache: slot.cache,
                flags: slot.flags,
                padding: 0,
            })
        } else {
            bump(Stat::LiveTorn);
            None
        }
    }

    /// What [`track`] does with the slot it picked.
    const MISSED: u32 = 0;
    const EMPTY: u32 = 1;
    const EVICT: u32 = 2;
    /// No slot found.
    const NONE: u32 = 2 * LIVE_WAYS as u32;

    /// Where `addr` sits in `set`, and its first empty slot (each [`NONE`] if none).
    #[inline(always)]
    fn scan(set: *const LiveSet, addr: u64) -> (u32, u32) {
        let mut empty = NONE;
        for way in 0..LIVE_WAYS {
            // SAFETY: a slot of a set from a successful lookup; see LiveSlot on concurrent
            // writers.
            let held = unsafe { (*set).slots[way].addr };
            #[expect(clippy::cast_possible_truncation, reason = "below 8")]
            let way = way as u32;
            if held == addr {
                return (way, empty);
            }
            if held == 0 && empty == NONE {
                empty = way;
            }
        }
        (NONE, empty)
    }

    /// Where `addr` sits in its two sets, and the first empty slot there: slots are numbered
    /// 0..8 in the first set and 8..16 in the second, [`NONE`] for none.
    #[inline(always)]
    fn find(first: *const LiveSet, second: *const LiveSet, addr: u64) -> (u32, u32) {
        let (held, empty) = scan(first, addr);
        if held != NONE {
            return (held, empty);
        }
        let (held2, empty2) = scan(second, addr);
        let held = if held2 == NONE { NONE } else { held2 + 8 };
        let empty = if empty == NONE && empty2 != NONE { empty2 + 8 } else { empty };
        (held, empty)
    }

    /// The slot numbered `n` (as [`find`] numbers them). `n` goes through [`opaque`] first:
    /// every way to it gave a constant, and hidden from the verifier they are one case to
    /// check instead of dozens (5.10's verifier took a minute a program under emulation).
    #[inline(always)]
    fn slot_at(first: *mut LiveSet, second: *mut LiveSet, n: u32) -> *mut LiveSlot {
        let n = opaque(n) & (NONE - 1);
        let set = if n < 8 { first } else { second };
        // SAFETY: a set from a successful lookup; the index is below LIVE_WAYS.
        unsafe { &raw mut (*set).slots[(n & 7) as usize] }
    }

    /// Puts a sampled object in the table.
    #[inline(always)]
    pub fn track(addr: u64, cgroup_id: u64, cache: u64, flags: u32) {
        let (first, second, victim) = sets_of(addr);
        let (Some(first), Some(second)) = (LIVE.get_ptr_mut(first), LIVE.get_ptr_mut(second))
        else {
            bump(Stat::LiveInsertFailed);
            return;
        };
        let (held, empty) = find(first, second, addr);
        #[expect(clippy::cast_possible_truncation, reason = "below 16")]
        let (what, n) = if held != NONE {
            (MISSED, held)
        } else if empty != NONE {
            (EMPTY, empty)
        } else {
            (EVICT, victim as u32)
        };
        let what = opaque(what);
        let slot = slot_at(first, second, n);
        if what == MISSED || what == EVICT {
            // MISSED: the address is back without its free having been seen (a free path
            // with no tracepoint): credit the old owner with that free. EVICT: both sets are
            // full: push this one out and credit its owner with an eviction.
            let gone = if what == MISSED {
                bump(Stat::MissedFrees);
                Counters { sampled_frees: 1, ..ZERO }
            } else {
                bump(Stat::LiveEvictions);
                Counters { sampled_evicted: 1, ..ZERO }
            };
            // SAFETY: a slot from slot_at; see LiveSlot on concurrent writers.
            if let Some(old) = owner(unsafe { &*slot }) {
                add(&old, &gone);
            }
        }
        fill(slot, addr, cgroup_id, cache, flags);
    }

    /// `v`, as a number the verifier knows nothing of (written to and read back from map
    /// memory).
    #[inline(always)]
    fn opaque(v: u32) -> u32 {
        match SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's slot, written and read back at once.
            Some(p) => unsafe {
                core::ptr::write_volatile(p, v);
                core::ptr::read_volatile(p)
            },
            None => v,
        }
    }

    /// Writes an object into a slot, its address last: a reader that matches the address
    /// then finds the rest written (on this CPU; see LiveSlot for others).
    #[inline(always)]
    fn fill(slot: *mut LiveSlot, addr: u64, cgroup_id: u64, cache: u64, flags: u32) {
        bump(Stat::LiveInserts);
        // SAFETY: a pointer into the array from a successful lookup.
        unsafe {
            (*slot).cgroup_id = cgroup_id;
            (*slot).flags = flags;
            // The check from the cache read back: in a BTF tracepoint `cache` is a typed
            // kernel pointer, on which the verifier forbids arithmetic; read from the map it
            // is a plain number.
            core::ptr::write_volatile(&raw mut (*slot).cache, cache);
            let cache = core::ptr::read_volatile(&raw const (*slot).cache);
            (*slot).check = LiveSlot::check_of(addr, cgroup_id, cache, flags);
            core::ptr::write_volatile(&raw mut (*slot).addr, addr);
        }
    }

    /// Takes a sampled object out of the table at its free: its owner, if it was there.
    #[inline(always)]
    pub fn take(addr: u64) -> Option<CounterKey> {
        let (first, second, _) = sets_of(addr);
        let (Some(first), Some(second)) = (LIVE.get_ptr_mut(first), LIVE.get_ptr_mut(second))
        else {
            return None;
        };
        let (held, _) = find(first, second, addr);
        if held == NONE {
            return None;
        }
        let slot = slot_at(first, second, held);
        // SAFETY: a slot from slot_at.
        unsafe {
            let taken = *slot;
            (*slot).addr = 0;
            bump(Stat::LiveDeletes);
            owner(&taken)
        }
    }
}

/// Adds to a key's per-CPU counters, creating the key if needed. Returns true if it was new.
#[inline(always)]
fn add(key: &CounterKey, value: &Counters) -> bool {
    if add_existing(key, value) {
        return false;
    }
    // NOEXIST: another CPU may have created the key meanwhile; then one retry of the update
    // path is enough (this CPU's copy of a new key starts at zero).
    if COUNTERS.insert(key, value, u64::from(BPF_NOEXIST)).is_ok() {
        // No wakeup: userspace drains the ring on its own clock.
        if NEW_KEYS.output::<u64>(&key.cgroup_id, u64::from(BPF_RB_NO_WAKEUP)).is_err() {
            bump(Stat::NewKeysLost);
        }
        return true;
    }
    if !add_existing(key, value) {
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
    unsafe { (*c).add(delta) };
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
    match CALL_SITES.get_ptr_mut(key) {
        // SAFETY: this CPU's copy; see maps::bump on nesting.
        Some(n) => unsafe { *n += 1 },
        None => {
            if CALL_SITES.insert(key, 1, u64::from(BPF_NOEXIST)).is_err() {
                bump(Stat::CallSitesFull);
            }
        }
    }
}
