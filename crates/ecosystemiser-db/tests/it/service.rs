//! The example service (examples/eco_service.rs) over real HTTP, under concurrent requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use ecosystemiser_db::{EcoDb, Event, Runs, Settings};
use hive_db_core::Registry;
use serde_json::json;

use crate::eco_service::{Service, router, seed};

/// One HTTP/1.1 request on a fresh connection: the status code and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status in {answer:?}"))?
        .parse()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Bug caught: a route of the service that blocks or loses work under concurrent requests
/// (metrics batches or events missing afterwards), answers a spec other than the sync
/// lookup's, or a `/metrics` that is not the registry's Prometheus text; or a duplicate
/// event id answered 500 rather than 409.
#[test]
fn the_service_answers_concurrent_requests_over_http() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let db = EcoDb::with_registry(&registry, &Settings::new(dir.path().join("eco.db")))?;
    seed(&db)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = router(Service::new(&registry, &db));
    let server = rt.spawn(async move { axum::serve(listener, app).await });

    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                let batch = json!([{"name": format!("m{c}a"), "value": 1.0, "unit": "kW"},
                                   {"name": format!("m{c}b"), "value": 2.0, "unit": null}]);
                let (status, body) = request(
                    addr,
                    "POST",
                    "/simulations/demo/metrics",
                    &batch.to_string(),
                )?;
                anyhow::ensure!((status, body.as_str()) == (201, "2"), "{status} {body}");
                let mut event = Event::new("simulation.step", "service-test", json!({"c": c}));
                event.simulation_id = Some("demo".into());
                let (status, body) =
                    request(addr, "POST", "/events", &serde_json::to_string(&event)?)?;
                anyhow::ensure!((status, &body) == (201, &event.event_id), "{status} {body}");
                let (status, body) = request(addr, "GET", "/components/battery", "")?;
                anyhow::ensure!(status == 200 && body.contains("\"lfp\""), "{status} {body}");
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }

    assert_eq!(Runs::new(&db).metrics("demo")?.len(), 16);
    let (status, body) = request(addr, "GET", "/simulations/demo/events", "")?;
    assert_eq!(status, 200);
    let events: Vec<Event> = serde_json::from_str(&body)?;
    assert_eq!(events.len(), 8);
    let (status, body) = request(addr, "GET", "/components/heat_pump", "")?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(addr, "POST", "/simulations/nope/metrics", "[]")?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(addr, "GET", "/metrics", "")?;
    assert_eq!(status, 200);
    assert!(body.contains("ecosystemiser"), "{body}");
    // An event id already stored is the client's conflict, not the server's failure.
    let event = &events[0];
    let (status, body) = request(addr, "POST", "/events", &serde_json::to_string(event)?)?;
    assert_eq!(status, 409, "{body}");
    server.abort();
    Ok(())
}
