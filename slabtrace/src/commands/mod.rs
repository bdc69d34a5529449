//! The commands, one file each: what `slabtrace report`, `daemon`, `top` and `advise` run. They
//! sit on top of everything else and take their clap arguments from `cli`; nothing below them
//! imports them.

pub mod advise;
pub mod daemon;
pub mod report;
pub mod top;

use std::time::Duration;

use crate::{output::report::Report, session::TraceError};

/// The `/report` of a running daemon at `addr` (`127.0.0.1:9478` or `http://…`), for the
/// commands' `--from`: what it has counted since it started, without loading a second set of
/// probes. `what` names what the caller wanted, for the one sentence a failure gets.
pub fn daemon_report(addr: &str, what: &str) -> Result<Report, TraceError> {
    let host = addr.trim_start_matches("http://").trim_end_matches('/');
    let fail = |why: String| {
        TraceError::Unavailable(format!(
            "cannot get {what} from the daemon at {host}: {why}; is `slabtrace daemon` running and serving /report there (--listen, --report-listen)?"
        ))
    };
    let (status, body) = crate::output::http_get::get(host, "/report", Duration::from_secs(10))
        .map_err(|e| fail(e.to_string()))?;
    if status != 200 {
        let body = String::from_utf8_lossy(&body);
        return Err(fail(format!(
            "HTTP {status}: {}",
            crate::output::printable::printable(body.trim())
        )));
    }
    Report::parse(&body).map_err(|e| fail(format!("not a slabtrace.report.v1 report ({e})")))
}
