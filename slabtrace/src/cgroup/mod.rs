//! cgroup ids to cgroup2 paths: find the cgroup2 mount, walk it, remember what vanished.

pub mod charged;
pub mod dying;
pub mod kubepods;
pub mod mount;
pub(crate) mod resolve;
