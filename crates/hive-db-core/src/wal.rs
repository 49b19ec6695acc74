//! The WAL hook every connection carries, and the checkpoint primitive: SQLite's own
//! automatic checkpoint, moved to where the writer lane can run it outside the commit.

use std::cell::Cell;
use std::ffi::c_int;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

/// The auto-checkpoint threshold: a commit that leaves this many frames in the WAL starts a
/// passive checkpoint. Four times SQLite's default of 1000 (16 MiB of 4 KiB pages): each
/// checkpoint costs fsyncs of the WAL and the file, and copies the pages written since the
/// last one, which under a steady load are mostly the same hot pages (the right edges of
/// tables and indexes) written again and again. At 1000 frames the checkpoint threads took
/// about a tenth of the load test's CPU; at 4000 it ran about 11% faster (medians of five
/// runs each, same binary otherwise).
pub(crate) const AUTOCHECKPOINT_FRAMES: c_int = 4000;

/// WAL size, in frames, past which a writer waits for the background checkpoint pass
/// instead of going on appending: four times SQLite's auto-checkpoint size. In steady running
/// the WAL stays under it.
pub(crate) const WAL_FRAMES_LIMIT: c_int = 4 * AUTOCHECKPOINT_FRAMES;

/// The size, in bytes, SQLite truncates the WAL file to when it starts the WAL again after a
/// checkpoint (`PRAGMA journal_size_limit`): [`WAL_FRAMES_LIMIT`] plus one auto-checkpoint's
/// worth of frames of 4 KiB pages, about 82 MB.
///
/// Above what steady running reaches, so an ordinary WAL cycle never truncates the file:
/// a WAL truncated at each restart is grown again block by block, and that allocation cost a
/// small write about a quarter of its time (an event publish ran 35% faster without it).
/// A WAL that a long reader made grow past it returns to this size on disk.
pub(crate) const JOURNAL_SIZE_LIMIT: i64 =
    (WAL_FRAMES_LIMIT + AUTOCHECKPOINT_FRAMES) as i64 * (4096 + 24);

thread_local! {
    /// True while the writer lane commits on this thread: a due checkpoint is then only
    /// recorded, to be run once the lane has passed on.
    static DEFER_CHECKPOINT: Cell<bool> = const { Cell::new(false) };
    /// The WAL's frames after a deferred commit that left a checkpoint due.
    static CHECKPOINT_DUE: Cell<Option<c_int>> = const { Cell::new(None) };
}

/// Replaces SQLite's auto-checkpoint hook, which would run the checkpoint (with its fsyncs)
/// inside the committing statement. Outside the writer lane it does what SQLite's does; inside
/// it, it leaves the checkpoint to [`commit_deferring_checkpoint`]'s caller, so that the
/// writers queued behind do not wait for the disk.
pub(crate) fn wal_hook(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    if frames < AUTOCHECKPOINT_FRAMES {
        return Ok(());
    }
    if DEFER_CHECKPOINT.get() {
        CHECKPOINT_DUE.set(Some(frames));
    } else if let Err(e) = wal.checkpoint() {
        // As with SQLite's own hook, a failed checkpoint does not fail the commit, which has
        // happened; the next commit tries again.
        tracing::debug!(error = %e, "automatic checkpoint failed");
    }
    // An error returned here would be reported as the commit's, though the commit happened.
    Ok(())
}

/// Runs `commit` with the automatic checkpoint deferred. Returns its result, and the WAL's
/// frames if they have reached [`AUTOCHECKPOINT_FRAMES`], so that the caller should
/// checkpoint.
pub(crate) fn commit_deferring_checkpoint<T>(commit: impl FnOnce() -> T) -> (T, Option<c_int>) {
    CHECKPOINT_DUE.set(None);
    DEFER_CHECKPOINT.set(true);
    let deferring = crate::sync::defer(|| DEFER_CHECKPOINT.set(false));
    let result = commit();
    drop(deferring);
    (result, CHECKPOINT_DUE.take())
}

/// What one passive checkpoint did, as `PRAGMA wal_checkpoint` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpointed {
    /// Whether a reader or writer kept it from finishing.
    pub(crate) busy: bool,
    /// Frames in the WAL.
    pub(crate) wal_frames: i64,
    /// Frames of the WAL copied to the database, by this checkpoint and those before it
    /// since the WAL last restarted.
    pub(crate) copied: i64,
}

/// A passive checkpoint, as SQLite's automatic one: it copies what it can without waiting for
/// readers or writers.
pub(crate) fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Checkpointed> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Checkpointed {
            busy: r.get::<_, i64>(0)? != 0,
            wal_frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}
