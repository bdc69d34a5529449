//! cgroup2 path → Kubernetes identity (pod, container, quality-of-service parent) or systemd unit,
//! for every layout the kubelet's two cgroup drivers produce with the default `--cgroup-root`.
//!
//! The kubelet names pod cgroups and the container runtime names the container cgroup below
//! them, so one path says which pod and which container allocated a slab object without asking
//! anyone, even after both are gone. The layouts, relative to the cgroup2 root (the same on a
//! pure v2 node and on the unified hierarchy of a hybrid one):
//!
//! - cgroupfs driver: `/kubepods/pod<uid>` (guaranteed), `/kubepods/burstable/pod<uid>`,
//!   `/kubepods/besteffort/pod<uid>`;
//! - systemd driver: `/kubepods.slice/kubepods-pod<uid_>.slice` (guaranteed),
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`, and
//!   `besteffort` alike.
//!
//! `<uid_>` is the pod uid with `-` escaped to `_` (a `-` in a slice name means nesting); it is
//! turned back. Container leaves under a pod cgroup, as the runtimes name them:
//! `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` / `crio-<id>` (CRI-O),
//! `crio-conmon-<id>.scope` / `crio-conmon-<id>` (CRI-O's conmon), `docker-<id>.scope`
//! (cri-dockerd) and a bare `<id>` (containerd or Docker with the cgroupfs driver, which the path
//! cannot tell apart). Leaf forms are accepted under either driver because the runtime, not the
//! kubelet, picks them. Anything below a container leaf (a container that makes its own
//! sub-cgroups, crun's `container` sub-cgroup) still belongs to that container.
//!
//! Choices, made strict so that a stray directory is never reported as a pod:
//! - A pod uid is 36 characters, hex in 8-4-4-4-12 groups joined by `-` (cgroupfs) or `_`
//!   (systemd), or 32 plain hex digits: static pods get the md5 of their manifest as uid (the
//!   kubelet's `config/common.go`), and control-plane nodes run them. Anything else is
//!   [`Identity::Other`].
//! - A container id is 64 hex digits. A leaf that is 12 or more hex digits after its known
//!   prefix and suffix, but not 64, is still a container with [`Runtime::Unknown`] (and
//!   `conmon: false`): its prefix is not trusted when the id is not that runtime's. Fewer than
//!   12, or not hex, is [`Identity::Other`].
//! - A systemd unit is the deepest unit name in the leading run of unit-named components, and
//!   its slice the nearest `.slice` above it (`-.slice`, systemd's root slice, when there is
//!   none); a slice is itself a unit, so `/system.slice` is unit `system.slice` in `-.slice`.
//! - Paths with `.` or `..` components are [`Identity::Other`]; empty components (`//`, a
//!   trailing `/`) are ignored. A non-default `--cgroup-root` (kind's `/kubelet.slice/...`) is
//!   not recognised: such pods come out as the systemd units or paths they are.

use serde::Serialize;

/// A pod's Kubernetes quality-of-service class, as its cgroup's parent says.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Qos {
    /// Directly under kubepods: there is no guaranteed parent cgroup.
    Guaranteed,
    /// Under `kubepods/burstable` or `kubepods-burstable.slice`.
    Burstable,
    /// Under `kubepods/besteffort` or `kubepods-besteffort.slice`.
    BestEffort,
}

/// The container runtime, as far as the container cgroup's name tells.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`.
    Containerd,
    /// `crio-<id>[.scope]` and `crio-conmon-<id>[.scope]`.
    Crio,
    /// `docker-<id>.scope` (cri-dockerd with the systemd driver).
    Docker,
    /// A bare id (containerd and Docker look alike with the cgroupfs driver), or an id that is
    /// not 64 hex digits.
    Unknown,
}

