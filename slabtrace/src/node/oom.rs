//! OOM kills as the BPF side saw them: [`OomEvent`]s drained from the `OOM_EVENTS` ring buffer
//! and decoded into [`OomKill`]s, with a wall-clock time, the OOM's scope and the memory cgroup
//! that hit its limit named.
//!
//! The scope comes from the kernel stack the victim was marked on: `mark_oom_victim()` runs
//! inside `out_of_memory()`, and only `mem_cgroup_out_of_memory()` calls that for a memcg (it
//! is the one function that sets `oom_control.memcg`); the page allocator and sysrq-f call it
//! for the node. So the frame above `out_of_memory` decides, named with `/proc/kallsyms`. The
//! memcg is the target of the triggering task's latest memcg reclaim, which the kernel always
//! runs on the memcg right before OOM-killing in it (see `slabtrace-ebpf/src/probes/oom.rs`).
//! Its id is the inode of its directory in the memory controller's hierarchy: the cgroup v1
//! `memory` mount on a hybrid node, cgroup2 on a unified one, found from mountinfo.
//!
//! Decoding and symbol lookup are pure; the ring buffer, kallsyms and the cgroup tree walk are
//! at the edge.

use std::{
    ops::Range,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use aya::{
    Ebpf,
    maps::{MapData, MapError, RingBuf},
};
use slabtrace_common::{
    OomEvent, Stat,
    map_names::OOM_EVENTS,
    oom::{OOM_PARTIAL, OOM_RECLAIM_SEEN},
};

use crate::{
    cgroup::{
        mount::{cgroup2_mount, mounts},
        resolve::CgroupResolver,
    },
    kernel::kallsyms::Kallsyms,
    maps::Stats,
};

/// The kernel function every OOM kill happens in.
const OUT_OF_MEMORY: &str = "out_of_memory";

/// Functions whose call of `out_of_memory()` is a memcg OOM: `mem_cgroup_out_of_memory()` and
/// every function it can be inlined into (its callers), on Linux 6.18 and before.
const MEMCG_CALLERS: [&str; 7] = [
    "mem_cgroup_out_of_memory",
    "mem_cgroup_oom",
    "try_charge_memcg",
    "try_charge",
    "memory_max_write",
    "mem_cgroup_oom_synchronize",
    "memcg1_oom_synchronize",
];

/// A task the kernel chose as an OOM victim and killed (or, if it was exiting anyway, let die).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomKill {
    /// The victim's process id (its tgid).
    pub pid: u32,
    /// The thread the kernel marked: the first of the process that still had its memory.
    pub tid: u32,
    /// The victim's command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The victim's uid.
    pub uid: u32,
    /// The victim's cgroup2 id (what [`crate::cgroup::resolve::CgroupResolver`] names, and
    /// what slab counters are keyed by).
    pub cgroup_id: u64,
    /// The victim's `oom_score_adj` (-1000 ..= 1000).
    pub oom_score_adj: i16,
    /// What ran out of memory.
    pub scope: OomScope,
    /// The task whose allocation failed and started the OOM kill; often the victim itself.
    pub trigger: OomTrigger,
    /// When the kernel marked the victim.
    pub at: SystemTime,
    /// A kernel read failed on the BPF side: some field above is 0 or empty, not the truth.
    pub incomplete: bool,
}

/// What ran out of memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomScope {
    /// The node: the page allocator found no memory (on the node, or on the nodes the
    /// allocating task's cpuset or memory policy allows), or sysrq-f forced a kill.
    Global,
    /// A memory cgroup hit its limit.
    Memcg {
        /// The memcg's id: its directory's inode in the memory controller's hierarchy. None if
        /// the triggering task's reclaim was not on record (see [`OomStats`]).
        memcg_id: Option<u64>,
        /// Its path relative to that hierarchy's root (`/kubepods/burstable/pod…`), if its
        /// directory could be found.
        memcg_path: Option<String>,
    },
    /// The stack did not say: no kernel symbols, no stack, or no `out_of_memory` on it.
    Unknown,
}

/// The task that ran out of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomTrigger {
    /// Its process id.
    pub pid: u32,
    /// Its cgroup2 id.
    pub cgroup_id: u64,
}

