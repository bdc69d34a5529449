//! Root integration test of the OOM programs: a real OOM kill on this kernel.
//!
//! A process in a cgroup v1 memcg limited to 64 MiB (and in a cgroup2 directory of its own, by
//! which slab is attributed) touches 512 MiB. The kernel kills it; slabtrace's OOM reader must
//! name it, its cgroup2 directory and the memcg that hit its limit, with the kernel's own
//! books agreeing that this memcg had one kill, and no other process killed. The tracer runs
//! in this process through the library, as the daemon runs it.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, ensure};
use slabtrace::{
    maps::Snapshot,
    node::oom::{OomKill, OomScope, OomStats, OomTrigger},
    probe::Tracer,
};
use slabtrace_integration::{
    Cgroup, library_tracer,
    memcg::{Memcg, ensure_killed},
    workload,
};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const LIMIT: u64 = 64 << 20;

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the OOM test needs root: run `sudo cargo xtask test`"
    );
    ensure!(Path::new(VMLINUX).exists(), "the OOM test needs the kernel's BTF at {VMLINUX}");
    Ok(())
}

fn start_tracer() -> Result<Tracer> {
    let tracer = library_tracer()?;
    ensure!(
        tracer.oom_attached(),
        "the OOM programs did not attach: {}",
        tracer.oom_unavailable().map(ToString::to_string).unwrap_or_default()
    );
    Ok(tracer)
}

/// Drains until a kill of `pid` shows up (the event is written before the victim even dies,
/// but give the ring buffer a moment), returning every kill seen.
fn kills_until(tracer: &mut Tracer, pid: u32) -> Vec<OomKill> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kills = Vec::new();
    while Instant::now() < deadline {
        kills.extend(tracer.oom_kills());
        if kills.iter().any(|k| k.pid == pid) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    kills
}

/// Runs `slab-workload hog 512` in `memcg` and `cg2`, expects it OOM-killed, and returns its
/// pid and the one kill slabtrace reports, checked to be the only one and dated in the window.
fn hog_killed(tracer: &mut Tracer, memcg: &Memcg, cg2: &Cgroup) -> Result<(u32, OomKill)> {
    // Anything from before is not ours to judge.
    let earlier = tracer.oom_kills();
    if !earlier.is_empty() {
        eprintln!("ignoring {} OOM kills from before: {earlier:?}", earlier.len());
    }
    let window_start = SystemTime::now();
    let mut child = memcg.spawn(cg2, Command::new(workload()).args(["hog", "512"]))?;
    let pid = child.id();
    ensure_killed(&mut child)?;
    let kills = kills_until(tracer, pid);
    let window_end = SystemTime::now();

    // Only the test's process died, and the kernel counts exactly one kill in its memcg.
    ensure!(kills.iter().all(|k| k.pid == pid), "other processes were OOM-killed: {kills:#?}");
    ensure!(kills.len() == 1, "expected one OOM kill of {pid}, got {kills:#?}");
    ensure!(memcg.oom_kills()? == 1, "the kernel counts {} kills in the memcg", memcg.oom_kills()?);
    let kill = kills.into_iter().next().context("no kill")?;
    eprintln!("slabtrace saw: {kill:#?}");
    ensure!(
        kill.at >= window_start - Duration::from_millis(10) && kill.at <= window_end,
        "{:?} is not within {window_start:?}..{window_end:?}",
        kill.at
    );
    Ok((pid, kill))
}

#[test]
fn a_memcg_oom_kill_names_the_victim_its_cgroup_and_the_memcg() -> Result<()> {
    require_root()?;
    let memcg = Memcg::create("oom", LIMIT)?;
    let cg2 = memcg.cgroup("oom")?;
    let mut tracer = start_tracer()?;
    let (pid, kill) = hog_killed(&mut tracer, &memcg, &cg2)?;

    assert_eq!((kill.pid, kill.comm.as_str()), (pid, "slab-workload"), "{kill:#?}");
    assert_eq!(kill.cgroup_id, cg2.id()?, "{kill:#?}");
    assert_eq!(
        kill.scope,
        OomScope::Memcg {
            memcg_id: Some(memcg.id()?),
            memcg_path: Some(memcg.relative().to_owned())
        },
        "{kill:#?}"
    );
    // The hog ran itself out of memory: it started the kill it died of.
    assert_eq!(kill.trigger, OomTrigger { pid, cgroup_id: cg2.id()? }, "{kill:#?}");
    assert_eq!((kill.uid, kill.oom_score_adj), (0, 1000), "{kill:#?}");
    assert!(!kill.incomplete, "{kill:#?}");

    // The slab side of the join: the victim's cgroup2 id keys slab counters (its exec and
    // page faults allocate vm_area_structs, page-table slabs and more), and the BPF side lost
    // nothing.
    let snapshot = Snapshot::read(tracer.ebpf()).context("reading the maps")?;
    let allocs: u64 = snapshot
        .counters
        .iter()
        .filter(|(key, _)| key.cgroup_id == kill.cgroup_id)
        .map(|(_, c)| c.allocs)
        .sum();
    assert!(allocs > 0, "no slab allocations counted for the victim's cgroup");
    let stats = OomStats::from_stats(&snapshot.stats);
    assert!(stats.victims >= 1, "{stats:?}");
    assert_eq!((stats.events_lost, stats.read_failed, stats.stack_failed), (0, 0, 0), "{stats:?}");
    Ok(())
}

/// The memcg that hit its limit is not always the victim's: here the limit is on a parent and
/// the victim lives in a child without one. slabtrace must name the parent, as the kernel's
/// `oom_memcg=` does, not the child (`task_memcg=`).
#[test]
fn the_memcg_named_is_the_one_over_its_limit_not_the_victims() -> Result<()> {
    require_root()?;
    let parent = Memcg::create("oomparent", LIMIT)?;
    let child = parent.child("unlimited")?;
    let cg2 = child.cgroup("oomchild")?;
    let mut tracer = start_tracer()?;
    let (pid, kill) = hog_killed(&mut tracer, &child, &cg2)?;

    assert_eq!((kill.pid, kill.cgroup_id), (pid, cg2.id()?), "{kill:#?}");
    assert_eq!(
        kill.scope,
        OomScope::Memcg {
            memcg_id: Some(parent.id()?),
            memcg_path: Some(parent.relative().to_owned())
        },
        "{kill:#?}"
    );
    Ok(())
}
