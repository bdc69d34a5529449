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

use crate::cli::{Cli, Command};

/// The command line's entry point: parses it, sets up logging, runs the command; on an error,
/// one sentence that says what to do on standard error, and a failure status.
#[must_use]
pub fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(log_line)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(args) => commands::report::run(&args),
        Command::Daemon(args) => commands::daemon::run(&args),
        Command::Advise(args) => commands::advise::run(&args),
        Command::Top(args) => commands::top::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes is already in the sentence, which may name a cgroup or a pod.
            eprintln!("slabtrace: {}", output::printable::printable(&e.to_string()));
            std::process::ExitCode::FAILURE
        }
    }
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
