//! Subscribers in other processes, on PostgreSQL: an [`EventListener`] holds one connection
//! of its own, outside the pool, that `LISTEN`s on the channel every publish notifies. A
//! notification only wakes it: it reads the events table after the last `seq` it delivered,
//! so events come in store order, each once, and after a lost connection it reconnects and
//! catches up from the table: nothing published meanwhile is missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hive_db_core::PgHandle;
use hive_db_core::postgres::Client;
use hive_db_core::postgres::fallible_iterator::FallibleIterator;
use hive_db_core::{Backend, DbName};

use super::pg::{CHANNEL, LAST_SEQ, each_event_after};
use super::{Event, EventStore, Subscribers, SubscriptionId};
use crate::error::{Error, Result};

/// The listener's `application_name`, so operators (and tests) can find its connection.
pub const LISTENER_APPLICATION_NAME: &str = "ecosystemiser-event-listener";

/// How long the listener waits for a notification before it reads the table anyway (which
/// also finds a dead connection), and how soon a dropped listener stops.
const TICK: Duration = Duration::from_millis(250);
/// Events read per catch-up query.
const BATCH: i64 = 500;
/// The longest pause between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Shared {
    subscribers: Subscribers,
    stop: AtomicBool,
    last_seq: AtomicI64,
    reconnects: AtomicU64,
    skipped: AtomicU64,
}

/// Delivers every event stored in a PostgreSQL EcoSystemiser database after it started,
/// whoever published it (this process or another), to its own subscribers: in store order,
/// each once, on its own thread. Made by [`EventStore::listen`]; dropping it stops it.
pub struct EventListener {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EventListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventListener")
            .field("last_seq", &self.last_seq())
            .field("reconnects", &self.reconnects())
            .field("skipped", &self.skipped())
            .field("subscribers", &self.shared.subscribers.len())
            .finish()
    }
}

impl EventStore {
    /// Starts a listener of this database's events on a connection of its own, outside the
    /// pool (made as the pool's are: `PgHandle::connect`). Every event stored after this
    /// returns is delivered to the listener's subscribers, on the listener's thread,
    /// including those that were published while its connection was lost (it reconnects
    /// and reads them from the table).
    ///
    /// # Errors
    ///
    /// [`Error::WrongEngine`] on SQLite (its subscribers are this process's: see
    /// [`EventStore::subscribe`]); the core's errors, and [`Error::Postgres`], when the first
    /// connection fails.
    pub fn listen(&self) -> Result<EventListener> {
        let db = self.db.name().clone();
        if self.db.engine() != Backend::Postgres {
            return Err(Error::WrongEngine {
                db,
                call: "EventStore::listen",
                needs: Backend::Postgres,
                actual: self.db.engine(),
            });
        }
        let config = self.db.postgres()?;
        let mut client = connect(&db, &config)?;
        let start: i64 = client
            .query_one(LAST_SEQ, &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| Error::pg(&db, "read the last event", e))?;
        let shared = Arc::new(Shared::default());
        shared.last_seq.store(start, Ordering::Relaxed);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("ecosystemiser-events".to_owned())
                .spawn(move || run(&db, &config, Some(client), &shared))
                .map_err(|source| Error::Io {
                    op: "start the event listener thread",
                    path: std::path::PathBuf::new(),
                    source,
                })?
        };
        Ok(EventListener {
            shared,
            thread: Some(thread),
        })
    }
}

/// The longest the listener's catch-up waits for a lock on the events table (a `LOCK
/// TABLE`, a `TRUNCATE` in a transaction): past it the query fails and the listener
/// reconnects and tries again. Unbounded, it waited as long as the lock was held, and so did
/// dropping the listener, which joins its thread.
const LOCK_WAIT: &str = "2s";

fn connect(db: &DbName, pg: &PgHandle) -> Result<Client> {
    let mut client = pg.connect()?;
    client
        .batch_execute(&format!(
            "SET application_name = '{LISTENER_APPLICATION_NAME}'; \
             SET lock_timeout = '{LOCK_WAIT}'; LISTEN {CHANNEL}"
        ))
        .map_err(|e| Error::pg(db, "listen for events", e))?;
    Ok(client)
}

/// The listener's thread: wait, catch up, and on any error reconnect and catch up again.
fn run(db: &DbName, config: &PgHandle, mut client: Option<Client>, shared: &Shared) {
    let mut backoff = Duration::from_millis(50);
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            match connect(db, config) {
                Ok(c) => {
                    client = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %hive_db_core::error_chain(&e),
                        "the event listener cannot reconnect; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        if let Err(e) = step(db, c, shared) {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %hive_db_core::error_chain(&e),
                last_seq = shared.last_seq.load(Ordering::Relaxed),
                "the event listener lost its connection; reconnecting to catch up");
            client = None;
        }
    }
}

/// Reads and delivers every event after the last one delivered, then waits up to [`TICK`]
/// for a notification.
fn step(db: &DbName, client: &mut Client, shared: &Shared) -> Result<()> {
    loop {
        let from = shared.last_seq.load(Ordering::Relaxed);
        let events = each_event_after(db, client, from, BATCH)?;
        let full = events.len() as i64 == BATCH;
        for (seq, event) in events {
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match event {
                Ok(event) => shared.subscribers.deliver(&event),
                // Read again, it would fail again: skipped, so the events after it still come.
                Err(e) => {
                    shared.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(seq, error = %hive_db_core::error_chain(&e),
                        "the event listener cannot read a stored event; skipped");
                }
            }
            shared.last_seq.store(seq, Ordering::Relaxed);
        }
        if !full {
            break;
        }
    }
    let mut notifications = client.notifications();
    // One notification is enough to wake: the table says what is new. Drain the rest.
    notifications
        .timeout_iter(TICK)
        .next()
        .map_err(|e| Error::pg(db, "wait for events", e))?;
    while notifications
        .iter()
        .next()
        .map_err(|e| Error::pg(db, "wait for events", e))?
        .is_some()
    {}
    Ok(())
}

impl EventListener {
    /// Calls `callback` on the listener's thread for each event it delivers whose type
    /// matches `pattern` (see [`Pattern`](super::Pattern)). A callback that panics is logged
    /// and skipped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad pattern.
    pub fn subscribe(
        &self,
        pattern: &str,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<SubscriptionId> {
        self.shared.subscribers.add(pattern, callback)
    }

    /// Removes a subscription; false if it was not there.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.shared.subscribers.remove(id)
    }

    /// The `seq` of the last event delivered (or, before the first, of the last one stored
    /// when the listener started).
    pub fn last_seq(&self) -> i64 {
        self.shared.last_seq.load(Ordering::Relaxed)
    }

    /// Stored events the listener could not read (a payload that is not JSON, written by
    /// something other than [`EventStore::publish`]), skipped with a warning each.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// How often the listener lost its connection (and caught up after reconnecting).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }
}

/// The longest dropping a listener waits for its thread to end.
const DROP_WAIT: Duration = Duration::from_secs(3);

impl Drop for EventListener {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // A panicking subscriber is caught where it is called; the thread ends within a
        // tick, a lock wait or a connect. Not for certain: a statement on a backend that
        // stopped answering (frozen, its host alive) has no bound in the client, and a
        // join would hold the dropping thread as long. Past the wait the thread is left to
        // end by itself once its statement does; it delivers nothing more.
        let deadline = std::time::Instant::now() + DROP_WAIT;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(
                "the event listener's thread did not end within {DROP_WAIT:?} (its server \
                 stopped answering?); left to end by itself"
            );
        }
    }
}
