//! `--namespace`, `--pod` and `--cache`: a report narrowed to what one asks about, as
//! `kubectl -n` narrows a listing. Applied to the report before it is written, so the table
//! and the JSON say the same.

use crate::{
    attribution::{CacheUsage, Totals},
    cgroup::kubepods::Identity,
    output::report::Report,
};

/// What to keep; `None` keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Pods of this namespace only (cgroups outside pods are left out).
    pub namespace: Option<String>,
    /// This pod only, by name or uid (cgroups outside pods are left out).
    pub pod: Option<String>,
    /// This cache only, everywhere; owners without it are left out.
    pub cache: Option<String>,
}

impl Filter {
    /// Whether it keeps everything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Narrows `report` to what `filter` asks for. Owners' totals are summed again over the caches
/// kept, so a row's figures are its figures for that cache.
pub fn apply(report: &mut Report, filter: &Filter) {
    if filter.is_empty() {
        return;
    }
    let pods_only = filter.namespace.is_some() || filter.pod.is_some();
    report.pods.retain(|p| {
        filter.namespace.as_ref().is_none_or(|ns| p.namespace.as_ref() == Some(ns))
            && filter.pod.as_ref().is_none_or(|pod| p.name.as_ref() == Some(pod) || &p.uid == pod)
    });
    if pods_only {
        let uids: Vec<String> = report.pods.iter().map(|p| p.uid.clone()).collect();
        report.cgroups.retain(|cg| match &cg.identity {
            Some(Identity::Container { pod_uid, .. } | Identity::Pod { pod_uid, .. }) => {
                uids.contains(pod_uid)
            }
            _ => false,
        });
        report.interrupt = None;
    }
    let Some(cache) = &filter.cache else { return };
    let keep = |caches: &mut Vec<CacheUsage>, totals: &mut Totals| {
        caches.retain(|c| &c.cache == cache);
        *totals = Totals::of(caches);
        !caches.is_empty()
    };
    report.pods.retain_mut(|p| {
        p.containers.retain_mut(|c| keep(&mut c.caches, &mut c.totals));
        keep(&mut p.caches, &mut p.totals)
    });
    report.cgroups.retain_mut(|cg| keep(&mut cg.caches, &mut cg.totals));
    if let Some(irq) = &mut report.interrupt
        && !keep(&mut irq.caches, &mut irq.totals)
    {
        report.interrupt = None;
    }
    report.caches.retain(|c| &c.totals.cache == cache);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::CgroupUsage,
        cgroup::kubepods::Qos,
        rollup::{ContainerUsage, PodUsage},
    };

    fn cache(name: &str, live: u64) -> CacheUsage {
        CacheUsage { cache: name.into(), live_bytes: live, allocs: 1, ..CacheUsage::default() }
    }

    fn pod(ns: &str, name: &str, uid: &str) -> PodUsage {
        let caches = vec![cache("dentry", 100), cache("filp", 10)];
        PodUsage {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: uid.into(),
            qos: Qos::Burstable,
            totals: Totals::of(&caches),
            deleted: false,
            containers: vec![ContainerUsage {
                container_id: Some("c1".into()),
                name: Some("app".into()),
                runtime: None,
                sandbox: false,
                cgroup_ids: vec![1],
                totals: Totals::of(&caches),
                caches: caches.clone(),
                charged: None,
            }],
            caches,
            charged: None,
        }
    }

    fn report() -> Report {
        let caches = vec![cache("dentry", 7)];
        let cgroups = vec![
            CgroupUsage {
                cgroup: Some("/kubepods/burstable/podu-1".into()),
                identity: Some(Identity::Pod { pod_uid: "u-1".into(), qos: Qos::Burstable }),
                totals: Totals::of(&caches),
                caches: caches.clone(),
                ..CgroupUsage::default()
            },
            CgroupUsage {
                cgroup: Some("/system.slice/containerd.service".into()),
                totals: Totals::of(&caches),
                caches,
                ..CgroupUsage::default()
            },
        ];
        let pods = vec![pod("git", "gitea-0", "u-1"), pod("web", "shop-0", "u-2")];
        let observation = crate::observation::Observation { cgroups, pods, ..Default::default() };
        Report { observation, ..Report::default() }
    }

    #[test]
    fn a_namespace_keeps_its_pods_and_their_cgroups_only() {
        let mut r = report();
        apply(&mut r, &Filter { namespace: Some("git".into()), ..Filter::default() });
        assert_eq!(r.pods.len(), 1);
        assert_eq!(r.pods[0].name.as_deref(), Some("gitea-0"));
        assert_eq!(r.cgroups.len(), 1, "{:?}", r.cgroups);
        assert_eq!(r.cgroups[0].cgroup.as_deref(), Some("/kubepods/burstable/podu-1"));
    }

    #[test]
    fn a_report_read_back_from_json_filters_as_the_one_built_here() {
        // As a daemon reports it: a pod with a real uid, its cgroup at the kubelet's path.
        const UID: &str = "5e0c7a1d-2b3f-4c6e-9d8a-7f1e2c3b4a50";
        let mut built = report();
        built.pods[0].uid = UID.into();
        built.cgroups[0].cgroup = Some(format!("/kubepods/burstable/pod{UID}"));
        built.cgroups[0].identify();
        let json = serde_json::to_vec(&built).unwrap();
        let mut back = Report::parse(&json).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&built).unwrap());
        // The cgroups' identities, not in the JSON, are parsed again from their paths.
        apply(&mut back, &Filter { namespace: Some("git".into()), ..Filter::default() });
        assert_eq!(back.cgroups.len(), 1, "{:?}", back.cgroups);
        assert_eq!(back.pods.len(), 1);
    }

    #[test]
    fn a_pod_is_found_by_name_or_uid() {
        for key in ["shop-0", "u-2"] {
            let mut r = report();
            apply(&mut r, &Filter { pod: Some(key.into()), ..Filter::default() });
            assert_eq!(r.pods.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["u-2"]);
        }
    }

    #[test]
    fn a_cache_narrows_every_owner_and_sums_again() {
        let mut r = report();
        apply(&mut r, &Filter { cache: Some("filp".into()), ..Filter::default() });
        assert_eq!(r.pods.len(), 2);
        for p in &r.pods {
            assert_eq!(p.caches.len(), 1);
            assert_eq!(p.totals.live_bytes, 10);
            assert_eq!(p.containers[0].totals.live_bytes, 10);
        }
        // The cgroups hold no filp: left out.
        assert!(r.cgroups.is_empty());
        let mut r = report();
        apply(&mut r, &Filter::default());
        assert_eq!((r.pods.len(), r.cgroups.len()), (2, 2), "no filter keeps everything");
    }
}
