//! Root integration tests: the real BPF programs on this kernel, real cgroups, real workloads,
//! and the real `slabtrace report` output.
//!
//! Scenario of the foundation: cgroup A creates files on a tmpfs (a dentry and a shmem inode
//! each), cgroup B unlinks part of them. The inodes and dentries are freed later, in RCU
//! callbacks on whatever CPU and task, yet slabtrace must credit those frees to A, show the
//! rest as live in A, and agree with /proc/slabinfo.

use std::{
    process::Command,
    sync::{PoisonError, RwLock, RwLockReadGuard},
    thread,
};

use anyhow::Result;
use slabtrace_common::key::UNTRACKED_CGROUP;
use slabtrace_integration::{
    Cgroup, SETTLE_SLACK, Slabtrace, Tmpfs, bpf_maps, cache_of, cgroup, frees_name_their_cache,
    gone, node_cache, num, reported_pod, require_root, slabinfo_active, wait_for_kernel_frees,
    wait_for_state, workload,
};

/// tmpfs inodes: one per file, nobody else on a test node makes them.
const INODE_CACHE: &str = "shmem_inode_cache";

/// The tests of this file make and remove tmpfs inodes at once; the one that compares the node's
/// count of them with /proc/slabinfo takes this exclusively, so that no other test's inodes
/// come or go between the end of its trace and its reading of the kernel's count.
static SHMEM_INODES: RwLock<()> = RwLock::new(());

/// What a test that makes tmpfs inodes holds while it does.
fn making_shmem_inodes() -> RwLockReadGuard<'static, ()> {
    SHMEM_INODES.read().unwrap_or_else(PoisonError::into_inner)
}

fn create(cg: &Cgroup, dir: &std::path::Path, n: u64, name_len: usize) -> Result<()> {
    cg.run(
        Command::new(workload())
            .arg("create")
            .arg(dir)
            .arg(n.to_string())
            .arg(name_len.to_string()),
    )?;
    Ok(())
}

fn unlink(
    cg: &Cgroup,
    dir: &std::path::Path,
    start: u64,
    count: u64,
    name_len: usize,
) -> Result<()> {
    cg.run(
        Command::new(workload())
            .arg("unlink")
            .arg(dir)
            .arg(start.to_string())
            .arg(count.to_string())
            .arg(name_len.to_string()),
    )?;
    Ok(())
}

