//! A registry under a little load, serving its endpoint, to try db-monitor against:
//! `cargo run -p db-monitor --example demo_registry -- 127.0.0.1:9187 60` serves for 60 s,
//! then `cargo run -p db-monitor -- --attach 127.0.0.1:9187 --continuous`. Further
//! arguments: `leak` holds one connection of `inventory` past its 5 s leak threshold; `pg`
//! adds `orders`, a PostgreSQL database on a private primary with two streaming replicas
//! (PostgreSQL 15's server programs must be installed, see `hive_pg_harness`).
//! Its databases and servers live in temporary folders removed at the end.

use std::time::{Duration, Instant};

use hive_db_core::endpoint::{self, EndpointConfig};
use hive_db_core::{DbConfig, DbName, PgConfig, PgHandle, Registry};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9187".to_owned())
        .parse()?;
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let rest: Vec<String> = args.collect();
    let leak = rest.iter().any(|a| a == "leak");
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let mut names = Vec::new();
    for n in ["inventory", "events"] {
        let name = DbName::new(n)?;
        let config = DbConfig {
            create_if_missing: true,
            max_size: 4,
            leak_threshold: Some(Duration::from_secs(5)),
            ..DbConfig::default()
        };
        registry.register(&name, dir.path().join(format!("{n}.db")), config)?;
        registry.write(&name, |tx| {
            tx.execute_batch("CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")?;
            Ok(())
        })?;
        names.push(name);
    }
    // Kept until the end: dropping it stops the servers.
    let cluster = if rest.iter().any(|a| a == "pg") {
        Some(hive_pg_harness::Cluster::start()?)
    } else {
        None
    };
    let orders = match &cluster {
        Some(c) => Some(register_orders(&registry, c)?),
        None => None,
    };
    let endpoint = endpoint::serve(
        &registry,
        EndpointConfig {
            addr,
            expose_paths: true,
            ..EndpointConfig::default()
        },
    )?;
    eprintln!("serving http://{} for {seconds}s", endpoint.addr());
    let _held = if leak {
        Some(registry.get(&names[0])?)
    } else {
        None
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (registry, name) = (registry.clone(), names[i % names.len()].clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut k = 0u64;
                while Instant::now() < end {
                    k += 1;
                    if k.is_multiple_of(5) {
                        registry.write(&name, |tx| {
                            tx.execute(
                                "INSERT INTO item (label) VALUES (?1)",
                                [format!("w{i}-{k}")],
                            )?;
                            Ok(())
                        })?;
                    } else {
                        registry.read(&name, |c| {
                            c.query_row("SELECT count(*) FROM item", [], |r| r.get::<_, i64>(0))
                        })?;
                    }
                    // A load that rises and falls every 5 s, for the trend line.
                    let busy = (start.elapsed().as_secs() / 5).is_multiple_of(2);
                    std::thread::sleep(Duration::from_micros(if busy { 300 } else { 3000 }));
                }
                Ok(())
            })
        })
        .collect();
    let pg_workers: Vec<_> = orders
        .iter()
        .flat_map(|db| (0..2).map(move |i| (i, db.clone())))
        .map(|(i, db)| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut k = 0i64;
                while Instant::now() < end {
                    k += 1;
                    if k % 5 == 0 {
                        db.write(|tx| {
                            tx.execute(
                                "INSERT INTO item (label) VALUES ($1)",
                                &[&format!("w{i}-{k}")],
                            )?;
                            Ok(())
                        })?;
                    } else {
                        db.read(|c| {
                            c.query_one("SELECT count(*) FROM item", &[])?
                                .try_get::<_, i64>(0)
                        })?;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            })
        })
        .collect();
    for w in workers.into_iter().chain(pg_workers) {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    endpoint.stop();
    Ok(())
}

/// Registers `orders` on `cluster`'s primary, with its two standbys as read replicas, and
/// creates its table on every server.
fn register_orders(
    registry: &Registry,
    cluster: &hive_pg_harness::Cluster,
) -> anyhow::Result<PgHandle> {
    let name = DbName::new("orders")?;
    let config = PgConfig {
        pool: DbConfig {
            max_size: 4,
            ..DbConfig::default()
        },
        replicas: vec![
            cluster.sync_standby().url("postgres"),
            cluster.async_replica().url("postgres"),
        ],
        ..PgConfig::default()
    };
    registry.register_postgres(&name, &cluster.primary().url("postgres"), config)?;
    let db = registry.postgres(&name)?;
    db.write(|tx| {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS item (id bigserial PRIMARY KEY, label text NOT NULL)",
        )
    })?;
    // Reads go to the replicas: the table must be there first.
    cluster.wait_caught_up(Duration::from_secs(30))?;
    Ok(db)
}
