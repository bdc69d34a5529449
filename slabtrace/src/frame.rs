//! What every owner holds of every cache at one moment (a [`OwnerTable`]), the change between two
//! frames, and the top-N of a change with the rest rolled up: what the daemon's event stream,
//! its metrics and `slabtrace top` are all made of.
//!
//! An owner is a pod (its containers summed, keyed by uid), a cgroup outside Kubernetes (a
//! systemd service, a user session, the root; keyed by cgroup id), or interrupt context. Pure:
//! frames are built from a [`Report`], so every rule here has a table test.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    attribution::CacheUsage,
    cgroup::kubepods::{Identity, Qos},
    observation::Observation,
};

/// Who holds the objects: the stable part, used as a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKey {
    /// A Kubernetes pod, by uid.
    Pod(String),
    /// A cgroup outside kubepods, by cgroup id.
    Cgroup(u64),
    /// Allocations in interrupt context (charged to no task).
    Interrupt,
}

/// Who holds the objects: what is known of them now (names can arrive later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// A Kubernetes pod.
    Pod {
        /// Namespace from the runtime; `null` until known.
        namespace: Option<String>,
        /// Pod name from the runtime; `null` until known.
        name: Option<String>,
        /// Pod uid (from the cgroup path).
        uid: String,
        /// Quality-of-service class.
        qos: Qos,
        /// Every cgroup of the pod is gone (its objects may live on).
        deleted: bool,
    },
    /// A cgroup outside kubepods.
    Cgroup {
        /// cgroup2 id (the directory's inode number).
        cgroup_id: u64,
        /// Path under the cgroup2 mount; `null` if it vanished before slabtrace saw it.
        cgroup: Option<String>,
        /// Whether the cgroup still exists.
        alive: bool,
    },
    /// Interrupt context.
    Interrupt,
}

impl Owner {
    /// The key of this owner.
    #[must_use]
    pub fn key(&self) -> OwnerKey {
        match self {
            Self::Pod { uid, .. } => OwnerKey::Pod(uid.clone()),
            Self::Cgroup { cgroup_id, .. } => OwnerKey::Cgroup(*cgroup_id),
            Self::Interrupt => OwnerKey::Interrupt,
        }
    }

    /// Whether the owner is gone (a deleted pod, a removed cgroup).
    #[must_use]
    pub fn gone(&self) -> bool {
        match self {
            Self::Pod { deleted, .. } => *deleted,
            Self::Cgroup { alive, .. } => !alive,
            Self::Interrupt => false,
        }
    }

    /// A short human name: `namespace/name`, the pod uid, the cgroup path or id.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Pod { namespace: Some(ns), name: Some(name), .. } => format!("{ns}/{name}"),
            Self::Pod { uid, .. } => format!("pod {uid}"),
            Self::Cgroup { cgroup: Some(path), .. } => path.clone(),
            Self::Cgroup { cgroup_id, .. } => format!("cgroup {cgroup_id}"),
            Self::Interrupt => "(interrupt context)".to_owned(),
        }
    }
}

/// One owner's use of one cache since tracing started (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OwnerRow {
    /// Bytes per object.
    pub object_size: u64,
    /// Objects allocated (exact).
    pub allocs: u64,
    /// Bytes allocated (exact).
    pub alloc_bytes: u64,
    /// Objects freed, by anyone (estimate when sampled).
    pub frees: u64,
    /// Objects still live (estimate when sampled).
    pub live_objects: u64,
    /// Bytes still live.
    pub live_bytes: u64,
    /// ± bound on `live_objects` (three standard deviations; 0 when exact).
    pub live_objects_error: u64,
    /// Live bytes charged to no memcg.
    pub unaccounted_live_bytes: u64,
}

impl OwnerRow {
    fn of(c: &CacheUsage) -> Self {
        Self {
            object_size: c.object_size,
            allocs: c.allocs,
            alloc_bytes: c.alloc_bytes,
            frees: c.frees,
            live_objects: c.live_objects,
            live_bytes: c.live_bytes,
            live_objects_error: c.live_objects_error,
            unaccounted_live_bytes: c.unaccounted_live_bytes,
        }
    }
}

/// Every owner's use of every cache at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerTable {
    /// Owners by key.
    pub owners: BTreeMap<OwnerKey, Owner>,
    /// (owner, cache name) → cumulative figures.
    pub rows: BTreeMap<(OwnerKey, String), OwnerRow>,
}

impl OwnerTable {
    /// The frame of a cumulative report: its pods, the cgroups outside kubepods, and
    /// interrupt context.
    #[must_use]
    pub fn from_observation(report: &Observation) -> Self {
        let mut frame = Self::default();
        for pod in &report.pods {
            let owner = Owner::Pod {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                qos: pod.qos,
                deleted: pod.deleted,
            };
            frame.add(owner, &pod.caches);
        }
        for cg in &report.cgroups {
            let in_pod =
                matches!(cg.identity, Some(Identity::Container { .. } | Identity::Pod { .. }));
            if in_pod {
                continue;
            }
            let owner = Owner::Cgroup {
                cgroup_id: cg.cgroup_id,
                cgroup: cg.cgroup.clone(),
                alive: cg.alive,
            };
            frame.add(owner, &cg.caches);
        }
        if let Some(irq) = &report.interrupt {
            frame.add(Owner::Interrupt, &irq.caches);
        }
        frame
    }

