//! The endpoint with hundreds of idle and trickling sockets open: scrapes answered within
//! Prometheus's scrape timeout, the connection cap making room, a slow health check held
//! off the other routes, and the thread count bounded throughout.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hive_db_core::DbConfig;
use hive_db_core::endpoint::EndpointConfig;

use crate::endpoint::{
    HANG, Reply, StopOnDrop, connect, endpoint_threads, get, gone, process_threads, read_reply,
    serve,
};
use crate::support::{TestResult, config, create_table, eventually, fixture};

/// Prometheus's default scrape timeout: the contract for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sockets that connect and send nothing; `HIVE_ENDPOINT_IDLE_SOCKETS` changes it.
const IDLE_SOCKETS: usize = 500;
/// Sockets that send a partial request head and then a byte every `TRICKLE_EVERY`.
const TRICKLING_SOCKETS: usize = 20;
const TRICKLE_EVERY: Duration = Duration::from_millis(100);
const SCRAPES: usize = 10;

fn idle_sockets() -> usize {
    std::env::var("HIVE_ENDPOINT_IDLE_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(IDLE_SOCKETS)
}

/// Raises the soft limit on open files to the hard one when `more` descriptors would not
/// fit under it: each socket here is two, the client's end and the endpoint's.
fn make_room_for(more: usize) -> TestResult {
    let open = std::fs::read_dir("/proc/self/fd")?.count();
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let needed = u64::try_from(open + more)?;
    anyhow::ensure!(
        limit >= needed,
        "the open-file limit ({limit}) cannot hold {needed} descriptors: raise the hard limit \
         or lower HIVE_ENDPOINT_IDLE_SOCKETS"
    );
    Ok(())
}

/// One scrape of `/metrics`, failing when it is not answered within `SCRAPE_TIMEOUT`.
fn scrape(addr: SocketAddr) -> anyhow::Result<(Reply, Duration)> {
    let started = Instant::now();
    let mut stream = connect(addr)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let reply = read_reply(&mut stream)
        .map_err(|e| anyhow::anyhow!("scrape not answered within {SCRAPE_TIMEOUT:?}: {e}"))?;
    Ok((reply, started.elapsed()))
}

/// True while the endpoint has neither answered nor closed `stream`.
fn still_waiting(stream: &TcpStream) -> anyhow::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let waiting =
        matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false)?;
    Ok(waiting)
}

/// Bytes the endpoint at `server` has not read yet from the client at `client`, from the
/// receive queue of its end of the connection (`/proc/net/tcp`, IPv4); none before it exists.
fn unread_by_endpoint(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    };
    let (local, remote) = (hex(server)?, hex(client)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (_, rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Bug caught: each socket that connects and sends nothing (or a byte now and then) holding
/// a serving thread for the whole request timeout, so that a few hundred of them deny
/// `/metrics` for minutes, whether the cap refuses the scrape (at the default cap) or queues
/// it behind them (a cap above their number); or a fix that spends a thread per socket, or
/// cannot stop promptly with them open.
#[test]
fn scrapes_are_answered_while_hundreds_of_idle_and_trickling_sockets_are_open() -> TestResult {
    let idle = idle_sockets();
    make_room_for(2 * (idle + TRICKLING_SOCKETS) + 64)?;
    let f = fixture("crowd", config())?;
    create_table(&f)?;
    let defaults = EndpointConfig::default();
    let roomy = EndpointConfig {
        max_connections: 1024,
        request_timeout: Duration::from_secs(60),
        ..EndpointConfig::default()
    };
    for (case, endpoint_config) in [("default cap", defaults), ("cap 1024", roomy)] {
        let holds_all = endpoint_config.max_connections > idle + TRICKLING_SOCKETS;
        let threads = endpoint_config.threads;
        let ep = serve(&f, endpoint_config)?;
        let addr = ep.addr();
        assert!(eventually(HANG, || endpoint_threads(addr) == threads + 1));
        let tasks_before = process_threads();
        let mut sockets = Vec::with_capacity(idle);
        for _ in 0..idle {
            sockets.push(connect(addr)?);
        }
        let mut tricklers = Vec::with_capacity(TRICKLING_SOCKETS);
        for _ in 0..TRICKLING_SOCKETS {
            let mut s = connect(addr)?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")?;
            tricklers.push(s);
        }
        let stop = AtomicBool::new(false);
        let (latencies, most_tasks, most_threads) =
            std::thread::scope(|scope| -> anyhow::Result<_> {
                let _stop = StopOnDrop(&stop);
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        for mut s in &tricklers {
                            // Cut off at its deadline, or closed to make room: keep going.
                            let _ = s.write(b"a");
                        }
                        std::thread::sleep(TRICKLE_EVERY);
                    }
                });
                let mut latencies = Vec::with_capacity(SCRAPES);
                let (mut most_tasks, mut most_threads) = (0, 0);
                for i in 0..SCRAPES {
                    let (reply, took) = scrape(addr)?;
                    assert_eq!(reply.status, 200, "{case}, scrape {i}: {}", reply.head);
                    assert!(reply.text().contains("hive_db_up{db=\"crowd\"} 1\n"));
                    assert!(took <= SCRAPE_TIMEOUT, "{case}, scrape {i} took {took:?}");
                    latencies.push(took);
                    most_tasks = most_tasks.max(process_threads());
                    most_threads = most_threads.max(endpoint_threads(addr));
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok((latencies, most_tasks, most_threads))
            })?;
        let mut sorted = latencies.clone();
        sorted.sort();
        eprintln!(
            "{case}: {idle} idle and {TRICKLING_SOCKETS} trickling sockets; /metrics answered \
             in {latencies:?} (median {:?}, most {:?}); process threads {tasks_before} before, \
             at most {most_tasks} during",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
        );
        assert!(
            most_threads <= threads + 1,
            "{case}: {most_threads} endpoint threads"
        );
        // Loose, for the tests running beside this one: a thread per socket adds hundreds.
        assert!(
            most_tasks < tasks_before + 100,
            "{case}: {tasks_before} -> {most_tasks}"
        );
        if holds_all {
            // Held open, not answered: the scrapes did not get through by cutting them.
            let open = sockets
                .iter()
                .map(still_waiting)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let open = open.iter().filter(|w| **w).count();
            assert_eq!(open, idle, "{case}: idle sockets closed early");
        }
        let started = Instant::now();
        ep.stop();
        let took = started.elapsed();
        assert!(took < HANG, "{case}: stop took {took:?}");
        assert!(gone(addr), "{case}: threads left after stop");
    }
    Ok(())
}

