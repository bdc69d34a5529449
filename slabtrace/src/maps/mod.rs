//! The only code that reads BPF maps, and the pure arithmetic on what it read.

pub mod batch;
pub mod delta;
pub mod fdinfo;
pub mod retire;
pub mod shrinkers;
pub mod snapshot;

pub use delta::delta;
pub use snapshot::{Snapshot, Stats, delete_counters};