    fn add(&mut self, owner: Owner, caches: &[CacheUsage]) {
        let key = owner.key();
        for c in caches {
            self.rows.insert((key.clone(), c.cache.clone()), OwnerRow::of(c));
        }
        self.owners.insert(key, owner);
    }

    /// Owners that are gone in this frame but were not in `before` (or were not in it at all
    /// and are gone already): each is reported gone once.
    #[must_use]
    pub fn newly_gone<'a>(&'a self, before: &Self) -> Vec<&'a Owner> {
        self.owners
            .iter()
            .filter(|(key, owner)| {
                owner.gone() && !before.owners.get(*key).is_some_and(Owner::gone)
            })
            .map(|(_, owner)| owner)
            .collect()
    }

    /// Sums of live bytes per owner, largest first.
    #[must_use]
    pub fn live_bytes_by_owner(&self) -> Vec<(&OwnerKey, u64)> {
        let mut sums: BTreeMap<&OwnerKey, u64> = BTreeMap::new();
        for ((owner, _), row) in &self.rows {
            *sums.entry(owner).or_default() += row.live_bytes;
        }
        let mut v: Vec<_> = sums.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }
}

/// How one owner's use of one cache changed over an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Whose.
    pub owner: OwnerKey,
    /// Which cache.
    pub cache: String,
    /// Figures now (cumulative).
    pub now: OwnerRow,
    /// Objects allocated in the interval.
    pub allocs: u64,
    /// Bytes allocated in the interval.
    pub alloc_bytes: u64,
    /// Objects freed in the interval.
    pub frees: u64,
    /// Change of live objects over the interval.
    pub live_objects_delta: i64,
    /// Change of live bytes over the interval.
    pub live_bytes_delta: i64,
}

impl Change {
    /// The order of importance: the largest change of live bytes either way, then the most
    /// bytes allocated, then the most live bytes.
    fn weight(&self) -> (u64, u64, u64) {
        (self.live_bytes_delta.unsigned_abs(), self.alloc_bytes, self.now.live_bytes)
    }
}

fn signed(now: u64, before: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX)
}

/// A counter's growth; a counter that went down (its row was expired and came back) counts
/// from zero, never negative.
fn growth(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

/// The rows of `now` that changed since `before` (allocations, frees or live objects), most
/// important first (see [`Change`]). Rows only in `now` count in full.
#[must_use]
pub fn changes(before: &OwnerTable, now: &OwnerTable) -> Vec<Change> {
    let mut v: Vec<Change> = now
        .rows
        .iter()
        .filter_map(|((owner, cache), row)| {
            let then =
                before.rows.get(&(owner.clone(), cache.clone())).copied().unwrap_or_default();
            let change = Change {
                owner: owner.clone(),
                cache: cache.clone(),
                now: *row,
                allocs: growth(row.allocs, then.allocs),
                alloc_bytes: growth(row.alloc_bytes, then.alloc_bytes),
                frees: growth(row.frees, then.frees),
                live_objects_delta: signed(row.live_objects, then.live_objects),
                live_bytes_delta: signed(row.live_bytes, then.live_bytes),
            };
            let changed = change.allocs > 0 || change.frees > 0 || change.live_objects_delta != 0;
            changed.then_some(change)
        })
        .collect();
    v.sort_by(|a, b| b.weight().cmp(&a.weight()).then_with(|| a.owner.cmp(&b.owner)));
    v
}

/// What the rows beyond the top-N add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rest {
    /// How many rows were rolled up.
    pub rows: u64,
    /// Objects allocated in the interval.
    pub allocs: u64,
    /// Bytes allocated in the interval.
    pub alloc_bytes: u64,
    /// Objects freed in the interval.
    pub frees: u64,
    /// Change of live bytes over the interval.
    pub live_bytes_delta: i64,
    /// Live bytes now.
    pub live_bytes: u64,
}