/// Who a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    /// A container of a pod, or the pod's sandbox (pause) container when `container_id` is the
    /// sandbox's: only the CRI runtime knows which; `container_id` is just the id in the path.
    Container {
        /// The pod's uid with dashes (`0f7e…-…`), or 32 hex digits for a static pod.
        pod_uid: String,
        /// The pod's quality-of-service class.
        qos: Qos,
        /// The id from the container cgroup's name, without runtime prefix or `.scope`.
        container_id: String,
        /// The runtime the cgroup's name points to.
        runtime: Runtime,
        /// CRI-O's conmon, the monitor process beside the container (`crio-conmon-<id>`), with
        /// the container's id: what it allocates (pipes, the log file) is runtime overhead for
        /// that container rather than the container's own memory.
        conmon: bool,
    },
    /// The pod-level cgroup itself (processes directly in it, or objects re-charged to it after
    /// its containers went away).
    Pod {
        /// The pod's uid, as in [`Identity::Container`].
        pod_uid: String,
        /// The pod's quality-of-service class.
        qos: Qos,
    },
    /// A quality-of-service parent (`kubepods/burstable`, `kubepods-besteffort.slice`) or,
    /// with `None`, kubepods itself. Never `Some(Guaranteed)`: guaranteed pods sit directly in
    /// kubepods.
    KubepodsSlice {
        /// The class of the pods the parent holds.
        qos: Option<Qos>,
    },
    /// A systemd unit outside kubepods: `/system.slice/kubelet.service` is unit
    /// `kubelet.service` in slice `system.slice`.
    SystemUnit {
        /// The slice holding the unit, `-.slice` for top-level units such as `init.scope`.
        slice: String,
        /// The unit's name.
        unit: String,
    },
    /// The cgroup2 root `/`.
    Root,
    /// Anything else, path as given.
    Other {
        /// The path passed to [`identify`].
        path: String,
    },
}

/// The length of a full container id (a sha256 in hex) in every runtime the kubelet drives.
const CONTAINER_ID_LEN: usize = 64;

/// The shortest id still taken as a container's: the length `docker ps` and `crictl ps` show.
const MIN_CONTAINER_ID_LEN: usize = 12;

/// Container cgroup names under a pod cgroup: prefix, suffix, runtime, conmon. Tried in order,
/// so `crio-conmon-` comes before `crio-`, and the bare id last.
const LEAVES: &[(&str, &str, Runtime, bool)] = &[
    ("cri-containerd-", ".scope", Runtime::Containerd, false),
    ("crio-conmon-", ".scope", Runtime::Crio, true),
    ("crio-", ".scope", Runtime::Crio, false),
    ("docker-", ".scope", Runtime::Docker, false),
    ("crio-conmon-", "", Runtime::Crio, true),
    ("crio-", "", Runtime::Crio, false),
    ("", "", Runtime::Unknown, false),
];

/// Unit types systemd may give a cgroup (the others never run processes).
const UNIT_SUFFIXES: &[&str] = &[".slice", ".service", ".scope", ".socket", ".mount", ".swap"];

/// Parses a cgroup path relative to the cgroup2 root (`"/"` for the root). Pure.
#[must_use]
pub fn identify(path: &str) -> Identity {
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let found = if parts.iter().any(|part| *part == "." || *part == "..") {
        None
    } else {
        match parts.as_slice() {
            // An empty string is no path at all, not the root.
            [] if path.starts_with('/') => Some(Identity::Root),
            [] => None,
            ["kubepods", rest @ ..] => cgroupfs(rest),
            ["kubepods.slice", rest @ ..] => systemd(rest),
            _ => system_unit(&parts),
        }
    };
    found.unwrap_or_else(|| Identity::Other { path: path.to_owned() })
}

/// A short readable name for reports: `pod <uid> container <id12>` (with ` (conmon)` for
/// conmon, which shares its container's id), `pod <uid>`, `kubepods/burstable`, the unit, `/`,
/// or the path.
#[must_use]
pub fn display_name(id: &Identity) -> String {
    match id {
        Identity::Container { pod_uid, container_id, conmon, .. } => {
            // Ids are ASCII hex when `identify` made them; `get` keeps any other string whole
            // rather than panicking on a char boundary.
            let short = container_id.get(..MIN_CONTAINER_ID_LEN).unwrap_or(container_id);
            let note = if *conmon { " (conmon)" } else { "" };
            format!("pod {pod_uid} container {short}{note}")
        }
        Identity::Pod { pod_uid, .. } => format!("pod {pod_uid}"),
        Identity::KubepodsSlice { qos: None } => "kubepods".to_owned(),
        Identity::KubepodsSlice { qos: Some(qos) } => format!("kubepods/{}", qos_dir(*qos)),
        Identity::SystemUnit { unit, .. } => unit.clone(),
        Identity::Root => "/".to_owned(),
        Identity::Other { path } => path.clone(),
    }
}

