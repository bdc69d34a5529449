//! Pod churn through a real (private) containerd's CRI, driven line by line, for
//! `cargo xtask soak`.
//!
//! ```text
//! pod-churn DIR      starts containerd in DIR (its CRI socket DIR/c.sock), prints `ready SOCKET`,
//!                    then answers each command read from standard input with one line:
//!   pod              runs pod soak/churn-<n> (best effort) whose container makes 300 files;
//!                    `pod <uid> churn-<n>`
//!   gone             stops and removes that pod; `gone`
//!   restart          stops containerd (pods first) and starts it again on the same socket;
//!                    `restarted`
//! ```
//! End of input stops everything and removes what it made. A failure is one line,
//! `error: ...`, and the command is not done (the soak counts it).

use std::{
    io::{self, BufRead as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use slabtrace_integration::{
    containerd::{Containerd, Pod},
    fresh_uid,
};

/// Files the pod's container makes: dentries and inodes charged to the pod.
const FILES: u32 = 300;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: pod-churn DIR (commands on standard input: pod, gone, restart)");
        return ExitCode::from(2);
    };
    match serve(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-churn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs containerd generations until standard input ends.
fn serve(dir: &std::path::Path) -> Result<()> {
    let mut lines = io::stdin().lock().lines();
    let mut n = 0u64;
    let mut first = true;
    loop {
        let runtime = Containerd::start_in(dir)?;
        if first {
            say(&format!("ready {}", runtime.socket().display()))?;
            first = false;
        } else {
            say("restarted")?;
        }
        // The pod of the last `pod` command, until `gone`; a generation's pods go with it.
        let mut current: Option<Pod<'_>> = None;
        loop {
            let Some(line) = lines.next().transpose()? else { return Ok(()) };
            match line.trim() {
                "pod" => {
                    n += 1;
                    current = None;
                    match run_pod(&runtime, n) {
                        Ok((pod, name)) => {
                            say(&format!("pod {} {name}", pod.uid))?;
                            current = Some(pod);
                        }
                        Err(e) => say(&format!("error: {e:#}"))?,
                    }
                }
                "gone" => {
                    current = None;
                    say("gone")?;
                }
                "restart" => break,
                other => say(&format!("error: unknown command {other:?}"))?,
            }
        }
        drop(current);
    }
}

/// Runs pod `soak/churn-<n>` whose container makes [`FILES`] files.
fn run_pod(runtime: &Containerd, n: u64) -> Result<(Pod<'_>, String)> {
    let name = format!("churn-{n}");
    let pod = runtime.run_pod("soak", &name, &fresh_uid()?, "/kubepods/besteffort")?;
    let container = runtime.create_container(&pod, "churn", &["/bin/sleep", "1000000"])?;
    let script = format!(
        "mkdir -p /tmp/f && i=0; while [ $i -lt {FILES} ]; do : > /tmp/f/$i; i=$((i+1)); done"
    );
    let out = runtime
        .exec_sync(&container, &["/bin/sh", "-c", &script], Duration::from_mins(1))
        .context("making files in the pod")?;
    ensure!(out.exit_code == 0, "the pod's files: {}", String::from_utf8_lossy(&out.stderr));
    Ok((pod, name))
}

/// One answer line, flushed.
fn say(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