/// The BPF side's OOM counters, totals since the programs were loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomStats {
    /// Tasks the kernel marked as OOM victims.
    pub victims: u64,
    /// Victims whose record did not fit in the ring buffer: never drained.
    pub events_lost: u64,
    /// Failed kernel reads, of a victim ([`OomKill::incomplete`]) or of a memcg reclaim's
    /// target (a memcg OOM after it has no memcg id).
    pub read_failed: u64,
    /// Victims whose kernel stack could not be taken: scope [`OomScope::Unknown`].
    pub stack_failed: u64,
}

impl OomStats {
    /// The OOM counters of a statistics snapshot.
    #[must_use]
    pub fn from_stats(stats: &Stats) -> Self {
        Self {
            victims: stats.get(Stat::OomVictims),
            events_lost: stats.get(Stat::OomEventsLost),
            read_failed: stats.get(Stat::OomReadFailed),
            stack_failed: stats.get(Stat::OomStackFailed),
        }
    }
}

/// Why the OOM ring buffer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OomReaderError {
    /// The object lacks the map: a build problem.
    #[error("the BPF object has no map {OOM_EVENTS}; rebuild slabtrace")]
    Missing,
    /// aya could not map the ring buffer.
    #[error("cannot open the BPF ring buffer {OOM_EVENTS}: {0}")]
    Map(#[source] MapError),
}

/// Drains OOM victims from the ring buffer without blocking.
pub struct OomReader {
    ring: RingBuf<MapData>,
    symbols: Option<OomSymbols>,
    memcgs: Option<CgroupResolver>,
}

impl OomReader {
    /// Takes the `OOM_EVENTS` ring buffer out of `ebpf` (nothing else reads it). `symbols`
    /// tell the scope ([`OomSymbols::read`]); without them every scope is
    /// [`OomScope::Unknown`]. `memcg_root` is where the memory controller's hierarchy is
    /// mounted ([`find_memcg_root`]); without it memcg paths are `None`.
    pub fn new(
        ebpf: &mut Ebpf,
        symbols: Option<OomSymbols>,
        memcg_root: Option<PathBuf>,
    ) -> Result<Self, OomReaderError> {
        let map = ebpf.take_map(OOM_EVENTS).ok_or(OomReaderError::Missing)?;
        let ring = RingBuf::try_from(map).map_err(OomReaderError::Map)?;
        let mut reader = Self { ring, symbols, memcgs: None };
        reader.set_memcg_root(memcg_root);
        Ok(reader)
    }

    /// Names memcgs under `root` from now on (a fixture tree, or a host mount seen from a
    /// container); `None` stops naming them.
    pub fn set_memcg_root(&mut self, root: Option<PathBuf>) {
        self.memcgs = root.map(|root| {
            let mut resolver = CgroupResolver::new(root);
            // OOMs are rare and their memcg often new: look again on every miss.
            resolver.set_rescan_interval(Duration::ZERO);
            resolver
        });
    }

    /// Every victim recorded since the last call, oldest first; empty if none. Never blocks.
    pub fn drain(&mut self) -> Vec<OomKill> {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            match parse_event(&item) {
                Some(event) => events.push(event),
                None => log::warn!(
                    "skipping an OOM record of {} bytes, expected {}: slabtrace and its BPF object disagree",
                    item.len(),
                    size_of::<OomEvent>()
                ),
            }
        }
        if events.is_empty() {
            return Vec::new();
        }
        let clock = BootClock::now();
        let memcgs = &mut self.memcgs;
        events
            .iter()
            .map(|e| {
                decode(e, self.symbols.as_ref(), clock, |id| {
                    memcgs.as_mut().and_then(|r| r.resolve(id))
                })
            })
            .collect()
    }
}

impl AsFd for OomReader {
    /// Readable when victims are waiting: for poll or epoll.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

/// Where the functions that tell an OOM's scope are in the running kernel's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomSymbols {
    /// `out_of_memory` (with any `.cold` or `.isra` parts).
    out_of_memory: Vec<Range<u64>>,
    /// The [`MEMCG_CALLERS`] this kernel has.
    memcg_callers: Vec<Range<u64>>,
}

/// Which caller `out_of_memory()` had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomPath {
    /// The memcg charge path.
    Memcg,
    /// Anything else: the page allocator or sysrq.
    Global,
    /// No `out_of_memory` frame, or none above it.
    Unknown,
}

