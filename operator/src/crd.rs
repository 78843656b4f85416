//! The `FlinkJob` custom resource (`flinkrs.io/v1alpha1`, short name `fj`). Spec field names
//! follow the Apache Flink Kubernetes Operator's `FlinkDeployment` where they mean the same.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Flink SQL job on Kubernetes: a jobmanager, taskmanagers, checkpoints in object storage.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flinkrs.io",
    version = "v1alpha1",
    kind = "FlinkJob",
    namespaced,
    shortname = "fj",
    status = "FlinkJobStatus",
    printcolumn = r#"{"name":"Lifecycle","type":"string","jsonPath":".status.lifecycleState"}"#,
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".status.jobState"}"#,
    printcolumn = r#"{"name":"Parallelism","type":"integer","jsonPath":".spec.job.parallelism"}"#,
    printcolumn = r#"{"name":"Last-Checkpoint","type":"date","jsonPath":".status.lastCheckpoint.time"}"#,
    printcolumn = r#"{"name":"Restarts","type":"integer","jsonPath":".status.jobRestarts"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = r#"!has(self.spec.checkpointing) || self.spec.checkpointing.storage.matches('^(s3|gs|az|file)://.+|^/.+')"#,
    validation = r#"!has(self.spec.taskManager) || (has(self.spec.taskManager.replicas) ? self.spec.taskManager.replicas : 1) * (has(self.spec.taskManager.slots) ? self.spec.taskManager.slots : 1) >= self.spec.job.parallelism"#
)]
#[serde(rename_all = "camelCase")]
pub struct FlinkJobSpec {
    /// The flink-rs image (holds the `flink-rs` binary).
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Service account of the jobmanager and taskmanager pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Flink configuration keys for the cluster and the job (`key: value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flink_configuration: BTreeMap<String, String>,
    pub job: JobSpec,
    /// Changing it restarts the job (per `job.upgradeMode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    #[serde(default)]
    pub job_manager: JobManagerSpec,
    #[serde(default)]
    pub task_manager: TaskManagerSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointing: Option<CheckpointingSpec>,
    /// A Secret whose keys become environment variables of every pod (object-store
    /// credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store_secret: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// The job's Flink SQL script.
    #[schemars(length(min = 1))]
    pub sql: String,
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: i32,
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    #[serde(default)]
    pub state: DesiredState,
    /// A savepoint or checkpoint directory the job starts from (first deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_restored_state: Option<bool>,
    /// Changing it takes a savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_trigger_nonce: Option<i64>,
    /// Take a savepoint when the FlinkJob is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_on_deletion: Option<bool>,
}

/// How spec changes reach a running job.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Start fresh, without state.
    #[default]
    Stateless,
    /// Stop with a savepoint, start from it.
    Savepoint,
    /// Start from the latest checkpoint.
    LastState,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Suspended,
}

/// CPU and memory of a pod (Kubernetes quantities, requests = limits).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobManagerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Merged into the pod (labels, annotations, nodeSelector, tolerations, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub pod_template: Option<serde_json::Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerSpec {
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Task slots per taskmanager.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub slots: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub pod_template: Option<serde_json::Value>,
}

impl Default for TaskManagerSpec {
    fn default() -> Self {
        TaskManagerSpec {
            replicas: 1,
            slots: 1,
            resources: None,
            pod_template: None,
        }
    }
}

fn one() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointingSpec {
    /// Where checkpoints and savepoints go: s3://, gs://, az:// or a path.
    #[schemars(length(min = 1))]
    pub storage: String,
    /// Checkpoint interval, e.g. `10 s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Completed checkpoints kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub retained: Option<i32>,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Where a FlinkJob is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LifecycleState {
    Created,
    Deploying,
    Running,
    Upgrading,
    Suspended,
    Failed,
    Deleting,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlinkJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<LifecycleState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The job's state as the jobmanager reports it (RUNNING, RESTARTING, FAILED, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Recent savepoints, newest last (at most 10).
    #[serde(default)]
    pub savepoints: Vec<SavepointInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Deployments of the job so far (each a new job id unless restored last-state).
    #[serde(default)]
    pub deployments: u32,
    /// Restarts of a failed job by the operator.
    #[serde(default)]
    pub restarts: u32,
    /// Restarts of the running job by its jobmanager (Flink's `numRestarts`), as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<String>,
    /// Hash of the spec the running deployment was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_spec_hash: Option<String>,
    /// Where the current deployment restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint_trigger_nonce: Option<i64>,
    /// A savepoint requested and not yet answered: written to status before it is triggered,
    /// so no pass, operator restart or leader change can lose it (two-phase transitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_savepoint: Option<PendingSavepoint>,
    /// When the job was last seen RUNNING on the current deployment (RFC 3339): a job that
    /// stays healthy this long has its restart counter reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<String>,
}

/// Why a savepoint was requested.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SavepointReason {
    /// `spec.job.savepointTriggerNonce` changed.
    Manual,
    /// A spec change in `upgradeMode: savepoint`.
    Upgrade,
    /// `spec.job.state: suspended`.
    Suspend,
    /// Deletion with `spec.job.savepointOnDeletion`.
    Deletion,
}

impl SavepointReason {
    /// Whether the savepoint stops the job (all but manual ones).
    pub fn stops(self) -> bool {
        self != SavepointReason::Manual
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SavepointReason::Manual => "manual",
            SavepointReason::Upgrade => "upgrade",
            SavepointReason::Suspend => "suspend",
            SavepointReason::Deletion => "deletion",
        }
    }
}

/// A savepoint the operator asked a jobmanager for (`triggerId` makes the request idempotent).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingSavepoint {
    pub trigger_id: String,
    /// The job the savepoint is of.
    pub job_id: String,
    pub reason: SavepointReason,
    /// The spec hash an upgrade savepoint is taken for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_spec_hash: Option<String>,
    /// The nonce a manual savepoint answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<i64>,
    /// When it was requested (RFC 3339).
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    pub id: u64,
    pub path: String,
    /// RFC 3339.
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    pub path: String,
    pub time: String,
    /// manual, upgrade, suspend or deletion.
    pub trigger: String,
}

/// The CRD as YAML (what `flink-rs-operator crdgen` prints and `crds/` holds).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&FlinkJob::crd())
}
