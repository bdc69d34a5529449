//! Kubelet settings sized from what slabtrace observed: the kernel memory no pod is charged
//! for has to be reserved outside the pods' allocatable memory, or the node runs out of memory
//! while every pod stays within its limit.
//!
//! - `systemReserved.memory`: the peak of unreclaimable slab that no pod's memcg is charged
//!   for (`SUnreclaim` minus what pods' memcgs are charged of it), plus a stated margin.
//!   Reclaimable slab (dentries, inodes) is left out: reclaim returns it under pressure.
//! - `kubeReserved.memory` (kernel share): the peak slab of the kubelet and the container
//!   runtime's own cgroups, plus the margin; their user memory comes on top and slabtrace
//!   does not see it.
//! - `evictionHard.memory.available`: at least the largest rise of that uncharged kernel
//!   memory within one eviction span (the kubelet only sees it after the fact), plus the
//!   margin, and never below the kubelet's default of 100Mi.
//! - `vm.vfs_cache_pressure`: raised when reclaimable dentry and inode caches dominate slab.
//! - negative-dentry storms, from /proc/sys/fs/dentry-state.
//!
//! Pure: a history of node samples in, advice with its evidence out.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{cgroup::kubepods::Identity, observation::Observation, output::units::mib};

const MI: u64 = 1 << 20;

/// systemd units of the kubelet and the container runtimes: their slab is the kernel share
/// of `kubeReserved`.
const KUBE_UNITS: &[&str] = &[
    "kubelet.service",
    "containerd.service",
    "crio.service",
    "docker.service",
    "cri-docker.service",
];

/// The kubelet's default `evictionHard` `memory.available`.
pub const KUBELET_DEFAULT_EVICTION: u64 = 100 * MI;

/// What the node looked like at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeSample {
    /// Seconds since tracing started.
    pub t: f64,
    /// `Slab:` of /proc/meminfo, bytes.
    pub slab: u64,
    /// `SReclaimable:`, bytes.
    pub sreclaimable: u64,
    /// `SUnreclaim:`, bytes.
    pub sunreclaim: u64,
    /// Unreclaimable slab bytes live and charged to pods' memcgs (slabtrace's attribution).
    pub pods_charged_unreclaimable: u64,
    /// Live slab bytes of the kubelet's and the container runtime's cgroups.
    pub kube_components_slab: u64,
    /// `nr_dentry` and `nr_negative` from /proc/sys/fs/dentry-state, if known.
    pub dentries: Option<(u64, u64)>,
    /// Dying memory cgroups node-wide (the report's `dying_cgroups.memcg_nr_dying`), if known.
    #[serde(default)]
    pub dying_memcgs: Option<u64>,
}

impl NodeSample {
    /// Unreclaimable slab no pod's memcg is charged for.
    #[must_use]
    pub fn uncharged(&self) -> u64 {
        self.sunreclaim.saturating_sub(self.pods_charged_unreclaimable)
    }
}

/// `nr_dentry` and `nr_negative` from the text of /proc/sys/fs/dentry-state (the first and
/// the fifth field; kernels before 5.8 have no negative count and give None).
#[must_use]
pub fn parse_dentry_state(text: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    (f.len() >= 5).then(|| (f[0], f[4]))
}

/// The node sample of a report taken `t` seconds after tracing started: its end-of-window
/// meminfo, the unreclaimable live slab charged to pods (memcg-accounted live bytes of caches
/// without `SLAB_RECLAIM_ACCOUNT`), the kubelet's and runtimes' slab, and `dentries`. None
/// without meminfo.
#[must_use]
pub fn node_sample(
    report: &Observation,
    t: f64,
    dentries: Option<(u64, u64)>,
) -> Option<NodeSample> {
    let m = report.meminfo?.after;
    let reclaimable: BTreeSet<&str> =
        report.caches.iter().filter(|c| c.reclaimable).map(|c| c.totals.cache.as_str()).collect();
    let pods_charged_unreclaimable = report
        .pods
        .iter()
        .flat_map(|p| &p.caches)
        .filter(|c| !reclaimable.contains(c.cache.as_str()))
        .map(|c| c.accounted_live_bytes)
        .sum();
    let kube_components_slab = report
        .cgroups
        .iter()
        .filter(|c| {
            matches!(&c.identity, Some(Identity::SystemUnit { unit, .. }) if KUBE_UNITS.contains(&unit.as_str()))
        })
        .map(|c| c.totals.live_bytes)
        .sum();
    Some(NodeSample {
        t,
        slab: m.slab,
        sreclaimable: m.sreclaimable,
        sunreclaim: m.sunreclaim,
        pods_charged_unreclaimable,
        kube_components_slab,
        dentries,
        dying_memcgs: report.dying_cgroups.as_ref().and_then(|d| d.memcg_nr_dying),
    })
}

