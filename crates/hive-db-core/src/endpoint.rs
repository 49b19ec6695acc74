//! The optional HTTP endpoint: `/metrics`, `/stats` and `/health` of a live registry.
//!
//! A small HTTP/1.1 server on [`std::net::TcpListener`], with no async runtime and no HTTP
//! crate: one thread accepts, a fixed few serve, one request per connection. Every read and
//! write is bounded by a deadline, connections past a cap are answered `503` at once, and a
//! request head larger than a few kilobytes is refused, so a slow or hostile client holds at
//! most one serving thread, and only until its deadline.
//!
//! ```no_run
//! use hive_db_core::Registry;
//! use hive_db_core::endpoint::{self, EndpointConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new();
//! let endpoint = endpoint::serve(&registry, EndpointConfig::default())?;
//! println!("metrics on http://{}/metrics", endpoint.addr());
//! # Ok(())
//! # }
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::health::{HealthReport, HealthStatus};
use crate::metrics::{PROMETHEUS_CONTENT_TYPE, prometheus_text};
use crate::registry::Registry;
use crate::stats::RegistrySnapshot;
use crate::sync::lock;

/// The longest request line accepted (method, target and version), in bytes: longer is `414`.
pub const MAX_REQUEST_LINE: usize = 4 * 1024;
/// The largest request head accepted (request line and headers), in bytes: larger is `431`.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The most header lines accepted in one request: more is `431`.
pub const MAX_HEADERS: usize = 64;

/// How often blocked threads look at the stop flag: the bound on [`Endpoint::stop`] when no
/// health check is running.
const POLL: Duration = Duration::from_millis(25);
/// How often the accepting thread looks for connections within `BUSY_SPELL` of the last one.
const BUSY_POLL: Duration = Duration::from_millis(1);
const BUSY_SPELL: Duration = Duration::from_secs(1);
/// The most a thread spends reading and discarding what a refused client still sends, so
/// that closing does not reset the connection before the client reads the answer.
const DRAIN_TIME: Duration = Duration::from_millis(200);
const DRAIN_BYTES: usize = 64 * 1024;
/// Largest accepted value of each timeout in [`EndpointConfig`].
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest accepted [`EndpointConfig::threads`].
const MAX_THREADS: usize = 64;
/// Largest accepted [`EndpointConfig::max_connections`].
const MAX_CONNECTIONS: usize = 4096;

/// How [`serve`] listens. Every field has a safe default; change them with struct update
/// syntax: `EndpointConfig { addr: "127.0.0.1:9187".parse()?, ..EndpointConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Address to listen on. Default `127.0.0.1:0`: loopback, on a port the system picks
    /// ([`Endpoint::addr`] tells which). An address that is not loopback is refused unless
    /// [`allow_non_loopback`](Self::allow_non_loopback) is set.
    pub addr: SocketAddr,
    /// Listen on an address other hosts can reach (`0.0.0.0`, a LAN address). Default
    /// `false`. The endpoint has no authentication; open it only behind a firewall or proxy.
    pub allow_non_loopback: bool,
    /// Threads serving requests, besides the one accepting connections. Default 2, at most 64.
    pub threads: usize,
    /// Connections served or queued for a thread at once; one more is answered `503` and
    /// closed at once. Default 32, from 1 to 4096.
    pub max_connections: usize,
    /// Time a client has to send its whole request head once connected; then it gets `408`.
    /// Default 5 s, at most 1 h.
    pub request_timeout: Duration,
    /// Time a client has to take the whole response; then the connection is dropped.
    /// Default 5 s, at most 1 h.
    pub write_timeout: Duration,
    /// Timeout of the health check behind `/health` ([`Registry::health`]). Default 1 s,
    /// at most 1 h.
    pub health_timeout: Duration,
    /// How long one health check's result answers `/health` before a new one runs, so that
    /// scrapes cannot load the writer lane. Default 1 s, at most 1 h; zero checks on every
    /// request (one at a time).
    pub health_cache: Duration,
    /// Show database file paths. Default `false`: `/stats` sends every `path` empty and
    /// `/health` replaces paths in its error messages with `<path>`. `/metrics` never shows
    /// them.
    pub expose_paths: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            threads: 2,
            max_connections: 32,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(1),
            health_cache: Duration::from_secs(1),
            expose_paths: false,
        }
    }
}

