//! An OOM kill joined with the slab picture: the victim named as a pod and container, the
//! OOM's scope, /proc/meminfo's kernel lines when it was drained, and who held slab memory
//! then (the top pods and cgroups × caches by live bytes, and how much of it no memcg was
//! charged for). This is what the `oom` event and the report's `oom_kills[]` carry.
//!
//! Pure: a drained [`OomKill`], the latest report and frame, and the cgroup paths in.

use serde::Serialize;

use crate::{
    cgroup::kubepods::{Identity, identify},
    frame::{Owner, OwnerTable},
    node::oom::{OomKill, OomScope},
    observation::{KernelMemory, Observation},
};

/// The victim's or the trigger's identity.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Task {
    /// Process id.
    pub pid: u32,
    /// cgroup2 id.
    pub cgroup_id: u64,
    /// Its cgroup2 path; `null` if never resolved.
    pub cgroup: Option<String>,
    /// The pod, when the cgroup is a pod's: `namespace`, `name` (`null` until known), `uid`.
    pub pod: Option<PodRef>,
    /// The container id from the cgroup path, when it is a container's.
    pub container_id: Option<String>,
    /// The container's name from the runtime, when known.
    pub container: Option<String>,
}

/// A pod, by name and uid.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct PodRef {
    /// Namespace; `null` until known.
    pub namespace: Option<String>,
    /// Name; `null` until known.
    pub name: Option<String>,
    /// Uid.
    pub uid: String,
}

/// One holder of slab memory when the OOM kill happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Holder {
    /// Who.
    pub owner: Owner,
    /// Which cache.
    pub cache: String,
    /// Live bytes.
    pub live_bytes: u64,
    /// Of which charged to no memcg.
    pub unaccounted_live_bytes: u64,
}

/// The slab picture at the kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SlabPicture {
    /// Live slab bytes slabtrace attributes (allocated since it started).
    pub attributed_live_bytes: u64,
    /// Of which charged to no memcg: memory no container limit sees.
    pub unaccounted_live_bytes: u64,
    /// 100 × unaccounted / attributed.
    pub unaccounted_share_pct: f64,
    /// Live slab bytes of the victim's pod (or cgroup).
    pub victim_live_bytes: u64,
    /// The largest holders, pods and cgroups × caches, most live bytes first.
    pub top_holders: Vec<Holder>,
}

/// An OOM kill with its context.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct OomReport {
    /// When the kernel marked the victim (RFC 3339, UTC).
    pub at: String,
    /// `global` (the node ran out), `memcg` (a memory cgroup hit its limit) or `unknown`.
    pub scope: std::borrow::Cow<'static, str>,
    /// The memcg that hit its limit, relative to the memory controller's root, when known.
    pub memcg: Option<String>,
    /// The killed process.
    pub victim: Task,
    /// Its command name.
    pub comm: String,
    /// Its uid.
    pub uid: u32,
    /// Its `oom_score_adj`.
    pub oom_score_adj: i16,
    /// The task whose allocation started the OOM kill.
    pub trigger: Task,
    /// /proc/meminfo's kernel lines when the kill was drained (within a second of it).
    pub meminfo: Option<KernelMemory>,
    /// Who held slab memory.
    pub slab: SlabPicture,
    /// A kernel read failed on the BPF side: some field is 0 or empty.
    pub incomplete: bool,
}

/// The identity of a cgroup path: pod and container, names from the report.
fn task(pid: u32, cgroup_id: u64, cgroup: Option<String>, report: &Observation) -> Task {
    let mut t = Task { pid, cgroup_id, cgroup, ..Task::default() };
    let Some(path) = t.cgroup.as_deref() else { return t };
    let (uid, container_id) = match identify(path) {
        Identity::Container { pod_uid, container_id, .. } => (pod_uid, Some(container_id)),
        Identity::Pod { pod_uid, .. } => (pod_uid, None),
        _ => return t,
    };
    let pod = report.pods.iter().find(|p| p.uid == uid);
    t.container = pod.and_then(|p| {
        p.containers.iter().find(|c| c.container_id == container_id).and_then(|c| c.name.clone())
    });
    t.pod = Some(PodRef {
        namespace: pod.and_then(|p| p.namespace.clone()),
        name: pod.and_then(|p| p.name.clone()),
        uid,
    });
    t.container_id = container_id;
    t
}

