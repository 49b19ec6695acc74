//! The HTTP endpoint against a real registry, over loopback: routes and status codes, the
//! health cache, and clients that are slow, oversized, malformed or too many.
//!
//! Over 400 lines on purpose: one test per route, limit and hostile client, sharing one
//! raw-socket client.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_db_core::endpoint::{self, Announce, Endpoint, EndpointConfig, EndpointError};
use hive_db_core::{DbConfig, DbName, HealthReport, HealthStatus, Registry, RegistrySnapshot};

use crate::support::{Fixture, TestResult, config, create_table, eventually, fixture};

/// A generous bound on any one exchange: a hang fails the test instead of stalling it.
pub(crate) const HANG: Duration = Duration::from_secs(20);

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, HANG)?;
    stream.set_read_timeout(Some(HANG))?;
    stream.set_write_timeout(Some(HANG))?;
    Ok(stream)
}

/// Reads a whole reply, up to the server's close.
pub(crate) fn read_reply(stream: &mut TcpStream) -> anyhow::Result<Reply> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head in {:?}", String::from_utf8_lossy(&bytes)))?;
    let head = String::from_utf8(bytes[..split].to_vec())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    Ok(Reply {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    })
}

/// Sends `request` as it is and reads the reply. A server that answers before the whole
/// request is written may close early: the reply is still read.
fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Reply> {
    let mut stream = connect(addr)?;
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    read_reply(&mut stream)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// This process's threads named after the endpoint on `addr`'s port.
pub(crate) fn endpoint_threads(addr: SocketAddr) -> usize {
    let name = format!("hive-http-{}", addr.port());
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim_end() == name)
                .count()
        })
        .unwrap_or(0)
}

/// True once no thread of the endpoint at `addr` is listed. A joined thread can stay in
/// `/proc/self/task` for a moment after `join` returns (the kernel wakes the joiner before it
/// has reaped the task), so this allows a short grace, far below the stalled client's 60 s
/// request timeout that an unjoined endpoint thread would still be waiting in.
pub(crate) fn gone(addr: SocketAddr) -> bool {
    eventually(Duration::from_millis(500), || endpoint_threads(addr) == 0)
}

/// Every thread of this process (`/proc/self/task`). Threads an endpoint thread starts
/// without a name inherit its name, so `endpoint_threads` counts them too.
pub(crate) fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// `f`'s registry served with `config`, announced nowhere: the tests' endpoints stay out of
/// the user's discovery folder (the announcement's own tests name a folder of their own).
pub(crate) fn serve(f: &Fixture, config: EndpointConfig) -> anyhow::Result<Endpoint> {
    let config = EndpointConfig {
        announce: Announce::Off,
        ..config
    };
    Ok(endpoint::serve(&f.registry, config)?)
}

