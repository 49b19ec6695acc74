//! Endpoints for the tests: a registry's `/stats` and `/health`, and servers that are not
//! hive-db endpoints.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hive_db_core::Registry;
use hive_db_core::endpoint::{self, Announce, Endpoint, EndpointConfig, EndpointError};

type Handler = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// The body of a hive-db endpoint's answer at its connection limit: [`FakeServer`] sends it
/// with its status 503 and `Retry-After: 1`, as the endpoint does.
pub(crate) const BUSY: &str = "too many connections\n";

/// A tiny HTTP server on loopback answering each GET with `handler(path)`; stops on drop.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub(crate) fn start(
        handler: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let handler = Arc::clone(&handler);
                            std::thread::spawn(move || {
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                                let mut reader = BufReader::new(&stream);
                                let mut line = String::new();
                                if reader.read_line(&mut line).is_err() {
                                    return;
                                }
                                // Skip the headers.
                                let mut h = String::new();
                                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                                    h.clear();
                                }
                                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                                let (status, body) = handler(&path);
                                // As a hive-db endpoint at its connection limit answers.
                                let retry = if status == 503 && body == BUSY {
                                    "Retry-After: 1\r\n"
                                } else {
                                    ""
                                };
                                let mut w = &stream;
                                let _ = write!(
                                    w,
                                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
                                    body.len()
                                );
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn url(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `registry` serving its endpoint on loopback, with paths shown so the monitor can read
/// the files' facts too; not announced, so the user's own monitors never see it.
pub(crate) fn serve_registry(registry: &Registry) -> Result<Endpoint, EndpointError> {
    endpoint::serve(
        registry,
        EndpointConfig {
            expose_paths: true,
            announce: Announce::Off,
            ..EndpointConfig::default()
        },
    )
}