#[test]
fn frees_are_credited_to_the_allocating_cgroup_exactly() -> Result<()> {
    const CREATED: u64 = 20_000;
    const UNLINKED: u64 = 12_000;
    require_root()?;
    let _books = SHMEM_INODES.write().unwrap_or_else(PoisonError::into_inner);
    let a = Cgroup::create("alloc")?;
    let b = Cgroup::create("free")?;
    let fs = Tmpfs::mount("exact")?;

    // Exact: every object on the node tracked, while other tests run; a table four times the
    // default keeps it a small fraction full, where next to nothing is pushed out.
    let tracer = Slabtrace::start(&["--sample", "1", "--max-live", "1048576"])?;
    // Read once tracing runs, so frees from before (an earlier test's unmount, freed lazily)
    // fall in both books or in neither.
    let before = slabinfo_active(INODE_CACHE)?;
    create(&a, fs.path(), CREATED, 0)?;
    unlink(&b, fs.path(), 0, UNLINKED, 0)?;
    // B's unlinks free A's inodes and dentries in RCU callbacks, each dentry queued after its
    // inode: wait until the tracer saw them all, or the kernel has freed the inodes.
    let a_id = a.id()?;
    wait_for_kernel_frees(
        "B's unlinks to free A's inodes and dentries",
        INODE_CACHE,
        before + (CREATED - UNLINKED) + SETTLE_SLACK,
        || {
            Ok(gone(&tracer.counters(a_id, INODE_CACHE)?) >= UNLINKED
                && gone(&tracer.counters(a_id, "dentry")?) >= UNLINKED)
        },
    )?;
    let report = tracer.finish()?;
    let after = slabinfo_active(INODE_CACHE)?;

    assert_eq!(report["schema"], "slabtrace.report.v1");
    // The kernel's own figures at both ends: the files' inodes and dentries are slab.
    let meminfo = &report["meminfo"];
    assert!(meminfo["after"]["slab"].as_u64().unwrap() > 0, "{meminfo}");
    assert!(meminfo["slab_delta"].as_i64().is_some(), "{meminfo}");
    assert_eq!(report["sampling"]["rate"], 1);
    let in_a = cache_of(cgroup(&report, a.relative()), INODE_CACHE);
    let in_b = cache_of(cgroup(&report, b.relative()), INODE_CACHE);
    assert_eq!(cgroup(&report, a.relative()).unwrap()["cgroup_id"], a.id()?);

    // Every inode A created is A's, exactly (a handful more for the workload's own start-up).
    let allocs = num(in_a, "allocs");
    assert!(
        (CREATED..CREATED + 50).contains(&allocs),
        "A allocated {allocs} inodes, expected {CREATED}"
    );
    // The unlinked ones were freed in RCU callbacks, outside A, yet credited to A: every free the
    // programs ran for. Not all: on this 6.18 host under CPU load, a whole RCU batch that a task
    // runs in its softirq after ksoftirqd was preempted (1,138 frees at worst, about 1 run in 4
    // next to `stress-ng --cpu 2`) reaches ftrace's probe on the tracepoint but neither of the
    // BPF programs: their run counts do not move and no recursion miss is counted. Those
    // objects stay live on paper until their addresses come back (see issue 13's notes).
    let frees = num(in_a, "frees");
    assert!(
        (UNLINKED * 85 / 100..=UNLINKED).contains(&frees),
        "A was credited {frees} inode frees, expected about {UNLINKED}; A: {in_a:?}; node: {:?}; self: {}",
        node_cache(&report, INODE_CACHE),
        report["self"]
    );
    // Live is what was neither freed nor pushed out of the live-object table.
    let evicted = num(in_a, "evicted_objects");
    assert!(evicted <= allocs / 1000, "{evicted} of A's inodes evicted: {in_a:?}");
    assert_eq!(num(in_a, "live_objects"), allocs - frees - evicted);
    // Frees nested in a probe (an RCU batch in the softirq on the way out of an interrupt that
    // arrived during a probe) are taken by the interrupt-context programs, not lost.
    let lost = report["self"]["lost_events"].as_u64().unwrap();
    assert!(lost <= 100, "{lost} events lost to probe recursion");
    assert_eq!(num(in_a, "live_bytes"), (allocs - frees - evicted) * num(in_a, "object_size"));
    assert_eq!(num(in_a, "live_objects_error"), 0);
    assert_eq!(in_a.unwrap()["estimated"], false);
    // B unlinked but allocated no inode: nothing of this cache is B's.
    assert_eq!(num(in_b, "allocs"), 0, "B allocated inodes: {in_b:?}");
    assert_eq!(num(in_b, "frees"), 0);

    // shmem inodes are SLAB_ACCOUNT: all charged to A's memcg.
    assert_eq!(num(in_a, "accounted_allocs"), allocs);
    assert_eq!(num(in_a, "unaccounted_allocs"), 0);

    // Dentries: one per file, same story; path walks add a few of their own.
    let dentry_a = cache_of(cgroup(&report, a.relative()), "dentry");
    assert!(num(dentry_a, "allocs") >= CREATED, "A dentries: {dentry_a:?}");
    assert!(num(dentry_a, "frees") >= UNLINKED * 85 / 100, "A dentry frees: {dentry_a:?}");

    // Node-wide, what slabtrace saw change agrees with the kernel's own count (read after a
    // flush of the cache's per-CPU slabs; a few slabs per CPU of slack remain), but for the
    // unlinked inodes whose frees never reached the programs.
    let node = node_cache(&report, INODE_CACHE).expect("node-wide inode cache");
    let net = node["net_objects"].as_i64().unwrap();
    let kernel = i64::try_from(after)? - i64::try_from(before)?;
    let tolerance = 500 + i64::try_from(UNLINKED - frees)?;
    eprintln!("{INODE_CACHE}: slabtrace net {net}, /proc/slabinfo change {kernel}");
    assert!(
        (net - kernel).abs() <= tolerance,
        "slabtrace saw {net} net inodes, /proc/slabinfo changed by {kernel} (tolerance {tolerance})"
    );
    // The report carries the kernel's own (unflushed, so looser) figures beside its own.
    assert!(node["slabinfo"]["active_objs_after"].as_u64().unwrap() > 0, "{node}");
    Ok(())
}

