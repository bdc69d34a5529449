//! `slabtrace top`: the live view. The probes are attached before the terminal is touched, so
//! load errors print like any other command's; then the screen is switched to raw mode and the
//! alternate screen, and a loop polls keys, peeks at the maps every second (to name cgroups
//! while they exist) and reads an interval every `--interval`. What is shown is
//! [`crate::output::top`]'s job; this file is the terminal edge.
//!
//! The terminal is given back on every way out: `q`, Esc or Ctrl-C (a key in raw mode, not a
//! signal), SIGTERM or SIGINT from elsewhere, an error, and a panic (a hook restores it before
//! the message is printed). While the screen is up, slabtrace's log lines would scribble over
//! it: when stderr is that same terminal it is routed into a pipe, the latest line is shown in
//! the view, and the last lines are printed again once the terminal is back.

use std::{
    collections::VecDeque,
    fs,
    io::{self, BufRead as _, IsTerminal as _, Stdout},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossterm::{
    cursor,
    event::{self, Event},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use crate::{
    cli::TopArgs,
    commands::report::stop_flag,
    output::top::{Action, TopView},
    pipeline::{Interval, Pipeline},
    probe::ProbeSet,
    session::TraceError,
};

/// Between intervals the maps are looked at this often, to name new cgroups while they exist.
const PEEK: Duration = Duration::from_secs(1);

/// The longest a key press waits to be seen (and a SIGTERM to be noticed).
const KEY_POLL: Duration = Duration::from_millis(100);

/// Log lines kept while the screen is up, printed again afterwards.
const LOG_LINES_KEPT: usize = 50;

/// What `top` says when its output is not a terminal.
const NOT_A_TERMINAL: &str =
    "slabtrace top needs a terminal; for scripts use `slabtrace report` or `slabtrace daemon`";

/// `slabtrace top`.
pub fn run(args: &TopArgs) -> Result<(), TraceError> {
    if !io::stdout().is_terminal() {
        return Err(TraceError::Usage(NOT_A_TERMINAL.to_owned()));
    }
    let stop = stop_flag();
    let mut source = match &args.from {
        Some(addr) => {
            // Asked once before the screen goes up, so a daemon that is not there is one
            // sentence on a normal terminal.
            super::daemon_answers(addr, "a report")?;
            Source::Daemon(Remote { addr: addr.clone(), last: None, seq: 0 })
        }
        None => {
            Source::Traced(Box::new(Pipeline::start(&args.session.options(ProbeSet::Slabtrace))?))
        }
    };
    let mut view = TopView::new(args.interval, args.sort);
    let result = Screen::enter().and_then(|mut screen| {
        let result = watch(&mut screen, &mut source, &mut view, &stop, args);
        // The terminal comes back before anything else is said.
        drop(screen);
        result
    });
    if let Source::Traced(pipeline) = &mut source {
        pipeline.detach();
    }
    result
}

/// Where the intervals come from: probes of its own, or a running daemon's `/report`.
enum Source {
    Traced(Box<Pipeline>),
    Daemon(Remote),
}

/// A running daemon, asked for its report every interval.
struct Remote {
    addr: String,
    /// The last report's frame and event count, and when it came.
    last: Option<(crate::frame::OwnerTable, u64, Instant)>,
    seq: u64,
}

impl Source {
    /// The next interval.
    fn tick(&mut self) -> Result<Interval, TraceError> {
        match self {
            Self::Traced(pipeline) => pipeline.tick(false),
            Self::Daemon(remote) => {
                let report = super::daemon_report(&remote.addr, "a report")?;
                let now = Instant::now();
                remote.seq += 1;
                let seconds =
                    remote.last.as_ref().map_or(0.0, |(_, _, at)| (now - *at).as_secs_f64());
                let events = report.self_stats.alloc_events + report.self_stats.free_events;
                let interval = Interval::between_reports(
                    report,
                    remote.last.as_ref().map(|(frame, n, _)| (frame, *n)),
                    remote.seq,
                    std::time::SystemTime::now(),
                    seconds,
                );
                remote.last = Some((interval.frame.clone(), events, now));
                Ok(interval)
            }
        }
    }

    /// Looks at the maps between intervals (names new cgroups while they exist); a daemon
    /// does that itself.
    fn peek(&mut self) {
        if let Self::Traced(pipeline) = self {
            pipeline.peek();
        }
    }
}

/// The loop: keys, peeks and intervals until a quit key or a signal.
fn watch(
    screen: &mut Screen,
    source: &mut Source,
    view: &mut TopView,
    stop: &AtomicBool,
    args: &TopArgs,
) -> Result<(), TraceError> {
    screen.draw(view)?;
    // Ready once the view is up, so whoever waits for the file sees the screen too.
    if let Some(path) = &args.ready_file {
        fs::write(path, b"attached\n")
            .map_err(|source| TraceError::Write { what: path.display().to_string(), source })?;
    }
    let mut next = Instant::now() + args.interval;
    let mut next_peek = Instant::now() + PEEK;
    while !stop.load(Ordering::Relaxed) {
        let mut dirty = false;
        let now = Instant::now();
        if now >= next {
            match source.tick() {
                Ok(interval) => view.update(&interval),
                // A failed read loses nothing: counters keep growing in the kernel and the next
                // interval's delta takes them in.
                Err(e) => view.failed(format!("skipping an interval: {e}")),
            }
            // After a stall (a suspended VM, a slow read), start afresh rather than catch up.
            next = (next + args.interval).max(Instant::now());
            dirty = true;
        } else if now >= next_peek {
            next_peek = now + PEEK;
            source.peek();
        }
        if let Some(line) = screen.new_log_line() {
            view.log(line);
            dirty = true;
        }
        let wait = KEY_POLL.min(next.saturating_duration_since(Instant::now()));
        // Every key waiting is taken before drawing, so a held arrow key does not lag.
        let mut timeout = wait;
        while poll(timeout)? {
            timeout = Duration::ZERO;
            match event::read().map_err(terminal_error)? {
                Event::Key(key) => match view.key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => dirty = true,
                    Action::Ignore => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if dirty {
            screen.draw(view)?;
        }
    }
    Ok(())
}

/// Whether an event is waiting; a signal arriving during the wait is not an error.
fn poll(timeout: Duration) -> Result<bool, TraceError> {
    match event::poll(timeout) {
        Ok(ready) => Ok(ready),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(terminal_error(e)),
    }
}

fn terminal_error(source: io::Error) -> TraceError {
    TraceError::Write { what: "the terminal".to_owned(), source }
}

/// Whether raw mode and the alternate screen are on (read by the panic hook).
static SCREEN_ON: AtomicBool = AtomicBool::new(false);

/// The real stderr, saved while fd 2 goes into the log pipe; -1 when it does not.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// The terminal in raw mode on the alternate screen; given back when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    log: Option<LogCapture>,
}

impl Screen {
    fn enter() -> Result<Self, TraceError> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        // Only a terminal needs protecting: stderr sent to a file or a pipe keeps its lines.
        let log = if io::stderr().is_terminal() {
            LogCapture::start()
                .inspect_err(|e| log::debug!("log lines will not be captured: {e}"))
                .ok()
        } else {
            None
        };
        // From here on every way out goes through restore_terminal (Drop or the panic hook).
        SCREEN_ON.store(true, Ordering::SeqCst);
        let on = terminal::enable_raw_mode()
            .and_then(|()| execute!(io::stdout(), EnterAlternateScreen, cursor::Hide))
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match on {
            Ok(terminal) => Ok(Self { terminal, log }),
            Err(e) => {
                restore_terminal();
                if let Some(log) = log {
                    log.replay();
                }
                Err(terminal_error(e))
            }
        }
    }

    fn draw(&mut self, view: &mut TopView) -> Result<(), TraceError> {
        self.terminal.draw(|frame| view.render(frame)).map(drop).map_err(terminal_error)
    }

    /// The latest log line, if one came since the last call.
    fn new_log_line(&self) -> Option<String> {
        self.log.as_ref().and_then(LogCapture::take_latest)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
        if let Some(log) = self.log.take() {
            log.replay();
        }
    }
}

/// Leaves the alternate screen and raw mode and gives stderr back. Safe to call twice (the
/// panic hook, then the unwinding `Screen`), and from a panic: errors are ignored, there is
/// nothing better to do with them.
fn restore_terminal() {
    if SCREEN_ON.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor LogCapture::start duplicated from fd 2 and nobody
        // else closes; it is put back on fd 2 and closed once, guarded by the swap above.
        unsafe {
            libc::dup2(saved, libc::STDERR_FILENO);
            libc::close(saved);
        }
    }
}

/// What slabtrace logs while the screen is up: fd 2 points into a pipe that a thread reads.
struct LogCapture {
    lines: Arc<Mutex<Captured>>,
    reader: thread::JoinHandle<()>,
}

#[derive(Default)]
struct Captured {
    kept: VecDeque<String>,
    dropped: usize,
    latest: Option<String>,
}

impl LogCapture {
    fn start() -> io::Result<Self> {
        let mut fds: [RawFd; 2] = [-1; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 2, which is open (it is a terminal).
        let saved = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 0) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are open; afterwards fd 2 is the pipe's only writer that
        // matters, and `write` is dropped (closed) below, so the reader sees the end of the
        // pipe once fd 2 is given back.
        if unsafe { libc::dup2(write.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `saved` was just duplicated and is not shared.
            unsafe { libc::close(saved) };
            return Err(e);
        }
        drop(write);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        let lines = Arc::new(Mutex::new(Captured::default()));
        let sink = Arc::clone(&lines);
        let reader = thread::Builder::new().name("top-log".to_owned()).spawn(move || {
            for line in io::BufReader::new(fs::File::from(read)).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                let mut c = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if c.kept.len() == LOG_LINES_KEPT {
                    c.kept.pop_front();
                    c.dropped += 1;
                }
                c.kept.push_back(line.clone());
                c.latest = Some(line);
            }
        })?;
        Ok(Self { lines, reader })
    }

    fn take_latest(&self) -> Option<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).latest.take()
    }

    /// Prints the kept lines on the real stderr (given back by now). The reader is waited
    /// for only briefly: a child process holding a copy of fd 2 would keep the pipe open.
    fn replay(self) {
        let deadline = Instant::now() + Duration::from_millis(300);
        while !self.reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let c = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.dropped > 0 {
            eprintln!("({} earlier log lines not kept)", c.dropped);
        }
        for line in &c.kept {
            eprintln!("{line}");
        }
    }
}

/// `s` without terminal escape sequences (the logger colours its lines for a terminal) and
/// with other control characters as spaces: a tab would move the terminal's cursor behind
/// ratatui's back.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(if c.is_control() { ' ' } else { c });
            continue;
        }
        // CSI: ESC [ parameters, then one final byte in @..~.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_their_colours() {
        let cases = [
            ("plain", "plain"),
            ("\x1b[33mWARN\x1b[0m slabtrace", "WARN slabtrace"),
            ("[\x1b[1;31mERROR\x1b[0m]", "[ERROR]"),
            ("cut \x1b[3", "cut "),
            ("a\tb\rc", "a b c"),
        ];
        for (input, output) in cases {
            assert_eq!(strip_ansi(input), output, "{input:?}");
        }
    }
}
