//! Charged now: slab a pod allocated before slabtrace started is nobody's in the traced figures,
//! but the memory controller's books have it, and the report shows it per pod and container.
//!
//! A kubelet-shaped container cgroup creates 20,000 files on a tmpfs (a shmem inode and a dentry
//! each, both `SLAB_ACCOUNT` caches, charged to its memcg) and exits; only then does a one-shot
//! `slabtrace report` start. On this hybrid host the memory controller is cgroup v1, so the
//! cgroup is made in both hierarchies at the same relative path and the report reads
//! `memory.kmem.usage_in_bytes`; in `cargo xtask vm`'s cgroup-v2-only VMs it reads
//! `memory.stat`'s slab lines. The daemon shows the same in `/report` and `/metrics`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use slabtrace::cgroup::charged::{MemcgBooks, Source};
use slabtrace_integration::{
    Cgroup, Slabtrace, Tmpfs, cache_of, cgroup2_root, check_event_schema, daemon::Daemon,
    fresh_uid, num, remove_cgroup_dir, reported_pod, require_root, run_in, wait_for_state,
    workload,
};

const FILES: u64 = 20_000;

/// The container's id in its cgroup's name (the cgroupfs driver's bare id).
const CONTAINER: &str = "c4a26ed0c4a26ed0c4a26ed0c4a26ed0c4a26ed0c4a26ed0c4a26ed0c4a26ed0";

/// What of the files' objects' sizes the books must show at least. The books count each object
/// at its slab size plus an `obj_cgroup` pointer, so they can only be higher, but v1 charges
/// whole pages through a per-CPU stock and 5.10's `memory.stat` is propagated in per-CPU
/// batches: both can lag by a few pages per CPU, which 10% of ~17 MiB covers many times over.
const SLACK: f64 = 0.9;

/// The same relative path in the cgroup v1 memory hierarchy (hybrid nodes), removed on drop
/// deepest first.
struct V1Dirs(Vec<PathBuf>);

impl V1Dirs {
    fn create(root: &Path, relative: &str) -> Result<Self> {
        let mut made = Vec::new();
        let mut dir = root.to_owned();
        for part in relative.trim_start_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                made.push(dir.clone());
            }
        }
        made.reverse();
        Ok(Self(made))
    }
}

impl Drop for V1Dirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            remove_cgroup_dir(dir);
        }
    }
}

/// `objsize` of a cache in /proc/slabinfo; None when the cache is not listed by that name
/// (merged into another).
fn object_size(cache: &str) -> Result<Option<u64>> {
    let text = fs::read_to_string("/proc/slabinfo")?;
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&cache) {
            return Ok(Some(f.get(3).context("short slabinfo line")?.parse()?));
        }
    }
    Ok(None)
}

/// Runs `cmd` in the container cgroup at `path`: its cgroup2 directory under `cg2` and, on a
/// hybrid node, its memcg under the memory hierarchy's root `memcg_root`.
fn run_in_container(
    cg2: &Path,
    memcg_root: Option<&Path>,
    path: &str,
    cmd: &mut Command,
) -> Result<()> {
    let relative = path.trim_start_matches('/');
    let container = cg2.join(relative);
    let memcg = memcg_root.map(|root| root.join(relative));
    let dirs: Vec<&Path> = std::iter::once(container.as_path()).chain(memcg.as_deref()).collect();
    run_in(&dirs, cmd)?;
    Ok(())
}

/// A kubelet-shaped container cgroup that made [`FILES`] tmpfs files and exited, in whichever
/// hierarchy has the memory controller; removed, with its files, on drop.
struct FilledPod {
    books: MemcgBooks,
    uid: String,
    path: String,
    inode: u64,
    dentry: u64,
    /// What its books must show at least.
    bound: f64,
    /// What its books showed before slabtrace started.
    before: u64,
    // Dropped in this order: the files, then the cgroups.
    fs: Option<Tmpfs>,
    v1: Option<V1Dirs>,
    container: Option<Cgroup>,
}