#[test]
fn sampled_estimates_stay_within_their_bound() -> Result<()> {
    const KEPT: u64 = 30_000;
    const CHURNED: u64 = 30_000;
    require_root()?;
    let _books = making_shmem_inodes();
    let keep = Cgroup::create("keep")?;
    let churn = Cgroup::create("churn")?;
    let fs = Tmpfs::mount("sampled")?;
    let churn_dir = fs.path().join("churn");
    std::fs::create_dir(&churn_dir)?;

    let tracer = Slabtrace::start(&["--sample", "16"])?;
    create(&keep, fs.path(), KEPT, 0)?;
    create(&churn, &churn_dir, CHURNED, 0)?;
    unlink(&churn, &churn_dir, 0, CHURNED, 0)?;
    // Every sampled inode of `churn` is freed, in RCU callbacks: wait until all are seen.
    tracer.wait_for_all_gone(churn.id()?, INODE_CACHE)?;
    let report = tracer.finish()?;

    assert_eq!(report["sampling"]["rate"], 16);
    assert_eq!(report["sampling"]["estimated"], true);
    // `keep` allocated exactly KEPT inodes, all still live.
    let kept = cache_of(cgroup(&report, keep.relative()), INODE_CACHE);
    assert_eq!(kept.unwrap()["estimated"], true);
    let allocs = num(kept, "allocs");
    assert!((KEPT..KEPT + 50).contains(&allocs), "allocs are exact even when sampled: {allocs}");
    let live = num(kept, "live_objects");
    let bound = num(kept, "live_objects_error");
    assert!(bound > 0 && bound < KEPT / 5, "bound {bound} is not a useful bound");
    assert!(
        live.abs_diff(KEPT) <= bound,
        "live estimate {live} is off {KEPT} by more than ±{bound}"
    );

    // `churn` freed (nearly) everything it allocated.
    let churned = cache_of(cgroup(&report, churn.relative()), INODE_CACHE);
    let frees = num(churned, "frees");
    let bound = num(churned, "live_objects_error");
    assert!(
        frees.abs_diff(CHURNED) <= bound + CHURNED / 50,
        "free estimate {frees} is off {CHURNED} by more than ±{bound} (+2% for lazy RCU)"
    );
    Ok(())
}

