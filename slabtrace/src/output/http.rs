//! The daemon's HTTP endpoints on `--listen`: `/metrics` (Prometheus), `/report` (the current
//! JSON report), `/healthz` (whether the probes are attached and intervals are on time) and
//! `/`, a short index.
//!
//! A small hyper HTTP/1.1 server on its own thread with a current-thread tokio runtime. The
//! tracing loop only swaps an `Arc<Interval>` into [`Latest`]; everything is encoded when a
//! request asks for it, so a slow or stuck client never holds up tracing. The address is bound
//! before the daemon says it is ready, so a taken port fails `slabtrace daemon` at once.
//!
//! `/metrics` is `OpenMetrics` text when the client asks for it (Prometheus does), and
//! Prometheus' text format 0.0.4 otherwise (curl, `promtool check metrics`): both are
//! prometheus-client's encoding, see [`text_format`].

use std::{
    collections::VecDeque,
    convert::Infallible,
    io,
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use tokio::sync::oneshot;

use crate::{
    output::{
        events::EventCounters,
        metrics::{CacheFilter, Exporter, ExporterOptions, HttpCounters, Latest, text_format},
    },
    pipeline::Interval,
};

/// The content type of the `OpenMetrics` exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus' text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

const PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// A client gets this long to send its request headers (a connection that sends nothing is
/// not kept forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Each new one past this closes the oldest (counted): each open
/// connection can hold a response in flight, so their number bounds the memory clients can
/// make the daemon hold, and closing the oldest rather than the newest keeps the kubelet's
/// probes and Prometheus answered however many clients hold on. Prometheus needs one, a
/// person with curl another few.
const MAX_CONNECTIONS: usize = 64;

/// A connection is closed this long after it was accepted, whatever it is doing: a client that
/// asks for /report and never reads would otherwise hold its response (and the kernel's send
/// buffer) for ever. A scrape takes milliseconds; Prometheus reconnects for the next one.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// The kernel's send buffer per connection (`SO_SNDBUF`), instead of autotuning up to
/// `tcp_wmem`'s maximum (4 MiB by default): socket memory is charged to the daemon's memcg, so
/// 64 clients that do not read could otherwise hold 256 MiB of it. 256 KiB still sends a
/// report of a few MiB in a few round trips.
const SEND_BUFFER_BYTES: libc::c_int = 256 * 1024;

/// `/healthz` fails once the last interval is older than three intervals and this.
const STALE_GRACE: Duration = Duration::from_secs(5);

/// The endpoints could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address is taken, not local, or not an address.
    #[error("cannot listen on {addr}: {reason}; pick another --listen, or --listen off")]
    Listen {
        /// `--listen`.
        addr: String,
        /// Why, in words.
        reason: String,
        /// The error behind it.
        #[source]
        source: io::Error,
    },
    /// No thread or runtime for the server.
    #[error("cannot start the HTTP server: {0}; try --listen off")]
    Start(#[source] io::Error),
}

/// `bind`'s error in words, without the `(os error N)` tail.
fn listen_error(addr: &str, source: io::Error) -> HttpError {
    let reason = match source.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "no such address on this host".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::InvalidInput => "not an ADDR:PORT".to_owned(),
        _ => {
            let text = source.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    };
    HttpError::Listen { addr: addr.to_owned(), reason, source }
}

/// What a request gets back.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self { status, content_type, body: body.into() }
    }

    /// The body as text (every body here is UTF-8).
    #[cfg(test)]
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// The routes, over what the tracing loop publishes.
#[derive(Debug)]
pub struct Endpoints {
    latest: Arc<Latest>,
    exporter: Arc<Exporter>,
    interval: Duration,
    /// Where `/report` is served: here, or on its own listener (or nowhere).
    report_route: ReportRoute,
    /// The latest interval's report as JSON, by interval number: encoded once and shared by
    /// every request (a `Bytes` clone is a reference), however many clients ask.
    report: Mutex<Option<(u64, Bytes)>>,
    counters: Arc<HttpCounters>,
}

impl Endpoints {
    /// The endpoints of a daemon that ends an interval every `interval`.
    #[must_use]
    pub fn new(
        latest: Arc<Latest>,
        exporter: Exporter,
        interval: Duration,
        counters: Arc<HttpCounters>,
    ) -> Self {
        Self {
            latest,
            exporter: Arc::new(exporter),
            interval,
            report_route: ReportRoute::Here,
            report: Mutex::new(None),
            counters,
        }
    }

