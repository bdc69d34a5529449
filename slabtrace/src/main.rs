//! slabtrace's entry point: parse the command line, set up logging, hand off.

use clap::Parser as _;
use slabtrace::{
    advise,
    cli::{Cli, Command},
    daemon, top, trace,
};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(args) => trace::report(&args),
        Command::Daemon(args) => daemon::run(&args),
        Command::Advise(args) => advise::run(&args),
        Command::Top(args) => top::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One sentence that says what to do; the chain of causes is already in it.
            eprintln!("slabtrace: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
