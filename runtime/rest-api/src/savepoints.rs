//! Savepoints and stop-with-savepoint: the trigger requests and the asynchronous operation
//! they start (`POST /jobs/{id}/savepoints`, `POST /jobs/{id}/stop`,
//! `GET /jobs/{id}/savepoints/{request-id}`).

use serde::{Deserialize, Serialize};

/// `POST /jobs/{id}/savepoints`. `cancel-job` stops the job with the savepoint; a
/// `triggerId` makes the request idempotent (the same id answers the same request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavepointRequest {
    #[serde(
        rename = "target-directory",
        alias = "targetDirectory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_directory: Option<String>,
    #[serde(rename = "cancel-job", default)]
    pub cancel_job: bool,
    #[serde(rename = "triggerId", default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
}

/// `POST /jobs/{id}/stop`: stop the job with a savepoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    #[serde(
        rename = "targetDirectory",
        alias = "target-directory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_directory: Option<String>,
    #[serde(rename = "triggerId", default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
}

/// The answer to a trigger: the id to poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerResponse {
    #[serde(rename = "request-id")]
    pub request_id: String,
}

/// `GET /jobs/{id}/savepoints/{request-id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStatus {
    pub status: QueueStatus,
    /// Present once the operation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationResult>,
}

/// `{"id": "IN_PROGRESS" | "COMPLETED"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub id: QueueStatusId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatusId {
    InProgress,
    Completed,
}

/// A completed operation: the savepoint's location, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(
        rename = "failure-cause",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_cause: Option<FailureCause>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureCause {
    pub class: String,
    #[serde(rename = "stack-trace")]
    pub stack_trace: String,
}

impl OperationStatus {
    pub fn in_progress() -> Self {
        OperationStatus {
            status: QueueStatus {
                id: QueueStatusId::InProgress,
            },
            operation: None,
        }
    }

    pub fn completed(location: String) -> Self {
        OperationStatus {
            status: QueueStatus {
                id: QueueStatusId::Completed,
            },
            operation: Some(OperationResult {
                location: Some(location),
                failure_cause: None,
            }),
        }
    }

    pub fn failed(class: &str, message: String) -> Self {
        OperationStatus {
            status: QueueStatus {
                id: QueueStatusId::Completed,
            },
            operation: Some(OperationResult {
                location: None,
                failure_cause: Some(FailureCause {
                    class: class.to_string(),
                    stack_trace: message,
                }),
            }),
        }
    }

    /// `None` while in progress; then the savepoint's location, or the failure's message.
    pub fn outcome(&self) -> Option<Result<String, String>> {
        if self.status.id != QueueStatusId::Completed {
            return None;
        }
        let op = self.operation.as_ref();
        Some(match op.and_then(|o| o.location.clone()) {
            Some(location) => Ok(location),
            None => Err(op
                .and_then(|o| o.failure_cause.as_ref())
                .map(|c| c.stack_trace.clone())
                .unwrap_or_else(|| "the savepoint failed without a cause".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_as_flink_writes_them() {
        let done: OperationStatus = serde_json::from_str(
            r#"{"status":{"id":"COMPLETED"},"operation":{"location":"s3://b/sp-1"}}"#,
        )
        .expect("parses");
        assert_eq!(done.outcome(), Some(Ok("s3://b/sp-1".into())));
        let failed = OperationStatus::failed("flink_rs::Error", "disk full".into());
        let v = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(v["operation"]["failure-cause"]["stack-trace"], "disk full");
        assert_eq!(failed.outcome(), Some(Err("disk full".into())));
        let running = serde_json::to_value(OperationStatus::in_progress()).expect("serializes");
        assert_eq!(
            running,
            serde_json::json!({"status": {"id": "IN_PROGRESS"}})
        );
    }

    #[test]
    fn trigger_bodies_take_both_spellings_of_the_directory() {
        let a: SavepointRequest =
            serde_json::from_str(r#"{"targetDirectory":"/d","triggerId":"t1"}"#).expect("parses");
        assert_eq!(a.target_directory.as_deref(), Some("/d"));
        assert_eq!(a.trigger_id.as_deref(), Some("t1"));
        assert!(!a.cancel_job);
        let b: StopRequest = serde_json::from_str(r#"{"target-directory":"/e"}"#).expect("parses");
        assert_eq!(b.target_directory.as_deref(), Some("/e"));
    }
}
