//! Measures what a scraper of the endpoint costs checkout: `get` + drop and a point read,
//! with no scraper, with one scraping `/metrics` ten times a second, and with one scraping
//! as fast as it can.
//!
//! ```text
//! cargo run --release -p hive-db-core --example endpoint_overhead -- [OPS] [ROUNDS]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_db_core::endpoint::{self, EndpointConfig};
use hive_db_core::{DbConfig, DbName, Registry};

#[derive(Clone, Copy, PartialEq)]
enum Scraper {
    None,
    Paced,
    FlatOut,
}

fn scrape(addr: SocketAddr) -> anyhow::Result<usize> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    anyhow::ensure!(body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    Ok(body.len())
}

/// Nanoseconds per op of `ops` runs of `op` while `scraper` runs, and its scrapes per second.
fn measure(
    addr: SocketAddr,
    scraper: Scraper,
    ops: u32,
    op: &mut impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let thread = (scraper != Scraper::None).then(|| {
        let (stop, scrapes) = (Arc::clone(&stop), Arc::clone(&scrapes));
        std::thread::spawn(move || -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                scrape(addr)?;
                scrapes.fetch_add(1, Ordering::Relaxed);
                if scraper == Scraper::Paced {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Ok(())
        })
    });
    let t = Instant::now();
    for _ in 0..ops {
        op()?;
    }
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = thread {
        t.join()
            .map_err(|_| anyhow::anyhow!("scraper panicked"))??;
    }
    Ok((
        elapsed.as_nanos() as f64 / f64::from(ops),
        scrapes.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let ops: u32 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    // Eight databases, so each scrape renders a realistic page.
    let mut names = Vec::new();
    for i in 0..8 {
        let name = DbName::new(&format!("db{i}"))?;
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        registry.register(&name, dir.path().join(format!("db{i}.db")), config)?;
        names.push(name);
    }
    let name = &names[0];
    registry.write(name, |tx| {
        tx.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")?;
        for i in 0..1000 {
            tx.execute("INSERT INTO t (id, v) VALUES (?1, ?1)", [i])?;
        }
        Ok(())
    })?;
    let ep = endpoint::serve(&registry, EndpointConfig::default())?;
    let page = scrape(ep.addr())?;
    println!(
        "{ops} ops per round, {rounds} rounds interleaved, median ns/op; \
         /metrics page {page} bytes (8 databases)"
    );
    println!(
        "{:<12} {:>10} {:>14} {:>10} {:>14} {:>10}",
        "op", "none", "10/s", "scrapes/s", "flat-out", "scrapes/s"
    );
    let mut id = 0i64;
    for label in ["checkout", "point_read"] {
        let mut op = || -> anyhow::Result<()> {
            if label == "checkout" {
                drop(registry.get(name)?);
            } else {
                id = (id + 7) % 1000;
                let v: i64 = registry.read(name, |c| {
                    let mut stmt = c.prepare_cached("SELECT v FROM t WHERE id = ?1")?;
                    stmt.query_row([id], |r| r.get(0))
                })?;
                anyhow::ensure!(v == id, "wrong row");
            }
            Ok(())
        };
        // Rounds interleave the three cells, so that a change in the machine's load
        // spreads over all of them.
        let scrapers = [Scraper::None, Scraper::Paced, Scraper::FlatOut];
        let mut cells = vec![(Vec::new(), Vec::new()); scrapers.len()];
        for _ in 0..rounds {
            for (cell, scraper) in cells.iter_mut().zip(scrapers) {
                let (ns, rate) = measure(ep.addr(), scraper, ops, &mut op)?;
                cell.0.push(ns);
                cell.1.push(rate);
            }
        }
        let cells: Vec<(f64, f64)> = cells
            .into_iter()
            .map(|(ns, rate)| (median(ns), median(rate)))
            .collect();
        let base = cells[0].0;
        println!(
            "{label:<12} {:>10.0} {:>8.0} {:>+4.0}% {:>10.1} {:>8.0} {:>+4.0}% {:>10.1}",
            base,
            cells[1].0,
            (cells[1].0 / base - 1.0) * 100.0,
            cells[1].1,
            cells[2].0,
            (cells[2].0 / base - 1.0) * 100.0,
            cells[2].1,
        );
    }
    ep.stop();
    Ok(())
}