/// Settings the advice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Policy {
    /// Added on top of every observed peak (0.25 = 25 %).
    pub margin: f64,
    /// The span within which a rise must be absorbed by the eviction threshold, seconds.
    pub eviction_span: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self { margin: 0.25, eviction_span: 60.0 }
    }
}

/// One recommended setting and the figure it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Setting {
    /// The setting, as the kubelet or sysctl names it.
    pub name: String,
    /// The value to set (`512Mi`, `200`).
    pub value: String,
    /// Bytes, for settings that are sizes.
    pub bytes: Option<u64>,
    /// What was observed, in one sentence with the numbers.
    pub evidence: String,
}

/// The advice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Advice {
    /// How long the history spans, seconds.
    pub observed_seconds: f64,
    /// Samples in it.
    pub samples: usize,
    /// The margin added to peaks.
    pub margin: f64,
    /// Kubelet and kernel settings, each with its evidence.
    pub settings: Vec<Setting>,
    /// Things to know that are not a setting (negative-dentry storms).
    pub notes: Vec<String>,
    /// A ready `KubeletConfiguration` snippet with the kubelet settings.
    pub kubelet_config: String,
}

/// Rounds up to a whole MiB and writes it the way Kubernetes quantities are written.
fn quantity(bytes: u64) -> (u64, String) {
    let mi = bytes.div_ceil(MI);
    (mi * MI, format!("{mi}Mi"))
}

fn with_margin(bytes: u64, margin: f64) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "non-negative, far below 2^64"
    )]
    let v = (bytes as f64 * (1.0 + margin)).ceil() as u64;
    v
}

/// The largest rise of `value` from any sample to a later one within `span` seconds.
fn largest_rise(samples: &[NodeSample], span: f64, value: impl Fn(&NodeSample) -> u64) -> u64 {
    let mut best = 0;
    for (i, a) in samples.iter().enumerate() {
        for b in samples[i + 1..].iter().take_while(|b| b.t - a.t <= span) {
            best = best.max(value(b).saturating_sub(value(a)));
        }
    }
    best
}

/// Dying memcgs node-wide from which they are a finding: each holds its own per-CPU
/// statistics (tens of KiB on a many-CPU node) and whatever pins it, so a thousand is tens of
/// MiB no pod is charged for, and lookups that walk them slow down.
pub const DYING_MANY: u64 = 1_000;

/// A rise of dying memcgs over the history that is a finding even below [`DYING_MANY`]:
/// pods come and go, but their memcgs should go with them.
pub const DYING_RISE: u64 = 100;

/// The note on dying memcgs when they are many or growing, with the usual remedies and what
/// each costs.
fn dying_note(samples: &[NodeSample]) -> Option<String> {
    let known: Vec<u64> = samples.iter().filter_map(|s| s.dying_memcgs).collect();
    let (first, last) = (*known.first()?, *known.last()?);
    let rise = last.saturating_sub(first);
    if last <= DYING_MANY && rise < DYING_RISE {
        return None;
    }
    Some(format!(
        "dying memory cgroups: {last} node-wide ({rise} more than at the start): removed cgroups \
         (deleted pods) that memory still charged to them keeps alive; the report's \
         dying_cgroups names the pods gone from each parent. Remedies: write to the parent's \
         memory.reclaim (cgroup v2, Linux 5.19+) or `echo 2 > /proc/sys/vm/drop_caches` to \
         release the dentries, inodes and page cache that pin them (costs: cold caches and I/O \
         for every workload on the node); raise vm.vfs_cache_pressure above 100 so dentries \
         and inodes are reclaimed sooner (costs: more lookups miss the cache); upgrade the \
         kernel (5.9+ on cgroup v2 reparents slab objects of removed cgroups, 6.x more of \
         their memory; dying memcgs pinned by page cache or per-CPU memory remain, and cgroup \
         v1 keeps them longest)"
    ))
}

