//! `GET /jobs/{id}/checkpoints`: a job's checkpoint statistics, in Flink's shape.

use serde::{Deserialize, Serialize};

/// A job's checkpoint statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatistics {
    pub counts: CheckpointCounts,
    pub latest: LatestCheckpoints,
    /// Completed checkpoints and savepoints, newest first.
    pub history: Vec<CompletedCheckpoint>,
    /// Restarts since the job was submitted.
    pub restarts: u32,
}

/// How many checkpoints were triggered and how they ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub in_progress: u64,
    /// 1 when the job started from a checkpoint or savepoint.
    pub restored: u64,
}

/// The latest completed snapshot, and the one the job started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatestCheckpoints {
    pub completed: Option<CompletedCheckpoint>,
    pub restored: Option<RestoredCheckpoint>,
    /// The newest checkpoint that failed.
    #[serde(default)]
    pub failed: Option<FailedCheckpoint>,
}

/// A checkpoint that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedCheckpoint {
    pub id: u64,
    /// Always `FAILED`.
    pub status: String,
    /// Milliseconds since the epoch.
    pub failure_timestamp: i64,
    pub failure_message: String,
}

/// A completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedCheckpoint {
    pub id: u64,
    /// Always `COMPLETED`.
    pub status: String,
    pub is_savepoint: bool,
    /// Where it is: the path to restore from.
    pub external_path: String,
    /// Milliseconds since the epoch.
    pub latest_ack_timestamp: i64,
    /// Bytes of state the checkpoint is made of (Flink's full state size).
    pub state_size: u64,
    /// Bytes it wrote: less than `state_size` for an incremental checkpoint, which refers
    /// to files written before (Flink's `checkpointed_size`).
    #[serde(default)]
    pub checkpointed_size: u64,
    /// Milliseconds from trigger to completion.
    pub end_to_end_duration: u64,
}

/// The snapshot a job started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredCheckpoint {
    pub external_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_checkpoint_yet_is_null_as_flink_answers() {
        let s = CheckpointStatistics {
            counts: CheckpointCounts {
                total: 0,
                completed: 0,
                failed: 0,
                in_progress: 0,
                restored: 0,
            },
            latest: LatestCheckpoints {
                completed: None,
                restored: None,
                failed: None,
            },
            history: vec![],
            restarts: 0,
        };
        let v = serde_json::to_value(&s).expect("serializes");
        assert!(v["latest"]["completed"].is_null());
        assert_eq!(
            serde_json::from_value::<CheckpointStatistics>(v).ok(),
            Some(s)
        );
    }
}