/// The first `n` of `changes` (already in order of importance) and the rest rolled up, if any.
#[must_use]
pub fn top(mut changes: Vec<Change>, n: usize) -> (Vec<Change>, Option<Rest>) {
    if changes.len() <= n {
        return (changes, None);
    }
    let rest = changes.split_off(n);
    let mut sum = Rest::default();
    for c in &rest {
        sum.rows += 1;
        sum.allocs += c.allocs;
        sum.alloc_bytes += c.alloc_bytes;
        sum.frees += c.frees;
        sum.live_bytes_delta += c.live_bytes_delta;
        sum.live_bytes += c.now.live_bytes;
    }
    (changes, Some(sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(allocs: u64, frees: u64, size: u64) -> OwnerRow {
        let live = allocs - frees;
        OwnerRow {
            object_size: size,
            allocs,
            alloc_bytes: allocs * size,
            frees,
            live_objects: live,
            live_bytes: live * size,
            ..OwnerRow::default()
        }
    }

    fn pod(uid: &str, deleted: bool) -> Owner {
        Owner::Pod {
            namespace: Some("ns".into()),
            name: Some(uid.into()),
            uid: uid.into(),
            qos: Qos::BestEffort,
            deleted,
        }
    }

    fn frame(entries: &[(&Owner, &str, OwnerRow)]) -> OwnerTable {
        let mut f = OwnerTable::default();
        for (owner, cache, r) in entries {
            f.owners.insert(owner.key(), (*owner).clone());
            f.rows.insert((owner.key(), (*cache).to_owned()), *r);
        }
        f
    }

    #[test]
    fn an_empty_interval_has_no_changes() {
        let a = pod("a", false);
        let f = frame(&[(&a, "dentry", row(10, 2, 192))]);
        assert!(changes(&f, &f).is_empty());
        assert!(changes(&OwnerTable::default(), &OwnerTable::default()).is_empty());
    }

    #[test]
    fn changes_are_differences_and_new_rows_count_in_full() {
        let a = pod("a", false);
        let before = frame(&[(&a, "dentry", row(10, 2, 192))]);
        let now = frame(&[(&a, "dentry", row(15, 10, 192)), (&a, "filp", row(4, 0, 256))]);
        let c = changes(&before, &now);
        assert_eq!(c.len(), 2);
        // filp grew by 1024 live bytes, dentry shrank by 3 objects (576 bytes): filp first.
        assert_eq!((c[0].cache.as_str(), c[0].allocs, c[0].live_bytes_delta), ("filp", 4, 1024));
        assert_eq!((c[1].allocs, c[1].frees, c[1].live_objects_delta), (5, 8, -3));
        assert_eq!(c[1].live_bytes_delta, -576);
    }

    #[test]
    fn a_row_that_went_back_counts_from_zero() {
        let a = pod("a", false);
        let before = frame(&[(&a, "dentry", row(100, 0, 8))]);
        let now = frame(&[(&a, "dentry", row(3, 0, 8))]);
        let c = changes(&before, &now);
        assert_eq!((c[0].allocs, c[0].alloc_bytes), (3, 24));
    }

    #[test]
    fn top_keeps_n_and_rolls_up_the_rest() {
        let (a, b, cg) = (pod("a", false), pod("b", false), pod("c", false));
        let now = frame(&[
            (&a, "dentry", row(1000, 0, 192)),
            (&b, "dentry", row(10, 0, 192)),
            (&cg, "filp", row(5, 1, 256)),
        ]);
        let (kept, rest) = top(changes(&OwnerTable::default(), &now), 1);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].owner, OwnerKey::Pod("a".into()));
        let rest = rest.unwrap();
        assert_eq!((rest.rows, rest.allocs, rest.frees), (2, 15, 1));
        assert_eq!(rest.live_bytes, 10 * 192 + 4 * 256);
        assert_eq!(rest.live_bytes_delta, 10 * 192 + 4 * 256);
        let (kept, rest) = top(changes(&OwnerTable::default(), &now), 3);
        assert_eq!((kept.len(), rest), (3, None));
        assert_eq!(top(Vec::new(), 0), (Vec::new(), None));
    }

    #[test]
    fn an_owner_is_gone_once() {
        let alive = pod("a", false);
        let deleted = pod("a", true);
        let before = frame(&[(&alive, "dentry", row(1, 0, 8))]);
        let now = frame(&[(&deleted, "dentry", row(1, 0, 8))]);
        assert_eq!(now.newly_gone(&before), vec![&deleted]);
        assert!(now.newly_gone(&now).is_empty());
        // Seen for the first time already gone: said once too.
        assert_eq!(now.newly_gone(&OwnerTable::default()), vec![&deleted]);
    }

    #[test]
    fn owners_are_named_for_people() {
        assert_eq!(pod("web-0", false).display(), "ns/web-0");
        let nameless = Owner::Pod {
            namespace: None,
            name: None,
            uid: "u1".into(),
            qos: Qos::Burstable,
            deleted: false,
        };
        assert_eq!(nameless.display(), "pod u1");
        let cg = Owner::Cgroup {
            cgroup_id: 7,
            cgroup: Some("/system.slice/a.service".into()),
            alive: true,
        };
        assert_eq!(cg.display(), "/system.slice/a.service");
        assert_eq!(
            Owner::Cgroup { cgroup_id: 7, cgroup: None, alive: false }.display(),
            "cgroup 7"
        );
    }

    #[test]
    fn live_bytes_sum_per_owner() {
        let (a, b) = (pod("a", false), pod("b", false));
        let f = frame(&[
            (&a, "dentry", row(10, 0, 100)),
            (&a, "filp", row(10, 5, 100)),
            (&b, "dentry", row(20, 0, 100)),
        ]);
        let sums = f.live_bytes_by_owner();
        assert_eq!(
            sums,
            vec![(&OwnerKey::Pod("b".into()), 2000), (&OwnerKey::Pod("a".into()), 1500)]
        );
    }
}
