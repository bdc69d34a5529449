//! `slabtrace report`: start a session, watch for a while, read the maps, report.
//!
//! The session names the cgroups of new keys every second while it runs, so a cgroup removed
//! before the report is written keeps the path it had.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::Path,
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
    frame::OwnerTable,
    maps::delta,
    node::oom::OomKill,
    oom_report,
    output::{
        filter::{self, Filter},
        report::{KernelMemory, Report},
        table::{self, TableLimits},
    },
    probe::ProbeSet,
    session::Session,
};

/// How often the session names the cgroups of new keys while it runs.
const TICK: Duration = Duration::from_secs(1);

/// `slabtrace report`: trace for `args.duration` seconds (or until SIGINT/SIGTERM), then print
/// the report.
pub fn run(args: &ReportArgs) -> Result<(), TraceError> {
    let filter = Filter {
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
        cache: args.cache.clone(),
    };
    if let Some(addr) = &args.from {
        let mut report = super::daemon_report(addr, "a report")?;
        filter::apply(&mut report, &filter);
        return write_report(&report, args);
    }
    let set = if args.floor { ProbeSet::Floor } else { ProbeSet::Slabtrace };
    let mut session = Session::start(&args.session.options(set))?;
    // Before the ready file says "attached": a SIGINT sent as soon as it exists must end the
    // window with a report, not kill the process (the default action) before the handler is in.
    let stop = stop_flag();
    if let Some(path) = &args.ready_file {
        fs::write(path, b"attached\n")
            .map_err(|source| TraceError::Write { what: path.display().to_string(), source })?;
    }

    // OOM kills with /proc/meminfo as it was when each was seen.
    let mut kills = Vec::new();
    let deadline = session.started() + Duration::from_secs(args.duration);
    let mut next_tick = session.started() + TICK;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_tick {
            next_tick += TICK;
            session.peek();
            drain_oom(&mut session, &args.session.roots.proc_root, &mut kills);
        }
    }
    let snap = session.read()?;
    let mut books = session.read_books(&snap);
    drain_oom(&mut session, &args.session.roots.proc_root, &mut kills);
    session.detach();
    // Liveness as of now: cgroups removed during the window keep their path, marked gone; and
    // the runtime's names as of now.
    session.refresh();
    // The memory controller's books of every pod alive now, those that allocated nothing
    // while traced included.
    session.read_charged(&mut books);
    session.read_dying(&mut books);
    books.add_warnings_of(&session);
    let totals = delta(&BTreeMap::new(), &snap.counters);
    let mut report = session.report(&snap, &totals, books);
    let frame = OwnerTable::from_observation(&report);
    report.oom_kills = kills
        .iter()
        .map(|(kill, meminfo)| {
            oom_report::join(kill, *meminfo, &report, &frame, |id| session.cgroup(id).0, 10)
        })
        .collect();
    filter::apply(&mut report, &filter);
    write_report(&report, args)
}

/// Adds the OOM kills seen since the last call, with /proc/meminfo as it is now.
fn drain_oom(
    session: &mut Session,
    proc_root: &Path,
    kills: &mut Vec<(OomKill, Option<KernelMemory>)>,
) {
    let new = session.oom_kills();
    if !new.is_empty() {
        let meminfo = crate::session::read_kernel_memory(proc_root);
        for kill in new {
            warn!("OOM kill: {} (pid {})", kill.comm, kill.pid);
            kills.push((kill, meminfo));
        }
    }
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
            TableLimits {
                rows: args.top,
                caches_per_row: 5,
                node_caches: 15,
                by: args.by,
                sort: args.sort,
            },
        ),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|source| TraceError::Write { what: "standard output".to_owned(), source })
}
