//! The monitoring resources of a job, in Flink's shapes: its plan, its exceptions, a
//! vertex's subtasks, backpressure and watermarks, job metrics, a taskmanager's details.

use serde::{Deserialize, Serialize};

/// `GET /jobs/{id}/plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlan {
    pub plan: Plan,
}

/// A job's dataflow: its vertices (operator chains) and the edges into them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub jid: String,
    pub name: String,
    /// `STREAMING`.
    #[serde(rename = "type")]
    pub kind: String,
    pub nodes: Vec<PlanNode>,
}

/// A vertex of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    pub id: String,
    pub parallelism: usize,
    /// The chain's operators, `A -> B`.
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<PlanInput>,
}

/// An edge into a vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Which input of the vertex.
    pub num: usize,
    /// The upstream vertex.
    pub id: String,
    /// `FORWARD`, `HASH`, `REBALANCE` or `BROADCAST`.
    pub ship_strategy: String,
    /// `pipelined_bounded`: records stream through credit-bounded channels.
    pub exchange: String,
}

/// `GET /jobs/{id}/exceptions`: why the job failed or restarted, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobExceptions {
    #[serde(
        rename = "root-exception",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub root_exception: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(rename = "exceptionHistory")]
    pub exception_history: ExceptionHistory,
}

/// The failures remembered (at most 16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionHistory {
    pub entries: Vec<ExceptionEntry>,
    /// True when older failures were forgotten.
    pub truncated: bool,
}

/// One failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionEntry {
    pub exception_name: String,
    pub stacktrace: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// `GET /jobs/{id}/vertices/{vid}`: a vertex and its subtasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexDetail {
    pub id: String,
    pub name: String,
    pub parallelism: usize,
    pub now: i64,
    pub subtasks: Vec<SubtaskDetail>,
}

/// A subtask of a vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskDetail {
    pub subtask: usize,
    pub status: String,
    /// The taskmanager it runs on (absent in a mini-cluster).
    #[serde(
        rename = "taskmanager-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub taskmanager_id: Option<String>,
    pub metrics: crate::VertexMetrics,
}

/// `GET /jobs/{id}/vertices/{vid}/backpressure`: the share of time each subtask waited on
/// full output channels over the last seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexBackPressure {
    /// `ok`.
    pub status: String,
    /// The worst subtask's level: `ok` (ratio ≤ 0.10), `low` (≤ 0.50) or `high`.
    #[serde(rename = "backpressure-level")]
    pub backpressure_level: String,
    #[serde(rename = "end-timestamp")]
    pub end_timestamp: i64,
    pub subtasks: Vec<SubtaskBackPressure>,
}

/// One subtask's backpressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskBackPressure {
    pub subtask: usize,
    #[serde(rename = "backpressure-level")]
    pub backpressure_level: String,
    /// Share of time backpressured, 0..1.
    pub ratio: f64,
    #[serde(rename = "idleRatio")]
    pub idle_ratio: f64,
    #[serde(rename = "busyRatio")]
    pub busy_ratio: f64,
}

/// Flink's level of a backpressure ratio.
pub fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.50 {
        "low"
    } else {
        "high"
    }
}

/// One metric of `GET /jobs/{id}/metrics` and `…/vertices/{vid}/watermarks`: its name and,
/// when asked for (`?get=a,b`), its value as a string, as Flink answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_flinks_thresholds() {
        assert_eq!(backpressure_level(0.0), "ok");
        assert_eq!(backpressure_level(0.1), "ok");
        assert_eq!(backpressure_level(0.3), "low");
        assert_eq!(backpressure_level(0.5), "low");
        assert_eq!(backpressure_level(0.9), "high");
    }

    #[test]
    fn shapes_have_flinks_field_names() {
        let e = JobExceptions {
            root_exception: Some("boom".into()),
            timestamp: Some(5),
            exception_history: ExceptionHistory {
                entries: vec![ExceptionEntry {
                    exception_name: "flink_rs::Error".into(),
                    stacktrace: "boom".into(),
                    timestamp: 5,
                }],
                truncated: false,
            },
        };
        let v = serde_json::to_value(&e).expect("serializes");
        assert_eq!(v["root-exception"], "boom");
        assert_eq!(
            v["exceptionHistory"]["entries"][0]["exceptionName"],
            "flink_rs::Error"
        );
        let p = PlanNode {
            id: "0".into(),
            parallelism: 2,
            description: "Source: a".into(),
            inputs: vec![],
        };
        assert!(
            serde_json::to_value(&p)
                .expect("serializes")
                .get("inputs")
                .is_none()
        );
    }
}
