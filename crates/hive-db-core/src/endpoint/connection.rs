//! One client connection as the polling thread drives it: gathering its request head,
//! waiting for the answer, writing it, then draining what the client still sends.
//! Every step is a non-blocking read or write that stops at `WouldBlock`; the poller calls
//! again when the socket is ready or a deadline has passed.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::config::EndpointConfig;
use super::http;
use super::response::Response;

/// The most a client's leftovers (a refused request's rest, a body, a pipelined request) are
/// read and dropped after the answer, so that closing does not reset the connection before
/// the client reads the answer: Linux answers a close with unread input by a reset, which
/// throws away what of the answer is still queued to send.
const DRAIN_TIME: Duration = Duration::from_millis(200);
const DRAIN_BYTES: usize = 64 * 1024;
/// Bytes read from a socket at a time.
const CHUNK: usize = 2048;

/// Where a connection is in its one exchange.
#[derive(Debug)]
enum Phase {
    /// Gathering the request head; empty until the first byte.
    Reading(Vec<u8>),
    /// The head is in; a worker or the health check is making the answer.
    Answering,
    /// Writing the answer from `written` on; then draining.
    Writing { bytes: Vec<u8>, written: usize },
    /// Answer sent and the write side shut: reading and dropping what the client still sends.
    Draining { read: usize },
}

/// What the poller does next with a connection.
#[derive(Debug)]
pub(super) enum Next {
    /// Nothing until the socket is ready again or the deadline passes.
    Wait,
    /// A complete request head, to be parsed and routed.
    Request(Vec<u8>),
    /// Close it.
    Close,
}

#[derive(Debug)]
pub(super) struct Connection {
    stream: TcpStream,
    phase: Phase,
    /// When the current phase must be over; none while the answer is being made.
    deadline: Option<Instant>,
    /// Its request is a HEAD: the answer goes without its body.
    head_only: bool,
}

impl Connection {
    pub(super) fn new(stream: TcpStream, now: Instant, config: &EndpointConfig) -> Self {
        Self {
            stream,
            phase: Phase::Reading(Vec::new()),
            deadline: Some(now + config.request_timeout),
            head_only: false,
        }
    }

    /// Its request is a HEAD: [`Connection::answer`] leaves the body out.
    pub(super) fn answer_head_only(&mut self) {
        self.head_only = true;
    }

    pub(super) fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Still waiting for its request head.
    pub(super) fn is_reading(&self) -> bool {
        matches!(self.phase, Phase::Reading(_))
    }

    /// Connected and has sent nothing yet.
    pub(super) fn is_silent(&self) -> bool {
        matches!(&self.phase, Phase::Reading(head) if head.is_empty())
    }

    /// Does what the socket may allow now: read the head, write the answer, or drain.
    pub(super) fn progress(&mut self, config: &EndpointConfig) -> Next {
        match self.phase {
            Phase::Reading(_) => self.read_head(config),
            Phase::Answering => Next::Wait,
            Phase::Writing { .. } => self.flush(),
            Phase::Draining { .. } => self.drain(),
        }
    }

    /// Starts writing `response`, within `write_timeout`, then drains what the client still
    /// sends (a refused request's rest, a body, a pipelined request) before closing.
    pub(super) fn answer(&mut self, response: &Response, config: &EndpointConfig) -> Next {
        self.phase = Phase::Writing {
            bytes: response.to_bytes(!self.head_only),
            written: 0,
        };
        self.deadline = Some(Instant::now() + config.write_timeout);
        self.flush()
    }

    /// Its deadline has passed: a client still sending its head gets `408`; any other is
    /// closed.
    pub(super) fn expire(&mut self, config: &EndpointConfig) -> Next {
        if self.is_reading() {
            let late = Response::text(408, "request head not received in time\n");
            self.answer(&late, config)
        } else {
            Next::Close
        }
    }

    fn read_head(&mut self, config: &EndpointConfig) -> Next {
        let Phase::Reading(head) = &mut self.phase else {
            return Next::Wait;
        };
        let mut chunk = [0u8; CHUNK];
        let refusal = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) if head.is_empty() => return Next::Close,
                Ok(0) => break Response::text(400, "request head incomplete\n"),
                Ok(n) => match http::push(head, &chunk[..n]) {
                    Ok(true) => {
                        let head = std::mem::take(head);
                        self.phase = Phase::Answering;
                        self.deadline = None;
                        return Next::Request(head);
                    }
                    Ok(false) => {}
                    Err(refusal) => break refusal,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        };
        self.answer(&refusal, config)
    }

    fn flush(&mut self) -> Next {
        let Phase::Writing { bytes, written } = &mut self.phase else {
            return Next::Wait;
        };
        while *written < bytes.len() {
            match self.stream.write(&bytes[*written..]) {
                Ok(0) => return Next::Close,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.phase = Phase::Draining { read: 0 };
        self.deadline = Some(Instant::now() + DRAIN_TIME);
        self.drain()
    }

    fn drain(&mut self) -> Next {
        let Phase::Draining { read } = &mut self.phase else {
            return Next::Wait;
        };
        let mut sink = [0u8; CHUNK];
        while *read < DRAIN_BYTES {
            match self.stream.read(&mut sink) {
                Ok(0) => return Next::Close,
                Ok(n) => *read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        Next::Close
    }
}

/// Answers `503` without waiting: one non-blocking write into the socket's buffer, then
/// close. For a connection past the cap, and for the one closed to make room for it.
pub(super) fn refuse_busy(stream: &mut TcpStream) {
    let response = Response::text(503, "too many connections\n").header("Retry-After", "1");
    let _ = stream.write(&response.to_bytes(true));
    let _ = stream.shutdown(Shutdown::Both);
}
