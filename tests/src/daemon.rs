//! A running `slabtrace daemon` for the tests: events to a file the test reads, HTTP on a free
//! loopback port, stopped with a signal and timed.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::slabtrace_bin;

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Child,
    dir: PathBuf,
    /// The HTTP address (`127.0.0.1:port`).
    pub listen: String,
}

/// How a daemon ended.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// From the signal to its exit.
    pub took: Duration,
    /// What it logged.
    pub stderr: String,
    /// Every event it wrote to the events file (none when events went elsewhere).
    pub events: Vec<Value>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Daemon {
    /// Starts `slabtrace daemon --events <file> --listen 127.0.0.1:<free port> --pin-path off`
    /// with `extra` arguments and waits until its probes are attached. `tag` names its scratch directory.
    pub fn start(tag: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with(tag, extra, |_| {})
    }

    /// Like [`Self::start`], with a hook to change the command (stdout, environment).
    /// `--events` and `--pin-path` are only added when `extra` does not give them.
    pub fn start_with(tag: &str, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Result<Self> {
        Self::start_under(tag, &[], extra, tweak)
    }

    /// Like [`Self::start_with`], run by `wrapper` (a program and its arguments, such as
    /// `setpriv` with a capability set), which is given slabtrace's path and arguments.
    pub fn start_under(
        tag: &str,
        wrapper: &[&str],
        extra: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("slabtrace-test-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let ready = dir.join("ready");
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(slabtrace_bin());
                cmd
            }
            None => Command::new(slabtrace_bin()),
        };
        cmd.arg("daemon").arg("--ready-file").arg(&ready).args(["--listen", &listen]);
        if !extra.contains(&"--events") {
            cmd.arg("--events").arg(dir.join("events.ndjson"));
        }
        // Each test starts from empty maps, and tests run side by side: no shared pins unless
        // the test asks for them.
        if !extra.contains(&"--pin-path") {
            cmd.args(["--pin-path", "off"]);
        }
        cmd.args(extra)
            .env("RUST_LOG", std::env::var("SLABTRACE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr"))?);
        tweak(&mut cmd);
        let child = cmd.spawn().context("starting slabtrace daemon")?;
        let mut me = Self { child, dir, listen };
        let deadline = Instant::now() + Duration::from_mins(1);
        while !ready.exists() {
            if let Some(status) = me.child.try_wait()? {
                bail!("slabtrace daemon exited before attaching ({status}): {}", me.stderr());
            }
            ensure!(Instant::now() < deadline, "slabtrace daemon did not attach within 60 s");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// Its scratch directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Every event written to the events file so far (a partly written last line is left out).
    pub fn events(&self) -> Result<Vec<Value>> {
        let text = fs::read_to_string(self.dir.join("events.ndjson")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .take_while(Result::is_ok)
            .collect()
    }

    /// Waits for an event that `pred` accepts, and returns it. Only a hang ends the wait,
    /// after [`crate::PATIENCE`]: events come once an interval however busy the machine is.
    pub fn wait_for_event(&self, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            if let Some(e) = self.events()?.into_iter().find(&pred) {
                return Ok(e);
            }
            ensure!(
                Instant::now() < deadline,
                "no matching event within {:?}; stderr:\n{}",
                crate::PATIENCE,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET `path` from the daemon's HTTP endpoint: (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.listen, path)
    }

    /// Its `/report`, parsed.
    pub fn report(&self) -> Result<Value> {
        report_at(&self.listen)
    }

    /// Its `/report` once `reached` accepts it (see [`report_when_at`]).
    pub fn report_when(&self, what: &str, reached: impl Fn(&Value) -> bool) -> Result<Value> {
        report_when_at(&self.listen, what, reached)
    }

    /// Sends `signal` and waits up to `timeout` for the daemon to exit.
    pub fn stop(mut self, signal: i32, timeout: Duration) -> Result<Stopped> {
        let started = Instant::now();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(i32::try_from(self.child.id())?, signal) };
        loop {
            if let Some(status) = self.child.try_wait()? {
                let took = started.elapsed();
                return Ok(Stopped { status, took, stderr: self.stderr(), events: self.events()? });
            }
            ensure!(
                started.elapsed() < timeout,
                "the daemon did not exit within {timeout:?} of signal {signal}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// GET `path` from a daemon: (status code, body), with slabtrace's own client.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let (status, body) = slabtrace::output::http_get::get(addr, path, Duration::from_secs(10))
        .with_context(|| format!("GET {path} from {addr}"))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `/report` of the daemon listening on `addr`, parsed.
pub fn report_at(addr: &str) -> Result<Value> {
    let (status, body) = http_get(addr, "/report")?;
    ensure!(status == 200, "/report answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The `/report` of the daemon listening on `addr` once `reached` accepts it, or after
/// [`crate::PATIENCE`] (see [`crate::wait_for_state`]). Its figures move once an interval;
/// frees of inodes and dentries come later still, in RCU callbacks.
pub fn report_when_at(addr: &str, what: &str, reached: impl Fn(&Value) -> bool) -> Result<Value> {
    let look = || match http_get(addr, "/report")? {
        // Before the first interval there is no report yet: nothing is reached.
        (503, _) => Ok(Value::Null),
        _ => report_at(addr),
    };
    crate::wait_for_state(what, look, reached)
}
