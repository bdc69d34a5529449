//! The commands, one file each: what `slabtrace report`, `daemon`, `top` and `advise` run. They
//! sit on top of everything else and take their clap arguments from `cli`; nothing below them
//! imports them.

pub mod advise;
pub mod daemon;
pub mod report;
pub mod top;
