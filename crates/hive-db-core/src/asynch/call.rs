//! An async call as its database's threads see it: the caller's closure and its reply, type
//! erased, run through the same `Database` paths as the sync calls.

use std::any::Any;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use crate::asynch::oneshot::Reply;
use crate::batch::{BatchFailure, CommitSlot, Member, WriteTx};
use crate::database::{Acquired, Database};
use crate::error::Error;
use crate::name::DbName;
use crate::sync::panic_message;

/// A panic of a closure as its caller's error.
pub(crate) fn panicked<E: From<Error>>(
    db: &DbName,
    op: &'static str,
    panic: &(dyn Any + Send),
) -> E {
    Error::Panicked {
        db: db.clone(),
        op,
        message: panic_message(panic),
    }
    .into()
}

/// A read waiting for a reader thread.
pub(crate) trait ReadJob: Send {
    /// Runs the closure on a pooled connection and replies; skips it if its future was
    /// dropped. A panic in the closure is the caller's error; the thread carries on.
    fn run(self: Box<Self>, db: &Database);
}

pub(crate) struct ReadCall<F, T, E> {
    pub(crate) f: F,
    pub(crate) reply: Reply<Result<T, E>>,
    pub(crate) site: &'static Location<'static>,
    /// When the call was made, and until when it may wait (in the queue, then for a
    /// connection): `connection_timeout` from the call, as a sync read's wait.
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
}

impl<F, T, E> ReadJob for ReadCall<F, T, E>
where
    F: FnOnce(&Connection) -> Result<T, E> + Send,
    T: Send,
    E: From<Error> + Send,
{
    fn run(self: Box<Self>, db: &Database) {
        let Self {
            f,
            reply,
            site,
            start,
            deadline,
        } = *self;
        if !reply.start() {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            db.read_on_pool_until(start, deadline, site, f)
        }))
        .unwrap_or_else(|panic| Err(panicked(&db.info().name, "read", &*panic)));
        reply.send(result);
    }
}

/// A written call's value, waiting for the commit of the transaction it is in.
pub(crate) struct AwaitingCommit {
    pub(crate) slot: Arc<CommitSlot>,
    pub(crate) done: Box<dyn FnOnce(Result<(), BatchFailure>) + Send>,
}

/// A write waiting for its turn in the writer lane.
pub(crate) trait WriteJob: Send {
    /// Marks the call started when its turn comes; `false` if its future was dropped.
    fn start(&self) -> bool;

    /// True when its future was dropped, or it expired, before it started.
    fn is_skipped(&self) -> bool;

    /// Resolves its future to `timeout` unless it started (then `false`); it is skipped.
    fn expire(&self, timeout: Error) -> bool;

    /// Runs the closure in its turn (`acquired`, asked for at `start` until `deadline`),
    /// through [`Database::write_in_turn`]. Replies at once unless the work waits for its
    /// transaction's commit: then returns what to do once the commit is settled.
    fn run(
        self: Box<Self>,
        db: &Database,
        start: Instant,
        deadline: Instant,
        acquired: Acquired<'_>,
    ) -> Option<AwaitingCommit>;
}

pub(crate) struct WriteCall<F, T, E> {
    pub(crate) f: F,
    pub(crate) reply: Reply<Result<T, E>>,
    pub(crate) site: &'static Location<'static>,
}

impl<F, T, E> WriteJob for WriteCall<F, T, E>
where
    F: FnOnce(&WriteTx<'_>) -> Result<T, E> + Send,
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    fn start(&self) -> bool {
        self.reply.start()
    }

    fn is_skipped(&self) -> bool {
        self.reply.is_skipped()
    }

    fn expire(&self, timeout: Error) -> bool {
        self.reply.expire(Err(timeout.into()))
    }

    fn run(
        self: Box<Self>,
        db: &Database,
        start: Instant,
        deadline: Instant,
        acquired: Acquired<'_>,
    ) -> Option<AwaitingCommit> {
        let Self { f, reply, site } = *self;
        let name = &db.info().name;
        let (member, slot) = match db.write_in_turn(start, deadline, acquired, site, f) {
            Ok(ran) => ran,
            Err(err) => {
                reply.send(Err(err));
                return None;
            }
        };
        match (member, slot) {
            (Member::Done(Ok(value)), Some(slot)) => {
                let name = name.clone();
                let done = Box::new(move |outcome: Result<(), BatchFailure>| {
                    reply.send(
                        outcome
                            .map(|()| value)
                            .map_err(|failure| failure.into_error(&name).into()),
                    );
                });
                Some(AwaitingCommit { slot, done })
            }
            (Member::Done(result), _) => {
                reply.send(result);
                None
            }
            (Member::Failed(err), _) => {
                reply.send(Err(err.into()));
                None
            }
            (Member::Panicked(panic), _) => {
                reply.send(Err(panicked(name, "write", &*panic)));
                None
            }
        }
    }
}
