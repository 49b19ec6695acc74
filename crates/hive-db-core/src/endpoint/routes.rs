//! The routes: `/metrics`, `/stats` and `/health`, and the answers to anything else.

use super::State;
use super::health::health;
use super::http::Request;
use super::response::Response;
use crate::metrics::{PROMETHEUS_CONTENT_TYPE, prometheus_text};

pub(super) fn route(state: &State, request: &Request<'_>) -> Response {
    let known = matches!(request.path, "/metrics" | "/stats" | "/health");
    if !known {
        return Response::text(404, "not found: try /metrics, /stats or /health\n");
    }
    if request.method != "GET" {
        return Response::text(405, "only GET is served\n").header("Allow", "GET");
    }
    match request.path {
        "/metrics" => Response {
            status: 200,
            content_type: PROMETHEUS_CONTENT_TYPE,
            extra: None,
            body: prometheus_text(&state.registry.stats()).into_bytes(),
        },
        "/stats" => {
            let mut snapshot = state.registry.stats();
            if !state.config.expose_paths {
                for db in &mut snapshot.databases {
                    db.path = std::path::PathBuf::new();
                }
            }
            Response::json(200, &snapshot)
        }
        _ => health(state),
    }
}
