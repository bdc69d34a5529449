//! `slabtrace daemon`: one pipeline, one shutdown path. Every interval the [`Pipeline`] reads
//! the maps into an [`Interval`]; the sinks (the NDJSON event stream, the HTTP endpoints) take
//! it from there and never reach back into the maps. SIGTERM or SIGINT ends the loop: the last
//! interval is read and handed to the sinks, which get until `--shutdown-timeout` to write it.

use std::{
    fs,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use log::{info, warn};

use crate::{
    cli::{DEFAULT_PIN_PATH, DaemonArgs},
    commands::report::stop_flag,
    output::{
        events::{EventStream, EventTarget, LineOptions},
        http::{Http, HttpOptions},
        metrics::CacheFilter,
    },
    pipeline::Pipeline,
    probe::{ProbeSet, pin::on_bpffs},
    session::TraceError,
};

/// Between intervals the maps are looked at this often, to name new cgroups while they exist.
const PEEK: Duration = Duration::from_secs(1);

/// When the interval ends, given OOM kills waiting to be reported: now, so that their slab
/// picture is that of the moment, unless an interval was already ended early for OOM kills
/// less than a quarter interval ago (at least a second); then a quarter interval after that.
/// In an OOM storm (a kill a second for minutes) intervals end at most four times as often as
/// configured, and the growth history still covers its window, instead of one interval per
/// kill. Never later than `next`, the interval's own end.
fn oom_tick(
    next: Instant,
    last_forced: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> Instant {
    let gap = (interval / 4).max(Duration::from_secs(1));
    let earliest = last_forced.map_or(now, |t| now.max(t + gap));
    next.min(earliest)
}

/// Where to pin the maps: `--pin-path`; None for `off`; when not given, the default if a BPF
/// filesystem is there to pin in (else None, with a warning).
fn pin_path(given: Option<&str>) -> Option<&Path> {
    match given {
        Some("off") => None,
        Some(path) => Some(Path::new(path)),
        None if on_bpffs(Path::new(DEFAULT_PIN_PATH)) => Some(Path::new(DEFAULT_PIN_PATH)),
        None => {
            warn!(
                "not keeping live-object state across restarts: no BPF filesystem is mounted at \
                 /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf, or mount the host's into the \
                 container; --pin-path off silences this)"
            );
            None
        }
    }
}

/// `slabtrace daemon`.
pub fn run(args: &DaemonArgs) -> Result<(), TraceError> {
    let target: EventTarget = args.events.parse().map_err(TraceError::Usage)?;
    let metrics_caches = CacheFilter::new(
        args.metrics_cache_include.as_deref(),
        args.metrics_cache_exclude.as_deref(),
    )
    .map_err(TraceError::Usage)?;
    let stop = stop_flag();
    let mut options = args.session.options(ProbeSet::Slabtrace);
    options.pin_path = pin_path(args.pin_path.as_deref()).map(Path::to_path_buf);
    let mut pipeline = Pipeline::start(&options)?;
    pipeline.set_growth(args.growth_window, args.growth_min_mib.saturating_mul(1 << 20));
    pipeline.set_advice_margin(f64::from(args.advice_margin) / 100.0);
    pipeline.set_slow_growth(
        crate::node::slow_growth::Settings {
            step: args.history_step.max(1),
            window: args.history_window.max(args.history_step.max(1)),
            min_growth_bytes: args.slow_growth_min_mib.saturating_mul(1 << 20),
        },
        args.history_file.as_deref().filter(|f| *f != "off").map(std::path::PathBuf::from),
    );
    let lines = LineOptions {
        run: crate::probe::pin::new_salt(),
        top: args.events_top,
        types: args.event_types.clone(),
    };
    let events = EventStream::open(&target, args.event_buffer, lines)
        .map_err(|e| TraceError::Unavailable(e.to_string()))?;
    let endpoints = HttpOptions {
        listen: args.listen.clone(),
        metrics_top: args.metrics_top,
        metrics_caches,
        metrics_counters: args.metrics_counters,
        interval: args.interval,
        report_listen: args.report_listen.clone(),
    };
    let http = Http::start(&endpoints, events.as_ref().map(EventStream::counters))
        .map_err(|e| TraceError::Unavailable(e.to_string()))?;
    if let Some(path) = &args.ready_file {
        fs::write(path, b"attached\n")
            .map_err(|source| TraceError::Write { what: path.display().to_string(), source })?;
    }
    info!(
        "daemon running: an interval every {}, events to {target}",
        humantime::format_duration(args.interval)
    );

    let mut next = Instant::now() + args.interval;
    let mut next_peek = Instant::now() + PEEK;
    let mut last_forced = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        if stopping || now >= next {
            let interval = match pipeline.tick(stopping) {
                Ok(interval) => Arc::new(interval),
                // A failed read loses nothing: counters keep growing in the kernel and the
                // next interval's delta takes them in.
                Err(e) if !stopping => {
                    warn!("skipping an interval: {e}");
                    next += args.interval;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(events) = &events {
                events.publish(&interval);
            }
            if let Some(http) = &http {
                http.publish(&interval);
            }
            if stopping {
                break;
            }
            // After a stall (a suspended VM, a slow read), start afresh rather than catch up.
            next = (next + args.interval).max(Instant::now());
        } else if now >= next_peek {
            next_peek = now + PEEK;
            pipeline.peek();
            if pipeline.poll_oom() {
                let forced = oom_tick(next, last_forced, now, args.interval);
                if forced < next {
                    next = forced;
                    last_forced = Some(forced);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(now)));
    }
    pipeline.detach();
    if let Some(http) = &http {
        http.detached();
    }
    let deadline = Instant::now() + args.shutdown_timeout;
    if let Some(events) = events {
        let flushed = events.close(deadline);
        if !flushed {
            warn!(
                "the event consumer did not take the last events within {}; exiting anyway",
                humantime::format_duration(args.shutdown_timeout)
            );
        }
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_storm_ends_intervals_at_most_four_times_as_often() {
        let interval = Duration::from_secs(10);
        let start = Instant::now();
        let (mut next, mut last_forced, mut ticks) = (start + interval, None, 0);
        // A kill every second for ten minutes, the daemon's loop in one-second steps.
        for second in 1..=600 {
            let now = start + Duration::from_secs(second);
            let forced = oom_tick(next, last_forced, now, interval);
            if forced < next {
                next = forced;
                last_forced = Some(forced);
            }
            if now >= next {
                ticks += 1;
                next = (next + interval).max(now);
            }
        }
        // 60 intervals of their own; the kills end one every 2.5 s (3 s in one-second steps).
        assert!((60..=4 * 60).contains(&ticks), "{ticks} intervals");
        // One kill on a quiet node ends the interval at once, however long it is.
        let quiet = start + Duration::from_secs(100);
        let long = Duration::from_mins(10);
        assert_eq!(oom_tick(quiet + long, None, quiet, long), quiet);
        // The next one, within a quarter interval, waits for it.
        let soon = quiet + Duration::from_secs(30);
        let later = oom_tick(soon + long, Some(quiet), soon, long);
        assert_eq!(later, quiet + long / 4);
        // Never later than the interval would have ended anyway.
        assert_eq!(oom_tick(soon, Some(quiet), soon, long), soon);
    }
}
