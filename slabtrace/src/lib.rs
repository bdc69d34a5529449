//! slabtrace: who allocated the node's kernel slab memory, and how much of it is still live.
//!
//! Data flows one way: kernel maps → [`maps`] snapshot → deltas → [`attribution`] → [`output`].
//! [`kernel`] finds out what the running kernel looks like, [`probe`] loads and attaches the BPF
//! programs, [`cgroup`] names cgroup ids, [`node`] reads the kernel's own books.

pub mod advice;
pub mod advise;
pub mod attribution;
pub mod cgroup;
pub mod cli;
pub mod daemon;
pub mod frame;
pub mod kernel;
pub mod maps;
pub mod node;
pub mod oom_report;
pub mod output;
pub mod pipeline;
pub mod probe;
pub mod rollup;
pub mod runtime;
pub mod session;
pub mod top;
pub mod trace;

#[cfg(test)]
mod testutil;