/// The cgroupfs driver's directory name for a [`Qos`] (also the readable one).
fn qos_dir(qos: Qos) -> &'static str {
    match qos {
        Qos::Guaranteed => "guaranteed",
        Qos::Burstable => "burstable",
        Qos::BestEffort => "besteffort",
    }
}

/// The components after `kubepods` in the cgroupfs driver's layout.
fn cgroupfs(rest: &[&str]) -> Option<Identity> {
    let (qos, rest) = match rest {
        [] => return Some(Identity::KubepodsSlice { qos: None }),
        ["burstable", rest @ ..] => (Qos::Burstable, rest),
        ["besteffort", rest @ ..] => (Qos::BestEffort, rest),
        rest => (Qos::Guaranteed, rest),
    };
    let [pod_dir, below @ ..] = rest else {
        return Some(Identity::KubepodsSlice { qos: Some(qos) });
    };
    let pod_uid = pod_dir.strip_prefix("pod").and_then(|uid| parse_uid(uid, '-'))?;
    pod_or_container(pod_uid, qos, below)
}

/// The components after `kubepods.slice` in the systemd driver's layout, where every slice
/// repeats its parents' names: `kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`.
fn systemd(rest: &[&str]) -> Option<Identity> {
    let (qos, pod_prefix, rest) = match rest {
        [] => return Some(Identity::KubepodsSlice { qos: None }),
        ["kubepods-burstable.slice", rest @ ..] => (Qos::Burstable, "kubepods-burstable-pod", rest),
        ["kubepods-besteffort.slice", rest @ ..] => {
            (Qos::BestEffort, "kubepods-besteffort-pod", rest)
        }
        rest => (Qos::Guaranteed, "kubepods-pod", rest),
    };
    let [pod_dir, below @ ..] = rest else {
        return Some(Identity::KubepodsSlice { qos: Some(qos) });
    };
    let pod_uid = pod_dir
        .strip_prefix(pod_prefix)
        .and_then(|uid| uid.strip_suffix(".slice"))
        .and_then(|uid| parse_uid(uid, '_'))?;
    pod_or_container(pod_uid, qos, below)
}

/// The pod itself when nothing is below its cgroup, else the container named by the first
/// component below it; deeper components are the container's own sub-cgroups.
fn pod_or_container(pod_uid: String, qos: Qos, below: &[&str]) -> Option<Identity> {
    let Some(leaf) = below.first() else {
        return Some(Identity::Pod { pod_uid, qos });
    };
    let (container_id, runtime, conmon) = parse_leaf(leaf)?;
    Some(Identity::Container { pod_uid, qos, container_id, runtime, conmon })
}

/// A pod uid as the driver wrote it (`sep` between the 8-4-4-4-12 hex groups), or a static
/// pod's 32 hex digits; returned with dashes.
fn parse_uid(uid: &str, sep: char) -> Option<String> {
    if uid.len() == 32 && is_hex(uid) {
        return Some(uid.to_owned());
    }
    let groups: Vec<&str> = uid.split(sep).collect();
    let shaped = groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12]);
    (shaped && groups.iter().all(|group| is_hex(group))).then(|| groups.join("-"))
}

