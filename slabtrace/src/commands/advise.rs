//! `slabtrace advise`: the advice of a running daemon (`--from`), or of a window traced now,
//! printed with its evidence and a `KubeletConfiguration` snippet.

use std::{
    io::Write as _,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use crate::{
    advice::Advice,
    cli::{AdviseArgs, Format},
    commands::report::stop_flag,
    pipeline::Pipeline,
    probe::ProbeSet,
    session::TraceError,
};

/// `slabtrace advise`.
pub fn run(args: &AdviseArgs) -> Result<(), TraceError> {
    let advice = match &args.from {
        Some(addr) => from_daemon(addr)?,
        None => traced(args)?,
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&advice)
            .map(|s| s + "\n")
            .map_err(|e| TraceError::Write { what: "the advice".to_owned(), source: e.into() })?,
        Format::Table => render(&advice),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|source| TraceError::Write { what: "standard output".to_owned(), source })
}

/// Traces for `--duration`, a node sample a second, and advises from that.
fn traced(args: &AdviseArgs) -> Result<Advice, TraceError> {
    let mut pipeline = Pipeline::start(&args.session.options(ProbeSet::Slabtrace))?;
    pipeline.set_advice_margin(f64::from(args.margin) / 100.0);
    let stop = stop_flag();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut advice = None;
    loop {
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
        let last = Instant::now() >= deadline || stop.load(Ordering::Relaxed);
        let interval = pipeline.tick(last)?;
        advice = interval.report.advice.or(advice);
        if last {
            break;
        }
    }
    pipeline.detach();
    advice.ok_or_else(|| {
        TraceError::Unavailable(
            "no advice: /proc/meminfo could not be read while tracing".to_owned(),
        )
    })
}

/// The advice in a running daemon's `/report`.
fn from_daemon(addr: &str) -> Result<Advice, TraceError> {
    super::daemon_report(addr, "the advice")?.advice.ok_or_else(|| {
        TraceError::Unavailable(format!(
            "the daemon at {addr} has no advice yet: it needs /proc/meminfo and one interval"
        ))
    })
}

/// The advice as text: each setting with its evidence, notes, and the snippet.
#[must_use]
pub fn render(advice: &Advice) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "slabtrace advice from {:.0}s of observation ({} samples), margin {:.0}% on every peak\n",
        advice.observed_seconds,
        advice.samples,
        advice.margin * 100.0
    );
    for s in &advice.settings {
        let _ = writeln!(out, "{:<31} {:<8} {}", s.name, s.value, s.evidence);
    }
    for n in &advice.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    let _ = writeln!(out, "\n{}", advice.kubelet_config);
    out
}
