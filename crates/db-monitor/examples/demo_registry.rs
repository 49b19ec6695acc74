//! A registry under a little load, serving its endpoint, to try db-monitor against:
//! `cargo run -p db-monitor --example demo_registry -- 127.0.0.1:9187 60` serves for 60 s,
//! then `cargo run -p db-monitor -- --attach 127.0.0.1:9187 --continuous`. A third argument
//! `leak` holds one connection of `inventory` past its 5 s leak threshold.
//! Its databases live in a temporary folder removed at the end.

use std::time::{Duration, Instant};

use hive_db_core::endpoint::{self, EndpointConfig};
use hive_db_core::{DbConfig, DbName, Registry};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9187".to_owned())
        .parse()?;
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let leak = args.next().is_some_and(|a| a == "leak");
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
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    endpoint.stop();
    Ok(())
}
