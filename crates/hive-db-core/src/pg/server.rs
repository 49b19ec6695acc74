//! What a PostgreSQL server says about itself ([`ServerFacts`] and its write position), in one
//! statement that works on a primary and on a standby; the role check of `register`; and the
//! sorting of the client's connect errors into refusals that waiting does not fix.

use std::time::Instant;

use postgres::Client;

use crate::error::Refusal;
use crate::stats::ServerFacts;

/// One statement, one round trip: version, role, read-only default, client connections,
/// `max_connections`, and the WAL position as bytes from the start: replayed on a standby;
/// on a primary, inserted (with asynchronous commit a commit is visible before its WAL is
/// written), and, when that sits just past a page's header (24 bytes) or a segment's (40),
/// the boundary before it: no record is there yet, and a caught-up standby's replay stops
/// at the boundary, so the raw position would make it lag for as long as the primary stays
/// idle after a WAL switch.
const FACTS: &str = "SELECT current_setting('server_version'), pg_is_in_recovery(), \
     current_setting('default_transaction_read_only') = 'on', \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int4, \
     current_setting('max_connections')::int4, \
     COALESCE(CASE WHEN pg_is_in_recovery() \
         THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0') \
         ELSE (SELECT CASE WHEN i % seg = 40 THEN i - 40 WHEN i % blk = 24 THEN i - 24 \
                   ELSE i END \
               FROM (SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0') AS i, \
                            current_setting('wal_block_size')::numeric AS blk, \
                            (SELECT setting::numeric FROM pg_settings \
                             WHERE name = 'wal_segment_size') AS seg) AS pos) \
     END, 0)::int8, \
     CASE WHEN NOT pg_is_in_recovery() \
         THEN ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int4 \
     END, \
     EXISTS (SELECT 1 FROM pg_stat_wal_receiver), \
     (SELECT status FROM pg_stat_wal_receiver), \
     (SELECT received_tli FROM pg_stat_wal_receiver)";

/// A standby's WAL receiver, as `pg_stat_wal_receiver` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Receiver {
    /// `streaming`, `waiting`, `starting`...; `None` to a role without `pg_read_all_stats`,
    /// which sees only that there is one.
    pub(super) status: Option<String>,
    /// The timeline of the WAL it last received (`None` as `status`).
    pub(super) timeline: Option<u32>,
}

/// A server's facts as measured at `at`, with its WAL position.
#[derive(Debug, Clone)]
pub(super) struct Measured {
    pub(super) at: Instant,
    pub(super) version: String,
    pub(super) in_recovery: bool,
    pub(super) read_only: bool,
    pub(super) connections: u32,
    pub(super) max_connections: u32,
    /// Bytes of WAL written (a primary) or replayed (a standby).
    pub(super) wal: u64,
    /// The timeline a primary writes.
    pub(super) timeline: Option<u32>,
    /// A standby's WAL receiver, if it has one.
    pub(super) receiver: Option<Receiver>,
}

impl Measured {
    /// Asks the server on `client`.
    pub(super) fn query(client: &mut Client) -> Result<Self, postgres::Error> {
        // Read before the query is sent: the server's position is at least as new as its
        // state then, so a lag reckoned from it errs long. Read after the answer, a slow
        // round trip made a replica look fresher than it was (reads past the lag bound).
        let at = Instant::now();
        let row = client.query_one(FACTS, &[])?;
        let count = |i: usize| -> Result<u32, postgres::Error> {
            Ok(u32::try_from(row.try_get::<_, i32>(i)?).unwrap_or(0))
        };
        Ok(Self {
            at,
            version: row.try_get(0)?,
            in_recovery: row.try_get(1)?,
            read_only: row.try_get(2)?,
            connections: count(3)?,
            max_connections: count(4)?,
            wal: u64::try_from(row.try_get::<_, i64>(5)?).unwrap_or(0),
            timeline: row
                .try_get::<_, Option<i32>>(6)?
                .and_then(|t| u32::try_from(t).ok()),
            receiver: row.try_get::<_, bool>(7)?.then_some(()).map(|()| Receiver {
                status: row.try_get(8).ok().flatten(),
                timeline: row
                    .try_get::<_, Option<i32>>(9)
                    .ok()
                    .flatten()
                    .and_then(|t| u32::try_from(t).ok()),
            }),
        })
    }