/// A container cgroup's name → id, runtime, conmon; `None` when it names no container.
fn parse_leaf(leaf: &str) -> Option<(String, Runtime, bool)> {
    LEAVES.iter().find_map(|&(prefix, suffix, runtime, conmon)| {
        let id = leaf.strip_prefix(prefix)?.strip_suffix(suffix)?;
        if !is_hex(id) || id.len() < MIN_CONTAINER_ID_LEN {
            None
        } else if id.len() == CONTAINER_ID_LEN {
            Some((id.to_owned(), runtime, conmon))
        } else {
            Some((id.to_owned(), Runtime::Unknown, false))
        }
    })
}

/// A path outside kubepods made of systemd units: see the module doc for which unit and slice.
fn system_unit(parts: &[&str]) -> Option<Identity> {
    let units = parts.iter().take_while(|part| is_unit_name(part)).count();
    let (chain, inside) = parts.split_at(units);
    let (unit, above) = chain.split_last()?;
    // Only a delegated service or scope has cgroups systemd did not make; a slice never does,
    // so a slice with a foreign child is not systemd's.
    if is_slice(unit) && !inside.is_empty() {
        return None;
    }
    let slice = above.iter().rev().find(|part| is_slice(part)).map_or("-.slice", |s| s);
    Some(Identity::SystemUnit { slice: slice.to_owned(), unit: (*unit).to_owned() })
}

/// Whether `name` is a valid systemd unit name of a type that can own a cgroup (systemd's
/// `unit_name_is_valid`: at most 255 bytes of `[A-Za-z0-9:_.\@-]`, a non-empty stem).
fn is_unit_name(name: &str) -> bool {
    let typed = UNIT_SUFFIXES
        .iter()
        .any(|suffix| name.strip_suffix(suffix).is_some_and(|stem| !stem.is_empty()));
    typed
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// Whether `name` is a slice unit's.
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "not a file extension: systemd unit types are case-sensitive, `x.SLICE` is no slice"
)]
fn is_slice(name: &str) -> bool {
    name.ends_with(".slice")
}