impl OomSymbols {
    /// Reads `proc_root/kallsyms`; None if it cannot be read, hides addresses (not root, or
    /// `kptr_restrict`), or has no `out_of_memory`.
    #[must_use]
    pub fn read(proc_root: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(proc_root.join("kallsyms")).ok()?)
    }

    /// [`Self::read`] on the text of `/proc/kallsyms` (`address type name [module]` lines).
    /// A function ends where the next text symbol starts.
    #[must_use]
    pub fn parse(kallsyms: &str) -> Option<Self> {
        // Hidden addresses (kptr_restrict) read as zero, which the table leaves out.
        let table = Kallsyms::parse(kallsyms);
        let out_of_memory = table.function_ranges(&[OUT_OF_MEMORY]);
        let memcg_callers = table.function_ranges(&MEMCG_CALLERS);
        (!out_of_memory.is_empty()).then_some(Self { out_of_memory, memcg_callers })
    }

    /// Classifies a kernel stack (return addresses, innermost first) by the caller of
    /// `out_of_memory`.
    #[must_use]
    pub fn classify(&self, stack: &[u64]) -> OomPath {
        // A return address points after its call, which may be the next function's first
        // byte when the call ends its function: look up the byte before.
        let inside = |ranges: &[Range<u64>], addr: u64| {
            ranges.iter().any(|r| r.contains(&addr.wrapping_sub(1)))
        };
        let Some(oom) = stack.iter().position(|&a| inside(&self.out_of_memory, a)) else {
            return OomPath::Unknown;
        };
        match stack[oom..].iter().find(|&&a| !inside(&self.out_of_memory, a)) {
            Some(&caller) if inside(&self.memcg_callers, caller) => OomPath::Memcg,
            Some(&caller) if caller != 0 => OomPath::Global,
            _ => OomPath::Unknown,
        }
    }
}

/// Where the memory controller's hierarchy is mounted, from `proc_root/self/mountinfo`: the
/// cgroup v1 mount that has the `memory` controller, else (unified nodes) the cgroup2 mount.
#[must_use]
pub fn find_memcg_root(proc_root: &Path) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string(proc_root.join("self").join("mountinfo")).ok()?;
    memcg_mount(&mountinfo)
}

/// [`find_memcg_root`] on a mountinfo text.
#[must_use]
pub fn memcg_mount(mountinfo: &str) -> Option<PathBuf> {
    let v1 = mounts(mountinfo).find(|m| {
        m.fstype == "cgroup" && m.super_options.split(',').any(|option| option == "memory")
    });
    v1.map(|m| m.mount_point).or_else(|| cgroup2_mount(mountinfo))
}

/// An [`OomEvent`] from a ring buffer record; None if the record has another size.
#[must_use]
pub fn parse_event(bytes: &[u8]) -> Option<OomEvent> {
    if bytes.len() != size_of::<OomEvent>() {
        return None;
    }
    // SAFETY: the length is checked; OomEvent is plain old data, so any bytes are a valid value,
    // and read_unaligned does not need the record to be aligned.
    Some(unsafe { bytes.as_ptr().cast::<OomEvent>().read_unaligned() })
}

/// `CLOCK_BOOTTIME` and the wall clock read together, to date BPF timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// `CLOCK_BOOTTIME` at that moment.
    pub boot: Duration,
    /// The wall clock at that moment.
    pub wall: SystemTime,
}

impl BootClock {
    /// Both clocks now.
    #[must_use]
    pub fn now() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given; CLOCK_BOOTTIME always exists on
        // Linux, so it cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
        let boot = Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        );
        Self { boot, wall: SystemTime::now() }
    }

    /// The wall-clock time of the `CLOCK_BOOTTIME` instant `boot_ns` (which, unlike the
    /// monotonic clock, counts time suspended, as the wall clock does).
    #[must_use]
    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        let then = Duration::from_nanos(boot_ns);
        if then <= self.boot {
            self.wall.checked_sub(self.boot.saturating_sub(then)).unwrap_or(SystemTime::UNIX_EPOCH)
        } else {
            // Not in the past: the two reads were a little apart.
            self.wall + then.saturating_sub(self.boot)
        }
    }
}

