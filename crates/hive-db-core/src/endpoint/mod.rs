//! The optional HTTP endpoint: `/metrics`, `/stats` and `/health` of a live registry.
//!
//! A small HTTP/1.1 server with no async runtime and no HTTP crate, one request per
//! connection. One thread watches every socket through `mio` (epoll): it accepts, reads
//! request heads and writes answers without ever blocking, so an idle or trickling client
//! costs a socket and a few bytes, not a thread. A fixed few worker threads build the answers
//! that take time (a snapshot, a health check). Every request head has a deadline and a
//! size cap, every answer a write deadline, and the open connections a cap: past it the
//! oldest connection that has sent nothing makes room, so a scrape is answered while
//! hundreds of idle or slow sockets are open.
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

mod announce;
mod config;
mod connection;
mod health;
mod http;
mod poller;
mod response;
mod routes;
mod state;
mod workers;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::{Interest, Poll, Waker};

use crate::registry::Registry;
use announce::{Announced, announce};
use poller::{LISTENER, Poller, WAKER};
use state::State;
use workers::work;

pub use config::{Announce, EndpointConfig, EndpointError};
pub use http::{MAX_HEADERS, MAX_REQUEST_HEAD, MAX_REQUEST_LINE};

/// A running endpoint. It stops when dropped or on [`stop`](Self::stop).
///
/// It holds a clone of its registry, so the registry's pools stay open while it runs.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Wakes the polling thread to see `stopping`.
    waker: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
    /// Its announcement, removed first when it stops.
    announced: Option<Announced>,
}

impl Endpoint {
    /// The address it listens on, with the real port when the configured one was 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file announcing it ([`EndpointConfig::announce`]), while it runs; `None` when
    /// announcing is off or the file could not be written.
    pub fn announcement(&self) -> Option<&Path> {
        self.announced.as_ref().map(Announced::path)
    }

    /// Stops accepting, closes every open connection (answered or not), and joins every
    /// thread. Returns at once, or, when a worker is building an answer, once it is built:
    /// within the health check's timeout for a check.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        // First, so that no monitor finds an endpoint that no longer answers.
        self.announced = None;
        self.stopping.store(true, Ordering::Relaxed);
        if self.waker.wake().is_err() {
            tracing::error!("cannot wake the hive-db endpoint's polling thread to stop it");
        }
        // The polling thread first: it holds the sender of the workers' jobs, so its end
        // ends them.
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
/// Unless [`EndpointConfig::announce`] is [`Announce::Off`], the endpoint announces its
/// address in this user's folder (see [`discovery`](crate::discovery)), so that `db-monitor`
/// with no arguments finds it; the file is removed when the endpoint stops.
///
/// `HEAD` is answered as `GET` without the body. Anything else: `404` for another path,
/// `405` for another method on these, `400` for a
/// malformed request, `414` for a request line over [`MAX_REQUEST_LINE`] bytes, `431` for a
/// head over [`MAX_REQUEST_HEAD`] bytes or [`MAX_HEADERS`] lines, `408` when the head does not
/// arrive within [`EndpointConfig::request_timeout`], `503` to a connection closed to make
/// room past [`EndpointConfig::max_connections`], or refused there when every open one is
/// being answered.
///
/// # Errors
///
/// [`EndpointError::NotLoopback`] for an address other hosts can reach without
/// [`EndpointConfig::allow_non_loopback`]; [`EndpointError::InvalidConfig`] naming the field;
/// [`EndpointError::Bind`] when the address cannot be bound; [`EndpointError::Poll`] when
/// the system refuses the poller; [`EndpointError::Spawn`] when a thread cannot be started.
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
    // Non-blocking: the polling thread never waits on one socket.
    listener.set_nonblocking(true).map_err(bind_err)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll_err = |source| EndpointError::Poll { source };
    let poll = Poll::new().map_err(poll_err)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(poll_err)?);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(poll_err)?;

    let stopping = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State {
        registry: registry.clone(),
        config,
    });
    let (jobs, queued) = mpsc::channel();
    let (done, finished) = mpsc::channel();
    let queued = Arc::new(Mutex::new(queued));
    let mut endpoint = Endpoint {
        addr,
        stopping: Arc::clone(&stopping),
        waker: Arc::clone(&waker),
        threads: Vec::new(),
        announced: None,
    };
    // Thread names show the port (`top -H`, /proc/PID/task/*/comm: 15 characters at most).
    let thread_name = format!("hive-http-{}", addr.port());
    let poller = Poller {
        poll,
        listener,
        state: Arc::clone(&state),
        stopping,
        jobs,
        done: finished,
    };
    let spawned = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || poller.run());
    // On error, dropping `endpoint` stops the threads already started.
    endpoint
        .threads
        .push(spawned.map_err(|source| EndpointError::Spawn { source })?);
    for _ in 0..state.config.threads {
        let (state, queued, done, waker) = (
            Arc::clone(&state),
            Arc::clone(&queued),
            done.clone(),
            Arc::clone(&waker),
        );
        let spawned = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || work(&state, &queued, &done, &waker));
        endpoint
            .threads
            .push(spawned.map_err(|source| EndpointError::Spawn { source })?);
    }
    // Once every thread runs: a monitor that reads the file finds it answering.
    endpoint.announced = announce(&state.config.announce, addr);
    tracing::info!(%addr, "hive-db endpoint serving /metrics, /stats and /health");
    Ok(endpoint)
}