    /// The same endpoints with `/report` served per `route`.
    fn with_report(&self, route: ReportRoute) -> Self {
        Self {
            latest: Arc::clone(&self.latest),
            exporter: Arc::clone(&self.exporter),
            interval: self.interval,
            report_route: route,
            report: Mutex::new(None),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The reply to `method path` with the request's `Accept` header, at `now`.
    #[must_use]
    pub fn reply(&self, method: &str, path: &str, accept: Option<&str>, now: Instant) -> Reply {
        if method != "GET" && method != "HEAD" {
            return Reply::new(405, PLAIN, format!("{method} is not served here; use GET\n"));
        }
        match path {
            "/" => Reply::new(200, PLAIN, index()),
            "/metrics" => self.metrics(accept),
            "/report" => match &self.report_route {
                ReportRoute::Here => self.report(),
                ReportRoute::At(addr) => Reply::new(
                    404,
                    PLAIN,
                    format!(
                        "/report is served on http://{addr}/report only (--report-listen): it \
                         names every pod on the node\n"
                    ),
                ),
                ReportRoute::Off => {
                    Reply::new(404, PLAIN, "/report is off here (--report-listen off)\n")
                }
            },
            "/healthz" => {
                let published = self.latest.get();
                let since = |at: Instant| now.saturating_duration_since(at);
                match health(
                    self.latest.attached(),
                    published.map(|p| since(p.at)),
                    since(self.latest.started()),
                    self.interval,
                ) {
                    Ok(()) => Reply::new(200, PLAIN, "ok\n"),
                    Err(reason) => Reply::new(503, PLAIN, format!("{reason}\n")),
                }
            }
            _ => Reply::new(
                404,
                PLAIN,
                format!("no {path} here; try /metrics, /report or /healthz\n"),
            ),
        }
    }

    fn metrics(&self, accept: Option<&str>) -> Reply {
        match self.exporter.openmetrics() {
            Ok(text) if wants_openmetrics(accept) => Reply::new(200, OPENMETRICS, text),
            Ok(text) => Reply::new(200, TEXT_FORMAT, text_format(&text)),
            Err(e) => {
                warn!("cannot encode the metrics: {e}");
                Reply::new(500, PLAIN, "cannot encode the metrics; see slabtrace's log\n")
            }
        }
    }

    fn report(&self) -> Reply {
        let Some(published) = self.latest.get() else {
            return Reply::new(
                503,
                PLAIN,
                format!(
                    "no interval has ended yet; the first report comes {} after start\n",
                    humantime::format_duration(self.interval)
                ),
            );
        };
        let seq = published.interval.seq;
        let mut cached = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, json)) = cached.as_ref()
            && *at == seq
        {
            return Reply::new(200, JSON, json.clone());
        }
        match serde_json::to_string_pretty(&published.interval.report) {
            Ok(mut json) => {
                json.push('\n');
                let json = Bytes::from(json);
                *cached = Some((seq, json.clone()));
                Reply::new(200, JSON, json)
            }
            Err(e) => {
                warn!("cannot encode the report: {e}");
                Reply::new(500, PLAIN, "cannot encode the report; see slabtrace's log\n")
            }
        }
    }
}

/// Whether an `Accept` header asks for `OpenMetrics` (Prometheus' does, first).
#[must_use]
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Whether the daemon is healthy: the probes are attached and the last interval (or, before
/// the first, the start) is no older than three intervals and [`STALE_GRACE`]. `Err` says why
/// not, in one sentence.
pub fn health(
    attached: bool,
    since_last: Option<Duration>,
    since_start: Duration,
    interval: Duration,
) -> Result<(), String> {
    if !attached {
        return Err("the probes are detached: slabtrace is shutting down".to_owned());
    }
    let limit = interval.saturating_mul(3).saturating_add(STALE_GRACE);
    let secs = |d: Duration| d.as_secs();
    match since_last {
        Some(age) if age > limit => Err(format!(
            "the last interval ended {}s ago, more than 3 intervals of {}: reading the maps \
             fails or hangs; see slabtrace's log",
            secs(age),
            humantime::format_duration(interval)
        )),
        None if since_start > limit => Err(format!(
            "no interval has ended in the {}s since start (one every {}): reading the maps \
             fails or hangs; see slabtrace's log",
            secs(since_start),
            humantime::format_duration(interval)
        )),
        _ => Ok(()),
    }
}

fn index() -> String {
    format!(
        "slabtrace {}\n\n\
         /metrics  Prometheus metrics (OpenMetrics if asked for, else text format 0.0.4)\n\
         /report   the report since start, JSON (schema slabtrace.report.v1)\n\
         /healthz  200 while the probes are attached and intervals are on time\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Where a server's `/report` is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReportRoute {
    /// Served by this server.
    Here,
    /// Served by the report listener at this address only.
    At(SocketAddr),
    /// Not served at all.
    Off,
}

/// `--report-listen`: where `/report` is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportListen {
    /// On `--listen`, with the other endpoints.
    Same,
    /// Nowhere.
    Off,
    /// On a listener of its own at this address (every endpoint is served there too, and
    /// `/report` no longer on `--listen`).
    At(String),
}

impl std::str::FromStr for ReportListen {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "same" => Self::Same,
            "off" | "none" => Self::Off,
            addr => Self::At(addr.to_owned()),
        })
    }
}