impl FilledPod {
    fn make(tag: &str) -> Result<Self> {
        let Some(books) = MemcgBooks::find(Path::new("/proc")) else {
            bail!("no cgroup hierarchy has the memory controller: nothing is charged to read");
        };
        let uid = fresh_uid()?;
        let pod_path = format!("/kubepods/besteffort/pod{uid}");
        let path = format!("{pod_path}/{CONTAINER}");
        let container = Cgroup::create_at(&path)?;
        let cg2 = cgroup2_root()?;
        let v1 = match books.source {
            Source::CgroupV1 => Some(V1Dirs::create(&books.root, &path)?),
            Source::CgroupV2 => {
                // Each level offers the memory controller to the next, as the kubelet enables
                // it, so the container's cgroup is a memcg of its own.
                for parent in ["/kubepods", "/kubepods/besteffort", pod_path.as_str()] {
                    let control =
                        cg2.join(parent.trim_start_matches('/')).join("cgroup.subtree_control");
                    fs::write(&control, "+memory")
                        .with_context(|| format!("enabling memory in {}", control.display()))?;
                }
                None
            }
        };
        let fs = Tmpfs::mount(tag)?;
        let inode =
            object_size("shmem_inode_cache")?.context("no shmem_inode_cache in slabinfo")?;
        // dentry is not merged on the kernels tested (its usercopy region forbids it); should
        // it be, the bound keeps the inodes alone.
        let dentry = object_size("dentry")?.unwrap_or(0);
        let bound = (FILES * (inode + dentry)) as f64 * SLACK;

        run_in_container(
            &cg2,
            v1.as_ref().map(|_| books.root.as_path()),
            &path,
            Command::new(workload()).arg("create").arg(fs.path()).arg(FILES.to_string()).arg("0"),
        )?;
        // The kernel's own books first: 5.10's memory.stat propagates in per-CPU batches.
        let before = wait_for_state(
            "the container's books to show the files",
            || Ok(books.read(&path)?.and_then(|c| c.slab.or(c.kmem)).unwrap_or(0)),
            |&bytes| bytes as f64 >= bound,
        )?;
        Ok(Self {
            books,
            uid,
            path,
            inode,
            dentry,
            bound,
            before,
            fs: Some(fs),
            v1,
            container: Some(container),
        })
    }

    /// The figure the books give of slab on this hierarchy: v2's slab lines, or v1's kmem.
    fn slab(&self, charged: &Value) -> Option<u64> {
        match self.books.source {
            Source::CgroupV2 => charged["slab"].as_u64(),
            Source::CgroupV1 => charged["kmem"].as_u64(),
        }
    }
}

impl Drop for FilledPod {
    fn drop(&mut self) {
        drop(self.fs.take());
        drop(self.v1.take());
        drop(self.container.take());
    }
}

#[test]
fn slab_charged_before_tracing_is_shown_per_pod_and_container() -> Result<()> {
    require_root()?;
    let filled = FilledPod::make("charged")?;
    let FilledPod { uid, bound, inode, dentry, before, .. } = &filled;
    let (bound, inode, dentry) = (*bound, *inode, *dentry);

    // Only now does slabtrace start: every one of those objects predates it.
    let report = Slabtrace::start(&["--sample", "1"])?.finish()?;

    let pod = reported_pod(&report, uid)?;
    let containers = pod["containers"].as_array().context("containers[]")?;
    let c = containers
        .iter()
        .find(|c| c["container_id"] == CONTAINER)
        .with_context(|| format!("container {CONTAINER} not in {pod:#}"))?;
    let source = serde_json::to_value(filled.books.source)?;
    assert_eq!(c["charged"]["source"], source, "{c:#}");
    let (in_container, in_pod) = (filled.slab(&c["charged"]), filled.slab(&pod["charged"]));
    eprintln!(
        "{FILES} files of {inode} + {dentry} bytes: books {before} before tracing, the report \
         {in_container:?} for the container, {in_pod:?} for the pod (bound {bound:.0})"
    );
    let in_container = in_container.with_context(|| format!("nothing charged: {c:#}"))?;
    assert!(in_container as f64 >= bound, "container charged {in_container} < {bound:.0}");
    // The pod's books are hierarchical: its container's are in them.
    assert!(in_pod.unwrap_or(0) >= in_container, "pod {in_pod:?} < container {in_container}");
    if filled.books.source == Source::CgroupV2 {
        // v2 splits slab: dentries are reclaimable, tmpfs inodes are not (shmem_inode_cache
        // has no SLAB_RECLAIM_ACCOUNT: a tmpfs file's inode is its data).
        let split = |field: &str| c["charged"][field].as_u64().unwrap_or(0) as f64;
        let (reclaimable, unreclaimable) = (split("slab_reclaimable"), split("slab_unreclaimable"));
        let (dentries, inodes) = ((FILES * dentry) as f64 * SLACK, (FILES * inode) as f64 * SLACK);
        assert!(reclaimable >= dentries, "slab_reclaimable {reclaimable} < {dentries:.0}");
        assert!(unreclaimable >= inodes, "slab_unreclaimable {unreclaimable} < {inodes:.0}");
    }
    // The traced figures know nothing of them: nothing ran in the pod while traced.
    for cache in ["shmem_inode_cache", "dentry"] {
        let traced = num(cache_of(Some(pod), cache), "allocs");
        assert_eq!(traced, 0, "{cache} allocations traced for the pod: {pod:#}");
    }

    // The node's reconciliation: every cgroup's books summed, against meminfo's Slab.
    let node = &report["charged"];
    assert_eq!(node["source"], source, "{node:#}");
    let all = filled.slab(&node["cgroups"]).unwrap_or(0);
    assert!(all >= in_pod.unwrap_or(0), "the cgroups' sum {all} < the pod's: {node:#}");
    ensure!(node["node_slab_bytes"].as_u64().is_some_and(|s| s > 0), "{node:#}");
    match filled.books.source {
        Source::CgroupV2 => ensure!(node["uncharged_slab_bytes"].is_u64(), "{node:#}"),
        Source::CgroupV1 => ensure!(node["uncharged_slab_bytes"].is_null(), "{node:#}"),
    }
    Ok(())
}

