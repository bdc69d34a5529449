//! The kernel's own books: /proc/slabinfo, /proc/meminfo and the merge aliases in
//! /sys/kernel/slab. Parsers are pure and take text; readers take a configurable root.

pub mod aliases;
pub mod growth;
pub mod meminfo;
pub mod oom;
pub mod reconcile;
pub mod shrinkers;
pub mod slabinfo;