/// The HTTP server: a thread serving [`Endpoints`] until dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` now (so a taken port is an error here, not a log line later) and serves
    /// `endpoints` on a thread of its own.
    pub fn start(listen: &str, endpoints: Endpoints) -> Result<Self, HttpError> {
        Self::start_limited(listen, endpoints, ConnectionLimits::default())
    }

    /// [`HttpServer::start`] with other connection limits (the tests' small ones).
    fn start_limited(
        listen: &str,
        endpoints: Endpoints,
        limits: ConnectionLimits,
    ) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(listen).map_err(|e| listen_error(listen, e))?;
        let addr = listener.local_addr().map_err(|e| listen_error(listen, e))?;
        // tokio takes the socket over and needs it non-blocking.
        listener.set_nonblocking(true).map_err(HttpError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpError::Start)?;
        let (stop, stopped) = oneshot::channel();
        let endpoints = Arc::new(endpoints);
        let thread = std::thread::Builder::new()
            .name("http".to_owned())
            .spawn(move || runtime.block_on(serve(listener, endpoints, stopped, limits)))
            .map_err(HttpError::Start)?;
        Ok(Self { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The accept loop ends at once; open connections end with the runtime.
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the HTTP server thread panicked");
        }
    }
}

/// How many connections are served at once, and for how long each.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    max: usize,
    deadline: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max: MAX_CONNECTIONS, deadline: CONNECTION_DEADLINE }
    }
}