/// Joins `kill` with the slab picture of `report`/`frame`. `path(id)` names a cgroup id;
/// `top` is how many holders to list.
#[must_use]
pub fn join(
    kill: &OomKill,
    meminfo: Option<KernelMemory>,
    report: &Observation,
    frame: &OwnerTable,
    mut path: impl FnMut(u64) -> Option<String>,
    top: usize,
) -> OomReport {
    let victim = task(kill.pid, kill.cgroup_id, path(kill.cgroup_id), report);
    let trigger =
        task(kill.trigger.pid, kill.trigger.cgroup_id, path(kill.trigger.cgroup_id), report);
    let (scope, memcg) = match &kill.scope {
        OomScope::Global => ("global", None),
        OomScope::Memcg { memcg_path, .. } => ("memcg", memcg_path.clone()),
        OomScope::Unknown => ("unknown", None),
    };
    let mut rows: Vec<Holder> = frame
        .rows
        .iter()
        .filter(|(_, r)| r.live_bytes > 0)
        .filter_map(|((owner, cache), r)| {
            Some(Holder {
                owner: frame.owners.get(owner)?.clone(),
                cache: cache.clone(),
                live_bytes: r.live_bytes,
                unaccounted_live_bytes: r.unaccounted_live_bytes,
            })
        })
        .collect();
    let attributed: u64 = rows.iter().map(|h| h.live_bytes).sum();
    let unaccounted: u64 = rows.iter().map(|h| h.unaccounted_live_bytes).sum();
    let victim_live_bytes = rows
        .iter()
        .filter(|h| match (&h.owner, &victim.pod) {
            (Owner::Pod { uid, .. }, Some(pod)) => *uid == pod.uid,
            (Owner::Cgroup { cgroup_id, .. }, None) => *cgroup_id == victim.cgroup_id,
            _ => false,
        })
        .map(|h| h.live_bytes)
        .sum();
    rows.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then_with(|| a.cache.cmp(&b.cache)));
    rows.truncate(top);
    OomReport {
        at: humantime::format_rfc3339_millis(kill.at).to_string(),
        scope: scope.into(),
        memcg,
        victim,
        comm: kill.comm.clone(),
        uid: kill.uid,
        oom_score_adj: kill.oom_score_adj,
        trigger,
        meminfo,
        slab: SlabPicture {
            attributed_live_bytes: attributed,
            unaccounted_live_bytes: unaccounted,
            unaccounted_share_pct: if attributed > 0 {
                100.0 * unaccounted as f64 / attributed as f64
            } else {
                0.0
            },
            victim_live_bytes,
            top_holders: rows,
        },
        incomplete: kill.incomplete,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        cgroup::kubepods::Qos,
        frame::OwnerRow,
        node::oom::OomTrigger,
        rollup::{ContainerUsage, PodUsage},
    };

    const UID: &str = "0f7e3b2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b";
    const CID: &str = "3b8c6f1e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";

    fn kill() -> OomKill {
        OomKill {
            pid: 4242,
            tid: 4242,
            comm: "git".into(),
            uid: 1000,
            cgroup_id: 77,
            oom_score_adj: 1000,
            scope: OomScope::Memcg {
                memcg_id: Some(9),
                memcg_path: Some(format!("/kubepods/besteffort/pod{UID}")),
            },
            trigger: OomTrigger { pid: 4242, cgroup_id: 77 },
            at: SystemTime::UNIX_EPOCH + Duration::from_hours(500_000),
            incomplete: false,
        }
    }

    fn report() -> Observation {
        let mut report = Observation::default();
        report.pods.push(PodUsage {
            namespace: Some("git".into()),
            name: Some("gitea-0".into()),
            uid: UID.into(),
            qos: Qos::BestEffort,
            deleted: false,
            totals: crate::attribution::Totals::default(),
            containers: vec![ContainerUsage {
                container_id: Some(CID.into()),
                name: Some("gitea".into()),
                runtime: None,
                sandbox: false,
                cgroup_ids: vec![77],
                totals: crate::attribution::Totals::default(),
                caches: Vec::new(),
                charged: None,
            }],
            caches: Vec::new(),
            charged: None,
        });
        report
    }

    fn frame() -> OwnerTable {
        let pod = Owner::Pod {
            namespace: Some("git".into()),
            name: Some("gitea-0".into()),
            uid: UID.into(),
            qos: Qos::BestEffort,
            deleted: false,
        };
        let svc = Owner::Cgroup {
            cgroup_id: 5,
            cgroup: Some("/system.slice/a.service".into()),
            alive: true,
        };
        let mut f = OwnerTable::default();
        for (owner, cache, live, unacct) in [
            (&pod, "ext4_inode_cache", 4_000_000, 0),
            (&pod, "lsm_inode_cache", 250_000, 250_000),
            (&svc, "dentry", 1_000_000, 0),
            (&svc, "filp", 0, 0),
        ] {
            f.owners.insert(owner.key(), owner.clone());
            let row = OwnerRow {
                live_bytes: live,
                unaccounted_live_bytes: unacct,
                ..OwnerRow::default()
            };
            f.rows.insert((owner.key(), cache.to_owned()), row);
        }
        f
    }

    #[test]
    fn a_memcg_kill_names_the_pod_and_lists_the_holders() {
        let path = |id| (id == 77).then(|| format!("/kubepods/besteffort/pod{UID}/{CID}"));
        let r = join(&kill(), Some(KernelMemory::default()), &report(), &frame(), path, 2);
        assert_eq!(r.scope, "memcg");
        assert_eq!(r.memcg.as_deref(), Some(format!("/kubepods/besteffort/pod{UID}").as_str()));
        assert_eq!(r.at, "2027-01-15T08:00:00.000Z");
        let pod = r.victim.pod.as_ref().unwrap();
        assert_eq!((pod.namespace.as_deref(), pod.name.as_deref()), (Some("git"), Some("gitea-0")));
        assert_eq!(r.victim.container.as_deref(), Some("gitea"));
        assert_eq!(r.trigger.container_id.as_deref(), Some(CID));
        // Two holders listed of three with live bytes, largest first.
        let caches: Vec<&str> = r.slab.top_holders.iter().map(|h| h.cache.as_str()).collect();
        assert_eq!(caches, ["ext4_inode_cache", "dentry"]);
        assert_eq!(r.slab.attributed_live_bytes, 5_250_000);
        assert_eq!(r.slab.unaccounted_live_bytes, 250_000);
        assert_eq!(r.slab.victim_live_bytes, 4_250_000);
    }

    #[test]
    fn a_kill_outside_pods_keeps_the_cgroup() {
        let mut k = kill();
        k.scope = OomScope::Global;
        k.cgroup_id = 5;
        let path = |id| (id == 5).then(|| "/system.slice/a.service".to_owned());
        let r = join(&k, None, &report(), &frame(), path, 10);
        assert_eq!((r.scope.as_ref(), r.memcg), ("global", None));
        assert_eq!(r.victim.pod, None);
        assert_eq!(r.victim.cgroup.as_deref(), Some("/system.slice/a.service"));
        assert_eq!(r.slab.victim_live_bytes, 1_000_000);
        assert_eq!(r.slab.top_holders.len(), 3);
    }
}
