//! What slabtrace writes: the report (JSON and a slabtop-like table).

pub mod report;
pub mod table;
