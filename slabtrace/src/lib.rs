//! slabtrace: who allocated the node's kernel slab memory, and how much of it is still live.
//!
//! Data flows one way: kernel maps → [`maps`] snapshot → deltas → [`attribution`] → [`output`].
//! [`kernel`] finds out what the running kernel looks like, [`probe`] loads and attaches the BPF
//! programs, [`cgroup`] names cgroup ids, [`node`] reads the kernel's own books.

// Public: what the integration tests use (kernel layouts, cgroup and CRI helpers, the metrics
// encoder, pinned-map naming). Everything else is private, so dead code shows.
pub mod advice;
mod attribution;
pub mod cgroup;
mod cli;
mod commands;
pub mod frame;
pub mod kernel;
pub mod maps;
pub mod node;
pub mod observation;
mod observe;
mod oom_report;
pub mod output;
pub mod pipeline;
pub mod probe;
mod rollup;
pub mod runtime;
mod session;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod testutil;

use clap::Parser as _;

use crate::cli::{Cli, Command, LogFormat};

/// The command line's entry point: parses it, sets up logging, runs the command; on an error,
/// one sentence that says what to do on standard error, and a failure status.
#[must_use]
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match cli.log_format {
        LogFormat::Text => logger.format(log_line),
        LogFormat::Json => logger.format(json_log_line),
    };
    logger.init();
    let result = match cli.command {
        Command::Report(args) => commands::report::run(&args),
        Command::Daemon(args) => commands::daemon::run(&args),
        Command::Advise(args) => commands::advise::run(&args),
        Command::Top(args) => commands::top::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::from(session::exit::OK),
        Err(e) => {
            // The chain of causes is already in the sentence, which may name a cgroup or a pod.
            eprintln!("slabtrace: {}", output::printable::printable(&e.to_string()));
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

/// A log line as one JSON object (`--log-format json`), the message made printable as in
/// [`log_line`].
fn json_log_line(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let line = json_log(
        &buf.timestamp_millis().to_string(),
        record.level(),
        record.target(),
        &record.args().to_string(),
    );
    writeln!(buf, "{line}")
}

/// The JSON of one log line.
fn json_log(ts: &str, level: log::Level, target: &str, message: &str) -> String {
    serde_json::json!({
        "ts": ts,
        "level": level.as_str().to_ascii_lowercase(),
        "target": target,
        "message": output::printable::printable(message),
    })
    .to_string()
}

/// `env_logger`'s usual line (`[time LEVEL target] message`), with the message made printable:
/// log lines carry cgroup paths, pod names and OOM victims' names, which tenants choose.
fn log_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    let level = record.level();
    let style = buf.default_level_style(level);
    let message = record.args().to_string();
    writeln!(
        buf,
        "[{} {style}{level:<5}{style:#} {}] {}",
        buf.timestamp(),
        record.target(),
        output::printable::printable(&message)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_json_log_line_is_one_line_of_json_with_a_printable_message() {
        let line = super::json_log(
            "2026-12-04T12:00:00.000Z",
            log::Level::Warn,
            "slabtrace::session",
            "pod \u{1b}[2Jevil\nnext \u{202e}",
        );
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "slabtrace::session");
        assert_eq!(v["ts"], "2026-12-04T12:00:00.000Z");
        let message = v["message"].as_str().unwrap();
        assert!(message.chars().all(|c| !c.is_control() && c != '\u{202e}'), "{message:?}");
        assert!(message.starts_with("pod \\x1b[2Jevil"), "{message:?}");
    }
}
