//! Helpers the unit tests share.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

/// A directory under the system temp dir, removed with everything in it when dropped, so a
/// failing test leaves nothing behind.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("slabtrace-{tag}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod with nothing traced and cgroup v2 books of `i` bytes' weight.
pub fn charged_pod(i: u64) -> crate::rollup::PodUsage {
    use crate::cgroup::charged::{Charged, Source};
    crate::rollup::PodUsage {
        namespace: Some("ns".into()),
        name: Some(format!("p-{i}")),
        uid: format!("u-{i}"),
        qos: crate::cgroup::kubepods::Qos::Burstable,
        deleted: false,
        totals: crate::attribution::Totals::default(),
        containers: Vec::new(),
        caches: Vec::new(),
        charged: Some(Charged {
            slab_reclaimable: Some(i),
            slab_unreclaimable: Some(1),
            slab: Some(i + 1),
            sock: Some(0),
            percpu: Some(8),
            kernel_stack: Some(16),
            kernel: Some(i + 25),
            ..Charged::unknown(Source::CgroupV2)
        }),
    }
}

pub fn dying() -> crate::cgroup::dying::DyingCgroups {
    use crate::cgroup::dying::{DyingCgroups, DyingParent};
    let parent = |parent: &str, nr_dying| DyingParent {
        parent: parent.to_owned(),
        nr_descendants: Some(3),
        nr_dying,
        pinned_estimate_bytes: None,
        gone_pods: Vec::new(),
        gone_pods_more: 0,
    };
    DyingCgroups {
        memcg_nr_dying: Some(1200),
        parents: vec![
            parent("/kubepods/burstable", Some(7)),
            parent("/system.slice", None),
            parent("/kubepods/burstable/pod0f7e1a2b-0000-4000-8000-00000000000a", Some(2)),
        ],
        ..DyingCgroups::default()
    }
}
