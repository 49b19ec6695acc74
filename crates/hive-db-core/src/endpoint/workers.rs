//! The accepting thread and the serving threads: the connection cap, one request per
//! connection, writes within a deadline, and draining what a refused client still sends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{HeadError, is_timeout, parse, read_head};
use super::response::Response;
use super::routes::route;
use super::{POLL, State};
use crate::sync::lock;

/// How often the accepting thread looks for connections within `BUSY_SPELL` of the last one.
const BUSY_POLL: Duration = Duration::from_millis(1);
const BUSY_SPELL: Duration = Duration::from_secs(1);
/// The most a thread spends reading and discarding what a refused client still sends, so
/// that closing does not reset the connection before the client reads the answer.
const DRAIN_TIME: Duration = Duration::from_millis(200);
const DRAIN_BYTES: usize = 64 * 1024;

/// An accepted connection, counted in `in_flight` until dropped.
pub(super) struct Connection {
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
pub(super) fn accept(state: &State, listener: &TcpListener, queue: &SyncSender<Connection>) {
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
pub(super) fn serve_queued(state: &State, queued: &Mutex<Receiver<Connection>>) {
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
