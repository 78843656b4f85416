//! What can go wrong between a taskmanager and its jobmanager, typed so that the
//! taskmanager can tell a jobmanager that is not there yet (retry) from an address that can
//! never work (stop and say so).
//!
//! Failures inside a running job (a data channel that breaks, a frame that cannot be read)
//! are the engine's [`flink_rs_core::Error`]: they fail the job's tasks, and the job master's
//! restart strategy decides what happens next.

/// An error of a taskmanager's control session with its jobmanager.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `jobmanager.rpc.address` is not something a connection can be opened to: retrying
    /// cannot help.
    #[error("jobmanager address `{address}` is not a valid endpoint: {source}")]
    InvalidAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The jobmanager did not answer (not started yet, restarting, unreachable), or the
    /// TLS handshake with it failed (the message then names the certificate problem, which
    /// tonic's own message, "transport error", leaves out).
    #[error("cannot reach the jobmanager at {address}: {}", causes(.source))]
    Unreachable {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The jobmanager refused the session or the session broke.
    #[error("session with the jobmanager at {address}: {status}")]
    SessionLost {
        address: String,
        status: Box<tonic::Status>,
    },
}

/// `e` and its causes, joined by ": ".
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

impl ClusterError {
    /// Whether registering again later may succeed (everything but a bad address).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ClusterError::InvalidAddress { .. })
    }
}

/// For callers that work in the engine's error type.
impl From<ClusterError> for flink_rs_core::Error {
    fn from(e: ClusterError) -> Self {
        flink_rs_core::Error::Network(e.to_string())
    }
}
