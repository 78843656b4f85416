//! # flink_rs_rest_api: the JSON of the jobmanager's REST API
//!
//! The request and response bodies of the REST API (`docs/rest-api.yaml`), with Apache
//! Flink's resource shapes and field names where they fit. The jobmanager serializes these
//! types, and the CLI client (`flink-rs job`) and the Kubernetes operator deserialize them, so
//! a field renamed on one side is a compile error on the other. This crate depends on serde
//! only: the operator reads the API without linking the engine.

mod checkpoints;
mod cluster;
mod jobs;
mod monitoring;
mod savepoints;

pub use checkpoints::{
    CheckpointCounts, CheckpointStatistics, CompletedCheckpoint, FailedCheckpoint,
    LatestCheckpoints, RestoredCheckpoint,
};
pub use cluster::{
    ClusterOverview, ConfigEntry, DashboardConfig, Hardware, TaskManagerInfo, TaskManagers,
};
pub use jobs::{
    JobDetail, JobId, JobList, JobListEntry, JobStatus, JobSummary, JobsOverview, SubmitRequest,
    SubmitResponse, UnknownJobStatus, Vertex, VertexMetrics,
};
pub use monitoring::{
    ExceptionEntry, ExceptionHistory, JobExceptions, JobPlan, MetricValue, Plan, PlanInput,
    PlanNode, SubtaskBackPressure, SubtaskDetail, VertexBackPressure, VertexDetail,
    backpressure_level,
};
pub use savepoints::{
    FailureCause, OperationResult, OperationStatus, QueueStatus, QueueStatusId, SavepointRequest,
    StopRequest, TriggerResponse,
};

/// An error answer: `{"errors": ["…"]}`, as Flink answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorResponse {
    pub errors: Vec<String>,
}

impl ErrorResponse {
    pub fn new(message: impl Into<String>) -> Self {
        ErrorResponse {
            errors: vec![message.into()],
        }
    }
}