#[test]
fn the_daemon_reports_and_exports_what_a_pod_is_charged() -> Result<()> {
    require_root()?;
    // Another tag than the daemon's: its directory is emptied when it starts.
    let filled = FilledPod::make("charged-files")?;
    let daemon = Daemon::start("charged-daemon", &["--interval", "1s"])?;
    let charged = |report: &Value| {
        reported_pod(report, &filled.uid).ok().and_then(|p| filled.slab(&p["charged"]))
    };
    let report = daemon.report_when("the pod's books in /report", |r| {
        charged(r).is_some_and(|b| b as f64 >= filled.bound)
    })?;
    let in_pod = charged(&report).unwrap_or(0);
    ensure!(in_pod as f64 >= filled.bound, "/report: the pod charged {in_pod}: {report:#}");

    // The pod is not named by a runtime: its uid is its name, its namespace "_unknown".
    let kind = match filled.books.source {
        Source::CgroupV2 => "slab_unreclaimable",
        Source::CgroupV1 => "kmem",
    };
    let series = format!(
        "slabtrace_pod_charged_bytes{{namespace=\"_unknown\",pod=\"{}\",kind=\"{kind}\"}} ",
        filled.uid
    );
    let (status, metrics) = daemon.get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    let value = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no {series} in /metrics"))?;
    let inodes = (FILES * filled.inode) as f64 * SLACK;
    ensure!(value >= inodes, "{series}{value} < {inodes:.0} (the files' inodes)");
    ensure!(metrics.contains("slabtrace_node_charged_bytes{kind="), "no node_charged_bytes");
    // The event stream carries the same books: the pod's, and the node's beside its Slab.
    let event = daemon.wait_for_event(|e| {
        e["type"] == "pod.charged"
            && e["owner"]["uid"] == filled.uid.as_str()
            && filled.slab(&e["charged"]).is_some_and(|b| b as f64 >= filled.bound)
    })?;
    let node = daemon.wait_for_event(|e| e["type"] == "node.charged")?;
    check_event_schema(&[event.clone(), node.clone()])?;
    ensure!(node["cgroups"].is_object(), "{node}");
    eprintln!(
        "/report: {in_pod} charged to pod {} (path {}); {series}{value}",
        filled.uid, filled.path
    );
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    Ok(())
}