/// Address reuse: one process opens and closes a file 20,000 times, one at a time, so the
/// allocator hands it the same few `struct file`s over and over. Sampling by address takes
/// all of one address's history or none of it, which scaling the sampled frees cannot
/// survive (most runs would see none of them); the frees must still come out right, within
/// the bound the report gives.
#[test]
fn frees_of_reused_addresses_stay_within_their_bound() -> Result<()> {
    const OPENS: u64 = 20_000;
    require_root()?;
    let cg = Cgroup::create("reuse")?;
    let tracer = Slabtrace::start(&["--sample", "16"])?;
    cg.run(Command::new(workload()).arg("reopen").arg(OPENS.to_string()))?;
    // The process has exited, so all its files are closed; their frees may come in RCU
    // callbacks (before 6.7): wait until every sampled one is seen.
    tracer.wait_for_all_gone(cg.id()?, "filp")?;
    let report = tracer.finish()?;

    let owner = cgroup(&report, cg.relative());
    let filp = cache_of(owner, "filp").ok_or_else(|| {
        anyhow::anyhow!("no filp cache in the cgroup's report: {:#}", owner.unwrap_or(&report))
    })?;
    let allocs = num(Some(filp), "allocs");
    assert!(allocs >= OPENS, "allocs are exact: {allocs} < {OPENS} opens");
    // The process has exited: everything it opened is closed.
    let (frees, live) = (num(Some(filp), "frees"), num(Some(filp), "live_objects"));
    let bound = num(Some(filp), "live_objects_error");
    assert!(
        allocs.abs_diff(frees) <= bound && live <= bound,
        "{frees} frees and {live} live of {allocs} allocated: off by more than ±{bound}"
    );
    Ok(())
}

#[test]
fn kmalloc_size_classes_and_memcg_accounting() -> Result<()> {
    const FILES: u64 = 3_000;
    const EVENTFDS: u64 = 3_000;
    require_root()?;
    let _books = making_shmem_inodes();
    let cg = Cgroup::create("kmalloc")?;
    let fs = Tmpfs::mount("kmalloc")?;

    // Exact: every object on the node tracked, while other tests run; a table four times the
    // default keeps it a small fraction full, where next to nothing is pushed out.
    let tracer = Slabtrace::start(&["--sample", "1", "--max-live", "1048576"])?;
    // 100-byte names do not fit in the dentry: each gets an external name from kmalloc with
    // __GFP_ACCOUNT, which is kmalloc-cg-128, or kmalloc-rcl-128 on kernels (6.18) that also
    // mark it __GFP_RECLAIMABLE: charged to the memcg either way.
    create(&cg, fs.path(), FILES, 100)?;
    // An eventfd context is a plain GFP_KERNEL kmalloc: kmalloc-64, charged to no memcg. Held
    // for a while, then closed: allocated and freed.
    // Closing an eventfd frees its context at once, not in an RCU callback: nothing to wait for.
    cg.run(Command::new(workload()).args(["eventfd", &EVENTFDS.to_string(), "200"]))?;
    let report = tracer.finish()?;

    let mine = cgroup(&report, cg.relative());
    let names = cache_of(mine, "kmalloc-rcl-128").or_else(|| cache_of(mine, "kmalloc-cg-128"));
    assert!(num(names, "allocs") >= FILES, "external names: {names:?}");
    assert_eq!(num(names, "accounted_allocs"), num(names, "allocs"));
    // Live, or pushed out of the live-object table: a bound, [live, live + evicted].
    assert!(
        num(names, "live_objects") + num(names, "evicted_objects") >= FILES,
        "names are still live: {names:?}"
    );
    assert!(num(names, "evicted_objects") <= FILES / 1000, "{names:?}");
    assert_eq!(num(names, "unaccounted_live_bytes"), 0);

    let ctx = cache_of(mine, "kmalloc-64");
    assert!(num(ctx, "allocs") >= EVENTFDS, "eventfd contexts: {ctx:?}");
    assert!(num(ctx, "unaccounted_allocs") >= EVENTFDS);
    // Closed eventfds are freed (kfree) and credited back.
    assert!(num(ctx, "frees") >= EVENTFDS, "eventfd frees: {ctx:?}");
    Ok(())
}