    /// Why a standby is not following the primary that writes `timeline`: it has no WAL
    /// receiver, its receiver is not streaming, or it streams another timeline (after a
    /// failover, one left following the old primary holds writes the new one lost and lacks
    /// the new one's, however close its position). `None` when it follows, or when this role
    /// may not see its receiver's state (without `pg_read_all_stats`).
    pub(super) fn not_following(&self, timeline: Option<u32>) -> Option<String> {
        let Some(receiver) = &self.receiver else {
            return Some("it has no WAL receiver: it is not streaming from a primary".to_owned());
        };
        let status = receiver.status.as_deref()?;
        if status != "streaming" {
            return Some(format!("its WAL receiver is {status}, not streaming"));
        }
        match (receiver.timeline, timeline) {
            (Some(theirs), Some(primary)) if theirs != primary => Some(format!(
                "it streams timeline {theirs} while the primary writes timeline {primary}: it \
                 follows a server that is no longer the primary"
            )),
            _ => None,
        }
    }

    /// The public facts, aged as of now.
    pub(super) fn facts(&self) -> ServerFacts {
        ServerFacts {
            version: self.version.clone(),
            in_recovery: self.in_recovery,
            read_only: self.read_only,
            connections: self.connections,
            max_connections: self.max_connections,
            age_ms: u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Why a server registered as the primary (`primary`) or as a replica cannot be one.
    pub(super) fn wrong_role(&self, primary: bool) -> Option<Refusal> {
        if primary && (self.in_recovery || self.read_only) {
            Some(Refusal::NotWritable)
        } else if !primary && !self.in_recovery {
            Some(Refusal::NotAReplica)
        } else {
            None
        }
    }
}

/// The refusal behind a connect error, when waiting cannot fix it: a login refused (28P01,
/// 28000; 28000 for want of TLS is [`Refusal::TlsRequired`]), a database that does not
/// exist (3D000), or one the role may not connect to (42501 from the server's check of the
/// `CONNECT` privilege, `CheckMyDatabase`, told by its routine, which a server with
/// translated messages sends untranslated, or by its English message; other 42501s at
/// connect are states of the server that pass, binary-upgrade mode letting only superusers
/// in, say).
pub(super) fn refusal(e: &postgres::Error) -> Option<Refusal> {
    let db = e.as_db_error()?;
    match db.code().code() {
        "28000" if db.message().contains("no encryption") => Some(Refusal::TlsRequired),
        "28P01" | "28000" => Some(Refusal::Authentication),
        "3D000" => Some(Refusal::NoSuchDatabase),
        "42501"
            if db.routine() == Some("CheckMyDatabase")
                || db.message().starts_with("permission denied for database") =>
        {
            Some(Refusal::NoConnectPrivilege)
        }
        _ => None,
    }
}

/// Whether the client gave up connecting because no host would take writes (a URL with
/// `target_session_attrs=read-write` whose every server is a standby or read-only): during a
/// failover, until a standby is promoted.
pub(super) fn no_writable_host(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::PermissionDenied;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(receiver: Option<Receiver>) -> Measured {
        Measured {
            at: Instant::now(),
            version: "15".to_owned(),
            in_recovery: true,
            read_only: true,
            connections: 1,
            max_connections: 100,
            wal: 0,
            timeline: None,
            receiver,
        }
    }

    fn receiver(status: Option<&str>, timeline: Option<u32>) -> Option<Receiver> {
        Some(Receiver {
            status: status.map(str::to_owned),
            timeline,
        })
    }

    /// Bug caught: a standby judged by its position alone. After a failover one left on the
    /// old primary's timeline (or not streaming at all) looked fresh and took reads that
    /// missed the new primary's writes and showed rows the failover lost. One this role may
    /// not see the receiver of is still taken (nothing tells it apart).
    #[test]
    fn a_standby_follows_only_streaming_the_primarys_timeline() {
        let follows = |r: Option<Receiver>, tli: Option<u32>| standby(r).not_following(tli);
        assert_eq!(follows(receiver(Some("streaming"), Some(2)), Some(2)), None);
        assert_eq!(follows(receiver(Some("streaming"), Some(2)), None), None);
        assert_eq!(follows(receiver(None, None), Some(2)), None);
        let old = follows(receiver(Some("streaming"), Some(1)), Some(2));
        assert!(old.is_some_and(|why| why.contains("timeline 1")));
        let waiting = follows(receiver(Some("waiting"), Some(2)), Some(2));
        assert!(waiting.is_some_and(|why| why.contains("waiting")));
        assert!(follows(None, Some(2)).is_some_and(|why| why.contains("no WAL receiver")));
    }
}
