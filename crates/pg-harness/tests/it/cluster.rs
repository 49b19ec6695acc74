//! A replication cluster: streaming to both standbys, a paused replica lagging, and a
//! failover to the synchronous standby.

use std::time::Duration;

use hive_pg_harness::{Cluster, require_postgres};
use postgres::{Client, NoTls};

const WAIT: Duration = Duration::from_secs(30);

fn count(client: &mut Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM t", &[])?
        .try_get(0)?)
}

/// Bug caught: standbys that do not stream from the primary, a standby the primary does not
/// count as synchronous (commits acknowledged before it has them), or a paused replica that
/// shows new rows anyway (so a lag test would prove nothing).
#[test]
fn writes_reach_both_standbys_and_a_paused_replica_lags() -> anyhow::Result<()> {
    require_postgres!();
    let cluster = Cluster::start()?;
    let (primary, sync, replica) = (
        cluster.primary(),
        cluster.sync_standby(),
        cluster.async_replica(),
    );
    let mut writer = primary.admin()?;
    writer.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")?;
    cluster.wait_caught_up(WAIT)?;
    assert_eq!(count(&mut sync.admin()?)?, 1);
    assert_eq!(count(&mut replica.admin()?)?, 1);
    let state: String = writer
        .query_one(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
            &[&sync.name()],
        )?
        .try_get(0)?;
    assert_eq!(state, "sync");
    assert!(sync.in_recovery()? && replica.in_recovery()?);

    replica.pause_replay()?;
    writer.batch_execute("INSERT INTO t VALUES (2)")?;
    let lsn = primary.current_lsn()?;
    sync.wait_caught_up(primary, WAIT)?;
    replica.wait_received(&lsn, WAIT)?;
    assert_eq!(count(&mut sync.admin()?)?, 2);
    assert_eq!(
        count(&mut replica.admin()?)?,
        1,
        "the paused replica replayed"
    );
    assert!(
        replica
            .wait_caught_up(primary, Duration::from_millis(200))
            .is_err()
    );
    replica.resume_replay()?;
    replica.wait_caught_up(primary, WAIT)?;
    assert_eq!(count(&mut replica.admin()?)?, 2);
    Ok(())
}

/// Bug caught: a kill -9 that leaves the primary running, a promotion that does not make the
/// standby writable (or loses a synchronously committed row), or a multi-host URL that
/// does not find the new primary.
#[test]
fn after_a_kill_the_promoted_standby_takes_writes() -> anyhow::Result<()> {
    require_postgres!();
    let cluster = Cluster::start()?;
    let (primary, sync) = (cluster.primary(), cluster.sync_standby());
    primary
        .admin()?
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")?;
    primary.kill9()?;
    assert!(primary.admin().is_err(), "the primary still answers");
    assert!(sync.in_recovery()?);
    sync.promote()?;
    assert!(!sync.in_recovery()?);
    // Committed synchronously, so on the standby without waiting.
    let mut client = Client::connect(&cluster.failover_url("postgres"), NoTls)?;
    client.batch_execute("INSERT INTO t VALUES (2)")?;
    assert_eq!(count(&mut client)?, 2);
    let port: i32 = client
        .query_one("SELECT current_setting('port')::int", &[])?
        .try_get(0)?;
    assert_eq!(port, i32::from(sync.port()));
    // The replica, re-pointed, follows the new primary's timeline.
    let replica = cluster.async_replica();
    replica.follow(sync)?;
    replica.wait_caught_up(sync, WAIT)?;
    assert_eq!(count(&mut replica.admin()?)?, 2);
    Ok(())
}
