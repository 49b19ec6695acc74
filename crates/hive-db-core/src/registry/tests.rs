//! Tests of the registry that reach inside its databases.

use super::*;

/// Bug caught: `close_all` gave the read keeper of each database its own 100 ms floor to wait
/// for a keeper being opened, counted from that database's turn, so databases in that state
/// added 100 ms each past a deadline of zero (eight took 800 ms) instead of 100 ms in all.
#[test]
fn close_all_waits_for_keepers_being_opened_once_not_once_per_database() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    for i in 0..8 {
        let name = DbName::new(&format!("keeper-{i}"))?;
        registry.register(
            &name,
            dir.path().join(format!("{i}.sqlite")),
            config.clone(),
        )?;
    }
    let databases: Vec<_> = registry
        .open_databases()
        .into_iter()
        .filter_map(|db| match db {
            OpenDb::Sqlite(db) => Some(db),
            #[cfg(feature = "postgres")]
            OpenDb::Postgres(_) => None,
        })
        .collect();
    anyhow::ensure!(databases.len() == 8, "{} databases open", databases.len());
    for db in &databases {
        db.set_keeper_opening(true);
    }
    let start = Instant::now();
    let reports = registry.close_all(Duration::ZERO);
    let took = start.elapsed();
    for db in &databases {
        db.set_keeper_opening(false);
    }
    anyhow::ensure!(reports.len() == 8, "{} close reports", reports.len());
    anyhow::ensure!(
        took < Duration::from_millis(500),
        "close_all of 8 databases whose keepers were being opened took {took:?}"
    );
    Ok(())
}
