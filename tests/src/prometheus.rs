//! A real Prometheus for the tests (Debian's `prometheus`, which `cargo xtask` installs):
//! started on a free loopback port with a 1 s scrape of one target, asked through its HTTP
//! API, and killed with its directory removed when dropped. Also `promtool check metrics`, and
//! a plain HTTP request that shows the response headers.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::daemon::{free_port, http_get};

/// The Prometheus server binary.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Its lint tool.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// Its HTTP address (`127.0.0.1:port`).
    pub addr: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second and
    /// waits until it is ready. `tag` names its scratch directory.
    pub fn start(tag: &str, target: &str) -> Result<Self> {
        Self::start_with_job(
            tag,
            &format!(
                "  - job_name: slabtrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
    }

    /// Starts Prometheus with `job` (one `scrape_configs` entry, as YAML indented by two
    /// spaces) and waits until it is ready.
    pub fn start_with_job(tag: &str, job: &str) -> Result<Self> {
        ensure!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's prometheus package (cargo xtask does)"
        );
        let dir = std::env::temp_dir()
            .join(format!("slabtrace-test-{}-prometheus-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n{job}"
            ),
        )?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = fs::File::create(dir.join("log"))?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut me = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", me.log());
            }
            if http_get(&me.addr, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                return Ok(me);
            }
            ensure!(Instant::now() < deadline, "prometheus not ready within 30 s:\n{}", me.log());
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// What it logged.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// An instant query: the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let body = self.api(&path)?;
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The targets API's answer (their health and last scrape error).
    pub fn targets(&self) -> Result<Value> {
        self.api("/api/v1/targets")
    }

    fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(&self.addr, path)?;
        let json: Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
        ensure!(status == 200 && json["status"] == "success", "{path}: {status} {body}");
        Ok(json)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The value of an instant-query sample (`"value": [time, "number"]`).
#[must_use]
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// Everything but RFC 3986's unreserved characters, percent-encoded.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `promtool check metrics` on `exposition`: whether it passed, and what it said (stdout and
/// stderr).
pub fn promtool_check_metrics(exposition: &str) -> Result<(bool, String)> {
    ensure!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install Debian's prometheus package (cargo xtask does)"
    );
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    child.stdin.take().context("promtool's stdin")?.write_all(exposition.as_bytes())?;
    let out = child.wait_with_output()?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), said))
}

/// An HTTP response: status, header lines (lower-cased names), body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `name: value` lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (not chunked: the daemon sends a length).
    pub body: String,
}

impl Response {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `headers`, `Connection: close`.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    use std::fmt::Write as _;
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(req, "{name}: {value}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line: {head}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: body.to_owned() })
}