/// Bug caught: a route missing or answering with the wrong type, `/stats` not the snapshot
/// wire format, a path leaked through `/stats`, another method served, an unknown path
/// answered as a known one.
#[test]
fn each_route_answers_with_its_content() -> TestResult {
    let f = fixture("routes", config())?;
    create_table(&f)?;
    let ep = serve(&f, EndpointConfig::default())?;
    assert!(ep.addr().ip().is_loopback() && ep.addr().port() != 0);

    let metrics = get(ep.addr(), "/metrics")?;
    assert_eq!(metrics.status, 200, "{}", metrics.head);
    assert!(
        metrics
            .head
            .contains("Content-Type: text/plain; version=0.0.4"),
        "{}",
        metrics.head
    );
    assert!(metrics.text().contains("hive_db_up{db=\"routes\"} 1\n"));
    let length = format!("Content-Length: {}\r\n", metrics.body.len());
    assert!(format!("{}\r\n", metrics.head).contains(&length));

    let stats = get(ep.addr(), "/stats?pretty=1")?;
    assert_eq!(stats.status, 200);
    assert!(stats.head.contains("Content-Type: application/json"));
    let snap: RegistrySnapshot = serde_json::from_slice(&stats.body)?;
    let db = snap.get("routes").expect("database in /stats");
    assert!(db.open && db.totals.commits == 1, "{db:?}");
    assert_eq!(
        db.path,
        std::path::PathBuf::new(),
        "path shown without opt-in"
    );

    let health = get(ep.addr(), "/health")?;
    assert_eq!(health.status, 200);
    let report: HealthReport = serde_json::from_slice(&health.body)?;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.databases.len(), 1);

    for path in [
        "/",
        "/metrics/",
        "/Metrics",
        "/stats.json",
        "/../etc/passwd",
    ] {
        assert_eq!(get(ep.addr(), path)?.status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let reply = exchange(
            ep.addr(),
            format!("{method} /metrics HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )?;
        assert_eq!(reply.status, 405, "{method}");
        assert!(reply.head.contains("Allow: GET, HEAD"));
    }
    // HEAD (uptime checkers' request; it was refused with 405): GET's status and headers,
    // no body. The health check answers HEAD too.
    for path in ["/metrics", "/health"] {
        let reply = exchange(
            ep.addr(),
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )?;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.body.is_empty(), "{path}: a body for HEAD");
        assert!(reply.head.contains("Content-Length: "), "{path}");
        assert!(
            !reply.head.contains("Content-Length: 0\r"),
            "{path}: GET's length"
        );
    }
    ep.stop();
    Ok(())
}

/// The default endpoint, with the databases' paths shown.
fn exposing_paths() -> EndpointConfig {
    EndpointConfig {
        expose_paths: true,
        ..EndpointConfig::default()
    }
}

/// Bug caught: `expose_paths` ignored (the monitor cannot show where a database lives even
/// when the operator asked), which would also mean the test above proves nothing.
#[test]
fn paths_are_shown_only_when_asked() -> TestResult {
    let f = fixture("shown", config())?;
    let ep = serve(&f, exposing_paths())?;
    let snap: RegistrySnapshot = serde_json::from_slice(&get(ep.addr(), "/stats")?.body)?;
    assert_eq!(snap.get("shown").map(|d| d.path.clone()), Some(f.path()));
    Ok(())
}

/// Bug caught: one database whose file name is not UTF-8 made `/stats` answer 500 for the
/// whole registry ("path contains invalid UTF-8 characters"): serde refuses such a path.
#[test]
fn a_file_name_that_is_not_utf8_leaves_stats_answering() -> TestResult {
    use std::os::unix::ffi::OsStrExt;
    let f = fixture("plain", config())?;
    let odd = f
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.db"));
    f.registry.register(&DbName::new("odd")?, &odd, config())?;
    let ep = serve(&f, exposing_paths())?;
    let reply = get(ep.addr(), "/stats")?;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let snap: RegistrySnapshot = serde_json::from_slice(&reply.body)?;
    assert_eq!(snap.get("plain").map(|d| d.path.clone()), Some(f.path()));
    assert_eq!(
        snap.get("odd").map(|d| d.path.clone()),
        Some(f.dir.path().join("caf\u{FFFD}.db"))
    );
    Ok(())
}

/// Bug caught: an unhealthy registry answered `200` (a load balancer or monitor would keep
/// sending traffic to it).
#[test]
fn health_is_503_when_unhealthy() -> TestResult {
    let f = fixture(
        "starved",
        DbConfig {
            max_size: 1,
            min_idle: 1,
            ..config()
        },
    )?;
    let ep = serve(
        &f,
        EndpointConfig {
            health_timeout: Duration::from_millis(200),
            health_cache: Duration::ZERO,
            ..EndpointConfig::default()
        },
    )?;
    let held = f.registry.get(&f.name)?;
    let reply = get(ep.addr(), "/health")?;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let report: HealthReport = serde_json::from_slice(&reply.body)?;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    drop(held);
    assert_eq!(get(ep.addr(), "/health")?.status, 200);
    Ok(())
}

/// Bug caught: every scrape of `/health` running a check (a connection and a write-lock
/// probe through the writer lane each time), so that scraping loads the database. The
/// check's own checkouts count in `acquires`, two per check (one for the schema read, one
/// for the write-lock probe): two requests within the cache window run one check, and with
/// no cache two.
#[test]
fn health_checks_are_cached() -> TestResult {
    let f = fixture("cached", config())?;
    let acquires = || f.registry.db_stats(&f.name).map(|s| s.acquires());
    for (cache, checks) in [(Duration::from_secs(600), 1), (Duration::ZERO, 2)] {
        let ep = serve(
            &f,
            EndpointConfig {
                health_cache: cache,
                ..EndpointConfig::default()
            },
        )?;
        let before = acquires()?;
        assert_eq!(get(ep.addr(), "/health")?.status, 200);
        let first = get(ep.addr(), "/health")?;
        assert_eq!(first.status, 200);
        assert_eq!(acquires()? - before, 2 * checks, "cache {cache:?}");
        serde_json::from_slice::<HealthReport>(&first.body)?;
    }
    Ok(())
}

/// Bug caught: scrapes of `/health` queued behind a slow check (each waiting up to its
/// timeout, holding a serving thread) instead of getting the previous answer.
#[test]
fn a_running_check_does_not_hold_up_other_health_requests() -> TestResult {
    let f = fixture(
        "slowcheck",
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
    assert_eq!(get(ep.addr(), "/health")?.status, 200);
    let held = f.registry.get(&f.name)?;
    std::thread::scope(|scope| -> TestResult {
        let slow = scope.spawn(|| get(ep.addr(), "/health").map(|r| r.status));
        // The check is waiting for the held connection.
        assert!(eventually(HANG, || f
            .registry
            .db_stats(&f.name)
            .is_ok_and(|s| s.waiting == 1)));
        let meanwhile = get(ep.addr(), "/health")?;
        assert_eq!(meanwhile.status, 200, "{}", meanwhile.text());
        assert!(!slow.is_finished(), "the slow check ended first");
        assert_eq!(slow.join().expect("slow request")?, 503);
        Ok(())
    })?;
    drop(held);
    Ok(())
}

/// Bug caught: the endpoint listening where other hosts can reach it because nobody said
/// otherwise.
#[test]
fn a_non_loopback_address_needs_the_opt_in() -> TestResult {
    let f = fixture("closedoor", config())?;
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9187"] {
        let refused = endpoint::serve(
            &f.registry,
            EndpointConfig {
                addr: addr.parse()?,
                ..EndpointConfig::default()
            },
        );
        assert!(
            matches!(refused, Err(EndpointError::NotLoopback { .. })),
            "{addr}: {refused:?}"
        );
    }
    Ok(())
}

/// Bug caught: a port in use reported as something else (or a panic), so the operator
/// cannot tell why the endpoint did not start.
#[test]
fn a_port_in_use_is_a_bind_error_naming_the_address() -> TestResult {
    let f = fixture("taken", config())?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let refused = endpoint::serve(
        &f.registry,
        EndpointConfig {
            addr,
            ..EndpointConfig::default()
        },
    );
    match refused {
        Err(e @ EndpointError::Bind { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// Bug caught: a read with no deadline, so a client that sends half a request and stalls
/// holds a serving thread forever and, with a few like it, the whole endpoint.
#[test]
fn a_stalled_client_does_not_block_others_and_is_cut_off() -> TestResult {
    let f = fixture("stall", config())?;
    let ep = serve(
        &f,
        EndpointConfig {
            request_timeout: Duration::from_secs(3),
            ..EndpointConfig::default()
        },
    )?;
    let mut stalled = connect(ep.addr())?;
    stalled.write_all(b"GET /metr")?;
    for _ in 0..5 {
        assert_eq!(get(ep.addr(), "/metrics")?.status, 200);
    }
    // Still waiting for the rest of its request, not answered yet.
    stalled.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    assert!(
        matches!(stalled.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    );
    stalled.set_nonblocking(false)?;
    let started = Instant::now();
    let reply = read_reply(&mut stalled)?;
    assert_eq!(reply.status, 408);
    assert!(started.elapsed() < HANG);
    Ok(())
}

/// Bug caught: a deadline per read rather than per request, which a client trickling one
/// byte at a time (slowloris) renews for ever.
#[test]
fn a_trickling_client_is_cut_at_the_request_deadline() -> TestResult {
    let f = fixture("trickle", config())?;
    let ep = serve(
        &f,
        EndpointConfig {
            request_timeout: Duration::from_secs(1),
            ..EndpointConfig::default()
        },
    )?;
    let mut stream = connect(ep.addr())?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")?;
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        if stream.write_all(b"a").is_err() {
            break;
        }
        stream.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        let answered = stream.peek(&mut byte).is_ok();
        stream.set_nonblocking(false)?;
        if answered {
            break;
        }
    }
    assert_eq!(read_reply(&mut stream)?.status, 408);
    Ok(())
}

/// Bug caught: a request line or head with no size cap (memory grows with what a client
/// sends), refused with the wrong status, or malformed input crashing a serving thread.
#[test]
fn oversized_and_malformed_requests_are_refused() -> TestResult {
    let f = fixture("hostile", config())?;
    let ep = serve(
        &f,
        EndpointConfig {
            threads: 1,
            ..EndpointConfig::default()
        },
    )?;
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(8 * 1024));
    let long_header = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    let endless = "c".repeat(1 << 20);
    let cases: Vec<(&[u8], u16)> = vec![
        (long_target.as_bytes(), 414),
        (long_header.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        (endless.as_bytes(), 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /m\xffetrics HTTP/1.1\r\n\r\n", 400),
        // The absolute form is served, as RFC 9112 (3.2.2) requires; a target that is
        // neither form is not.
        (b"GET http://evil/metrics HTTP/1.1\r\n\r\n", 200),
        (b"GET evil/metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 505),
        (b"\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        let reply = exchange(ep.addr(), request)?;
        assert_eq!(reply.status, status, "{shown:?}: {}", reply.head);
        // The endpoint and its one worker survived it.
        assert_eq!(get(ep.addr(), "/metrics")?.status, 200, "after {shown:?}");
    }
    // A client that connects and closes without a word gets nothing and costs nothing.
    drop(connect(ep.addr())?);
    assert_eq!(get(ep.addr(), "/health")?.status, 200);
    Ok(())
}

/// Sets its flag when dropped, also while a panic unwinds.
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Bug caught: a thread or an unbounded queue per connection (200 clients at once would
/// start 200 threads), connections past the cap left hanging, the endpoint down after a
/// flood, or checkout slowed to a stop by it.
#[test]
fn two_hundred_connections_at_once() -> TestResult {
    let f = fixture("flood", config())?;
    create_table(&f)?;
    let threads = 2;
    let ep = serve(
        &f,
        EndpointConfig {
            threads,
            max_connections: 16,
            request_timeout: Duration::from_secs(2),
            ..EndpointConfig::default()
        },
    )?;
    let addr = ep.addr();
    assert!(eventually(HANG, || endpoint_threads(addr) == threads + 1));
    let tasks_before = process_threads();
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let most_threads = std::thread::scope(|scope| -> anyhow::Result<usize> {
        // A failed assertion below must still stop the checkout thread, or the scope would
        // wait for it for ever.
        let _stop = StopOnDrop(&stop);
        let checkout = scope.spawn(|| -> TestResult {
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = f.registry.read(&f.name, |c| {
                    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                })?;
                assert_eq!(n, 0);
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        // Half ask for /metrics, half connect and say nothing.
        let mut streams = Vec::new();
        for i in 0..200 {
            let mut s = connect(addr)?;
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
            }
            streams.push(s);
        }
        let mut most = endpoint_threads(addr);
        let mut most_tasks = process_threads();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for (i, mut s) in streams.into_iter().enumerate() {
            most = most.max(endpoint_threads(addr));
            most_tasks = most_tasks.max(process_threads());
            let mut bytes = Vec::new();
            // Every connection ends within its bound: answered, or closed.
            let read = s.read_to_end(&mut bytes);
            let status = if bytes.is_empty() {
                0
            } else {
                String::from_utf8_lossy(&bytes)
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1)
            };
            // A refused client may see a reset instead of its 503: it still ended.
            if let Err(e) = &read {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "connection {i} hung: {e}"
                );
            }
            *statuses.entry(status).or_default() += 1;
        }
        eprintln!(
            "flood replies by status (0 = closed unanswered): {statuses:?}; \
             process threads {tasks_before} before, at most {most_tasks} during"
        );
        // Loose, for the tests running beside this one; a thread per connection adds 200.
        assert!(
            most_tasks < tasks_before + 100,
            "{tasks_before} -> {most_tasks}"
        );
        assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
        assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
        assert!(
            statuses.keys().all(|s| [0, 200, 408, 503].contains(s)),
            "{statuses:?}"
        );
        // Still up, and checkout went on throughout.
        assert!(eventually(HANG, || get(addr, "/metrics")
            .is_ok_and(|r| r.status == 200)));
        stop.store(true, Ordering::Relaxed);
        checkout.join().expect("checkout thread")?;
        Ok(most)
    })?;
    assert!(
        most_threads <= threads + 1,
        "{most_threads} endpoint threads"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    ep.stop();
    assert!(gone(addr), "threads left after stop");
    Ok(())
}

/// Bug caught: an answer cut short by a reset when the client sent more after its request
/// head (a pipelined request, a body): the endpoint closed with that input unread, which
/// Linux answers with a reset that drops what of the answer was still queued to send; a
/// 2.5 MB `/metrics` ended after 128 KB in `ECONNRESET`.
#[test]
fn an_answer_reaches_a_client_that_sent_more_after_its_request() -> TestResult {
    let f = fixture("pipelined", config())?;
    create_table(&f)?;
    // Enough databases that `/metrics` outgrows what the socket buffers hold at once.
    let dir = tempfile::tempdir()?;
    for i in 0..300 {
        let config = DbConfig {
            create_if_missing: true,
            min_idle: 0,
            ..DbConfig::default()
        };
        let name = DbName::new(&format!("db{i:03}"))?;
        f.registry
            .register(&name, dir.path().join(format!("{i}.db")), config)?;
    }
    let ep = serve(&f, EndpointConfig::default())?;
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    // Whether `answer` is whole: as long as its head's `Content-Length` says.
    let whole = |answer: &[u8]| -> Option<(usize, usize)> {
        let end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        Some((answer.len() - end, length))
    };
    for (what, head, more) in [
        ("a pipelined request", &request[..], &request[..]),
        (
            "a body",
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"[..],
            &b"hello"[..],
        ),
    ] {
        let mut s = connect(ep.addr())?;
        s.write_all(head)?;
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(more)?;
        // A client that reads a moment later (a slow scraper, a busy machine).
        std::thread::sleep(Duration::from_millis(300));
        let mut b = Vec::new();
        let read = s.read_to_end(&mut b);
        let sizes = whole(&b);
        assert!(
            read.is_ok() && sizes.is_some_and(|(got, said)| got == said && said > 1_000_000),
            "{what}: {} bytes (body, Content-Length: {sizes:?}), then {read:?}",
            b.len()
        );
    }
    ep.stop();
    Ok(())
}

/// Bug caught: `stop` (or drop) waiting for a stalled client's full request timeout, or
/// leaving threads and the port behind.
#[test]
fn stop_and_drop_are_prompt_and_join_every_thread() -> TestResult {
    let f = fixture("stopping", config())?;
    let config = EndpointConfig {
        threads: 3,
        request_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(60),
        ..EndpointConfig::default()
    };
    let ep = serve(&f, config.clone())?;
    let addr = ep.addr();
    assert!(eventually(HANG, || endpoint_threads(addr) == 4));
    let mut stalled = connect(addr)?;
    stalled.write_all(b"GET /")?;
    // Let the endpoint take it and wait for the rest of its head.
    assert_eq!(get(addr, "/metrics")?.status, 200);
    let started = Instant::now();
    ep.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(gone(addr), "threads left after stop");
    assert!(
        TcpStream::connect_timeout(&addr, HANG).is_err(),
        "still listening"
    );

    let dropped = serve(&f, config)?;
    let addr = dropped.addr();
    drop(dropped);
    assert!(gone(addr), "threads left after drop");
    assert!(TcpStream::connect_timeout(&addr, HANG).is_err());
    Ok(())
}

/// Bug caught: an endpoint that cannot be handed to another thread or kept in a static, or
/// a `serve` that the installed registry (`&'static Registry`) cannot be passed to.
#[test]
fn endpoint_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Endpoint>();
    send_sync::<EndpointConfig>();
    send_sync::<EndpointError>();
    fn serve_installed(registry: &'static Registry) -> Result<Endpoint, EndpointError> {
        endpoint::serve(registry, EndpointConfig::default())
    }
    let _ = serve_installed;
}