/// Decodes one event; `symbols` classify its stack, `memcg_path` names a memcg id.
#[must_use]
pub fn decode(
    event: &OomEvent,
    symbols: Option<&OomSymbols>,
    clock: BootClock,
    mut memcg_path: impl FnMut(u64) -> Option<String>,
) -> OomKill {
    let frames = event.stack.len().min(event.stack_len as usize);
    let path = symbols.map_or(OomPath::Unknown, |s| s.classify(&event.stack[..frames]));
    let scope = match path {
        OomPath::Memcg => {
            let memcg_id = (event.flags & OOM_RECLAIM_SEEN != 0 && event.reclaim_memcg_id != 0)
                .then_some(event.reclaim_memcg_id);
            OomScope::Memcg { memcg_id, memcg_path: memcg_id.and_then(&mut memcg_path) }
        }
        OomPath::Global => OomScope::Global,
        OomPath::Unknown => OomScope::Unknown,
    };
    let comm_len = event.comm.iter().position(|&b| b == 0).unwrap_or(event.comm.len());
    OomKill {
        pid: event.tgid,
        tid: event.pid,
        comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
        uid: event.uid,
        cgroup_id: event.cgroup_id,
        oom_score_adj: event.oom_score_adj,
        scope,
        trigger: OomTrigger { pid: event.trigger_tgid, cgroup_id: event.trigger_cgroup_id },
        at: clock.wall_time(event.boot_ns),
        incomplete: event.flags & OOM_PARTIAL != 0,
    }
}

#[cfg(test)]
mod tests {
    use slabtrace_common::oom::OOM_STACK_DEPTH;

    use super::*;

    /// A kallsyms excerpt shaped like Linux 6.18's, out of order as kallsyms may be, with a
    /// module symbol and a data symbol that must not end a function early.
    const KALLSYMS: &str = "\
ffffffff81597b90 t mark_oom_victim
ffffffff81598eb0 t __oom_kill_process
ffffffff81599310 t oom_kill_process
ffffffff81599ce0 T out_of_memory
ffffffff8159a100 t out_of_memory.cold
ffffffff8159a000 T pagefault_out_of_memory
ffffffff8168dc30 t mem_cgroup_out_of_memory
ffffffff8168de00 D some_data
ffffffff8168e000 t mem_cgroup_oom_unlock
ffffffff81691a90 t try_charge_memcg
ffffffff81692000 t charge_memcg
ffffffff81620000 t __alloc_pages_slowpath.constprop.0
ffffffff81621930 T __alloc_pages_noprof
ffffffffc0001000 t out_of_memory [some_module]
";

    fn symbols() -> OomSymbols {
        OomSymbols::parse(KALLSYMS).expect("symbols")
    }

    /// Innermost first, as `bpf_get_stack` writes them: BPF and tracepoint frames, then the
    /// OOM functions, then `caller` (a return address inside it), then the rest.
    fn stack(caller: u64) -> [u64; OOM_STACK_DEPTH] {
        let mut s = [0; OOM_STACK_DEPTH];
        let frames = [
            0xffff_ffff_a000_1234, // the BPF program
            0xffff_ffff_8159_7c00, // mark_oom_victim
            0xffff_ffff_8159_9000, // __oom_kill_process
            0xffff_ffff_8159_9500, // oom_kill_process
            0xffff_ffff_8159_9e00, // out_of_memory
            caller,
            0xffff_ffff_8100_0000,
        ];
        s[..frames.len()].copy_from_slice(&frames);
        s
    }

    #[test]
    fn kallsyms_gives_the_ranges_that_matter() {
        let s = symbols();
        assert_eq!(
            s.out_of_memory,
            [
                0xffff_ffff_8159_9ce0..0xffff_ffff_8159_a000,
                0xffff_ffff_8159_a100..0xffff_ffff_8162_0000
            ]
        );
        assert_eq!(
            s.memcg_callers,
            [
                0xffff_ffff_8168_dc30..0xffff_ffff_8168_e000,
                0xffff_ffff_8169_1a90..0xffff_ffff_8169_2000
            ]
        );
        // Hidden addresses (kptr_restrict) and kernels without the function give nothing.
        let hidden = "0000000000000000 T out_of_memory\n0000000000000000 T vfs_read\n";
        assert_eq!(OomSymbols::parse(hidden), None);
        assert_eq!(OomSymbols::parse("ffffffff81000000 T vfs_read\n"), None);
        assert_eq!(OomSymbols::parse(""), None);
    }

