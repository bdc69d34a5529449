//! `slabtrace top` in a real terminal: tmux runs it in a detached session on a private server,
//! the tests type keys into it (`send-keys`) and read the screen back (`capture-pane`). A
//! workload in a test cgroup must show up with its live bytes, a key must re-sort the rows,
//! and every way out (`q`, SIGTERM) must exit 0 and leave the alternate screen.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use slabtrace_integration::{Cgroup, Tmpfs, daemon::Daemon, require_root, slabtrace_bin, workload};

const TMUX: &str = "/usr/bin/tmux";

/// A tmux server of this test's own, with one session running `slabtrace top`; the server is
/// killed on drop, whatever state the test left it in.
struct Top {
    socket: String,
    session: String,
    ready: PathBuf,
    /// Where the pane's shell writes slabtrace's exit status.
    status: PathBuf,
}

impl Top {
    /// Starts `slabtrace top --interval 1s` in a 220×50 pane and waits until it is attached.
    fn start(tag: &str) -> Result<Self> {
        Self::start_as(tag, "", "")
    }

    /// The same, its command line led by `prefix` and followed by `args`.
    fn start_as(tag: &str, prefix: &str, args: &str) -> Result<Self> {
        ensure!(Path::new(TMUX).exists(), "these tests need tmux at {TMUX} (apt install tmux)");
        let name = format!("slabtrace-test-{}-{tag}", std::process::id());
        let ready = std::env::temp_dir().join(format!("{name}-ready"));
        let status = std::env::temp_dir().join(format!("{name}-status"));
        let _ = fs::remove_file(&ready);
        let _ = fs::remove_file(&status);
        let me = Self { socket: name.clone(), session: name, ready, status };
        // The shell, not tmux, tells how slabtrace ended: tmux 3.3 sometimes leaves a pane's
        // process unreaped, with an empty #{pane_dead_status}.
        let command = format!(
            "{prefix} '{}' top --interval 1s {args} --ready-file '{}'; echo $? > '{}'",
            slabtrace_bin().display(),
            me.ready.display(),
            me.status.display()
        );
        // The pane stays after its shell ends, so the test can read the screen left behind.
        let session = me.session.clone();
        me.tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "220",
            "-y",
            "50",
            "-e",
            "RUST_LOG=warn",
            &command,
            ";",
            "set-option",
            "-t",
            &session,
            "remain-on-exit",
            "on",
        ])?;
        let deadline = Instant::now() + Duration::from_mins(1);
        while !me.ready.exists() {
            if me.status.exists() {
                bail!("slabtrace top exited before attaching:\n{}", me.screen()?);
            }
            ensure!(Instant::now() < deadline, "slabtrace top did not attach within 60 s");
            thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    fn tmux(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(TMUX).arg("-L").arg(&self.socket).args(args).output()?;
        ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// What the pane shows now.
    fn screen(&self) -> Result<String> {
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    /// A tmux format about the pane (`#{pane_dead}`, ...).
    fn pane(&self, format: &str) -> Result<String> {
        Ok(self.tmux(&["display-message", "-p", "-t", &self.session, format])?.trim().to_owned())
    }

    fn press(&self, key: &str) -> Result<()> {
        self.tmux(&["send-keys", "-t", &self.session, key]).map(drop)
    }

    /// Polls the screen until `done` holds, for at most `wait`; the last screen either way.
    fn screen_until(&self, wait: Duration, done: impl Fn(&Screen) -> bool) -> Result<Screen> {
        let deadline = Instant::now() + wait;
        loop {
            let screen = Screen::parse(&self.screen()?);
            if done(&screen) || Instant::now() >= deadline {
                return Ok(screen);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The slabtrace process: the child of the pane's shell.
    fn pid(&self) -> Result<i32> {
        let shell = self.pane("#{pane_pid}")?;
        let children = fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))?;
        let first = children.split_whitespace().next().context("the pane's shell has no child")?;
        Ok(first.parse()?)
    }

    /// Waits for slabtrace to end; its exit status as the shell saw it (128 + N for signal N).
    fn exit_status(&self, wait: Duration) -> Result<i32> {
        let deadline = Instant::now() + wait;
        loop {
            let written = fs::read_to_string(&self.status).unwrap_or_default();
            if written.ends_with('\n') {
                return Ok(written.trim().parse()?);
            }
            ensure!(
                Instant::now() < deadline,
                "slabtrace top still runs {wait:?} later:\n{}",
                self.screen()?
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that the process ended with 0 and gave the terminal back: off the alternate
    /// screen, the pane shows what was there before, not the view.
    fn assert_exited_cleanly(&self) -> Result<()> {
        let status = self.exit_status(Duration::from_secs(10))?;
        let screen = self.screen()?;
        assert_eq!(status, 0, "slabtrace top exited with {status}:\n{screen}");
        assert_eq!(self.pane("#{alternate_on}")?, "0", "still on the alternate screen");
        assert!(!screen.contains("POD / CGROUP"), "the view is still on the screen:\n{screen}");
        assert!(!screen.contains("panicked"), "{screen}");
        Ok(())
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = Command::new(TMUX).arg("-L").arg(&self.socket).arg("kill-server").output();
        let _ = fs::remove_file(&self.ready);
        let _ = fs::remove_file(&self.status);
    }
}

/// One table row as the screen shows it.
#[derive(Debug)]
struct Line {
    owner: String,
    cache: String,
    live: f64,
    allocs: f64,
}

/// The screen: the column titles and the rows under them.
#[derive(Debug)]
struct Screen {
    text: String,
    titles: String,
    rows: Vec<Line>,
}

impl Screen {
    fn parse(text: &str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|l| l.starts_with("POD / CGROUP"));
        let titles = at.map(|i| lines[i].to_owned()).unwrap_or_default();
        let rows = at
            .map(|i| {
                lines[i + 1..]
                    .iter()
                    .take_while(|l| !l.trim().is_empty() && !l.starts_with("q quit"))
                    .filter_map(|l| Self::row(l))
                    .collect()
            })
            .unwrap_or_default();
        Self { text: text.to_owned(), titles, rows }
    }

    /// Owner names may hold spaces (`pod <uid>`), cache names and figures do not: the row is
    /// read from the right, LIVE OBJS ALLOC/s FREE/s GROWTH/s UNACCT CHARGED after the cache.
    fn row(line: &str) -> Option<Line> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = words.len();
        if n < 9 {
            return None;
        }
        Some(Line {
            owner: words[..n - 8].join(" "),
            cache: words[n - 8].to_owned(),
            live: figure(words[n - 7])?,
            allocs: figure(words[n - 5])?,
        })
    }

    fn sorted_by(&self, column: impl Fn(&Line) -> f64) -> bool {
        self.rows.windows(2).all(|w| column(&w[0]) >= column(&w[1]))
    }
}

/// A figure as the view prints it: bytes with a binary unit (`512B`, `36.6M`), counts and
/// rates with a decimal one (`640`, `12.3k`).
fn figure(text: &str) -> Option<f64> {
    let text = text.trim_start_matches('+');
    let (number, scale) = match text.char_indices().last()? {
        (i, 'B') => (&text[..i], 1.0),
        (i, 'K') => (&text[..i], 1024.0),
        (i, 'M') => (&text[..i], 1024.0 * 1024.0),
        (i, 'G') => (&text[..i], 1024.0 * 1024.0 * 1024.0),
        (i, 'k') => (&text[..i], 1e3),
        _ => (text, 1.0),
    };
    // Decimal millions print as `M` too; a rate column is only compared with itself, so
    // reading them as binary keeps the order.
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[test]
fn top_shows_a_workload_and_re_sorts_on_a_key() -> Result<()> {
    const FILES: u64 = 20_000;
    require_root()?;
    let cg = Cgroup::create("top")?;
    let fs = Tmpfs::mount("top")?;
    let top = Top::start("top")?;

    // Each file is a shmem inode and a dentry, allocated in the test cgroup and kept.
    cg.run(Command::new(workload()).arg("create").arg(fs.path()).arg(FILES.to_string()))?;
    let mine = |l: &Line| l.owner == cg.relative() && l.live > 0.0;
    let screen = top.screen_until(Duration::from_secs(20), |s| s.rows.iter().any(mine))?;
    let text = &screen.text;
    let inodes = screen.rows.iter().find(|l| mine(l) && l.cache == "shmem_inode_cache");
    assert!(inodes.is_some(), "no live shmem inodes of {} on the screen:\n{text}", cg.relative());
    // 20,000 inodes of several hundred bytes: megabytes, within the sample's error.
    assert!(inodes.unwrap().live > 4e6, "{text}");
    assert!(text.contains("sample 1 in 16: frees and live figures estimated"), "{text}");
    assert!(text.contains("SUnreclaim"), "{text}");
    assert!(screen.titles.contains("LIVE▼"), "{text}");
    assert!(screen.sorted_by(|l| l.live), "not in order of live bytes:\n{text}");

    top.press("a")?;
    // A screen caught in the middle of a redraw may be out of order: look again.
    let screen = top.screen_until(Duration::from_secs(5), |s| {
        s.titles.contains("ALLOC/s▼") && s.rows.len() > 1 && s.sorted_by(|l| l.allocs)
    })?;
    let text = &screen.text;
    assert!(screen.titles.contains("ALLOC/s▼"), "the sort column did not change:\n{text}");
    assert!(!screen.titles.contains("LIVE▼"), "{text}");
    assert!(screen.rows.len() > 1, "{text}");
    assert!(screen.sorted_by(|l| l.allocs), "not in order of allocations per second:\n{text}");
    eprintln!("{text}");

    top.press("q")?;
    top.assert_exited_cleanly()
}

/// `top --from` shows a running daemon's figures without probes of its own: as nobody.
#[test]
fn top_reads_a_running_daemon_without_privilege() -> Result<()> {
    const FILES: u64 = 5_000;
    require_root()?;
    let cg = Cgroup::create("top-from")?;
    let fs = Tmpfs::mount("top-from")?;
    let daemon = Daemon::start("top-from", &["--interval", "1s"])?;
    cg.run(Command::new(workload()).arg("create").arg(fs.path()).arg(FILES.to_string()))?;
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    let top = Top::start_as("top-from", nobody, &format!("--from {}", daemon.listen))?;
    let mine = |l: &Line| l.owner == cg.relative() && l.cache == "shmem_inode_cache";
    let screen = top.screen_until(Duration::from_secs(30), |s| {
        s.rows.iter().any(|l| mine(l) && l.live > 1e6)
    })?;
    let text = &screen.text;
    assert!(
        screen.rows.iter().any(|l| mine(l) && l.live > 1e6),
        "no live inodes of {}:\n{text}",
        cg.relative()
    );
    assert!(text.contains("SUnreclaim"), "{text}");
    top.press("q")?;
    top.assert_exited_cleanly()
}

#[test]
fn sigterm_gives_the_terminal_back() -> Result<()> {
    require_root()?;
    let top = Top::start("sigterm")?;
    top.screen_until(Duration::from_secs(10), |s| !s.titles.is_empty())?;
    let pid = top.pid()?;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    top.assert_exited_cleanly()
}

#[test]
fn top_refuses_without_a_terminal() -> Result<()> {
    require_root()?;
    let out = Command::new(slabtrace_bin()).args(["top", "--interval", "1s"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("slabtrace top needs a terminal"), "{err}");
    assert!(err.contains("slabtrace report"), "{err}");
    Ok(())
}
