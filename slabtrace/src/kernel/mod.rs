//! What the running kernel looks like: its BTF (field offsets, flag bits, tracepoint
//! signatures), its symbols and its kmalloc caches' names. Parsers are pure; the file reads
//! are at the edge.

pub mod btf;
pub mod kallsyms;
pub(crate) mod kmalloc;
pub mod layout;
