//! REST request bodies are bounded (`MAX_BODY_BYTES`, documented in `docs/rest-api.yaml`).
//!
//! A body over the limit is answered `413` with Flink's `{"errors": [..]}` and
//! `Connection: close`, after the body is read and dropped (up to 64 MiB or 10 s, so that the
//! client, still writing, reads the answer rather than a reset); the header tells the client
//! not to reuse the connection.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flink_rs_rest_api as api;
use futures::StreamExt;

/// The largest request body the REST API reads: 2 MiB.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How much of an oversized body is read and dropped before the 413, and for how long.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses a declared `Content-Length` over the limit before reading anything, and turns
/// the body extractor's own refusal (a chunked body that grew over it) into the same answer.
pub(crate) async fn bounded(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Read (and drop) what the client sends before answering, up to a bound: a client
        // still writing its body when the connection closes sees a reset, not the 413.
        let mut body = req.into_body().into_data_stream();
        let mut read = 0usize;
        let drain = async {
            while let Some(Ok(chunk)) = body.next().await {
                read += chunk.len();
                if read > DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        return too_large();
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    resp
}

fn too_large() -> Response {
    let mut resp = (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(api::ErrorResponse::new(format!(
            "the request body is larger than the REST API's limit of {} MiB",
            MAX_BODY_BYTES / (1024 * 1024)
        ))),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
