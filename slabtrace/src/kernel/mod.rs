//! What the running kernel looks like: its BTF (field offsets, flag bits, tracepoint
//! signatures) and its tracefs event formats. Parsers are pure; the file reads are at the edge.

pub mod btf;
pub mod kallsyms;
pub mod kmalloc;
pub mod layout;
pub mod tracefs;
