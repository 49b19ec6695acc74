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

mod config;
mod health;
mod http;
mod response;
mod routes;
mod workers;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::registry::Registry;
use response::Response;
use workers::{Connection, accept, serve_queued};

pub use config::{EndpointConfig, EndpointError};
pub use http::{MAX_HEADERS, MAX_REQUEST_HEAD, MAX_REQUEST_LINE};

/// How often blocked threads look at the stop flag: the bound on [`Endpoint::stop`] when no
/// health check is running.
const POLL: Duration = Duration::from_millis(25);

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
/// - `/metrics`: [`prometheus_text`](crate::prometheus_text) of a snapshot taken on request,
///   `Content-Type: text/plain; version=0.0.4`;
/// - `/stats`: the [`RegistrySnapshot`](crate::RegistrySnapshot) as JSON (paths empty unless
///   [`EndpointConfig::expose_paths`]);
/// - `/health`: the [`HealthReport`](crate::HealthReport) as JSON, `200` when healthy or
///   degraded, `503` when unhealthy; one check answers for
///   [`EndpointConfig::health_cache`], and while a new one runs, requests get the previous
///   answer.
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