impl EndpointConfig {
    fn validate(&self) -> Result<(), EndpointError> {
        let invalid = |field: &'static str, reason: String| {
            Err(EndpointError::InvalidConfig { field, reason })
        };
        if self.threads == 0 || self.threads > MAX_THREADS {
            return invalid("threads", format!("must be from 1 to {MAX_THREADS}"));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return invalid(
                "max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            );
        }
        for (field, value, zero_ok) in [
            ("request_timeout", self.request_timeout, false),
            ("write_timeout", self.write_timeout, false),
            ("health_timeout", self.health_timeout, false),
            ("health_cache", self.health_cache, true),
        ] {
            if (value.is_zero() && !zero_ok) || value > MAX_TIMEOUT {
                let low = if zero_ok { "" } else { "above zero and " };
                return invalid(field, format!("must be {low}at most {MAX_TIMEOUT:?}"));
            }
        }
        if !self.addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(EndpointError::NotLoopback { addr: self.addr });
        }
        Ok(())
    }
}

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The address is not loopback and [`EndpointConfig::allow_non_loopback`] is off.
    #[error(
        "refusing to serve on {addr}: not a loopback address (set allow_non_loopback to open it)"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// A configuration value the endpoint cannot run with.
    #[error("invalid endpoint configuration: {field} {reason}")]
    InvalidConfig {
        /// The field of [`EndpointConfig`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The address could not be bound (in use, not local, not permitted).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused a thread.
    #[error("cannot start an endpoint thread")]
    Spawn {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// A running endpoint. It stops when dropped or on [`stop`](Self::stop).
///
/// It holds a clone of its registry, so the registry's pools stay open while it runs.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Endpoint {
    /// The address it listens on, with the real port when the configured one was 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes queued connections unserved, and joins every thread. Returns
    /// within about 25 ms, or, when a `/health` request is running its check, within that
    /// check's timeout; a client being written to is dropped at its next write.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a hive-db endpoint thread panicked");
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Serves `registry` over HTTP until the returned [`Endpoint`] is stopped or dropped.
///
/// Works with a registry the caller owns (`serve(&registry, ..)`) and with the installed one
/// (`serve(global::get().expect(".."), ..)`); the endpoint keeps a clone. Routes, all `GET`,
/// each answered with `Connection: close`:
///
/// - `/metrics`: [`prometheus_text`] of a snapshot taken on request,
///   `Content-Type: text/plain; version=0.0.4`;
/// - `/stats`: the [`RegistrySnapshot`] as JSON (paths empty unless
///   [`EndpointConfig::expose_paths`]);
/// - `/health`: the [`HealthReport`] as JSON, `200` when healthy or degraded, `503` when
///   unhealthy; one check answers for [`EndpointConfig::health_cache`], and while a new
///   one runs, requests get the previous answer.
///
/// Anything else: `404` for another path, `405` for another method on these, `400` for a
/// malformed request, `414` for a request line over [`MAX_REQUEST_LINE`] bytes, `431` for a
/// head over [`MAX_REQUEST_HEAD`] bytes or [`MAX_HEADERS`] lines, `408` when the head does not
/// arrive within [`EndpointConfig::request_timeout`], `503` past
/// [`EndpointConfig::max_connections`].
///
/// # Errors
///
/// [`EndpointError::NotLoopback`] for an address other hosts can reach without
/// [`EndpointConfig::allow_non_loopback`]; [`EndpointError::InvalidConfig`] naming the field;
/// [`EndpointError::Bind`] when the address cannot be bound; [`EndpointError::Spawn`] when a
/// thread cannot be started.
pub fn serve(registry: &Registry, config: EndpointConfig) -> Result<Endpoint, EndpointError> {
    config.validate()?;
    let listener = TcpListener::bind(config.addr).map_err(|source| EndpointError::Bind {
        addr: config.addr,
        source,
    })?;
    let bind_err = |source| EndpointError::Bind {
        addr: config.addr,
        source,
    };
    let addr = listener.local_addr().map_err(bind_err)?;
    // Non-blocking so the accepting thread sees the stop flag.
    listener.set_nonblocking(true).map_err(bind_err)?;

    let stopping = Arc::new(AtomicBool::new(false));
    let (queue, queued) = mpsc::sync_channel::<Connection>(config.max_connections);
    let state = Arc::new(State {
        registry: registry.clone(),
        health: Mutex::new(None),
        checking: Mutex::new(()),
        in_flight: Arc::new(AtomicUsize::new(0)),
        stopping: Arc::clone(&stopping),
        config,
    });
    let queued = Arc::new(Mutex::new(queued));
    let mut endpoint = Endpoint {
        addr,
        stopping,
        threads: Vec::new(),
    };
    // Thread names show the port (`top -H`, /proc/PID/task/*/comm: 15 characters at most).
    let thread_name = format!("hive-http-{}", addr.port());
    for _ in 0..state.config.threads {
        let (state, queued) = (Arc::clone(&state), Arc::clone(&queued));
        let spawned = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || serve_queued(&state, &queued));
        // On error, dropping `endpoint` stops the threads already started.
        endpoint
            .threads
            .push(spawned.map_err(|source| EndpointError::Spawn { source })?);
    }
    let accepting = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || accept(&accepting, &listener, &queue));
    endpoint
        .threads
        .push(spawned.map_err(|source| EndpointError::Spawn { source })?);
    tracing::info!(%addr, "hive-db endpoint serving /metrics, /stats and /health");
    Ok(endpoint)
}