/// Advice from `samples` (oldest first); None without samples.
#[must_use]
pub fn advise(samples: &[NodeSample], policy: &Policy) -> Option<Advice> {
    let (first, last) = (samples.first()?, samples.last()?);
    let margin_pct = policy.margin * 100.0;
    let mut settings = Vec::new();
    let mut notes = Vec::new();

    let peak = samples.iter().max_by_key(|s| s.uncharged()).copied().unwrap_or_default();
    let (system_bytes, system) = quantity(with_margin(peak.uncharged(), policy.margin));
    settings.push(Setting {
        name: "systemReserved.memory".to_owned(),
        value: system.clone(),
        bytes: Some(system_bytes),
        evidence: format!(
            "peak unreclaimable slab charged to no pod: {} (SUnreclaim {} minus {} charged to pods' memcgs) at {:.0}s, plus {margin_pct:.0}%",
            mib(peak.uncharged()),
            mib(peak.sunreclaim),
            mib(peak.pods_charged_unreclaimable),
            peak.t
        ),
    });

    let kube_peak = samples.iter().map(|s| s.kube_components_slab).max().unwrap_or(0);
    let (kube_bytes, kube) = quantity(with_margin(kube_peak, policy.margin));
    settings.push(Setting {
        name: "kubeReserved.memory".to_owned(),
        value: kube.clone(),
        bytes: Some(kube_bytes),
        evidence: format!(
            "kernel share only: peak slab of the kubelet's and the runtime's cgroups {}, plus {margin_pct:.0}%; add their user memory, which slabtrace does not see",
            mib(kube_peak)
        ),
    });

    let rise = largest_rise(samples, policy.eviction_span, NodeSample::uncharged);
    let (eviction_bytes, eviction) =
        quantity(with_margin(rise, policy.margin).max(KUBELET_DEFAULT_EVICTION));
    settings.push(Setting {
        name: "evictionHard.memory.available".to_owned(),
        value: eviction.clone(),
        bytes: Some(eviction_bytes),
        evidence: format!(
            "largest rise of uncharged unreclaimable slab within {:.0}s: {}, plus {margin_pct:.0}% (never below the kubelet default 100Mi)",
            policy.eviction_span,
            mib(rise)
        ),
    });

    let reclaimable_peak =
        samples.iter().max_by_key(|s| s.sreclaimable).copied().unwrap_or_default();
    let share = if reclaimable_peak.slab > 0 {
        reclaimable_peak.sreclaimable as f64 / reclaimable_peak.slab as f64
    } else {
        0.0
    };
    if share >= 0.6 && reclaimable_peak.sreclaimable >= 1 << 30 {
        settings.push(Setting {
            name: "vm.vfs_cache_pressure".to_owned(),
            value: "200".to_owned(),
            bytes: None,
            evidence: format!(
                "reclaimable dentry and inode caches were {:.0}% of slab ({} of {}): reclaim them twice as eagerly as page cache",
                share * 100.0,
                mib(reclaimable_peak.sreclaimable),
                mib(reclaimable_peak.slab)
            ),
        });
    }

    if let Some((dentries, negative)) =
        samples.iter().filter_map(|s| s.dentries).max_by_key(|d| d.1)
        && negative >= 1_000_000
        && negative * 2 >= dentries
    {
        notes.push(format!(
            "negative-dentry storm: {negative} of {dentries} dentries are negative (lookups of names that do not exist); find the workload with `slabtrace report --by pod` (dentry allocations without matching inodes), and consider vm.vfs_cache_pressure"
        ));
    }

    notes.extend(dying_note(samples));

    let kubelet_config = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         # sized by slabtrace from {:.0}s of observation, with a {margin_pct:.0}% margin\n\
         systemReserved:\n  memory: \"{system}\"\n\
         kubeReserved:\n  memory: \"{kube}\"  # kernel share only: add the kubelet's and the runtime's own memory\n\
         evictionHard:\n  memory.available: \"{eviction}\"\n",
        last.t - first.t
    );
    Some(Advice {
        observed_seconds: last.t - first.t,
        samples: samples.len(),
        margin: policy.margin,
        settings,
        notes,
        kubelet_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, sunreclaim_mi: u64, charged_mi: u64) -> NodeSample {
        NodeSample {
            t,
            slab: (sunreclaim_mi + 100) * MI,
            sreclaimable: 100 * MI,
            sunreclaim: sunreclaim_mi * MI,
            pods_charged_unreclaimable: charged_mi * MI,
            kube_components_slab: 40 * MI,
            dentries: Some((100_000, 1_000)),
            dying_memcgs: None,
        }
    }

    #[test]
    fn many_or_growing_dying_memcgs_are_a_note_with_the_remedies() {
        let with = |t, n| NodeSample { dying_memcgs: n, ..sample(t, 100, 0) };
        let note = |s: &[NodeSample]| {
            advise(s, &Policy::default()).unwrap().notes.into_iter().find(|n| n.contains("dying"))
        };
        assert_eq!(note(&[with(0.0, Some(900)), with(60.0, Some(950))]), None);
        assert_eq!(note(&[with(0.0, None)]), None, "unknown is no finding");
        let many = note(&[with(0.0, Some(1_500)), with(60.0, Some(1_500))]).unwrap();
        assert!(many.contains("1500 node-wide") && many.contains("memory.reclaim"), "{many}");
        assert!(many.contains("vm.vfs_cache_pressure") && many.contains("upgrade"), "{many}");
        let growing = note(&[with(0.0, Some(10)), with(60.0, None), with(120.0, Some(200))]);
        assert!(growing.unwrap().contains("(190 more"));
    }

    fn setting<'a>(a: &'a Advice, name: &str) -> &'a Setting {
        a.settings.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn reservations_come_from_the_peak_with_the_margin() {
        // Uncharged unreclaimable slab: 200, 260, 400 (the peak), 300 MiB.
        let history = [
            sample(0.0, 300, 100),
            sample(30.0, 380, 120),
            sample(60.0, 600, 200),
            sample(90.0, 500, 200),
        ];
        let a = advise(&history, &Policy::default()).unwrap();
        assert_eq!(setting(&a, "systemReserved.memory").value, "500Mi");
        assert_eq!(setting(&a, "kubeReserved.memory").value, "50Mi");
        // Largest rise within 60 s: 200 → 400 MiB from 0 s to 60 s (+25% = 250).
        assert_eq!(setting(&a, "evictionHard.memory.available").value, "250Mi");
        assert!(setting(&a, "systemReserved.memory").evidence.contains("400.0 MiB"));
        assert!(a.kubelet_config.contains("systemReserved:\n  memory: \"500Mi\""));
        assert!(a.kubelet_config.contains("memory.available: \"250Mi\""));
        assert_eq!((a.samples, a.observed_seconds), (4, 90.0));
        assert!(a.notes.is_empty());
        assert!(a.settings.iter().all(|s| s.name != "vm.vfs_cache_pressure"));
    }

    #[test]
    fn dentry_state_has_the_negative_count_fifth() {
        assert_eq!(
            parse_dentry_state("194219\t192721\t45\t0\t91431\t0\n"),
            Some((194_219, 91_431))
        );
        assert_eq!(parse_dentry_state("100 50 45 0"), None);
        assert_eq!(parse_dentry_state(""), None);
    }

    #[test]
    fn eviction_never_goes_below_the_kubelet_default() {
        let flat = [sample(0.0, 300, 100), sample(60.0, 300, 100)];
        let a = advise(&flat, &Policy::default()).unwrap();
        assert_eq!(setting(&a, "evictionHard.memory.available").value, "100Mi");
        assert_eq!(advise(&[], &Policy::default()), None);
    }

    #[test]
    fn dominant_reclaimable_caches_and_negative_dentries_are_flagged() {
        let mut s = sample(0.0, 300, 100);
        s.sreclaimable = 4 << 30;
        s.slab = s.sreclaimable + s.sunreclaim;
        s.dentries = Some((3_000_000, 2_500_000));
        let a = advise(&[s], &Policy { margin: 0.5, eviction_span: 60.0 }).unwrap();
        let v = setting(&a, "vm.vfs_cache_pressure");
        assert_eq!(v.value, "200");
        assert!(v.evidence.contains("93%"), "{}", v.evidence);
        assert_eq!(a.notes.len(), 1);
        assert!(a.notes[0].contains("2500000 of 3000000"));
        // A 50% margin on 200 MiB.
        assert_eq!(setting(&a, "systemReserved.memory").value, "300Mi");
    }
}
