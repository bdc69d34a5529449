//! The commands, one file each: what `slabtrace report`, `daemon`, `top` and `advise` run. They
//! sit on top of everything else and take their clap arguments from `cli`; nothing below them
//! imports them.

pub mod advise;
pub mod daemon;
pub mod report;
pub mod top;

use std::time::Duration;

use crate::{
    output::{printable::printable, report::Report},
    session::TraceError,
};

/// The `/report` of a running daemon at `addr` (`127.0.0.1:9478` or `http://…`), for the
/// commands' `--from`: what it has counted since it started, without loading a second set of
/// probes. `what` names what the caller wanted, for the one sentence a failure gets.
pub fn daemon_report(addr: &str, what: &str) -> Result<Report, TraceError> {
    let (status, body) = get(addr, "/report", what)?;
    if status != 200 {
        let body = String::from_utf8_lossy(&body);
        return Err(unavailable(addr, what, &format!("HTTP {status}: {}", printable(body.trim()))));
    }
    Report::parse(&body)
        .map_err(|e| unavailable(addr, what, &format!("not a slabtrace.report.v1 report ({e})")))
}

/// Whether a daemon answers at `addr` at all, whatever its status: `top --from` asks before
/// its screen goes up, so that nobody there is one sentence, while a daemon before its first
/// interval is shown as such in the view.
pub fn daemon_answers(addr: &str, what: &str) -> Result<(), TraceError> {
    get(addr, "/healthz", what).map(drop)
}

fn get(addr: &str, path: &str, what: &str) -> Result<(u16, Vec<u8>), TraceError> {
    crate::output::http_get::get(host(addr), path, Duration::from_secs(10))
        .map_err(|e| unavailable(addr, what, &e.to_string()))
}

fn host(addr: &str) -> &str {
    addr.trim_start_matches("http://").trim_end_matches('/')
}

fn unavailable(addr: &str, what: &str, why: &str) -> TraceError {
    TraceError::Unavailable(format!(
        "cannot get {what} from the daemon at {}: {why}; is `slabtrace daemon` running and serving /report there (--listen, --report-listen)?",
        host(addr)
    ))
}
