//! Crash safety: a writer process killed with SIGKILL at a random moment loses nothing it
//! acknowledged, and the database opens again with no manual step.
//!
//! `HIVE_CRASH_ROUNDS` sets the number of kill rounds, split between `synchronous` NORMAL and
//! FULL (default 100: 50 rounds each, as CI runs them).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::crash_harness::{Key, Target};
use hive_db_core::{DbConfig, DbName, Registry};
use hive_tests::run_bounded;

const WRITER: &str = env!("CARGO_BIN_EXE_crash-writer");

/// `checking` and `savings` rows, as in the writer.
const ACCOUNTS: i64 = 16;

fn rounds() -> usize {
    std::env::var("HIVE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// The crash-writer and how to check what it left.
const TARGET: Target = Target {
    bin: WRITER,
    what: "writer",
    acked: "commits",
    file: "crash.db",
    // 32 writers at most in one group commit.
    extra_args: &["32"],
    // Long enough for crash after crash on a recovered file, short enough that checking
    // every acknowledgement stays cheap.
    rounds_per_database: 25,
    parse_ack,
    verify,
};

/// `r t k` of an `ack r t k` line.
fn parse_ack(text: &str) -> Option<Key> {
    let mut parts = text.split(' ').map(str::parse);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(r)), Some(Ok(t)), Some(Ok(k)), None) => Some((r, t, k)),
        _ => None,
    }
}

/// Reopens the database in a new registry (no manual step) and checks it against every
/// acknowledgement so far. Returns the ledger's row count.
fn verify(path: &Path, acked: &HashSet<Key>) -> anyhow::Result<usize> {
    let registry = Registry::new();
    let db = DbName::new("reopened")?;
    registry.register(&db, path, DbConfig::default())?;
    let (integrity, balances, savings, ledger_sum, counter, keys) = registry.read(&db, |c| {
        let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let balances: i64 = c.query_row(
            "SELECT (SELECT sum(balance) FROM checking) + (SELECT sum(balance) FROM savings)",
            [],
            |r| r.get(0),
        )?;
        let savings: i64 = c.query_row("SELECT sum(balance) FROM savings", [], |r| r.get(0))?;
        let ledger_sum: i64 =
            c.query_row("SELECT coalesce(sum(amount), 0) FROM ledger", [], |r| {
                r.get(0)
            })?;
        let counter: i64 = c.query_row("SELECT n FROM counter", [], |r| r.get(0))?;
        let keys: Vec<Key> = c
            .prepare("SELECT run, thread, k FROM ledger")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok((integrity, balances, savings, ledger_sum, counter, keys))
    })?;
    registry.close_all(Duration::from_secs(5));
    anyhow::ensure!(integrity == "ok", "integrity_check: {integrity}");
    anyhow::ensure!(
        balances == ACCOUNTS * 1000,
        "money created or lost: balances sum to {balances}"
    );
    anyhow::ensure!(
        savings == ledger_sum,
        "savings {savings} != ledger amounts {ledger_sum}"
    );
    anyhow::ensure!(
        usize::try_from(counter)? == keys.len(),
        "counter {counter} != ledger rows {}",
        keys.len()
    );
    let present: HashSet<Key> = keys.iter().copied().collect();
    let missing: Vec<_> = acked.difference(&present).collect();
    anyhow::ensure!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
    // Each writer thread commits k only after k - 1 returned: its rows are a prefix.
    let mut per_thread: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    for (run, thread, k) in keys {
        per_thread.entry((run, thread)).or_default().push(k);
    }
    for ((run, thread), mut ks) in per_thread {
        ks.sort_unstable();
        let expected: Vec<i64> = (0..i64::try_from(ks.len())?).collect();
        anyhow::ensure!(
            ks == expected,
            "run {run} thread {thread}: ledger has a gap: {ks:?}"
        );
    }
    Ok(present.len())
}

/// Bug caught: `write` returning `Ok` before its work is durable in the file (a group commit
/// that acknowledges writers before the COMMIT, or a batch that commits only part of a
/// writer's work), a transfer split across transactions (money created or lost), a database
/// left needing manual repair after a crash (hot WAL, stale `-shm`), with `synchronous`
/// NORMAL, where the WAL is not synced on commit but a process crash loses nothing.
#[test]
fn sigkill_loses_no_acknowledged_commit_normal() -> anyhow::Result<()> {
    TARGET.crash_rounds("normal", rounds().div_ceil(2))
}

/// Bug caught: as for NORMAL, with `synchronous` FULL.
#[test]
fn sigkill_loses_no_acknowledged_commit_full() -> anyhow::Result<()> {
    TARGET.crash_rounds("full", rounds() / 2)
}

/// Counts `fsync` and `fdatasync` calls of `crash-writer` under `strace -f -c`; returns the
/// calls and the SQLite transactions the writer committed. `None` when strace is absent.
fn syncs_per_transactions(sync: &str, commits: u32) -> anyhow::Result<Option<(u64, u64)>> {
    let strace = Path::new("/usr/bin/strace");
    if !strace.exists() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sync.db");
    let summary = dir.path().join("strace.txt");
    let out = run_bounded(
        Command::new(strace).args([
            "-f",
            "-c",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            &summary.display().to_string(),
            WRITER,
            &path.display().to_string(),
            sync,
            "0",
            "1",
            &commits.to_string(),
            "1",
        ]),
        Duration::from_secs(60),
    )?;
    anyhow::ensure!(out.success(), "writer under strace failed: {}", out.stderr);
    let transactions: u64 = out.value("done").parse()?;
    let text = std::fs::read_to_string(&summary)?;
    let calls = text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.last() {
                Some(&("fsync" | "fdatasync")) => cols.get(3)?.parse::<u64>().ok(),
                _ => None,
            }
        })
        .sum();
    Ok(Some((calls, transactions)))
}

/// Bug caught: `synchronous = FULL` not applied to pooled connections (or overridden after
/// setup), so a commit reports done before the WAL reaches the disk; and NORMAL syncing on
/// every commit, which would mean the setting is not what the docs say.
#[test]
fn full_syncs_on_every_commit_and_normal_does_not() -> anyhow::Result<()> {
    let commits = 200;
    let Some((full_syncs, full_tx)) = syncs_per_transactions("full", commits)? else {
        eprintln!("skipped: /usr/bin/strace is not installed");
        return Ok(());
    };
    let (normal_syncs, normal_tx) =
        syncs_per_transactions("normal", commits)?.expect("strace present");
    eprintln!(
        "FULL: {full_syncs} syncs / {full_tx} transactions; NORMAL: {normal_syncs} / {normal_tx}"
    );
    // One transaction for the schema, one per commit (group commit off, one thread).
    assert!(full_tx > u64::from(commits), "{full_tx} transactions");
    assert!(
        full_syncs >= full_tx,
        "FULL synced {full_syncs} times for {full_tx} transactions"
    );
    assert!(
        normal_syncs < normal_tx / 4,
        "NORMAL synced {normal_syncs} times for {normal_tx} transactions"
    );
    Ok(())
}
