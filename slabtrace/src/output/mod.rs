//! What slabtrace writes: the report (JSON and a slabtop-like table), the daemon's NDJSON event
//! stream, its Prometheus metrics and HTTP endpoints, and the live `top` view.

pub mod events;
pub(crate) mod filter;
pub(crate) mod http;
pub mod http_get;
pub mod metrics;
pub(crate) mod printable;
pub mod report;
pub(crate) mod table;
pub(crate) mod top;
pub(crate) mod units;
