//! Rolls per-cgroup usage up to containers and pods, by the kubelet's cgroup layouts.
//!
//! A pod's usage is the sum of its containers' (the sandbox included) and of its pod-level
//! cgroup's (objects a pod allocated outlive its containers: the kernel re-charges them to the
//! parent). Sums of sampled estimates get the bound of their sum (variances add). Names
//! (namespace, pod and container names) are filled in later from the container runtime; here
//! a pod is known by its uid and quality-of-service class, a container by its id.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    attribution::{CacheUsage, CgroupUsage, Totals, error_bound, sort_caches},
    cgroup::{
        charged::{Charged, PodBooks},
        kubepods::{Identity, Qos, Runtime},
    },
};

/// One container (or the pod-level cgroup itself) over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ContainerUsage {
    /// Container id from the cgroup path; `null` for the pod-level cgroup.
    pub container_id: Option<String>,
    /// Container name from the runtime; `null` until known.
    pub name: Option<String>,
    /// The runtime the cgroup layout names (`containerd`, `crio`, `docker`, `unknown`).
    pub runtime: Option<Runtime>,
    /// True for the pod's sandbox (pause) container, as the runtime reports it.
    pub sandbox: bool,
    /// The cgroups rolled up here.
    pub cgroup_ids: Vec<u64>,
    /// Sums over `caches` (flattened into this object in JSON).
    #[serde(flatten)]
    pub totals: Totals,
    /// Per cache, most live bytes first.
    pub caches: Vec<CacheUsage>,
    /// What the memory controller charges the container's cgroup now, objects from before
    /// tracing included; `null` when unread (gone, no memory controller, skipped) and for the
    /// pod-level row, whose books are the pod's `charged`.
    #[serde(default)]
    pub charged: Option<Charged>,
}

/// One pod over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PodUsage {
    /// Namespace from the runtime; `null` until known.
    pub namespace: Option<String>,
    /// Pod name from the runtime; `null` until known.
    pub name: Option<String>,
    /// Pod uid, from the cgroup path.
    pub uid: String,
    /// quality-of-service class, from the cgroup path.
    pub qos: Qos,
    /// True when every cgroup of the pod is gone (the pod was deleted; its objects live on).
    pub deleted: bool,
    /// Sums over `caches` (flattened into this object in JSON).
    #[serde(flatten)]
    pub totals: Totals,
    /// Per container, most live bytes first.
    pub containers: Vec<ContainerUsage>,
    /// Per cache over all its containers, most live bytes first.
    pub caches: Vec<CacheUsage>,
    /// What the memory controller charges the pod's cgroup now (its containers included),
    /// objects from before tracing included; `null` when unread (gone, no memory controller,
    /// skipped).
    #[serde(default)]
    pub charged: Option<Charged>,
}

/// Adds `from`'s per-cache figures into `into`, by cache name.
fn merge(into: &mut BTreeMap<String, CacheUsage>, from: &[CacheUsage]) {
    for c in from {
        let e = into.entry(c.cache.clone()).or_insert_with(|| CacheUsage {
            cache: c.cache.clone(),
            object_size: c.object_size,
            estimated: c.estimated,
            ..CacheUsage::default()
        });
        e.add(c);
    }
}

/// Sorted caches with bounds recomputed for the sums.
fn finish(caches: BTreeMap<String, CacheUsage>, sample: u64) -> Vec<CacheUsage> {
    let mut v: Vec<CacheUsage> = caches
        .into_values()
        .map(|mut c| {
            c.live_objects_error = error_bound(c.live_objects.max(c.frees), sample);
            c
        })
        .collect();
    sort_caches(&mut v);
    v
}