#[test]
fn interrupt_allocations_are_not_charged_to_the_interrupted_task() -> Result<()> {
    const CONNECTIONS: u64 = 500;
    require_root()?;
    let cg = Cgroup::create("softirq")?;

    let tracer = Slabtrace::start(&["--sample", "1"])?;
    cg.run(Command::new(workload()).args(["tcp-connect", &CONNECTIONS.to_string()]))?;
    let report = tracer.finish()?;

    assert_eq!(report["self"]["interrupt_detection"], true);
    // The SYN is handled in the receive softirq, which allocates the request socket there:
    // that is the kernel's doing, in interrupt context, not the connecting task's. Softirqs
    // the kernel defers to ksoftirqd (more of them on a slow machine) run in that thread's
    // task context, charged to its cgroup: not the connecting task's either.
    let irq = report.get("interrupt").filter(|v| !v.is_null());
    let in_irq = num(cache_of(irq, "request_sock_TCP"), "allocs");
    let mine = cgroup(&report, cg.relative());
    assert_eq!(num(cache_of(mine, "request_sock_TCP"), "allocs"), 0, "{mine:?}");
    let elsewhere: u64 = report["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| num(cache_of(Some(c), "request_sock_TCP"), "allocs"))
        .sum();
    assert!(in_irq + elsewhere >= CONNECTIONS, "{in_irq} + {elsewhere}: {irq:?}");
    assert!(in_irq >= CONNECTIONS / 2, "most in the interrupt bucket: {irq:?}");
    // The task's own allocations stay its own: the sockets it created with socket(2).
    assert!(num(cache_of(mine, "TCP"), "allocs") >= CONNECTIONS, "{mine:?}");
    Ok(())
}

#[test]
fn a_removed_cgroup_keeps_its_path_and_its_live_objects() -> Result<()> {
    const FILES: u64 = 2_000;
    require_root()?;
    let _books = making_shmem_inodes();
    let fs = Tmpfs::mount("vanish")?;
    let cg = Cgroup::create("vanish")?;
    let (id, path) = (cg.id()?, cg.relative().to_owned());

    let tracer = Slabtrace::start(&["--sample", "1"])?;
    create(&cg, fs.path(), FILES, 0)?;
    // Let slabtrace see the cgroup while it exists (it names cgroups every second), then
    // remove it, as the kubelet removes a deleted pod's cgroup.
    thread::sleep(std::time::Duration::from_millis(2500));
    drop(cg);
    let report = tracer.finish()?;

    let gone = cgroup(&report, &path).expect("the removed cgroup is still reported by its path");
    assert_eq!(gone["cgroup_id"], id);
    assert_eq!(gone["alive"], false);
    // Its files still exist, so its inodes are still live and still its own.
    let inodes = cache_of(Some(gone), INODE_CACHE);
    assert_eq!(num(inodes, "live_objects"), FILES, "{inodes:?}");
    Ok(())
}

#[test]
fn pods_roll_up_their_containers_from_kubelet_cgroup_paths() -> Result<()> {
    const FILES: u64 = 3_000;
    const UID: &str = "5e0c7a1d-2b3f-4c6e-9d8a-7f1e2c3b4a50";
    const APP: &str = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const SIDECAR: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    require_root()?;
    let _books = making_shmem_inodes();
    // The cgroupfs driver's layout for a BestEffort pod with two containers.
    let app = Cgroup::create_at(&format!("/kubepods/besteffort/pod{UID}/{APP}"))?;
    let sidecar = Cgroup::create_at(&format!("/kubepods/besteffort/pod{UID}/{SIDECAR}"))?;
    let fs = Tmpfs::mount("pods")?;
    let side_dir = fs.path().join("sidecar");
    std::fs::create_dir(&side_dir)?;

    let tracer = Slabtrace::start(&["--sample", "1"])?;
    create(&app, fs.path(), FILES, 0)?;
    create(&sidecar, &side_dir, FILES / 3, 0)?;
    let report = tracer.finish()?;

    let pod = reported_pod(&report, UID)?;
    assert_eq!(pod["qos"], "best_effort");
    assert_eq!(pod["deleted"], false);
    let inodes = |v: &serde_json::Value| num(cache_of(Some(v), INODE_CACHE), "live_objects");
    assert_eq!(inodes(pod), FILES + FILES / 3, "the pod sums its containers: {pod}");
    let containers = pod["containers"].as_array().unwrap();
    let by_id = |id: &str| containers.iter().find(|c| c["container_id"] == id).unwrap();
    assert_eq!(inodes(by_id(APP)), FILES);
    assert_eq!(inodes(by_id(SIDECAR)), FILES / 3);
    drop(sidecar);
    drop(app);
    Ok(())
}

#[test]
fn a_deleted_pod_keeps_its_identity_and_its_live_objects() -> Result<()> {
    const FILES: u64 = 2_000;
    const UID: &str = "7d2c9e4f-3a1b-4c5d-8e6f-9a0b1c2d3e4f";
    const ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
    require_root()?;
    let _books = making_shmem_inodes();
    // The systemd driver's layout (it cannot run here: no systemd), made by hand: a Burstable
    // pod with one containerd container.
    let slice = format!("kubepods-burstable-pod{}.slice", UID.replace('-', "_"));
    let container = Cgroup::create_at(&format!(
        "/kubepods.slice/kubepods-burstable.slice/{slice}/cri-containerd-{ID}.scope"
    ))?;
    let fs = Tmpfs::mount("deleted-pod")?;

    let tracer = Slabtrace::start(&["--sample", "1"])?;
    create(&container, fs.path(), FILES, 0)?;
    // The kubelet removes a deleted pod's cgroups; the files (on a volume that outlives the
    // pod) and so their inodes stay.
    thread::sleep(std::time::Duration::from_millis(2500));
    drop(container);
    let report = tracer.finish()?;

    let pod = reported_pod(&report, UID)?;
    assert_eq!(pod["deleted"], true);
    assert_eq!(pod["qos"], "burstable");
    assert_eq!(num(cache_of(Some(pod), INODE_CACHE), "live_objects"), FILES, "{pod}");
    let c = &pod["containers"][0];
    assert_eq!(c["container_id"], ID);
    assert_eq!(c["runtime"], "containerd");
    Ok(())
}

#[test]
fn reconciliation_explains_a_known_workload() -> Result<()> {
    const CREATED: u64 = 20_000;
    require_root()?;
    let _books = making_shmem_inodes();
    let a = Cgroup::create("reconcile")?;
    let fs = Tmpfs::mount("reconcile")?;
    // Exact: the window also holds frees slabtrace cannot control, of inodes from before it
    // (an earlier test's unmount, freed lazily). Estimated 1 in 16 they went past the bound
    // the report gives (6.1: 1,194 objects unexplained against a bound of 464), which issue
    // 13 follows; this test is about the books agreeing.
    let tracer = Slabtrace::start(&["--sample", "1"])?;
    create(&a, fs.path(), CREATED, 0)?;
    let report = tracer.finish()?;
    let caches = report["reconciliation"]["caches"].as_array().cloned().unwrap_or_default();
    let inodes = caches
        .iter()
        .find(|c| c["cache"] == INODE_CACHE)
        .ok_or_else(|| anyhow::anyhow!("no reconciliation for {INODE_CACHE}: {caches:#?}"))?;
    let coverage = inodes["coverage_pct"].as_f64().unwrap_or(0.0);
    eprintln!("{INODE_CACHE}: {inodes}\ntotal: {}", report["reconciliation"]["total"]);
    // The kernel's count moved by about 20,000; slabtrace's net explains it within a few
    // percent (the kernel counts objects in per-CPU slabs as active).
    assert!(inodes["kernel_delta_objects"].as_i64() >= Some(19_000), "{inodes}");
    assert!((95.0..=105.0).contains(&coverage), "coverage {coverage}%: {inodes}");
    let total = &report["reconciliation"]["total"];
    assert!(total["kernel_delta_bytes"].as_i64() > Some(0), "{total}");
    assert!(total["attributed_share_pct"].as_f64() > Some(0.0), "{total}");
    Ok(())
}

#[test]
fn call_sites_name_the_kernel_functions_that_allocated() -> Result<()> {
    const CREATED: u64 = 3_000;
    require_root()?;
    let _books = making_shmem_inodes();
    let a = Cgroup::create("callsites")?;
    let fs = Tmpfs::mount("callsites")?;
    let tracer = Slabtrace::start(&["--call-sites"])?;
    // Names longer than a dentry's inline space: each also kmallocs an external name.
    create(&a, fs.path(), CREATED, 100)?;
    let report = tracer.finish()?;
    if report["self"]["cache_allocs"] == "fexit" {
        // Before Linux 6.1 named-cache allocations are traced on return from the allocation
        // functions, which see no call site; kmalloc's tracepoint still names it.
        let mine = cgroup(&report, a.relative());
        let inodes = cache_of(mine, INODE_CACHE);
        assert!(inodes.is_some_and(|c| c.get("call_sites").is_none()), "{inodes:?}");
        let names = cache_of(mine, "kmalloc-rcl-128").or_else(|| cache_of(mine, "kmalloc-128"));
        let site = names.map(|c| c["call_sites"][0].clone()).unwrap_or_default();
        assert!(site["site"].as_str().is_some_and(|s| s.contains("d_alloc")), "{site}");
        assert!(site["allocs"].as_u64() >= Some(CREATED), "{site}");
        return Ok(());
    }
    let inodes = cache_of(cgroup(&report, a.relative()), INODE_CACHE);
    let sites = inodes.map(|c| c["call_sites"].clone()).unwrap_or_default();
    eprintln!("{INODE_CACHE} call sites: {sites}");
    // tmpfs inodes come from shmem_alloc_inode, every one of them (allocations are exact).
    let top = &sites[0];
    assert!(top["site"].as_str().is_some_and(|s| s.starts_with("shmem_alloc_inode+")), "{sites}");
    assert!(top["allocs"].as_u64() >= Some(CREATED), "{sites}");
    let dentries = cache_of(cgroup(&report, a.relative()), "dentry");
    let site = dentries.map(|c| c["call_sites"][0]["site"].clone()).unwrap_or_default();
    assert!(site.as_str().is_some_and(|s| s.contains("d_alloc")), "{site}");

    // Off by default: no call sites in the report at all.
    let plain = Slabtrace::start(&[])?;
    create(&a, fs.path(), 0, 0)?;
    let report = plain.finish()?;
    let any = report["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["caches"].as_array().into_iter().flatten())
        .any(|c| c.get("call_sites").is_some());
    assert!(!any, "call sites without --call-sites");
    Ok(())
}

#[test]
fn a_full_live_object_table_pushes_objects_out_and_leaves_no_phantoms() -> Result<()> {
    const FILES: u64 = 2_000;
    require_root()?;
    // It compares the node's count of tmpfs inodes too.
    let _books = SHMEM_INODES.write().unwrap_or_else(PoisonError::into_inner);
    let cg = Cgroup::create("evict")?;
    let fs = Tmpfs::mount("evict")?;
    // The smallest table there is: two sets of eight slots, for every object on the node.
    let tracer = Slabtrace::start(&["--sample", "1", "--max-live", "16"])?;
    create(&cg, fs.path(), FILES, 0)?;
    unlink(&cg, fs.path(), 0, FILES, 0)?;
    // The frees come in RCU callbacks: those of the few objects still in the table are
    // credited to the cgroup; those of the evicted ones come back untracked.
    let mine = tracer.wait_for_all_gone(cg.id()?, INODE_CACHE)?;
    // Where frees do not name their cache, the unknown cache's untracked frees include every
    // other kfree on the node: a weak condition, as is the assertion it comes before.
    let (pid, unknown) = (tracer.pid(), !frees_name_their_cache()?);
    wait_for_state(
        "the evicted inodes' frees to come back untracked",
        || bpf_maps::counters_of(pid, UNTRACKED_CGROUP, INODE_CACHE, unknown),
        |untracked| untracked.sampled_frees >= mine.sampled_evicted,
    )?;
    let report = tracer.finish()?;

    let inodes = cache_of(cgroup(&report, cg.relative()), INODE_CACHE);
    let (allocs, live, evicted) =
        (num(inodes, "allocs"), num(inodes, "live_objects"), num(inodes, "evicted_objects"));
    assert!(allocs >= FILES, "{inodes:?}");
    // Nearly all were pushed out before their free; each is said so, once, for its owner.
    assert!(evicted >= FILES / 2, "only {evicted} of {allocs} inodes evicted: {inodes:?}");
    // Every file is gone, and nothing stays live on paper: what is left fits the table.
    assert!(live <= 16, "{live} inodes still live on paper after all were freed: {inodes:?}");
    let me = &report["self"];
    assert!(me["evictions"].as_u64() >= Some(evicted), "{me}");
    assert_eq!(me["live_capacity"], 16, "{me}");
    let warned = me["warnings"].as_array().into_iter().flatten().any(|w| {
        w.as_str().is_some_and(|w| w.contains("pushed out of the full live-object table"))
    });
    assert!(warned, "no warning about the evictions: {me}");
    // Node-wide, the inodes came and went: each evicted one's free came back as untracked.
    // Before Linux 6.1 (fexit there) a free does not name its cache, so those untracked frees
    // are counted under the unknown cache instead.
    let node = node_cache(&report, INODE_CACHE).expect("node-wide inode cache");
    let net = node["net_objects"].as_i64().unwrap();
    if me["cache_allocs"] == "fexit" {
        let unknown = node_cache(&report, "(unknown: kfree of an untracked object)")
            .expect("untracked frees without a cache");
        let untracked = unknown["untracked_frees"].as_u64().unwrap_or(0);
        assert!(untracked >= evicted, "{evicted} evicted, {untracked} untracked frees: {unknown}");
        assert!(net.unsigned_abs() <= allocs + 100, "net {net}: {node}");
    } else {
        assert!(
            net.unsigned_abs() <= 100,
            "net {net} inodes after creating and removing all: {node}"
        );
    }
    Ok(())
}

/// A task that moves between cgroups is charged to each for what it allocated there, exactly:
/// the allocation programs' per-CPU cache of cgroup ids (keyed by the task's `css_set` and pid,
/// dropped at every cgroup move) never answers with a cgroup the task has left. Three cgroups
/// in turn, so that a `css_set` freed when the task leaves one can come back at the same
/// address as the next one's.
#[test]
fn a_task_moving_between_cgroups_is_charged_to_each_for_its_own_allocations() -> Result<()> {
    const PER_ROUND: u64 = 50;
    const ROUNDS: u64 = 300;
    require_root()?;
    let _books = making_shmem_inodes();
    let groups = [Cgroup::create("move-a")?, Cgroup::create("move-b")?, Cgroup::create("move-c")?];
    let start = Cgroup::create("move-start")?;
    let fs = Tmpfs::mount("moving")?;
    let tracer = Slabtrace::start(&["--sample", "1", "--max-live", "1048576"])?;
    let mut cmd = Command::new(workload());
    cmd.arg("create-moving")
        .arg(fs.path())
        .arg(PER_ROUND.to_string())
        .arg(ROUNDS.to_string())
        .args(groups.iter().map(|g| g.path().join("cgroup.procs")));
    start.run(&mut cmd)?;
    let report = tracer.finish()?;
    let each = ROUNDS / 3 * PER_ROUND;
    for g in &groups {
        let inodes = num(cache_of(cgroup(&report, g.relative()), INODE_CACHE), "allocs");
        assert_eq!(inodes, each, "{} was charged {inodes} inodes, expected {each}", g.relative());
    }
    // The starting cgroup only ran the workload's start-up, which creates no file there.
    let started = num(cache_of(cgroup(&report, start.relative()), INODE_CACHE), "allocs");
    assert_eq!(started, 0, "the start cgroup was charged {started} inodes");
    Ok(())
}