/// A kubelet-shaped pod whose cgroups are removed while tmpfs pages charged to them remain:
/// the memcg cannot be freed (page cache is not reparented, on any kernel tested), so it is a
/// dying cgroup of its quality-of-service parent.
#[test]
fn a_deleted_pod_pinned_by_its_page_cache_is_a_dying_cgroup_under_its_old_name() -> Result<()> {
    require_root()?;
    let Some(books) = MemcgBooks::find(Path::new("/proc")) else {
        bail!("no cgroup hierarchy has the memory controller: no memcg can be dying");
    };
    let cg2 = cgroup2_root()?;
    let qos = "/kubepods/besteffort";
    // The parents stay while the pod goes: made here (when missing), dropped last.
    let qos_cgroup = if cg2.join(qos.trim_start_matches('/')).exists() {
        None
    } else {
        Some(Cgroup::create_at(qos)?)
    };
    let qos_v1 = match books.source {
        Source::CgroupV1 => Some(V1Dirs::create(&books.root, qos)?),
        Source::CgroupV2 => {
            for parent in ["/kubepods", qos] {
                let control =
                    cg2.join(parent.trim_start_matches('/')).join("cgroup.subtree_control");
                fs::write(&control, "+memory")
                    .with_context(|| format!("enabling memory in {}", control.display()))?;
            }
            None
        }
    };
    let uid = fresh_uid()?;
    let pod_path = format!("{qos}/pod{uid}");
    let path = format!("{pod_path}/{CONTAINER}");
    let mut container = Some(Cgroup::create_at(&path)?);
    let mut v1 = match books.source {
        Source::CgroupV1 => Some(V1Dirs::create(&books.root, &path)?),
        Source::CgroupV2 => {
            let control = cg2.join(pod_path.trim_start_matches('/')).join("cgroup.subtree_control");
            fs::write(&control, "+memory")
                .with_context(|| format!("enabling memory in {}", control.display()))?;
            None
        }
    };
    // Dropped after the cgroups (declared before them would drop it first): the pages keep
    // the memcg dying until the tmpfs goes.
    let fs = Tmpfs::mount("dying-files")?;
    run_in_container(
        &cg2,
        v1.as_ref().map(|_| books.root.as_path()),
        &path,
        Command::new(workload()).arg("write").arg(fs.path().join("data")).arg("8388608"),
    )?;

    let daemon = Daemon::start("dying-daemon", &["--interval", "1s"])?;
    // Seen live first: only a pod slabtrace saw can be named when it is gone.
    daemon.report_when("the pod in /report", |r| reported_pod(r, &uid).is_ok())?;

    // The pod is deleted: its cgroups go, in both hierarchies, its page cache stays.
    drop(v1.take());
    drop(container.take());
    let parent_of = |r: &Value| -> Option<Value> {
        r["dying_cgroups"]["parents"].as_array()?.iter().find(|p| p["parent"] == qos).cloned()
    };
    let named = |p: &Value| {
        p["gone_pods"].as_array().is_some_and(|g| g.iter().any(|g| g["uid"] == uid.as_str()))
    };
    let report = daemon.report_when("the deleted pod named under its parent", |r| {
        parent_of(r).is_some_and(|p| {
            named(&p)
                && match books.source {
                    Source::CgroupV2 => p["nr_dying"].as_u64().is_some_and(|n| n >= 1),
                    Source::CgroupV1 => {
                        r["dying_cgroups"]["memcg_nr_dying"].as_u64().is_some_and(|n| n >= 1)
                    }
                }
        })
    })?;
    let dying = &report["dying_cgroups"];
    let parent = parent_of(&report).context("no parent")?;
    eprintln!("{:?} books: dying_cgroups {dying:#}", books.source);
    ensure!(dying["source"] == serde_json::to_value(books.source)?, "{dying:#}");
    match books.source {
        Source::CgroupV2 => {
            // The parent's books include the dying memcg's; its own pages are page cache, so
            // the estimate (slab and percpu) is only known to be there.
            ensure!(parent["pinned_estimate_bytes"].is_u64(), "{parent:#}");
            ensure!(dying["memcg_nr_dying"] == dying["nr_dying"], "{dying:#}");
        }
        Source::CgroupV1 => {
            // Hybrid: the v1 hierarchy has no cgroup.stat, so no per-parent count of dying
            // memcgs; cgroup2's count is read (its cgroups die at once) and no estimate made.
            ensure!(parent["nr_dying"].is_u64(), "cgroup2's count read: {parent:#}");
            ensure!(parent["pinned_estimate_bytes"].is_null(), "{parent:#}");
        }
    }
    let (status, metrics) = daemon.get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    ensure!(
        metrics.contains(&format!("slabtrace_dying_cgroups{{parent=\"{qos}\"}} ")),
        "no slabtrace_dying_cgroups for {qos}"
    );
    ensure!(metrics.contains("slabtrace_node_dying_memcgs "), "no slabtrace_node_dying_memcgs");
    ensure!(
        !metrics.lines().any(|l| l.starts_with("slabtrace_dying_cgroups{") && l.contains(&uid)),
        "a pod's uid in a dying-cgroups label"
    );
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "{}", stopped.stderr);
    drop(fs);
    drop(qos_v1);
    drop(qos_cgroup);
    Ok(())
}
