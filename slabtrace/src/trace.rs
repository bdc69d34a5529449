//! `slabtrace report`: start a session, watch for a while, read the maps, report.
//!
//! The session resolves cgroup ids every second while it runs, so a cgroup removed before the
//! report is written keeps the path it had.

use std::{
    fs,
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use log::warn;

pub use crate::session::TraceError;
use crate::{
    cli::{Format, ReportArgs},
    output::{
        report::Report,
        table::{self, TableLimits},
    },
    pipeline::Pipeline,
    probe::ProbeSet,
};

/// How often the report's pipeline reads the maps while it runs: cgroups are named while they
/// exist, and growth and the advice get a point a second.
const TICK: Duration = Duration::from_secs(1);

/// `slabtrace report`: trace for `args.duration` seconds (or until SIGINT/SIGTERM), then print
/// the report: the same pipeline as the daemon's, read every second, so the report has growth
/// findings over its window and advice from its samples too.
pub fn report(args: &ReportArgs) -> Result<(), TraceError> {
    let set = if args.floor { ProbeSet::Floor } else { ProbeSet::Slabtrace };
    let mut pipeline = Pipeline::start(args.session.options(set))?;
    // Growth is judged over the whole window (a verdict needs half of it).
    pipeline.set_growth(Duration::from_secs(args.duration.max(1)), 1 << 20);
    if let Some(path) = &args.ready_file {
        fs::write(path, b"attached\n")
            .map_err(|source| TraceError::Write { what: path.display().to_string(), source })?;
    }
    let stop = stop_flag();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut next_tick = started + TICK;
    let interval = loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let last = now >= deadline || stop.load(Ordering::Relaxed);
        if last || now >= next_tick {
            next_tick += TICK;
            let interval = pipeline.tick(last)?;
            if last {
                break interval;
            }
        }
    };
    pipeline.detach();
    write_report(&interval.report, args)
}

/// Sets a flag on SIGINT or SIGTERM.
#[must_use]
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            warn!("cannot handle signal {signal}: {e}");
        }
    }
    stop
}

fn write_report(report: &Report, args: &ReportArgs) -> Result<(), TraceError> {
    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).map_err(|e| TraceError::Write {
                what: "the JSON report".to_owned(),
                source: e.into(),
            })?;
            s.push('\n');
            s
        }
        Format::Table => table::render(
            report,
            TableLimits { rows: args.top, caches_per_row: 5, node_caches: 15, by: args.by },
        ),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|source| TraceError::Write { what: "standard output".to_owned(), source })
}