/// Rolls `cgroups` up into pods; cgroups outside kubepods are left out. `sample` is N.
#[must_use]
pub fn pods(cgroups: &[CgroupUsage], sample: u64) -> Vec<PodUsage> {
    /// What is known of one container (or of the pod cgroup, keyed `None`) so far.
    #[derive(Default)]
    struct Part {
        runtime: Option<Runtime>,
        cgroup_ids: Vec<u64>,
        caches: BTreeMap<String, CacheUsage>,
    }
    struct Acc {
        qos: Qos,
        alive: bool,
        containers: BTreeMap<Option<String>, Part>,
    }
    let mut by_uid: BTreeMap<String, Acc> = BTreeMap::new();
    for cg in cgroups {
        let (uid, qos, container, runtime) = match &cg.identity {
            Some(Identity::Container { pod_uid, qos, container_id, runtime, .. }) => {
                (pod_uid.clone(), *qos, Some(container_id.clone()), Some(*runtime))
            }
            Some(Identity::Pod { pod_uid, qos }) => (pod_uid.clone(), *qos, None, None),
            _ => continue,
        };
        let acc =
            by_uid.entry(uid).or_insert(Acc { qos, alive: false, containers: BTreeMap::new() });
        acc.alive |= cg.alive;
        let part = acc.containers.entry(container).or_default();
        part.runtime = part.runtime.or(runtime);
        part.cgroup_ids.push(cg.cgroup_id);
        merge(&mut part.caches, &cg.caches);
    }
    let mut pods: Vec<PodUsage> = by_uid
        .into_iter()
        .map(|(uid, acc)| {
            let mut all = BTreeMap::new();
            let mut containers: Vec<ContainerUsage> = acc
                .containers
                .into_iter()
                .map(|(container_id, Part { runtime, cgroup_ids, caches })| {
                    let caches = finish(caches, sample);
                    merge(&mut all, &caches);
                    ContainerUsage {
                        container_id,
                        name: None,
                        runtime,
                        sandbox: false,
                        cgroup_ids,
                        totals: Totals::of(&caches),
                        caches,
                        charged: None,
                    }
                })
                .collect();
            containers.sort_by(|a, b| a.totals.rank(&b.totals));
            let caches = finish(all, sample);
            PodUsage {
                namespace: None,
                name: None,
                uid,
                qos: acc.qos,
                deleted: !acc.alive,
                totals: Totals::of(&caches),
                containers,
                caches,
                charged: None,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.totals.rank(&b.totals));
    pods
}

/// Puts the memory controller's books (see [`crate::cgroup::charged`]) on the pods' and
/// containers' rows, and adds rows, with nothing traced, for the pods and containers that
/// exist but allocated nothing while traced: what they hold from before is exactly what the
/// books show. Those come after the traced pods, most charged slab first.
pub fn attach_charged(pods: &mut Vec<PodUsage>, books: &BTreeMap<String, PodBooks>) {
    let container_row = |id: &str, runtime: Runtime, charged: Option<Charged>| ContainerUsage {
        container_id: Some(id.to_owned()),
        name: None,
        runtime: Some(runtime),
        sandbox: false,
        cgroup_ids: Vec::new(),
        totals: Totals::default(),
        caches: Vec::new(),
        charged,
    };
    for pod in pods.iter_mut() {
        let Some(b) = books.get(&pod.uid) else { continue };
        pod.charged = b.pod;
        for c in &mut pod.containers {
            if let Some(id) = &c.container_id {
                c.charged = b.containers.get(id).and_then(|(_, charged)| *charged);
            }
        }
        for (id, (runtime, charged)) in &b.containers {
            if !pod.containers.iter().any(|c| c.container_id.as_deref() == Some(id)) {
                pod.containers.push(container_row(id, *runtime, *charged));
            }
        }
    }
    let mut quiet: Vec<PodUsage> = books
        .iter()
        .filter(|(uid, _)| !pods.iter().any(|p| &p.uid == *uid))
        .map(|(uid, b)| PodUsage {
            namespace: None,
            name: None,
            uid: uid.clone(),
            qos: b.qos,
            deleted: false,
            totals: Totals::default(),
            containers: b
                .containers
                .iter()
                .map(|(id, (runtime, charged))| container_row(id, *runtime, *charged))
                .collect(),
            caches: Vec::new(),
            charged: b.pod,
        })
        .collect();
    let slab = |p: &PodUsage| p.charged.and_then(|c| c.slab.or(c.kmem)).unwrap_or(0);
    quiet.sort_by_key(|p| std::cmp::Reverse(slab(p)));
    pods.extend(quiet);
}

/// Names the container runtime gave, by pod uid and container id, kept for pods the runtime
/// no longer lists (deleted pods whose objects live on) for a while and up to a bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// Pod uid → (namespace, name).
    pub pods: BTreeMap<String, (String, String)>,
    /// Container id → container name.
    pub containers: BTreeMap<String, String>,
    /// Ids of pod sandboxes (their pause containers have these ids).
    pub sandboxes: std::collections::BTreeSet<String>,
    /// Container or sandbox id → the uid of its pod, so a pod's entries go together.
    pub owner: BTreeMap<String, String>,
    /// Pod uid → when the runtime last listed it.
    pub seen: BTreeMap<String, std::time::Instant>,
}

impl Directory {
    /// Adds a newer listing, taken at `now`; it wins where both know a name.
    pub fn merge(&mut self, other: Directory, now: std::time::Instant) {
        for uid in other.pods.keys() {
            self.seen.insert(uid.clone(), now);
        }
        self.pods.extend(other.pods);
        self.containers.extend(other.containers);
        self.sandboxes.extend(other.sandboxes);
        self.owner.extend(other.owner);
    }

    /// Forgets pods not listed for longer than `ttl`, then the least recently listed beyond
    /// `capacity`, with their containers.
    pub fn expire(&mut self, now: std::time::Instant, ttl: std::time::Duration, capacity: usize) {
        let mut by_age: Vec<(std::time::Instant, String)> =
            self.seen.iter().map(|(uid, t)| (*t, uid.clone())).collect();
        by_age.sort();
        let excess = by_age.len().saturating_sub(capacity);
        let gone: std::collections::BTreeSet<String> = by_age
            .into_iter()
            .enumerate()
            .filter(|(i, (t, _))| *i < excess || now.saturating_duration_since(*t) > ttl)
            .map(|(_, (_, uid))| uid)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.pods.retain(|uid, _| !gone.contains(uid));
        self.seen.retain(|uid, _| !gone.contains(uid));
        let dropped: Vec<String> = self
            .owner
            .iter()
            .filter(|(_, uid)| gone.contains(*uid))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            self.owner.remove(&id);
            self.containers.remove(&id);
            self.sandboxes.remove(&id);
        }
    }
}