async fn serve(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    mut stop: oneshot::Receiver<()>,
    limits: ConnectionLimits,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot serve HTTP: {e}; /metrics, /report and /healthz are off");
            return;
        }
    };
    // Each open connection's eviction notice, oldest first.
    let mut open: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // A connection that ended dropped its receiver.
                    open.retain(|notice| !notice.is_closed());
                    if open.len() >= limits.max
                        && let Some(oldest) = open.pop_front()
                    {
                        // The oldest goes, so that a new client (the kubelet's probe,
                        // Prometheus) is always served however many hold on.
                        let _ = oldest.send(());
                        if endpoints.counters.evicted_one() == 0 {
                            warn!(
                                "{} HTTP connections are open: closing the oldest for each new \
                                 one (slabtrace_http_connections_evicted_total counts them)",
                                limits.max
                            );
                        }
                    }
                    let (notice, evicted) = oneshot::channel();
                    open.push_back(notice);
                    let endpoints = Arc::clone(&endpoints);
                    tokio::spawn(async move {
                        let fd = stream.as_raw_fd();
                        let served = connection(stream, &endpoints);
                        tokio::pin!(served);
                        tokio::select! {
                            () = &mut served => return,
                            () = tokio::time::sleep(limits.deadline) => {
                                endpoints.counters.timed_out_one();
                                debug!("closing the HTTP connection from {peer} at its deadline");
                            }
                            _ = evicted => debug!("closing the oldest HTTP connection, from {peer}"),
                        }
                        // Before the socket closes: what the client did not read is dropped
                        // at once, not kept in the kernel until the client gives up.
                        reset_on_close(fd);
                    });
                }
                // Out of file descriptors, most likely: wait rather than spin.
                Err(e) => {
                    warn!("cannot accept an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, endpoints: &Endpoints) {
    limit_send_buffer(&stream);
    let service = service_fn(move |req: Request<Incoming>| {
        let reply = respond(endpoints, &req);
        async move { Ok::<_, Infallible>(reply) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!("HTTP connection: {e}");
    }
}

/// Caps the kernel's send buffer of `stream` at [`SEND_BUFFER_BYTES`]; on failure the kernel's
/// default stays, which only costs memory.
fn limit_send_buffer(stream: &tokio::net::TcpStream) {
    set_socket_option(stream.as_raw_fd(), libc::SO_SNDBUF, &SEND_BUFFER_BYTES, "limit");
}

/// Makes the close of the socket `fd` an abortive one (`SO_LINGER` 0: a reset, unsent data
/// dropped). Otherwise a socket closed with a response its client never read lingers in the
/// kernel, orphaned, with that response, for minutes, still charged to the daemon's memcg.
/// `fd` must still be open: its stream not dropped yet.
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    set_socket_option(fd, libc::SO_LINGER, &linger, "reset on close");
}

/// `setsockopt(fd, SOL_SOCKET, option, value)`; a failure is logged (`what` the connection's
/// option was for) and otherwise ignored: each option here only saves memory.
fn set_socket_option<T>(fd: std::os::fd::RawFd, option: libc::c_int, value: &T, what: &str) {
    let Ok(len) = libc::socklen_t::try_from(std::mem::size_of::<T>()) else { return };
    // SAFETY: an open socket, and a pointer to a value of the length given.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, option, std::ptr::from_ref(value).cast(), len)
    };
    if rc != 0 {
        debug!("cannot {what} an HTTP connection: {}", io::Error::last_os_error());
    }
}

fn respond(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let reply = endpoints.reply(req.method().as_str(), req.uri().path(), accept, Instant::now());
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(reply.content_type));
    if reply.status == 405 {
        headers.insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// What the daemon's endpoints are told.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// `address:port`, or `off`/`none` for no endpoints.
    pub listen: String,
    /// Pod × cache series in /metrics.
    pub metrics_top: usize,
    /// Caches exported by name in /metrics.
    pub metrics_caches: CacheFilter,
    /// The per-row counter families in /metrics.
    pub metrics_counters: bool,
    /// The daemon's interval (/healthz says unhealthy when intervals are late).
    pub interval: Duration,
    /// Where `/report` is served.
    pub report_listen: ReportListen,
}

/// The daemon's HTTP side: what the tracing loop hands over, and the server serving it.
#[derive(Debug)]
pub struct Http {
    latest: Arc<Latest>,
    /// Held for as long as the endpoints serve: dropping them stops the servers.
    _servers: Vec<HttpServer>,
}

impl Http {
    /// Starts the endpoints on `--listen`; `None` for `--listen off`. `stream` is the event
    /// stream's counters, exported as metrics.
    pub fn start(
        args: &HttpOptions,
        stream: Option<Arc<EventCounters>>,
    ) -> Result<Option<Self>, HttpError> {
        let listen_off = matches!(args.listen.as_str(), "off" | "none");
        if listen_off && !matches!(args.report_listen, ReportListen::At(_)) {
            return Ok(None);
        }
        let latest = Arc::new(Latest::new());
        let counters = Arc::new(HttpCounters::default());
        let options = ExporterOptions {
            top: args.metrics_top,
            caches: args.metrics_caches.clone(),
            counters: args.metrics_counters,
            stream,
            http: Some(Arc::clone(&counters)),
            page_size: page_size(),
        };
        let exporter = Exporter::new(Arc::clone(&latest), options);
        let endpoints = Endpoints::new(Arc::clone(&latest), exporter, args.interval, counters);
        let mut servers = Vec::new();
        let route = match &args.report_listen {
            ReportListen::Same => ReportRoute::Here,
            ReportListen::Off => ReportRoute::Off,
            ReportListen::At(addr) => {
                let own = HttpServer::start(addr, endpoints.with_report(ReportRoute::Here))?;
                info!("serving /report (and the rest) on http://{}", own.addr());
                let route = ReportRoute::At(own.addr());
                servers.push(own);
                route
            }
        };
        if !listen_off {
            let main = HttpServer::start(&args.listen, endpoints.with_report(route.clone()))?;
            if route == ReportRoute::Here {
                info!("serving /metrics, /report and /healthz on http://{}", main.addr());
            } else {
                info!("serving /metrics and /healthz on http://{}", main.addr());
            }
            servers.push(main);
        }
        Ok(Some(Self { latest, _servers: servers }))
    }

    /// Hands an interval to the endpoints (a pointer swap).
    pub fn publish(&self, interval: &Arc<Interval>) {
        self.latest.publish(Arc::clone(interval));
    }

    /// Says the probes are detached (`/healthz` turns 503).
    pub fn detached(&self) {
        self.latest.detach();
    }
}

/// The page size, for /proc/slabinfo's slab counts.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        time::SystemTime,
    };

    use super::*;
    use crate::output::report::{Report, SCHEMA};

    const TEN: Duration = Duration::from_secs(10);

    fn endpoints() -> (Arc<Latest>, Endpoints) {
        let latest = Arc::new(Latest::new());
        let options = ExporterOptions { counters: false, ..ExporterOptions::plain(10) };
        let exporter = Exporter::new(Arc::clone(&latest), options);
        (Arc::clone(&latest), Endpoints::new(latest, exporter, TEN, Arc::default()))
    }

    fn interval() -> Arc<Interval> {
        let mut report = Report { schema: SCHEMA.into(), ..Report::default() };
        report.node = "node-a".into();
        report.self_stats.sample_rate = 1;
        Arc::new(Interval {
            seq: 1,
            node: "node-a".into(),
            ts: SystemTime::UNIX_EPOCH,
            seconds: 10.0,
            report,
            ..Interval::default()
        })
    }

    #[test]
    fn health_table() {
        let s = Duration::from_secs;
        let cases = [
            ("on time", true, Some(s(9)), s(100), true),
            ("just within 3 intervals and the grace", true, Some(s(35)), s(100), true),
            ("stale", true, Some(s(36)), s(100), false),
            ("starting", true, None, s(20), true),
            ("no interval for too long", true, None, s(40), false),
            ("detached", false, Some(s(1)), s(100), false),
        ];
        for (what, attached, last, start, ok) in cases {
            assert_eq!(health(attached, last, start, TEN).is_ok(), ok, "{what}");
        }
        let why = health(true, Some(s(47)), s(100), TEN).unwrap_err();
        assert_eq!(
            why,
            "the last interval ended 47s ago, more than 3 intervals of 10s: reading the maps \
             fails or hangs; see slabtrace's log"
        );
    }

    #[test]
    fn routes() {
        let (latest, ep) = endpoints();
        let now = Instant::now();
        let get = |path: &str| ep.reply("GET", path, None, now);
        // Before the first interval.
        let report = get("/report");
        assert_eq!(report.status, 503);
        assert_eq!(
            report.body,
            "no interval has ended yet; the first report comes 10s after start\n"
        );
        assert_eq!((get("/healthz").status, get("/healthz").text().as_ref()), (200, "ok\n"));
        latest.publish(interval());
        let report = get("/report");
        assert_eq!((report.status, report.content_type), (200, JSON));
        let json: serde_json::Value = serde_json::from_slice(&report.body).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        // Encoded once per interval: a second request shares the first one's bytes.
        assert_eq!(get("/report").body.as_ptr(), report.body.as_ptr());
        let mut next = Arc::into_inner(interval()).unwrap();
        next.seq += 1;
        latest.publish(Arc::new(next));
        assert_ne!(get("/report").body.as_ptr(), report.body.as_ptr());
        let index = get("/");
        assert!(index.text().contains("/metrics"), "{}", index.text());
        assert_eq!(get("/nope").status, 404);
        assert_eq!(ep.reply("POST", "/metrics", None, now).status, 405);
        assert_eq!(ep.reply("HEAD", "/healthz", None, now).status, 200);
        latest.detach();
        let health = get("/healthz");
        assert_eq!(
            (health.status, health.text().as_ref()),
            (503, "the probes are detached: slabtrace is shutting down\n")
        );
    }

    #[test]
    fn report_routes() {
        let (latest, ep) = endpoints();
        latest.publish(interval());
        let now = Instant::now();
        let addr: SocketAddr = "127.0.0.1:9478".parse().unwrap();
        let elsewhere = ep.with_report(ReportRoute::At(addr)).reply("GET", "/report", None, now);
        assert_eq!(elsewhere.status, 404);
        assert!(elsewhere.text().contains("http://127.0.0.1:9478/report"), "{}", elsewhere.text());
        let off = ep.with_report(ReportRoute::Off).reply("GET", "/report", None, now);
        assert_eq!(
            (off.status, off.text().as_ref()),
            (404, "/report is off here (--report-listen off)\n")
        );
        // Everything else is served alike.
        let metrics = ep.with_report(ReportRoute::Off).reply("GET", "/metrics", None, now);
        assert_eq!(metrics.status, 200);
        assert_eq!(ep.reply("GET", "/report", None, now).status, 200);
        assert_eq!("same".parse(), Ok(ReportListen::Same));
        assert_eq!("off".parse(), Ok(ReportListen::Off));
        assert_eq!("127.0.0.1:9478".parse(), Ok(ReportListen::At("127.0.0.1:9478".into())));
    }

    #[test]
    fn metrics_are_negotiated() {
        let (latest, ep) = endpoints();
        latest.publish(interval());
        let now = Instant::now();
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let om = ep.reply("GET", "/metrics", Some(prometheus), now);
        assert_eq!((om.status, om.content_type), (200, OPENMETRICS));
        assert!(om.text().contains("# TYPE slabtrace_intervals counter\n"));
        assert!(om.text().ends_with("# EOF\n"));
        let plain = ep.reply("GET", "/metrics", None, now);
        assert_eq!((plain.status, plain.content_type), (200, TEXT_FORMAT));
        assert!(plain.text().contains("# TYPE slabtrace_intervals_total counter\n"));
        assert!(!plain.text().contains("# EOF"));
    }

    /// Reads `s` until the server closes it (end of stream or a reset), failing after `within`.
    fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// A server with `limits` and its counters.
    fn limited_server(limits: ConnectionLimits) -> (HttpServer, Arc<HttpCounters>) {
        let latest = Arc::new(Latest::new());
        let options = ExporterOptions { counters: false, ..ExporterOptions::plain(10) };
        let exporter = Exporter::new(Arc::clone(&latest), options);
        let counters = Arc::new(HttpCounters::default());
        let ep = Endpoints::new(latest, exporter, TEN, Arc::clone(&counters));
        (HttpServer::start_limited("127.0.0.1:0", ep, limits).unwrap(), counters)
    }

    /// A client that starts a request and never finishes it.
    fn hold(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /report HTTP/1.1\r\n").unwrap();
        s
    }

    #[test]
    fn past_the_cap_the_oldest_connection_goes() {
        let limits = ConnectionLimits { max: 2, deadline: Duration::from_hours(1) };
        let (server, counters) = limited_server(limits);
        let addr = server.addr();
        // Three clients hold on: the third closes the first.
        let mut held: Vec<TcpStream> = (0..3).map(|_| hold(addr)).collect();
        assert!(closed_by_server(&mut held[0], Duration::from_secs(30)), "the oldest stayed");
        assert_eq!(counters.evicted(), 1);
        // A new client is served although two are held: the oldest held one goes.
        let ok = raw(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(closed_by_server(&mut held[1], Duration::from_secs(30)), "the second stayed");
        assert_eq!((counters.evicted(), counters.timed_out()), (2, 0));
    }

    #[test]
    fn a_connection_is_closed_at_its_deadline() {
        let limits = ConnectionLimits { max: 8, deadline: Duration::from_millis(200) };
        let (server, counters) = limited_server(limits);
        let mut held = hold(server.addr());
        assert!(closed_by_server(&mut held, Duration::from_secs(30)), "it stayed open");
        let deadline = Instant::now() + Duration::from_secs(30);
        while counters.timed_out() < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!((counters.evicted(), counters.timed_out()), (0, 1));
    }

    fn raw(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_server_serves_and_a_taken_port_is_one_sentence() {
        let (_latest, ep) = endpoints();
        let server = HttpServer::start("127.0.0.1:0", ep).unwrap();
        let addr = server.addr();
        let ok = raw(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        let post = raw(
            addr,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.to_ascii_lowercase().contains("allow: get, head\r\n"), "{post}");
        let head = raw(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");

        let (_, again) = endpoints();
        let err = HttpServer::start(&addr.to_string(), again).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot listen on {addr}: address in use; pick another --listen, or --listen off"
            )
        );
        let (_, bad) = endpoints();
        let err = HttpServer::start("localhost", bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot listen on localhost: not an ADDR:PORT; pick another --listen, or --listen off"
        );
        drop(server);
        // Stopped: the port is free again.
        assert!(TcpListener::bind(addr).is_ok());
    }
}
