//! A second process for cross-process tests.
//!
//! `hive-peer hold PATH`: takes the database's write lock (`BEGIN IMMEDIATE` and an insert into
//! `t`), prints `locked`, and holds it until standard input closes.
//! `hive-peer write PATH N`: registers PATH in its own registry and commits N rows into
//! `t(v)` through `Registry::write`, printing `done N`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hive_db_core::{DbConfig, DbName, Registry};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hive-peer: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["hold", path] => {
            let db = DbName::new("peer")?;
            let conn = hive_db_core::open_connection(&db, Path::new(path), &DbConfig::default())?;
            conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (-1);")?;
            println!("locked");
            std::io::stdout().flush()?;
            // Hold until the parent closes our stdin (or dies).
            for line in std::io::stdin().lock().lines() {
                line?;
            }
            conn.execute_batch("ROLLBACK")?;
            Ok(())
        }
        ["write", path, n] => {
            let n: i64 = n.parse()?;
            let registry = Registry::new();
            let db = DbName::new("peer")?;
            let config = DbConfig {
                busy_timeout: Duration::from_secs(20),
                ..DbConfig::default()
            };
            registry.register(&db, path, config)?;
            for i in 0..n {
                registry.write(&db, |tx| {
                    tx.execute("INSERT INTO t (v) VALUES (?1)", [1_000_000 + i])?;
                    Ok(())
                })?;
            }
            registry.close_all(Duration::from_secs(5));
            println!("done {n}");
            Ok(())
        }
        _ => anyhow::bail!("usage: hive-peer hold PATH | hive-peer write PATH N"),
    }
}