/// Fills in namespaces, pod names, container names and sandbox flags from `dir`. Pods and
/// containers it does not know keep `null` names.
pub fn apply_names(pods: &mut [PodUsage], dir: &Directory) {
    for pod in pods {
        if let Some((namespace, name)) = dir.pods.get(&pod.uid) {
            pod.namespace = Some(namespace.clone());
            pod.name = Some(name.clone());
        }
        for c in &mut pod.containers {
            let Some(id) = c.container_id.as_deref() else { continue };
            if dir.sandboxes.contains(id) {
                c.sandbox = true;
                c.name = Some("(sandbox)".to_owned());
            } else if let Some(name) = dir.containers.get(id) {
                c.name = Some(name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f7e3b2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b";
    const C1: &str = "3b8c6f1e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";
    const C2: &str = "aa8c6f1e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";

    fn usage(cache: &str, allocs: u64, live: u64, size: u64) -> CacheUsage {
        CacheUsage {
            cache: cache.into(),
            object_size: size,
            allocs,
            alloc_bytes: allocs * size,
            frees: allocs - live,
            live_objects: live,
            live_bytes: live * size,
            accounted_allocs: allocs,
            accounted_live_bytes: live * size,
            ..CacheUsage::default()
        }
    }

    fn cgroup(id: u64, path: &str, alive: bool, caches: Vec<CacheUsage>) -> CgroupUsage {
        CgroupUsage {
            cgroup_id: id,
            cgroup: Some(path.into()),
            identity: Some(crate::cgroup::kubepods::identify(path)),
            alive,
            caches,
            ..CgroupUsage::default()
        }
    }

    #[test]
    fn charged_books_go_on_traced_rows_and_quiet_pods_get_rows_of_their_own() {
        use crate::cgroup::charged::{Charged, PodBooks, Source};
        let pod_cg = format!("/kubepods/besteffort/pod{UID}");
        let cgroups =
            vec![cgroup(10, &format!("{pod_cg}/{C1}"), true, vec![usage("dentry", 5, 5, 192)])];
        let mut pods = pods(&cgroups, 1);
        let slab = |n: u64| Charged { slab: Some(n), ..Charged::unknown(Source::CgroupV2) };
        let quiet_uid = "11111111-2222-3333-4444-555555555555";
        let books = BTreeMap::from([
            (
                UID.to_owned(),
                PodBooks {
                    qos: Qos::BestEffort,
                    pod: Some(slab(900)),
                    containers: BTreeMap::from([
                        (C1.to_owned(), (Runtime::Unknown, Some(slab(700)))),
                        (C2.to_owned(), (Runtime::Unknown, None)),
                    ]),
                },
            ),
            (
                quiet_uid.to_owned(),
                PodBooks { qos: Qos::Burstable, pod: Some(slab(5)), containers: BTreeMap::new() },
            ),
        ]);
        attach_charged(&mut pods, &books);
        assert_eq!(pods.len(), 2);
        let traced = &pods[0];
        assert_eq!(traced.uid, UID);
        assert_eq!(traced.charged, Some(slab(900)));
        let c1 = traced.containers.iter().find(|c| c.container_id.as_deref() == Some(C1));
        assert_eq!(c1.and_then(|c| c.charged), Some(slab(700)));
        assert_eq!(c1.map(|c| c.totals.allocs), Some(5), "traced figures untouched");
        // A container with nothing traced gets a row; unread books stay null.
        let c2 = traced.containers.iter().find(|c| c.container_id.as_deref() == Some(C2));
        assert_eq!(c2.map(|c| (c.charged, c.totals.allocs)), Some((None, 0)));
        let quiet = &pods[1];
        assert_eq!(
            (quiet.uid.as_str(), quiet.qos, quiet.deleted),
            (quiet_uid, Qos::Burstable, false)
        );
        assert_eq!((quiet.charged, quiet.totals.allocs), (Some(slab(5)), 0));
        // Nothing read: nothing changes.
        let before = pods.clone();
        attach_charged(&mut pods, &BTreeMap::new());
        assert_eq!(pods, before);
    }

    #[test]
    fn containers_and_the_pod_cgroup_roll_up_into_one_pod() {
        let cgroups = vec![
            cgroup(
                1,
                &format!("/kubepods/burstable/pod{UID}/{C1}"),
                true,
                vec![usage("dentry", 100, 60, 192)],
            ),
            cgroup(
                2,
                &format!("/kubepods/burstable/pod{UID}/{C2}"),
                true,
                vec![usage("dentry", 10, 10, 192), usage("kmalloc-64", 5, 1, 64)],
            ),
            cgroup(
                3,
                &format!("/kubepods/burstable/pod{UID}"),
                true,
                vec![usage("dentry", 1, 1, 192)],
            ),
            cgroup(4, "/system.slice/kubelet.service", true, vec![usage("dentry", 7, 7, 192)]),
        ];
        let pods = pods(&cgroups, 1);
        assert_eq!(pods.len(), 1, "kubelet.service is not a pod");
        let p = &pods[0];
        assert_eq!((p.uid.as_str(), &p.qos, p.deleted), (UID, &Qos::Burstable, false));
        assert_eq!((p.totals.allocs, p.totals.live_objects), (116, 72));
        assert_eq!(p.caches[0].cache, "dentry");
        assert_eq!(p.caches[0].live_objects, 71);
        assert_eq!(p.containers.len(), 3);
        assert_eq!(p.containers[0].container_id.as_deref(), Some(C1));
        assert_eq!(p.containers[0].totals.live_bytes, 60 * 192);
        let pod_level = p.containers.iter().find(|c| c.container_id.is_none()).unwrap();
        assert_eq!(pod_level.cgroup_ids, vec![3]);
    }

    #[test]
    fn a_pod_whose_cgroups_are_all_gone_is_deleted() {
        let gone = vec![
            cgroup(
                1,
                &format!("/kubepods/besteffort/pod{UID}/{C1}"),
                false,
                vec![usage("dentry", 3, 3, 192)],
            ),
            cgroup(2, &format!("/kubepods/besteffort/pod{UID}"), false, vec![]),
        ];
        assert!(pods(&gone, 1)[0].deleted);
        let mut half = gone.clone();
        half[1].alive = true;
        assert!(!pods(&half, 1)[0].deleted);
    }

    #[test]
    fn sums_of_estimates_get_the_bound_of_the_sum() {
        let mut a = usage("dentry", 1000, 800, 192);
        a.estimated = true;
        let cgroups = vec![
            cgroup(1, &format!("/kubepods/pod{UID}/{C1}"), true, vec![a.clone()]),
            cgroup(2, &format!("/kubepods/pod{UID}/{C2}"), true, vec![a]),
        ];
        let p = &pods(&cgroups, 16)[0];
        assert_eq!(p.qos, Qos::Guaranteed);
        assert_eq!(p.caches[0].live_objects, 1600);
        assert_eq!(p.caches[0].live_objects_error, error_bound(1600, 16));
        assert!(p.caches[0].estimated);
    }

    #[test]
    fn names_come_from_the_runtime_directory() {
        let cgroups = vec![
            cgroup(
                1,
                &format!("/kubepods/burstable/pod{UID}/{C1}"),
                true,
                vec![usage("dentry", 5, 5, 192)],
            ),
            cgroup(
                2,
                &format!("/kubepods/burstable/pod{UID}/{C2}"),
                true,
                vec![usage("dentry", 1, 1, 192)],
            ),
        ];
        let mut pods = pods(&cgroups, 1);
        let mut dir = Directory::default();
        dir.pods.insert(UID.into(), ("git".into(), "gitea-0".into()));
        dir.containers.insert(C1.into(), "gitea".into());
        dir.sandboxes.insert(C2.into());
        apply_names(&mut pods, &dir);
        let p = &pods[0];
        assert_eq!((p.namespace.as_deref(), p.name.as_deref()), (Some("git"), Some("gitea-0")));
        assert_eq!(p.containers[0].name.as_deref(), Some("gitea"));
        assert!(!p.containers[0].sandbox);
        assert!(p.containers[1].sandbox);
        // Unknown pods keep null names.
        let mut other = pods.clone();
        apply_names(&mut other, &Directory::default());
        assert_eq!(other, pods);
    }

    #[test]
    fn a_newer_directory_wins() {
        let now = std::time::Instant::now();
        let mut old = Directory::default();
        old.pods.insert("u".into(), ("ns".into(), "old".into()));
        old.containers.insert("c".into(), "gone".into());
        let mut new = Directory::default();
        new.pods.insert("u".into(), ("ns".into(), "new".into()));
        old.merge(new, now);
        assert_eq!(old.pods["u"].1, "new");
        assert_eq!(old.containers["c"], "gone", "what only the old one knew is kept");
        assert_eq!(old.seen["u"], now);
    }

    fn listing(uid: &str, container: &str) -> Directory {
        let mut d = Directory::default();
        d.pods.insert(uid.into(), ("ns".into(), format!("pod-{uid}")));
        d.containers.insert(container.into(), "app".into());
        d.owner.insert(container.into(), uid.into());
        d
    }

    #[test]
    fn gone_pods_are_kept_for_the_ttl_then_forgotten_with_their_containers() {
        use std::time::Duration;
        let t0 = std::time::Instant::now();
        let mut dir = Directory::default();
        dir.merge(listing("a", "ca"), t0);
        dir.merge(listing("b", "cb"), t0);
        // b is listed again later; a is not (deleted).
        dir.merge(listing("b", "cb"), t0 + Duration::from_secs(50));
        dir.expire(t0 + Duration::from_mins(1), Duration::from_secs(30), 100);
        assert!(!dir.pods.contains_key("a") && !dir.containers.contains_key("ca"));
        assert!(dir.pods.contains_key("b") && dir.containers.contains_key("cb"));
        // Within the TTL nothing goes.
        let mut kept = Directory::default();
        kept.merge(listing("a", "ca"), t0);
        kept.expire(t0 + Duration::from_secs(10), Duration::from_secs(30), 100);
        assert!(kept.pods.contains_key("a"));
        // A TTL of 0 forgets what the listing of this instant did not name, never what it
        // did (the session expires with the listing's own instant).
        kept.expire(t0 + Duration::from_secs(50), Duration::ZERO, 100);
        kept.merge(listing("b", "cb"), t0 + Duration::from_mins(1));
        kept.expire(t0 + Duration::from_mins(1), Duration::ZERO, 100);
        assert_eq!(kept.pods.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn the_least_recently_listed_go_first_beyond_capacity() {
        use std::time::Duration;
        let t0 = std::time::Instant::now();
        let mut dir = Directory::default();
        for (i, uid) in ["a", "b", "c"].iter().enumerate() {
            dir.merge(listing(uid, &format!("c{uid}")), t0 + Duration::from_secs(i as u64));
        }
        dir.expire(t0 + Duration::from_secs(3), Duration::from_hours(1), 2);
        let left: Vec<_> = dir.pods.keys().cloned().collect();
        assert_eq!(left, vec!["b".to_owned(), "c".to_owned()]);
        assert!(!dir.containers.contains_key("ca"));
    }

    #[test]
    fn no_pods_no_rollup() {
        assert!(pods(&[], 1).is_empty());
        assert!(pods(&[cgroup(1, "/", true, vec![])], 1).is_empty());
    }
}
