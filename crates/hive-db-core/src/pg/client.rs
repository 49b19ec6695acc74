//! The `postgres::Client` kept off the caller's thread where the client's own tokio runtime
//! would block it: a pooled client closed on a thread of its own ([`PgClient`]), and work
//! that connects run on one ([`off_runtime`]). On a thread that drives another runtime the
//! client's `block_on` panics (and a panic in a destructor there aborted the process); and
//! a client's drop waits for a server that does not answer.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use postgres::Client;

use crate::pool::{Closing, DbInfo};

/// How long closing a client may keep the thread that drops it: a client's drop waits for
/// its connection to end, which takes a server that answers when a request is still out (a
/// round trip given up on a silent server, say).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A `postgres::Client` in a pool, closed on a thread of its own when dropped.
///
/// A client's drop blocks on its own tokio runtime until its connection ends, which panics
/// on a thread that drives another runtime (a registry dropped or closed at the end of an
/// `async fn main`: the panic in a destructor aborted the process), and waits for good on a
/// server that stopped answering with a request out. The closing thread is waited for up to
/// [`CLOSE_WAIT`]; past that it finishes on its own. Boxed: r2d2 moves connections by value.
pub(crate) struct PgClient(Option<Box<Client>>);

impl PgClient {
    pub(super) fn new(client: Client) -> Self {
        Self(Some(Box::new(client)))
    }
}

/// Nothing to do before the close: its drop does the closing.
impl Closing for PgClient {
    fn closing(&mut self, _: &DbInfo) {}
}

impl Deref for PgClient {
    type Target = Client;
    #[inline]
    fn deref(&self) -> &Client {
        match &self.0 {
            Some(client) => client,
            None => unreachable!("a client is taken only by its drop"),
        }
    }
}

impl DerefMut for PgClient {
    #[inline]
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.0 {
            Some(client) => client,
            None => unreachable!("a client is taken only by its drop"),
        }
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        let (done, closed) = std::sync::mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("hive-pg-close".to_owned())
            .spawn(move || {
                drop(client);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                if closed.recv_timeout(CLOSE_WAIT).is_err() {
                    tracing::debug!(
                        "a PostgreSQL client's close outlasted {CLOSE_WAIT:?}; left to finish on its own thread"
                    );
                }
            }
            // The client went with the closure, closed here.
            Err(e) => tracing::warn!(error = %e, "no thread to close a PostgreSQL client on"),
        }
    }
}

/// Runs `f` on a thread of its own and returns what it returned (its panic resumed here):
/// for the client's work outside the caller's closures, which must not run on a thread that
/// drives a tokio runtime (the client's own runtime panics there). Runs `f` here when no
/// thread can be had.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let f = std::sync::Mutex::new(Some(f));
    let take = || crate::sync::lock(&f).take();
    let ran = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("hive-pg-open".to_owned())
            .spawn_scoped(s, || take().map(|f| f()))
            .map(std::thread::ScopedJoinHandle::join)
    });
    match ran {
        Ok(Ok(Some(value))) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread: `f` is still here.
        Ok(Ok(None)) | Err(_) => match take() {
            Some(f) => f(),
            None => unreachable!("`f` ran on a thread that was not spawned"),
        },
    }
}
