//! REST authentication: an optional bearer token every request must carry
//! (`Authorization: Bearer …`), read from the file `rest.authentication.token-file` names.
//!
//! Only `GET /` (the dashboard's page: static HTML, no data; it asks for the token and sends
//! it with each of its requests) is served without it. Prometheus' `/metrics` on its own
//! port (`metrics.reporter.prom.port`) is not covered, as in Flink.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flink_rs_core::error::{Error, Result};
use flink_rs_rest_api as api;

/// The configuration key naming the token file (this project's key; Flink has none).
pub const TOKEN_FILE_KEY: &str = "rest.authentication.token-file";

/// Reads a token file: its content without surrounding whitespace, which must not be empty.
pub fn read_token_file(path: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::config(
            TOKEN_FILE_KEY,
            format!("{path} is empty: it must hold the token"),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::config(
            TOKEN_FILE_KEY,
            format!("{path}: the token must be one word (no spaces or line breaks inside)"),
        ));
    }
    Ok(token.to_string())
}

/// The token requests must carry.
pub(crate) struct BearerToken(String);

impl BearerToken {
    pub(crate) fn new(token: String) -> Arc<Self> {
        Arc::new(BearerToken(token))
    }

    /// Whether an `Authorization` header value carries this token. The comparison takes the
    /// same time wherever the first difference is.
    fn admits(&self, value: Option<&HeaderValue>) -> bool {
        let Some(given) = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let (a, b) = (given.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

/// Answers 401 (Flink's error body, `WWW-Authenticate: Bearer`) to a request without the
/// token; passes the others on.
pub(crate) async fn require(
    State(token): State<Arc<BearerToken>>,
    req: Request,
    next: Next,
) -> Response {
    let open = req.method() == Method::GET && req.uri().path() == "/";
    if open || token.admits(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(api::ErrorResponse::new(
            "Unauthorized: this jobmanager requires `Authorization: Bearer <token>` \
             (the token in its rest.authentication.token-file)",
        )),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = BearerToken("s3cret".into());
        let h = |s: &str| HeaderValue::from_str(s).expect("header");
        assert!(t.admits(Some(&h("Bearer s3cret"))));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cretx",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!t.admits(Some(&h(bad))), "{bad}");
        }
        assert!(!t.admits(None));
    }

    #[test]
    fn a_token_file_holds_one_word() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("token");
        let path = f.display().to_string();
        std::fs::write(&f, "abc123\n").expect("write");
        assert_eq!(read_token_file(&path).expect("read"), "abc123");
        for bad in ["", " \n", "two words"] {
            std::fs::write(&f, bad).expect("write");
            let e = read_token_file(&path).expect_err("refused").to_string();
            assert!(e.contains(TOKEN_FILE_KEY) && e.contains(&path), "{e}");
        }
        let missing = dir.path().join("none").display().to_string();
        assert!(read_token_file(&missing).is_err());
    }
}
