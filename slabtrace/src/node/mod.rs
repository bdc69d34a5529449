//! The kernel's own books: /proc/slabinfo, /proc/meminfo and the merge aliases in
//! /sys/kernel/slab. Parsers are pure and take text; readers take a configurable root.

pub(crate) mod aliases;
pub mod growth;
pub(crate) mod meminfo;
pub mod oom;
pub(crate) mod reconcile;
pub mod shrinkers;
pub(crate) mod slabinfo;
pub mod slow_growth;