/// What the endpoint's threads share.
struct State {
    registry: Registry,
    config: EndpointConfig,
    /// The last health check's answer and when it finished.
    health: Mutex<Option<(Instant, Response)>>,
    /// Held while a health check runs.
    checking: Mutex<()>,
    /// Connections accepted and not yet closed, queued or being served.
    in_flight: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
}

impl State {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// An accepted connection, counted in `in_flight` until dropped.
struct Connection {
    stream: TcpStream,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accepting thread: hands connections to the serving threads, or answers `503` when
/// `max_connections` are in flight already.
fn accept(state: &State, listener: &TcpListener, queue: &SyncSender<Connection>) {
    let mut last_warning: Option<Instant> = None;
    let mut last_accept = Instant::now();
    while !state.stopping() {
        let stream = match listener.accept() {
            Ok((stream, _)) => {
                last_accept = Instant::now();
                stream
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Look often while clients are coming, rarely when idle: a scrape every
                // few seconds waits at most `POLL` for its connection to be taken.
                let busy = last_accept.elapsed() < BUSY_SPELL;
                std::thread::sleep(if busy { BUSY_POLL } else { POLL });
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors, say: back off rather than spin, and warn once
                // a minute rather than on every try.
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "hive-db endpoint cannot accept a connection");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        if state.in_flight.load(Ordering::Relaxed) >= state.config.max_connections {
            refuse_busy(&stream);
            continue;
        }
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            stream,
            in_flight: Arc::clone(&state.in_flight),
        };
        match queue.try_send(connection) {
            Ok(()) => {}
            Err(TrySendError::Full(c)) => refuse_busy(&c.stream),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Answers `503` without waiting: one non-blocking write into the fresh socket's empty
/// buffer, then close.
fn refuse_busy(mut stream: &TcpStream) {
    let response = Response::text(503, "too many connections\n").header("Retry-After", "1");
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(&response.to_bytes());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A serving thread: takes connections off the queue until the endpoint stops.
fn serve_queued(state: &State, queued: &Mutex<Receiver<Connection>>) {
    loop {
        let next = lock(queued).recv_timeout(POLL);
        if state.stopping() {
            return;
        }
        match next {
            Ok(connection) => {
                // A bug in one request must not take a thread from the pool.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve_one(state, &connection.stream);
                }));
                if served.is_err() {
                    tracing::error!("hive-db endpoint: a request panicked");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn serve_one(state: &State, mut stream: &TcpStream) {
    // The listener is non-blocking; make sure its sockets are not, whatever the platform.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + state.config.request_timeout;
    let (response, drain) = match read_head(state, stream, deadline) {
        Ok(head) => match parse(&head) {
            Ok(request) => (route(state, &request), false),
            Err(refusal) => (refusal, true),
        },
        Err(HeadError::Closed | HeadError::Stopping | HeadError::Io) => return,
        Err(HeadError::Refused(r)) => (r, true),
    };
    let deadline = Instant::now() + state.config.write_timeout;
    if write_all(state, &mut stream, &response.to_bytes(), deadline).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    if drain {
        discard_input(stream);
    }
}

enum HeadError {
    /// The client closed before sending anything.
    Closed,
    Stopping,
    Io,
    /// Answer this and close.
    Refused(Response),
}

/// Reads up to the blank line that ends a request head, within `deadline`, in slices of
/// `POLL` so that the stop flag is seen.
fn read_head(
    state: &State,
    mut stream: &TcpStream,
    deadline: Instant,
) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if state.stopping() {
            return Err(HeadError::Stopping);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let r = Response::text(408, "request head not received in time\n");
            return Err(HeadError::Refused(r));
        }
        if stream.set_read_timeout(Some(left.min(POLL))).is_err() {
            return Err(HeadError::Io);
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => {
                let r = Response::text(400, "request head incomplete\n");
                return Err(HeadError::Refused(r));
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Io),
        };
        // Look for the end from a little before the new bytes: it may straddle two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[from..]) {
            head.truncate(from + end);
            check_sizes(&head, true)?;
            return Ok(head);
        }
        check_sizes(&head, false)?;
    }
}

/// The length of the head (through its blank line) in `bytes`, if complete. Bare `\n` line
/// ends are accepted too (RFC 9112 section 2.2).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Refuses a head whose request line or whole size is past its cap, as soon as it is.
fn check_sizes(head: &[u8], complete: bool) -> Result<(), HeadError> {
    let line_len = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    if line_len > MAX_REQUEST_LINE {
        // A line that starts like a request is a long target; anything else is garbage.
        let looks_like_request = head
            .iter()
            .position(|b| *b == b' ')
            .is_some_and(|sp| sp > 0 && head[..sp].iter().all(|b| is_tchar(*b)));
        return Err(HeadError::Refused(if looks_like_request {
            Response::text(414, "request line too long\n")
        } else {
            Response::text(400, "malformed request line\n")
        }));
    }
    let too_big = head.len() > MAX_REQUEST_HEAD || (!complete && head.len() == MAX_REQUEST_HEAD);
    if too_big {
        return Err(HeadError::Refused(Response::text(
            431,
            "request header fields too large\n",
        )));
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A token character of RFC 9110 section 5.6.2 (method and header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request the endpoint answers: its method and path (the query dropped).
#[derive(Debug)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// Parses a complete head. Only the request line matters to the routes; header lines are
/// checked for shape and counted.
fn parse(head: &[u8]) -> Result<Request<'_>, Response> {
    let bad = |why: &str| Response::text(400, &format!("malformed request: {why}\n"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not ASCII"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad("invalid method"));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the target is not an absolute path"));
    }
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") && v.len() == 8 => {
            return Err(Response::text(
                505,
                "only HTTP/1.0 and HTTP/1.1 are served\n",
            ));
        }
        _ => return Err(bad("invalid HTTP version")),
    }
    let mut count = 0;
    for header in lines.take_while(|l| !l.is_empty()) {
        count += 1;
        if count > MAX_HEADERS {
            return Err(Response::text(431, "too many header fields\n"));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad("a header line without a colon"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(bad("invalid header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad("a control character in a header value"));
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path })
}

fn route(state: &State, request: &Request<'_>) -> Response {
    let known = matches!(request.path, "/metrics" | "/stats" | "/health");
    if !known {
        return Response::text(404, "not found: try /metrics, /stats or /health\n");
    }
    if request.method != "GET" {
        return Response::text(405, "only GET is served\n").header("Allow", "GET");
    }
    match request.path {
        "/metrics" => Response {
            status: 200,
            content_type: PROMETHEUS_CONTENT_TYPE,
            extra: None,
            body: prometheus_text(&state.registry.stats()).into_bytes(),
        },
        "/stats" => {
            let mut snapshot = state.registry.stats();
            if !state.config.expose_paths {
                for db in &mut snapshot.databases {
                    db.path = std::path::PathBuf::new();
                }
            }
            Response::json(200, &snapshot)
        }
        _ => health(state),
    }
}

/// The cached answer to `/health`, or a new check when it is older than `health_cache`.
/// One check runs at a time: requests that arrive meanwhile get the previous answer, or,
/// before the first one, wait for it.
fn health(state: &State) -> Response {
    let cached = |fresh_only: bool| {
        lock(&state.health)
            .as_ref()
            .filter(|(at, _)| !fresh_only || at.elapsed() < state.config.health_cache)
            .map(|(_, response)| response.clone())
    };
    if let Some(response) = cached(true) {
        return response;
    }
    let _turn = match state.checking.try_lock() {
        Ok(turn) => turn,
        Err(TryLockError::Poisoned(turn)) => turn.into_inner(),
        Err(TryLockError::WouldBlock) => match cached(false) {
            Some(stale) => return stale,
            None => lock(&state.checking),
        },
    };
    // Another request may have finished a check while this one waited for its turn.
    if let Some(response) = cached(true) {
        return response;
    }
    let mut report = state.registry.health(state.config.health_timeout);
    if !state.config.expose_paths {
        redact_paths(&mut report, &state.registry.stats());
    }
    let status = if report.status == HealthStatus::Unhealthy {
        503
    } else {
        200
    };
    let response = Response::json(status, &report);
    *lock(&state.health) = Some((Instant::now(), response.clone()));
    response
}

/// Replaces each database's path, and its folder, in the report's error messages.
fn redact_paths(report: &mut HealthReport, snapshot: &RegistrySnapshot) {
    let mut paths: Vec<String> = Vec::new();
    for db in &snapshot.databases {
        paths.push(db.path.display().to_string());
        if let Some(parent) = db.path.parent().filter(|p| *p != Path::new("/")) {
            paths.push(parent.display().to_string());
        }
    }
    paths.retain(|p| !p.is_empty());
    // Longest first, so a file's path goes before its folder's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for error in report.databases.iter_mut().filter_map(|d| d.error.as_mut()) {
        for path in &paths {
            if error.contains(path.as_str()) {
                *error = error.replace(path.as_str(), "<path>");
            }
        }
    }
}

/// Writes `bytes` within `deadline`, in slices of `POLL` so that the stop flag is seen.
fn write_all(
    state: &State,
    stream: &mut &TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || state.stopping() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left.min(POLL)))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and drops what a refused client still sends, briefly, so that closing with unread
/// input does not reset the connection before the client has read the answer.
fn discard_input(mut stream: &TcpStream) {
    let end = Instant::now() + DRAIN_TIME;
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_BYTES {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// A response, rendered once: the health cache keeps one.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    content_type: &'static str,
    extra: Option<(&'static str, &'static str)>,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                content_type: "application/json",
                extra: None,
                body,
            },
            Err(e) => Self::text(500, &format!("cannot encode the answer: {e}\n")),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra = Some((name, value));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some((name, value)) = self.extra {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(head: &[u8], complete: bool) -> Option<u16> {
        match check_sizes(head, complete) {
            Err(HeadError::Refused(r)) => Some(r.status),
            _ => None,
        }
    }

    /// Bug caught: the end of a head missed when its blank line straddles two reads, or a
    /// bare-LF client never answered.
    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// Bug caught: a long target reported as malformed, or garbage reported as a long URI.
    #[test]
    fn oversized_heads_are_refused_by_kind() {
        let long_target = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(refusal(long_target.as_bytes(), false), Some(414));
        assert_eq!(
            refusal(&vec![b'\x01'; MAX_REQUEST_LINE + 1], false),
            Some(400)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}", "b".repeat(MAX_REQUEST_HEAD));
        assert_eq!(refusal(big.as_bytes(), false), Some(431));
        assert_eq!(refusal(b"GET / HTTP/1.1\r\n", false), None);
    }

    /// Bug caught: a malformed request served, or refused with the wrong status.
    #[test]
    fn malformed_requests_are_refused() {
        let status = |head: &str| parse(head.as_bytes()).err().map(|r| r.status);
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), None);
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nX: a\x07b\r\n\r\n",
            "GET /metrics SPDY\r\n\r\n",
        ] {
            assert_eq!(status(bad), Some(400), "{bad:?}");
        }
        assert_eq!(status("GET /metrics HTTP/2.0\r\n\r\n"), Some(505));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Some(431));
        let path = parse(b"GET /stats?pretty HTTP/1.1\r\n\r\n").map(|r| r.path.to_owned());
        assert_eq!(path.ok().as_deref(), Some("/stats"));
    }

    /// Bug caught: a health error message showing where a database lives (its file or its
    /// folder) without `expose_paths`.
    #[test]
    fn health_errors_lose_their_paths() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().join("secret-folder-3b7e");
        let registry = Registry::new();
        let name = crate::name::DbName::new("hidden")?;
        let config = crate::config::DbConfig {
            create_if_missing: true,
            ..crate::config::DbConfig::default()
        };
        registry.register(&name, folder.join("file-5c1d.db"), config)?;
        let snapshot = registry.stats();
        let path = snapshot.databases[0].path.display().to_string();
        let mut report = HealthReport {
            status: HealthStatus::Unhealthy,
            databases: vec![crate::health::DbHealth {
                name,
                status: HealthStatus::Unhealthy,
                latency: Duration::ZERO,
                error: Some(format!(
                    "cannot open {path}: gone; cannot create {}: denied",
                    folder.display()
                )),
            }],
            elapsed: Duration::ZERO,
        };
        redact_paths(&mut report, &snapshot);
        let error = report.databases[0].error.clone().unwrap_or_default();
        assert_eq!(
            error,
            "cannot open <path>: gone; cannot create <path>: denied"
        );
        Ok(())
    }

