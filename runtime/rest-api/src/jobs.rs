//! Jobs: their status, the job list, one job's detail, and submission.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job id: 32 hex digits, as Flink's.
pub type JobId = String;

/// The state of a job, with Flink's names (`RUNNING`, `CANCELED`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Submitted, waiting for slots.
    Created,
    Running,
    /// A task failed; the job master restarts the job from its latest checkpoint.
    Restarting,
    /// Every task finished (also after stop-with-savepoint).
    Finished,
    /// The restart strategy gave up.
    Failed,
    #[serde(alias = "CANCELLED")]
    Canceled,
}

impl JobStatus {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Restarting,
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    /// Flink's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Finished => "FINISHED",
            JobStatus::Failed => "FAILED",
            JobStatus::Canceled => "CANCELED",
        }
    }

    /// Whether the job has ended (finished, failed or canceled) and will not run again by
    /// itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name this version does not know (a newer jobmanager's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownJobStatus(pub String);

impl fmt::Display for UnknownJobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown job state `{}`; known: CREATED, RUNNING, RESTARTING, FINISHED, FAILED, CANCELED",
            self.0
        )
    }
}

impl std::error::Error for UnknownJobStatus {}

impl FromStr for JobStatus {
    type Err = UnknownJobStatus;

    /// Flink's names; `INITIALIZING` (Flink's state before `CREATED`) reads as `CREATED`
    /// and `CANCELLED` as `CANCELED`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "CREATED" | "INITIALIZING" => JobStatus::Created,
            "RUNNING" => JobStatus::Running,
            "RESTARTING" => JobStatus::Restarting,
            "FINISHED" => JobStatus::Finished,
            "FAILED" => JobStatus::Failed,
            "CANCELED" | "CANCELLED" => JobStatus::Canceled,
            other => return Err(UnknownJobStatus(other.to_string())),
        })
    }
}

/// `GET /jobs`: `{"jobs": [{"id", "status"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobListEntry>,
}

/// One entry of [`JobList`]. The status stays a string so that a client reads a newer
/// jobmanager's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobListEntry {
    pub id: JobId,
    pub status: String,
}

/// `GET /jobs/overview`: `{"jobs": [JobSummary]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsOverview {
    pub jobs: Vec<JobSummary>,
}

/// A job in `GET /jobs/overview`, and the head of `GET /jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub jid: JobId,
    pub name: String,
    /// Flink's state name; see [`JobSummary::status`].
    pub state: String,
    /// Milliseconds since the epoch.
    #[serde(rename = "start-time")]
    pub start_time: i64,
    /// Milliseconds since the epoch; -1 while the job runs.
    #[serde(rename = "end-time")]
    pub end_time: i64,
    /// Milliseconds.
    pub duration: i64,
}

impl JobSummary {
    /// The state, parsed.
    pub fn status(&self) -> Result<JobStatus, UnknownJobStatus> {
        self.state.parse()
    }
}

/// `GET /jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    /// When this answer was made, milliseconds since the epoch.
    pub now: i64,
    pub vertices: Vec<Vertex>,
    /// Restarts since the job was submitted.
    pub restarts: u32,
    /// Why the job failed or last restarted.
    #[serde(
        rename = "failure-cause",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_cause: Option<String>,
}

/// An operator chain of a job (a vertex of its job graph).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vertex {
    pub id: String,
    pub name: String,
    pub parallelism: usize,
    pub status: String,
    pub metrics: VertexMetrics,
}

/// A vertex's record counts, summed over its subtasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VertexMetrics {
    #[serde(rename = "read-records")]
    pub read_records: u64,
    #[serde(rename = "write-records")]
    pub write_records: u64,
    /// Bytes of the batches taken in (their Arrow memory size).
    #[serde(rename = "read-bytes", default)]
    pub read_bytes: u64,
    #[serde(rename = "write-bytes", default)]
    pub write_bytes: u64,
    /// Milliseconds spent waiting on full output channels, summed over subtasks.
    #[serde(rename = "accumulated-backpressured-time", default)]
    pub accumulated_backpressured_time: u64,
    /// Milliseconds spent waiting for input, summed over subtasks.
    #[serde(rename = "accumulated-idle-time", default)]
    pub accumulated_idle_time: u64,
}

/// `POST /jobs` with a JSON body: the SQL script and settings (Flink configuration keys).
/// A `text/plain` body is the script alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub sql: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// The answer to `POST /jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub jobid: JobId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_flink_names_and_unknown_ones_are_errors() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            let json = serde_json::to_string(&s).expect("serializes");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<JobStatus>(&json).ok(), Some(s));
        }
        assert_eq!("CANCELLED".parse::<JobStatus>(), Ok(JobStatus::Canceled));
        assert_eq!("INITIALIZING".parse::<JobStatus>(), Ok(JobStatus::Created));
        let e = "SUSPENDED".parse::<JobStatus>().expect_err("unknown");
        assert!(e.to_string().contains("SUSPENDED"), "{e}");
        assert!(JobStatus::Canceled.is_terminal() && !JobStatus::Restarting.is_terminal());
    }

    #[test]
    fn a_job_detail_has_flinks_field_names() {
        let d = JobDetail {
            summary: JobSummary {
                jid: "ab".into(),
                name: "j".into(),
                state: "RUNNING".into(),
                start_time: 1,
                end_time: -1,
                duration: 5,
            },
            now: 6,
            vertices: vec![Vertex {
                id: "0".into(),
                name: "Source".into(),
                parallelism: 2,
                status: "RUNNING".into(),
                metrics: VertexMetrics {
                    read_records: 0,
                    write_records: 7,
                    ..VertexMetrics::default()
                },
            }],
            restarts: 0,
            failure_cause: None,
        };
        let v = serde_json::to_value(&d).expect("serializes");
        assert_eq!(v["jid"], "ab");
        assert_eq!(v["start-time"], 1);
        assert_eq!(v["end-time"], -1);
        assert_eq!(v["vertices"][0]["metrics"]["write-records"], 7);
        assert!(v.get("failure-cause").is_none());
        let back: JobDetail = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, d);
        assert_eq!(back.summary.status(), Ok(JobStatus::Running));
    }
}
