//! What can go wrong talking to a jobmanager's REST API, typed so that a caller can tell an
//! absent jobmanager from a refused request, and a refused request by its status.

use std::time::Duration;

/// An error of [`RestClient`](crate::client::RestClient).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach the jobmanager at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The jobmanager answered with an error status; `message` is its `errors` text.
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status code (404: no such job or request).
        code: u16,
        /// The status as HTTP names it (`404 Not Found`).
        status: String,
        message: String,
    },
    /// An answer that is not the REST API's type the request expects.
    #[error("unexpected answer from the jobmanager ({message}), expected a {expected}: {body}")]
    UnexpectedAnswer {
        expected: &'static str,
        message: String,
        body: String,
    },
    /// The savepoint failed; the cause as the jobmanager reports it.
    #[error("checkpoint {0}")]
    SavepointFailed(String),
    /// The savepoint did not complete in time (it may still).
    #[error("savepoint {request} did not complete within {waited:?}")]
    SavepointTimeout { request: String, waited: Duration },
    /// The client could not start (its runtime or HTTP client).
    #[error("REST client: {0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status code of a refused request.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// For callers that work in the engine's error type: a failed savepoint stays a checkpoint
/// error, the rest are the cluster's.
impl From<ClientError> for flink_rs_core::Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::SavepointFailed(cause) => flink_rs_core::Error::Checkpoint(cause),
            other => flink_rs_core::Error::Network(other.to_string()),
        }
    }
}