    /// Bug caught: a zero, huge or non-loopback setting accepted and failing later (a
    /// deadline overflow panics; zero threads serve nothing).
    #[test]
    fn config_extremes_are_refused_naming_the_field() {
        let field = |c: EndpointConfig| match c.validate() {
            Err(EndpointError::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        };
        let d = EndpointConfig::default;
        assert!(d().validate().is_ok());
        assert_eq!(field(EndpointConfig { threads: 0, ..d() }), Some("threads"));
        let huge = EndpointConfig {
            max_connections: usize::MAX,
            ..d()
        };
        assert_eq!(field(huge), Some("max_connections"));
        let forever = EndpointConfig {
            request_timeout: Duration::MAX,
            ..d()
        };
        assert_eq!(field(forever), Some("request_timeout"));
        let zero = EndpointConfig {
            write_timeout: Duration::ZERO,
            ..d()
        };
        assert_eq!(field(zero), Some("write_timeout"));
        let no_cache = EndpointConfig {
            health_cache: Duration::ZERO,
            ..d()
        };
        assert!(no_cache.validate().is_ok());
        let open = EndpointConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..d()
        };
        assert!(matches!(
            open.validate(),
            Err(EndpointError::NotLoopback { .. })
        ));
        let opted_in = EndpointConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            allow_non_loopback: true,
            ..d()
        };
        assert!(opted_in.validate().is_ok());
        let v6 = EndpointConfig {
            addr: "[::1]:0".parse().expect("address"),
            ..d()
        };
        assert!(v6.validate().is_ok());
    }
}
