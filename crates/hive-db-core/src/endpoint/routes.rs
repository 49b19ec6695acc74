//! The routes: `/metrics`, `/stats` and `/health`, and the answers to anything else.

use super::health::check;
use super::http::Request;
use super::response::Response;
use super::state::State;
use crate::metrics::{PROMETHEUS_CONTENT_TYPE, prometheus_text};

/// What a request asks for, once it is known to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Metrics,
    Stats,
    Health,
}

/// The route of a request, or the answer to one that has none (`404`, `405`). Cheap: the
/// polling thread calls it.
pub(super) fn route(request: &Request<'_>) -> Result<Route, Response> {
    let route = match request.path {
        "/metrics" => Route::Metrics,
        "/stats" => Route::Stats,
        "/health" => Route::Health,
        _ => {
            return Err(Response::text(
                404,
                "not found: try /metrics, /stats or /health\n",
            ));
        }
    };
    // HEAD is GET without the body (uptime checkers use it); the connection leaves the
    // body out when it writes the answer.
    if request.method != "GET" && request.method != "HEAD" {
        return Err(
            Response::text(405, "only GET and HEAD are served\n").header("Allow", "GET, HEAD")
        );
    }
    Ok(route)
}

/// The answer to a route: a snapshot, or a health check that can take up to
/// `health_timeout`. Slow: a worker thread calls it.
pub(super) fn render(state: &State, route: Route) -> Response {
    match route {
        Route::Metrics => Response {
            status: 200,
            content_type: PROMETHEUS_CONTENT_TYPE,
            extra: None,
            body: prometheus_text(&state.registry.stats()).into_bytes(),
        },
        Route::Stats => {
            let mut snapshot = state.registry.stats();
            if !state.config.expose_paths {
                for db in &mut snapshot.databases {
                    db.path = std::path::PathBuf::new();
                    for replica in db.postgres.iter_mut().flat_map(|p| &mut p.replicas) {
                        replica.target = std::path::PathBuf::new();
                    }
                }
            }
            Response::json(200, &snapshot)
        }
        Route::Health => check(state),
    }
}