    #[test]
    fn the_caller_of_out_of_memory_decides() {
        let s = symbols();
        let cases: [(u64, OomPath); 6] = [
            // Called from mem_cgroup_out_of_memory, and from its inliner try_charge_memcg.
            (0xffff_ffff_8168_dd00, OomPath::Memcg),
            (0xffff_ffff_8169_1b00, OomPath::Memcg),
            // The page allocator: a global OOM.
            (0xffff_ffff_8162_0100, OomPath::Global),
            // A return address right after a call that ends mem_cgroup_out_of_memory points at
            // the next function's start: still the memcg path.
            (0xffff_ffff_8168_e000, OomPath::Memcg),
            // The stack ends at out_of_memory.
            (0, OomPath::Unknown),
            // A caller in out_of_memory's cold part is still out_of_memory; then the allocator.
            (0xffff_ffff_8159_a200, OomPath::Global),
        ];
        for (caller, expected) in cases {
            let mut st = stack(caller);
            if caller == 0xffff_ffff_8159_a200 {
                st[6] = 0xffff_ffff_8162_0100;
            }
            assert_eq!(s.classify(&st), expected, "caller {caller:#x}");
        }
        assert_eq!(s.classify(&[0xffff_ffff_8100_0000]), OomPath::Unknown);
        assert_eq!(s.classify(&[]), OomPath::Unknown);
    }

    const MEMCG_CALLER: u64 = 0xffff_ffff_8168_dd00;

    fn clock() -> BootClock {
        BootClock {
            boot: Duration::from_secs(1_000),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn comm(name: &str) -> [u8; 16] {
        let mut c = [0; 16];
        c[..name.len()].copy_from_slice(name.as_bytes());
        c
    }

    /// A memcg OOM of `slab-workload`, 2 s before the clock's reading.
    fn event() -> OomEvent {
        OomEvent {
            boot_ns: 998_000_000_000,
            cgroup_id: 42,
            reclaim_memcg_id: 77,
            trigger_cgroup_id: 42,
            tgid: 1234,
            pid: 1236,
            trigger_tgid: 1234,
            uid: 0,
            stack_len: 7,
            oom_score_adj: 1000,
            flags: OOM_RECLAIM_SEEN,
            comm: comm("slab-workload"),
            stack: stack(MEMCG_CALLER),
        }
    }

    fn paths(id: u64) -> Option<String> {
        (id == 77).then(|| "/slabtrace-test-1-oom".to_owned())
    }

    #[test]
    fn a_memcg_oom_names_victim_memcg_and_time() {
        let kill = decode(&event(), Some(&symbols()), clock(), paths);
        assert_eq!((kill.pid, kill.tid, kill.comm.as_str()), (1234, 1236, "slab-workload"));
        assert_eq!((kill.cgroup_id, kill.uid, kill.oom_score_adj), (42, 0, 1000));
        assert_eq!(
            kill.scope,
            OomScope::Memcg {
                memcg_id: Some(77),
                memcg_path: Some("/slabtrace-test-1-oom".into())
            }
        );
        assert_eq!(kill.trigger, OomTrigger { pid: 1234, cgroup_id: 42 });
        assert_eq!(kill.at, SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_998));
        assert!(!kill.incomplete);
    }

    #[test]
    fn scope_follows_stack_and_reclaim() {
        let global = stack(0xffff_ffff_8162_0100);
        let cases: [(OomEvent, OomScope); 5] = [
            (OomEvent { stack: global, ..event() }, OomScope::Global),
            // No memcg reclaim on record: a memcg OOM all the same, without a name.
            (
                OomEvent { flags: 0, ..event() },
                OomScope::Memcg { memcg_id: None, memcg_path: None },
            ),
            // The id read failed.
            (
                OomEvent { reclaim_memcg_id: 0, ..event() },
                OomScope::Memcg { memcg_id: None, memcg_path: None },
            ),
            // A memcg whose directory is gone keeps its id.
            (
                OomEvent { reclaim_memcg_id: 5, ..event() },
                OomScope::Memcg { memcg_id: Some(5), memcg_path: None },
            ),
            // bpf_get_stack failed: the frames past stack_len are not looked at.
            (OomEvent { stack_len: 0, ..event() }, OomScope::Unknown),
        ];
        for (e, expected) in cases {
            let kill = decode(&e, Some(&symbols()), clock(), paths);
            assert_eq!(kill.scope, expected, "{e:?}");
        }
        // Without kernel symbols nothing is known.
        assert_eq!(decode(&event(), None, clock(), paths).scope, OomScope::Unknown);
    }

    #[test]
    fn the_path_lookup_is_not_asked_for_a_global_oom() {
        let e = OomEvent { stack: stack(0xffff_ffff_8162_0100), ..event() };
        let kill = decode(&e, Some(&symbols()), clock(), |id| panic!("asked for {id}"));
        assert_eq!(kill.scope, OomScope::Global);
    }

    #[test]
    fn comm_stops_at_the_nul_and_survives_bad_bytes() {
        let full = OomEvent { comm: *b"0123456789abcdef", ..event() };
        assert_eq!(decode(&full, None, clock(), paths).comm, "0123456789abcdef");
        let mut bytes = comm("ab");
        bytes[2] = 0xff;
        bytes[3] = b'c';
        let odd = OomEvent { comm: bytes, ..event() };
        assert_eq!(decode(&odd, None, clock(), paths).comm, "ab\u{fffd}c");
        let empty = OomEvent { comm: [0; 16], flags: OOM_PARTIAL, ..event() };
        let kill = decode(&empty, None, clock(), paths);
        assert_eq!(kill.comm, "");
        assert!(kill.incomplete);
    }

    #[test]
    fn boot_time_becomes_wall_time() {
        let c = clock();
        let wall = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(c.wall_time(1_000_000_000_000), wall(1_700_000_000));
        assert_eq!(c.wall_time(0), wall(1_699_999_000));
        // An instant just after the clocks were read.
        assert_eq!(c.wall_time(1_001_000_000_000), wall(1_700_000_001));
        let now = BootClock::now();
        let boot_ns = u64::try_from(now.boot.as_nanos()).unwrap();
        assert_eq!(now.wall_time(boot_ns), now.wall);
    }

    #[test]
    fn records_of_another_size_are_refused() {
        let e = event();
        // SAFETY: viewing a plain-old-data value as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<OomEvent>())
        };
        assert_eq!(parse_event(bytes), Some(e));
        // Unaligned input works too.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(bytes);
        assert_eq!(parse_event(&shifted[1..]), Some(e));
        assert_eq!(parse_event(&bytes[..bytes.len() - 1]), None);
        assert_eq!(parse_event(&[]), None);
    }

