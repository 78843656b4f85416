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

/// Refuses a declared `Content-Length` over the limit before reading anything, and reads a
/// chunked body (no declared length) here, refusing it the same way once it grows over the
/// limit.
pub(crate) async fn bounded(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return drained_too_large(req.into_body().into_data_stream()).await;
    }
    let chunked = declared.is_none()
        && req
            .headers()
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        // No length declared: read it here, up to the limit, so that one that grows over it
        // is drained and answered as above rather than cut off mid-body.
        let (parts, body) = req.into_parts();
        let mut body = body.into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return super::error(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                );
            };
            buf.extend_from_slice(&chunk);
            if buf.len() > MAX_BODY_BYTES {
                return drained_too_large(body).await;
            }
        }
        let req = Request::from_parts(parts, axum::body::Body::from(buf.freeze()));
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    resp
}

/// Reads and drops the rest of `body`, up to a bound, then answers 413: a client still
/// writing its body when the connection closes would see a reset, not the answer.
async fn drained_too_large(mut body: axum::body::BodyDataStream) -> Response {
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
    too_large()
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A chunked body over the limit, sent over a real connection, is read to its end and
    /// answered 413 with Flink's error body; one under it reaches the handler whole.
    #[test]
    fn a_chunked_body_over_the_limit_is_drained_and_refused() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn(super::bounded));
        rt.spawn(async move { axum::serve(listener, app).await });
        let send = |chunks: usize| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n",
            )
            .expect("head");
            let chunk = vec![b'a'; 512 * 1024];
            // A server that stops reading and closes makes these fail (a reset): the
            // answer read below is then missing.
            let mut written = Ok(());
            for _ in 0..chunks {
                written = written
                    .and_then(|()| s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()))
                    .and_then(|()| s.write_all(&chunk))
                    .and_then(|()| s.write_all(b"\r\n"));
            }
            written = written.and_then(|()| s.write_all(b"0\r\n\r\n"));
            if let Err(e) = written {
                return format!("the body could not be sent: {e}");
            }
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        };
        // 20 MiB: more than the socket buffers hold, so the server must read it.
        let refused = send(40);
        assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
        assert!(
            refused.contains("\"errors\"") && refused.contains("2 MiB"),
            "{refused}"
        );
        let echoed = send(2);
        assert!(echoed.starts_with("HTTP/1.1 200"), "{echoed}");
        assert!(echoed.ends_with(&(1024 * 1024).to_string()), "{echoed}");
    }
}
