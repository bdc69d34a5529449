//! The container runtime: pod and container names through the Kubernetes CRI API.
//!
//! cgroup paths carry only pod uids and container ids; the names people know (namespace, pod,
//! container) live in the runtime. [`cri`] asks containerd or CRI-O for them over their CRI
//! unix socket. The runtime is optional: without it, names come from cgroup paths only.

pub mod cri;
#[cfg(test)]
mod fake_cri;