    #[test]
    fn oom_stats_pick_their_counters() {
        let mut stats = Stats::default();
        stats.0[Stat::AllocEvents as usize] = 99;
        stats.0[Stat::OomVictims as usize] = 3;
        stats.0[Stat::OomEventsLost as usize] = 1;
        stats.0[Stat::OomReadFailed as usize] = 2;
        assert_eq!(
            OomStats::from_stats(&stats),
            OomStats { victims: 3, events_lost: 1, read_failed: 2, stack_failed: 0 }
        );
    }

    #[test]
    fn the_memory_controller_is_found_in_v1_or_cgroup2() {
        let hybrid = "\
25 1 0:21 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory\\040v1 rw,relatime shared:10 - cgroup cgroup rw,memory
";
        assert_eq!(memcg_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/memory v1")));
        let unified = "29 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(memcg_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        // A named hierarchy whose options mention memory only in passing does not count.
        let named = "\
30 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=memory-ish
26 25 0:22 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(memcg_mount(named), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(memcg_mount(""), None);
        assert_eq!(memcg_mount("garbage line\n"), None);
    }

    #[test]
    #[ignore = "reads the live kernel as root: `cargo xtask test` runs it"]
    fn the_running_node_has_a_memory_controller_and_symbols() {
        let proc_root = Path::new("/proc");
        let root = find_memcg_root(proc_root).expect("a cgroup mount with the memory controller");
        assert!(root.join("cgroup.procs").exists(), "{}", root.display());
        let s = OomSymbols::read(proc_root).expect("root reads kallsyms addresses");
        assert!(!s.memcg_callers.is_empty(), "{s:?}");
    }
}
