//! A replication cluster for failover tests: a primary, a synchronous standby and an
//! asynchronous replica, each a server of its own on loopback.

use std::time::{Duration, Instant};

use crate::node::Node;
use crate::process::{Lifeline, temp_folder};
use crate::skip::installed;

/// How long [`Cluster::start`] waits for both standbys to stream.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);

/// A primary with `synchronous_commit = on` whose `synchronous_standby_names` names the
/// synchronous standby, so a commit returns only once that standby has flushed it; and an
/// asynchronous replica. Both standbys are copies made by `pg_basebackup -R`, streaming from
/// the primary without replication slots (the primary keeps 128 MB of WAL for them). Each
/// node has a free loopback port and a data folder in one temporary folder; every node is
/// stopped, and the folder removed, when the cluster is dropped or this process exits, even
/// when a test fails.
///
/// The roles are where the nodes started: after a failover, [`Cluster::primary`] is still
/// the node that was the primary. Things to know for failover tests:
///
/// - While the synchronous standby is down, commits on the primary wait for it.
/// - The standbys have `synchronous_standby_names` empty, so a promoted standby commits
///   without waiting for anyone. To make it wait for the replica, set it on the new primary:
///   `sync.set("synchronous_standby_names", "async")`.
/// - The replica keeps streaming from the old primary's port. To re-point it at the promoted
///   standby: `replica.follow(cluster.sync_standby())` (its `primary_conninfo`; it follows
///   the new timeline, `recovery_target_timeline` being `latest`). An old primary cannot
///   rejoin as a standby without `pg_rewind`; a test makes a new cluster instead.
#[derive(Debug)]
pub struct Cluster {
    primary: Node,
    sync: Node,
    replica: Node,
    // Dropped after the nodes (each halts its postmaster): removes the folder.
    _lifeline: Lifeline,
}

impl Cluster {
    /// Makes and starts the three nodes, returning once both standbys stream from the
    /// primary, the synchronous one as `sync`.
    ///
    /// # Errors
    ///
    /// The server's programs are missing, a node could not be made or started, or the
    /// standbys were not streaming within 60 s.
    pub fn start() -> anyhow::Result<Self> {
        installed()?;
        let dir = temp_folder()?;
        let names = ["primary", "sync", "async"];
        let data: Vec<_> = names.iter().map(|n| dir.join(n)).collect();
        let lifeline =
            Lifeline::start(&dir, &data.iter().map(|d| d.as_path()).collect::<Vec<_>>())?;
        let primary = Node::init(
            &dir,
            names[0],
            &[
                "wal_level = replica",
                "max_wal_senders = 10",
                "wal_keep_size = 128MB",
                "hot_standby = on",
                "synchronous_commit = on",
                "synchronous_standby_names = 'FIRST 1 (sync)'",
            ],
        )?;
        primary.start()?;
        // A standby's own commits (once promoted) wait for no one until a test says so.
        let standby = ["synchronous_standby_names = ''"];
        let sync = Node::standby_of(&primary, &dir, names[1], &standby)?;
        let replica = Node::standby_of(&primary, &dir, names[2], &standby)?;
        let cluster = Self {
            primary,
            sync,
            replica,
            _lifeline: lifeline,
        };
        cluster.sync.start()?;
        cluster.replica.start()?;
        cluster.wait_streaming()?;
        Ok(cluster)
    }

    /// Waits until the primary sees the synchronous standby as `sync` and the replica as
    /// `async`.
    fn wait_streaming(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STREAMING_TIMEOUT;
        let mut client = self.primary.admin()?;
        loop {
            let rows = client.query(
                "SELECT application_name, sync_state FROM pg_stat_replication \
                 WHERE state = 'streaming' ORDER BY application_name",
                &[],
            )?;
            let states = rows
                .iter()
                .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
                .collect::<Result<Vec<_>, postgres::Error>>()?;
            let want = [
                (self.replica.name().to_owned(), "async".to_owned()),
                (self.sync.name().to_owned(), "sync".to_owned()),
            ];
            if states == want {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the standbys were not streaming within {STREAMING_TIMEOUT:?}: {states:?}\n\
                 {}\n{}",
                self.sync.log_tail(),
                self.replica.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node that started as the primary.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The synchronous standby (named `sync`).
    pub fn sync_standby(&self) -> &Node {
        &self.sync
    }

    /// The asynchronous replica (named `async`).
    pub fn async_replica(&self) -> &Node {
        &self.replica
    }

    /// Waits until both standbys have replayed what the primary had written when called.
    ///
    /// # Errors
    ///
    /// One did not within `timeout`, or a node is unreachable.
    pub fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        self.sync.wait_caught_up(&self.primary, timeout)?;
        self.replica.wait_caught_up(&self.primary, timeout)
    }

    /// The multi-host URL of database `db` on the primary and the synchronous standby, which
    /// connects to whichever of them accepts writes.
    pub fn failover_url(&self, db: &str) -> String {
        multi_host_url(&[&self.primary, &self.sync], db)
    }
}

/// The URL of database `db` on `nodes`, tried in order, connecting to the first that accepts
/// writes: `postgres://postgres@127.0.0.1:p1,127.0.0.1:p2/db?target_session_attrs=read-write`.
pub fn multi_host_url(nodes: &[&Node], db: &str) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    format!(
        "postgres://postgres@{}/{db}?target_session_attrs=read-write",
        hosts.join(",")
    )
}
