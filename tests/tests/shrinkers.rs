//! Root integration test of the shrinker programs: real reclaim on this kernel.
//!
//! A process in a test cgroup looks up 50 000 names that do not exist in a fresh directory,
//! leaving 50 000 negative dentries on that filesystem's superblock LRU. Dropping the slab
//! caches (`echo 2 > /proc/sys/vm/drop_caches`, which calls every shrinker with something to
//! free) must show the superblock shrinkers called, scanning and freeing at least those
//! dentries, with the kernel's own books agreeing: `slabs_scanned` in /proc/vmstat counts the
//! objects every shrinker scanned, and /proc/sys/fs/dentry-state the negative dentries left.
//! A quiet interval before it must show fewer calls. The tracer runs in this process through
//! the library, as the daemon runs it.
//!
//! The directory is on the disk the tests build on, not on a tmpfs: tmpfs (like every
//! filesystem using `simple_lookup`) deletes a negative dentry at its last `dput`, so lookups
//! there leave nothing for reclaim.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use slabtrace::{
    kernel::kallsyms::Kallsyms,
    maps::Snapshot,
    node::{
        growth::Reclaim,
        shrinkers::{
            NamedShrinkerDelta, ShrinkerLosses, delta, reclaim_for_cache, summarize, symbolize,
        },
    },
    probe::Tracer,
};
use slabtrace_integration::{Cgroup, library_tracer, workload};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// Negative dentries the workload leaves.
const LOOKUPS: u64 = 50_000;
/// How many of them must be seen made and freed: a little slack for the kernel reclaiming on
/// its own in between.
const EXPECTED: u64 = LOOKUPS * 8 / 10;

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the shrinker test needs root: run `sudo cargo xtask test`"
    );
    ensure!(Path::new(VMLINUX).exists(), "the shrinker test needs the kernel's BTF at {VMLINUX}");
    Ok(())
}

fn start_tracer() -> Result<Tracer> {
    let tracer = library_tracer()?;
    ensure!(
        tracer.shrinkers_attached(),
        "the shrinker programs did not attach: {}",
        tracer.shrinkers_unavailable().map(ToString::to_string).unwrap_or_default()
    );
    Ok(tracer)
}

/// A directory removed (with whatever is in it) when dropped.
struct Dir(PathBuf);