/// Non-empty and all hex digits.
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cgroups/paths.txt"));

    const GUARANTEED_UID: &str = "2832f9cd-daa4-4fa3-9819-4ce419a93f7a";
    const BURSTABLE_UID: &str = "6d0b7269-2b82-40bc-ad46-e45e7e6b97f8";
    const BESTEFFORT_UID: &str = "b564aadd-fd14-4876-b68b-dc3217248ac3";
    /// An etcd static pod: the md5 of its manifest.
    const STATIC_UID: &str = "091a24c140b186884047172276004606";
    const CONTAINERD_ID: &str = "1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db";
    const CRIO_ID: &str = "5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290";
    const DOCKER_ID: &str = "7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea";

    fn container(uid: &str, qos: Qos, id: &str, runtime: Runtime, conmon: bool) -> Identity {
        Identity::Container {
            pod_uid: uid.to_owned(),
            qos,
            container_id: id.to_owned(),
            runtime,
            conmon,
        }
    }

    fn pod(uid: &str, qos: Qos) -> Identity {
        Identity::Pod { pod_uid: uid.to_owned(), qos }
    }

    fn unit(slice: &str, unit: &str) -> Identity {
        Identity::SystemUnit { slice: slice.to_owned(), unit: unit.to_owned() }
    }

    fn other(path: &str) -> Identity {
        Identity::Other { path: path.to_owned() }
    }

    fn check(cases: &[(&str, Identity)]) {
        for (path, want) in cases {
            assert_eq!(&identify(path), want, "{path}");
        }
    }

    #[test]
    fn cgroupfs_driver() {
        use Qos::{BestEffort, Burstable, Guaranteed};
        use Runtime::{Crio, Unknown};
        let g = GUARANTEED_UID;
        let b = BURSTABLE_UID;
        let be = BESTEFFORT_UID;
        check(&[
            // containerd and docker both leave a bare id.
            (
                "/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db",
                container(g, Guaranteed, CONTAINERD_ID, Unknown, false),
            ),
            (
                "/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a/7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea",
                container(g, Guaranteed, DOCKER_ID, Unknown, false),
            ),
            (
                "/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(g, Guaranteed, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(g, Guaranteed, CRIO_ID, Crio, true),
            ),
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db",
                container(b, Burstable, CONTAINERD_ID, Unknown, false),
            ),
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea",
                container(b, Burstable, DOCKER_ID, Unknown, false),
            ),
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(b, Burstable, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(b, Burstable, CRIO_ID, Crio, true),
            ),
            (
                "/kubepods/besteffort/podb564aadd-fd14-4876-b68b-dc3217248ac3/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db",
                container(be, BestEffort, CONTAINERD_ID, Unknown, false),
            ),
            (
                "/kubepods/besteffort/podb564aadd-fd14-4876-b68b-dc3217248ac3/7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea",
                container(be, BestEffort, DOCKER_ID, Unknown, false),
            ),
            (
                "/kubepods/besteffort/podb564aadd-fd14-4876-b68b-dc3217248ac3/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(be, BestEffort, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods/besteffort/podb564aadd-fd14-4876-b68b-dc3217248ac3/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290",
                container(be, BestEffort, CRIO_ID, Crio, true),
            ),
            // Pod cgroups themselves, a static pod's among them.
            ("/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a", pod(g, Guaranteed)),
            ("/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8", pod(b, Burstable)),
            ("/kubepods/besteffort/podb564aadd-fd14-4876-b68b-dc3217248ac3", pod(be, BestEffort)),
            ("/kubepods/burstable/pod091a24c140b186884047172276004606", pod(STATIC_UID, Burstable)),
        ]);
    }

    #[test]
    fn systemd_driver() {
        use Qos::{BestEffort, Burstable, Guaranteed};
        use Runtime::{Containerd, Crio, Docker};
        let g = GUARANTEED_UID;
        let b = BURSTABLE_UID;
        let be = BESTEFFORT_UID;
        check(&[
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope",
                container(g, Guaranteed, CONTAINERD_ID, Containerd, false),
            ),
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(g, Guaranteed, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(g, Guaranteed, CRIO_ID, Crio, true),
            ),
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/docker-7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea.scope",
                container(g, Guaranteed, DOCKER_ID, Docker, false),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope",
                container(b, Burstable, CONTAINERD_ID, Containerd, false),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(b, Burstable, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(b, Burstable, CRIO_ID, Crio, true),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice/docker-7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea.scope",
                container(b, Burstable, DOCKER_ID, Docker, false),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope",
                container(be, BestEffort, CONTAINERD_ID, Containerd, false),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(be, BestEffort, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice/crio-conmon-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope",
                container(be, BestEffort, CRIO_ID, Crio, true),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice/docker-7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea.scope",
                container(be, BestEffort, DOCKER_ID, Docker, false),
            ),
            // Pod cgroups themselves: uids come back with dashes; a static pod's has none.
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice",
                pod(g, Guaranteed),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice",
                pod(b, Burstable),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice",
                pod(be, BestEffort),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod091a24c140b186884047172276004606.slice",
                pod(STATIC_UID, Burstable),
            ),
        ]);
    }

    #[test]
    fn below_a_container_is_that_container() {
        use Qos::{BestEffort, Burstable, Guaranteed};
        use Runtime::{Containerd, Crio, Unknown};
        check(&[
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db/child",
                container(BURSTABLE_UID, Burstable, CONTAINERD_ID, Unknown, false),
            ),
            (
                "/kubepods/pod2832f9cd-daa4-4fa3-9819-4ce419a93f7a/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db/init.scope/deeper",
                container(GUARANTEED_UID, Guaranteed, CONTAINERD_ID, Unknown, false),
            ),
            // crun's sub-cgroup under a CRI-O scope.
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice/crio-5b000c133302f53361b51670307f4f944fd3dcd363d242fddb986a7fd360b290.scope/container",
                container(BURSTABLE_UID, Burstable, CRIO_ID, Crio, false),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope/a/b",
                container(BESTEFFORT_UID, BestEffort, CONTAINERD_ID, Containerd, false),
            ),
        ]);
    }

    #[test]
    fn kubepods_parents_units_and_root() {
        check(&[
            ("/kubepods", Identity::KubepodsSlice { qos: None }),
            ("/kubepods.slice", Identity::KubepodsSlice { qos: None }),
            ("/kubepods/burstable", Identity::KubepodsSlice { qos: Some(Qos::Burstable) }),
            ("/kubepods/besteffort", Identity::KubepodsSlice { qos: Some(Qos::BestEffort) }),
            (
                "/kubepods.slice/kubepods-burstable.slice",
                Identity::KubepodsSlice { qos: Some(Qos::Burstable) },
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice",
                Identity::KubepodsSlice { qos: Some(Qos::BestEffort) },
            ),
            ("/system.slice/kubelet.service", unit("system.slice", "kubelet.service")),
            ("/system.slice/containerd.service", unit("system.slice", "containerd.service")),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                unit("user-1000.slice", "session-3.scope"),
            ),
            (
                "/system.slice/system-getty.slice/getty@tty1.service",
                unit("system-getty.slice", "getty@tty1.service"),
            ),
            // A user manager's own slices and units, the deepest one wins.
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
                unit("app.slice", "dbus.service"),
            ),
            // Sub-cgroups a delegated unit made itself belong to the unit.
            ("/system.slice/containerd.service/x", unit("system.slice", "containerd.service")),
            // Slices are units too; top-level units are in the root slice.
            ("/system.slice", unit("-.slice", "system.slice")),
            ("/user.slice/user-1000.slice", unit("user.slice", "user-1000.slice")),
            ("/init.scope", unit("-.slice", "init.scope")),
            ("/dev-hugepages.mount", unit("-.slice", "dev-hugepages.mount")),
            (
                "/system.slice/system-systemd\\x2dfsck.slice",
                unit("system.slice", "system-systemd\\x2dfsck.slice"),
            ),
            ("/", Identity::Root),
            ("//", Identity::Root),
            // Relative and trailing-slash spellings of the same cgroups.
            ("kubepods/burstable/", Identity::KubepodsSlice { qos: Some(Qos::Burstable) }),
            ("system.slice/kubelet.service", unit("system.slice", "kubelet.service")),
        ]);
    }

    #[test]
    fn malformed_is_other() {
        for path in [
            "",
            "/docker/7160dc1929d03cb4344492f20d56bc32903914218278f31b9e340f005bbbdfea",
            "/lxc.payload.c1",
            // Pod dirs whose uid is not one.
            "/kubepods/burstable/pod",
            "/kubepods/burstable/podnginx",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8a",
            "/kubepods/burstable/pod6d0b72692-b82-40bc-ad46-e45e7e6b97f8",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97fg",
            "/kubepods/burstable/pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8",
            "/kubepods/pod091a24c140b18688404717227600460",
            "/kubepods/burstable/6d0b7269-2b82-40bc-ad46-e45e7e6b97f8",
            "/kubepods/unknownqos",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-pod6d0b7269_2b82_40bc_ad46_e45e7e6b97f8.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-podb564aadd_fd14_4876_b68b_dc3217248ac3.slice",
            "/kubepods.slice/kubepods-pod.slice",
            // Leaves under a real pod that name no container.
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/crio-1f0017db2b1",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/sidecar",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77dz.scope",
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope",
            "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/libpod-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db.scope",
            // Not systemd's: a slice never has foreign children, units have valid names.
            "/system.slice/stray",
            "/system.slice/.service",
            "/system.slice/my service.service",
            "/system.slice/foo.timer",
            // Dot components are never what the resolver produces.
            "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db/..",
            "/system.slice/../kubelet.service",
        ] {
            assert_eq!(identify(path), other(path), "{path}");
        }
    }

    #[test]
    fn short_or_odd_ids_are_unknown_runtime() {
        use Runtime::Unknown;
        // 12..=63 and 65+ hex digits after a known prefix: a container, but the prefix is not
        // trusted.
        check(&[
            (
                "/kubepods/burstable/pod6d0b7269-2b82-40bc-ad46-e45e7e6b97f8/1f0017db2b1e",
                container(BURSTABLE_UID, Qos::Burstable, "1f0017db2b1e", Unknown, false),
            ),
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/crio-conmon-5b000c133302f53361b5.scope",
                container(GUARANTEED_UID, Qos::Guaranteed, "5b000c133302f53361b5", Unknown, false),
            ),
            (
                "/kubepods.slice/kubepods-pod2832f9cd_daa4_4fa3_9819_4ce419a93f7a.slice/cri-containerd-1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db0.scope",
                container(
                    GUARANTEED_UID,
                    Qos::Guaranteed,
                    "1f0017db2b1ec3ed644ed02046b7f58610eaf102d7034374d5dd703e327e77db0",
                    Unknown,
                    false,
                ),
            ),
        ]);
    }

    #[test]
    fn display_names() {
        let cases = [
            (
                container(BURSTABLE_UID, Qos::Burstable, CONTAINERD_ID, Runtime::Containerd, false),
                "pod 6d0b7269-2b82-40bc-ad46-e45e7e6b97f8 container 1f0017db2b1e",
            ),
            (
                container(BURSTABLE_UID, Qos::Burstable, CRIO_ID, Runtime::Crio, true),
                "pod 6d0b7269-2b82-40bc-ad46-e45e7e6b97f8 container 5b000c133302 (conmon)",
            ),
            // Not made by `identify`: short and non-ASCII ids are shown whole, without a panic.
            (
                container("u", Qos::Guaranteed, "abc", Runtime::Unknown, false),
                "pod u container abc",
            ),
            (
                container("u", Qos::Guaranteed, "aéééééé", Runtime::Unknown, false),
                "pod u container aéééééé",
            ),
            (pod(STATIC_UID, Qos::Guaranteed), "pod 091a24c140b186884047172276004606"),
            (Identity::KubepodsSlice { qos: None }, "kubepods"),
            (Identity::KubepodsSlice { qos: Some(Qos::Burstable) }, "kubepods/burstable"),
            (Identity::KubepodsSlice { qos: Some(Qos::BestEffort) }, "kubepods/besteffort"),
            (Identity::KubepodsSlice { qos: Some(Qos::Guaranteed) }, "kubepods/guaranteed"),
            (unit("user-1000.slice", "session-3.scope"), "session-3.scope"),
            (Identity::Root, "/"),
            (other("/docker/abc"), "/docker/abc"),
        ];
        for (id, want) in cases {
            assert_eq!(display_name(&id), want, "{id:?}");
        }
    }

    #[test]
    fn serializes_with_kind_tag() {
        let json = |id: &Identity| serde_json::to_string(id).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            json(&container(BESTEFFORT_UID, Qos::BestEffort, CRIO_ID, Runtime::Crio, true)),
            format!(
                r#"{{"kind":"container","pod_uid":"{BESTEFFORT_UID}","qos":"best_effort","container_id":"{CRIO_ID}","runtime":"crio","conmon":true}}"#
            ),
        );
        assert_eq!(
            json(&Identity::KubepodsSlice { qos: None }),
            r#"{"kind":"kubepods_slice","qos":null}"#
        );
        assert_eq!(
            json(&unit("system.slice", "kubelet.service")),
            r#"{"kind":"system_unit","slice":"system.slice","unit":"kubelet.service"}"#
        );
        assert_eq!(json(&Identity::Root), r#"{"kind":"root"}"#);
    }

    /// Every line of the fixture (paths from real nodes of each driver and runtime) names
    /// something, except lines marked `#other `. Blank lines and `# ` comments are skipped.
    #[test]
    fn fixture_paths() {
        let mut others = 0;
        let mut named = 0;
        for line in FIXTURE.lines() {
            if line.is_empty() || line.starts_with("# ") {
                continue;
            }
            if let Some(path) = line.strip_prefix("#other ") {
                assert_eq!(identify(path), other(path), "{path}");
                others += 1;
            } else {
                let id = identify(line);
                assert!(!matches!(id, Identity::Other { .. }), "{line}");
                named += 1;
            }
        }
        // The fixture was read, and has both kinds.
        assert!(named > 30 && others > 3, "{named} named, {others} other");
    }
}
