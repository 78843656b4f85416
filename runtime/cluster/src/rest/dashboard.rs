//! The web dashboard at `/` of `rest.port`: one HTML page, built into the binary (no Node
//! toolchain), whose script polls the REST API and redraws — cluster overview, jobs, a job's
//! dataflow graph with each vertex's rate, backpressure and watermark, checkpoints,
//! exceptions, taskmanagers, and savepoint / stop / cancel buttons.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");

/// `GET /`.
pub(super) async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}