impl Dir {
    /// A fresh directory under cargo's scratch space for integration tests (in `target/`).
    fn create() -> Result<Self> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("slabtrace-test-{}-shrinkers", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Negative dentries on the node (`nr_negative`, the fifth field of
/// /proc/sys/fs/dentry-state).
fn negative_dentries() -> Result<u64> {
    let text = fs::read_to_string("/proc/sys/fs/dentry-state")?;
    let field = text.split_whitespace().nth(4).context("dentry-state has no nr_negative")?;
    Ok(field.parse()?)
}

/// Objects every shrinker scanned since boot, by the kernel's count (`slabs_scanned`).
fn slabs_scanned() -> Result<u64> {
    let text = fs::read_to_string("/proc/vmstat")?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("slabs_scanned "))
        .context("/proc/vmstat has no slabs_scanned")?;
    Ok(line.trim().parse()?)
}

fn total(shrinkers: &[NamedShrinkerDelta], f: impl Fn(&NamedShrinkerDelta) -> u64) -> u64 {
    shrinkers.iter().map(f).sum()
}

fn show(what: &str, shrinkers: &[NamedShrinkerDelta]) {
    eprintln!("{what}: {} shrinkers called", shrinkers.len());
    for s in summarize(shrinkers) {
        eprintln!(
            "  {:<28} {:<12} shrinkers {:>4} calls {:>6} scanned {:>9} freed {:>9}",
            s.scan_fn,
            s.name.as_deref().unwrap_or("-"),
            s.shrinkers,
            s.calls,
            s.scanned,
            s.freed
        );
    }
}

#[test]
fn drop_caches_shows_the_superblock_shrinkers_reclaiming_dentries() -> Result<()> {
    require_root()?;
    let started = Instant::now();
    let tracer = start_tracer()?;
    let kallsyms = Kallsyms::read(Path::new("/proc")).context("reading /proc/kallsyms")?;

    // Negative dentries, made in a cgroup of the test's own.
    let dir = Dir::create()?;
    let cgroup = Cgroup::create("shrinkers")?;
    let negative_before = negative_dentries()?;
    cgroup
        .run(Command::new(workload()).arg("stat-missing").arg(&dir.0).arg(LOOKUPS.to_string()))?;
    let made = negative_dentries()?.saturating_sub(negative_before);
    ensure!(
        made >= EXPECTED,
        "{LOOKUPS} lookups in {} left only {made} negative dentries: its filesystem does not keep \
         them (tmpfs?), so there is nothing for reclaim",
        dir.0.display()
    );

    // A quiet interval: whatever the kernel reclaims on its own.
    let quiet_start = tracer.shrinkers()?;
    thread::sleep(Duration::from_secs(2));
    let quiet_end = tracer.shrinkers()?;
    let quiet = symbolize(&delta(&quiet_start, &quiet_end), Some(&kallsyms));
    show("quiet 2 s", &quiet);

    // Reclaim, for real: every shrinker once.
    let negative_before_drop = negative_dentries()?;
    let kernel_before = slabs_scanned()?;
    fs::write("/proc/sys/vm/drop_caches", "2").context("writing /proc/sys/vm/drop_caches")?;
    let kernel_scanned = slabs_scanned()? - kernel_before;
    let dropped = symbolize(&delta(&quiet_end, &tracer.shrinkers()?), Some(&kallsyms));
    let freed_negative = negative_before_drop.saturating_sub(negative_dentries()?);
    show("drop_caches", &dropped);

    let superblocks: Vec<NamedShrinkerDelta> =
        dropped.iter().filter(|s| s.scan_fn == "super_cache_scan").cloned().collect();
    let (calls, scanned, freed) = (
        total(&superblocks, |s| s.calls),
        total(&superblocks, |s| s.scanned),
        total(&superblocks, |s| s.freed),
    );
    eprintln!(
        "superblock shrinkers: {} called {calls} times, scanned {scanned}, freed {freed}; the \
         kernel freed {freed_negative} negative dentries",
        superblocks.len()
    );
    assert!(calls > 0 && scanned > 0 && freed > 0, "{superblocks:#?}");
    // Our dentries were freed, and the superblock shrinkers said so.
    assert!(freed_negative >= EXPECTED, "only {freed_negative} negative dentries went");
    assert!(freed >= EXPECTED, "superblock shrinkers freed {freed} objects");

    // What the growth classifier gets: dentries and disk inodes were reclaimed, sockets not.
    let dentry = reclaim_for_cache("dentry", true, &dropped);
    assert_eq!(dentry, Reclaim { scanned, freed });
    assert_eq!(reclaim_for_cache("ext4_inode_cache", true, &dropped), dentry);
    assert_eq!(reclaim_for_cache("sock_inode_cache", true, &dropped), Reclaim::default());
    assert_eq!(reclaim_for_cache("dentry", false, &dropped), Reclaim::default());

    // Every object scanned, by every shrinker, as the kernel counts them: the same figure but
    // for calls in flight at the two reads (kswapd, say).
    let ours = total(&dropped, |s| s.scanned);
    eprintln!("all shrinkers scanned {ours}; the kernel's slabs_scanned rose by {kernel_scanned}");
    assert!(
        ours.abs_diff(kernel_scanned) <= (kernel_scanned / 20).max(1024),
        "slabtrace counts {ours} objects scanned, the kernel {kernel_scanned}"
    );

    // drop_caches is what made reclaim run.
    let quiet_calls = total(&quiet, |s| s.calls);
    let dropped_calls = total(&dropped, |s| s.calls);
    assert!(
        dropped_calls > quiet_calls,
        "calls: {dropped_calls} with drop_caches, {quiet_calls} without"
    );

    // Nothing lost on the BPF side.
    let stats = Snapshot::read(tracer.ebpf()).context("reading the maps")?.stats;
    assert_eq!(ShrinkerLosses::from_stats(&stats), ShrinkerLosses::default());
    eprintln!("took {:?}", started.elapsed());
    Ok(())
}
