//! A small HTTP service on the data layer's async calls: component specs, events, metrics.
//!
//! `cargo run -p ecosystemiser-db --example eco_service -- [PORT] [DB_PATH]` (or the
//! `ECO_SERVICE_PORT` environment variable) binds 127.0.0.1:PORT (default 0: any free port)
//! and prints the address; Ctrl-C stops it (the requests under way get 5 s to finish).
//! Routes:
//!
//! - `GET /components/{type}`: the type's default spec (JSON);
//! - `POST /events`: publish an event (JSON body, an `Event`); answers its id;
//! - `GET /simulations/{id}/events`: the simulation's last 50 events, newest first;
//! - `POST /simulations/{id}/metrics`: record a batch (JSON list of metrics);
//! - `GET /metrics`: the registry's counters as Prometheus text.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ecosystemiser_db::{
    ComponentLibrary, ComponentSpec, EcoDb, Error, Event, EventStore, Metric, NewSimulation, Runs,
    Settings,
};
use hive_db_core::Registry;

/// How long Ctrl-C waits for the requests under way.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    registry: Registry,
    library: ComponentLibrary,
    events: EventStore,
    runs: Runs,
}

impl Service {
    /// The service of `db`, whose pool lives in `registry`.
    pub(crate) fn new(registry: &Registry, db: &EcoDb) -> Self {
        Self {
            registry: registry.clone(),
            library: ComponentLibrary::new(db),
            events: EventStore::new(db),
            runs: Runs::new(db),
        }
    }
}

/// A data layer error as an HTTP answer: 404 for what is not there, 400 for bad input.
fn failure(e: &Error) -> Response {
    let status = match e {
        Error::NotFound { .. } | Error::UnknownComponentType { .. } => StatusCode::NOT_FOUND,
        Error::InvalidInput { .. } => StatusCode::BAD_REQUEST,
        // An event id (or another unique key) that is already stored.
        e if e.is_unique_violation() => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string()).into_response()
}

async fn component(State(s): State<Arc<Service>>, Path(ty): Path<String>) -> Response {
    match s.library.spec_async(&ty, None, None).await {
        Ok(spec) => Json(spec).into_response(),
        Err(e) => failure(&e),
    }
}

async fn publish(State(s): State<Arc<Service>>, Json(event): Json<Event>) -> Response {
    match s.events.publish_async(&event).await {
        Ok(id) => (StatusCode::CREATED, id).into_response(),
        Err(e) => failure(&e),
    }
}

async fn history(State(s): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    match s.events.simulation_history_async(&id, 50).await {
        Ok(events) => Json(events).into_response(),
        Err(e) => failure(&e),
    }
}

async fn metrics_batch(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
    Json(batch): Json<Vec<Metric>>,
) -> Response {
    match s.runs.record_metrics_async(&id, &batch).await {
        Ok(n) => (StatusCode::CREATED, n.to_string()).into_response(),
        Err(e) => failure(&e),
    }
}

async fn prometheus(State(s): State<Arc<Service>>) -> Response {
    let text = hive_db_core::prometheus_text(&s.registry.stats());
    (
        [(header::CONTENT_TYPE, hive_db_core::PROMETHEUS_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The service's routes.
pub(crate) fn router(service: Service) -> Router {
    Router::new()
        .route("/components/{type}", get(component))
        .route("/events", post(publish))
        .route("/simulations/{id}/events", get(history))
        .route("/simulations/{id}/metrics", post(metrics_batch))
        .route("/metrics", get(prometheus))
        .with_state(Arc::new(service))
}

/// A battery type with a default spec and simulation `demo`, so a fresh database answers.
///
/// # Errors
///
/// The data layer's.
pub(crate) fn seed(db: &EcoDb) -> ecosystemiser_db::Result<()> {
    let library = ComponentLibrary::new(db);
    if library.spec("battery", None, None).is_err() {
        library.add_type("battery", "energy", Some("stores energy"))?;
        let mut technical = serde_json::Map::new();
        technical.insert("capacity_kwh".into(), 10.0.into());
        let mut spec = ComponentSpec::new("battery", "energy", "lfp", technical);
        spec.is_default = true;
        library.add_spec(&spec)?;
    }
    let runs = Runs::new(db);
    if runs.simulation("demo")?.is_none() {
        runs.create_simulation(&NewSimulation::new("demo", "demo.yml", "milp"))?;
    }
    Ok(())
}

#[allow(
    dead_code,
    reason = "the tests include this file for its router, without main"
)]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args
        .next()
        .or_else(|| std::env::var("ECO_SERVICE_PORT").ok())
    {
        Some(p) => p.parse()?,
        None => 0,
    };
    let dir = tempfile::tempdir()?;
    let path = args
        .next()
        .map_or_else(|| dir.path().join("eco.db"), Into::into);
    let registry = Registry::new();
    let db = EcoDb::with_registry(&registry, &Settings::new(path))?;
    seed(&db)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        // Ctrl-C stops taking connections and lets the requests under way finish, for
        // `GRACE` at most: a client that sends half a request and then nothing must not keep
        // the service from stopping.
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router(Service::new(&registry, &db)))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                println!("stopping: finishing the requests under way");
                let _ = stopping.send(());
            });
        let deadline = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = server => served?,
            () = deadline => println!("stopped: requests still under way after {GRACE:?} were cut"),
        }
        anyhow::Ok(())
    })
}