/// Bug caught: a cap full of connections that send nothing refusing the scrape (`503`) until
/// their request timeout, instead of closing the oldest of them to make room; or the room
/// made by closing a connection that has begun its request while a silent one is open.
#[test]
fn at_the_cap_the_oldest_silent_connection_makes_room() -> TestResult {
    let f = fixture("cap", config())?;
    let cap = 8;
    let ep = serve(
        &f,
        EndpointConfig {
            max_connections: cap,
            request_timeout: Duration::from_secs(60),
            ..EndpointConfig::default()
        },
    )?;
    let addr = ep.addr();
    let mut started = connect(addr)?;
    started.write_all(b"GET /met")?;
    let mut silent = Vec::new();
    for _ in 1..cap {
        silent.push(connect(addr)?);
    }
    // The silent ones are taken in order before the scrape; the first one's bytes must have
    // been read for it to count as begun.
    let begun = started.local_addr()?;
    assert!(
        eventually(HANG, || unread_by_endpoint(addr, begun) == Some(0)),
        "the endpoint never read the begun request"
    );
    let (reply, took) = scrape(addr)?;
    eprintln!("scrape at a full cap answered in {took:?}");
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(still_waiting(&started)?, "the begun request was closed");
    let oldest = read_reply(&mut silent[0])?;
    assert_eq!(oldest.status, 503, "{}", oldest.head);
    assert!(oldest.head.contains("Retry-After: 1"));
    for (i, s) in silent.iter().enumerate().skip(1) {
        assert!(still_waiting(s)?, "silent connection {i} closed");
    }
    // The begun request still completes.
    started.write_all(b"rics HTTP/1.1\r\n\r\n")?;
    assert_eq!(read_reply(&mut started)?.status, 200);
    Ok(())
}

/// Bug caught: requests for `/health` that wait for a running check each holding a serving
/// thread, so that a slow check with no earlier answer holds `/metrics` up behind it.
#[test]
fn metrics_are_answered_while_health_requests_wait_for_a_slow_check() -> TestResult {
    let f = fixture(
        "slowhealth",
        DbConfig {
            max_size: 1,
            min_idle: 1,
            ..config()
        },
    )?;
    let ep = serve(
        &f,
        EndpointConfig {
            health_timeout: Duration::from_secs(4),
            health_cache: Duration::ZERO,
            ..EndpointConfig::default()
        },
    )?;
    let addr = ep.addr();
    let held = f.registry.get(&f.name)?;
    // Both sent before /metrics, so a queue would hand them out first.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut s = connect(addr)?;
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n")?;
        waiting.push(s);
    }
    std::thread::scope(|scope| -> TestResult {
        let slow: Vec<_> = waiting
            .into_iter()
            .map(|mut s| scope.spawn(move || read_reply(&mut s).map(|r| r.status)))
            .collect();
        // The check is waiting for the held connection.
        assert!(eventually(HANG, || f
            .registry
            .db_stats(&f.name)
            .is_ok_and(|s| s.waiting == 1)));
        let started = Instant::now();
        let metrics = get(addr, "/metrics")?;
        eprintln!(
            "/metrics beside a slow health check: {:?}",
            started.elapsed()
        );
        assert_eq!(metrics.status, 200);
        assert!(
            slow.iter().all(|h| !h.is_finished()),
            "/metrics waited for the health check"
        );
        for health in slow {
            assert_eq!(health.join().expect("health request")?, 503);
        }
        Ok(())
    })?;
    drop(held);
    Ok(())
}
