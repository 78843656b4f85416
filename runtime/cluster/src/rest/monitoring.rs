//! The monitoring resources of the REST API: a job's plan, exceptions and metrics, a
//! vertex's subtasks, backpressure and watermarks, a taskmanager — Flink's paths and shapes.

use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flink_rs_core::executor::{FAILURES_KEPT, TaskStats, split_task_name};
use flink_rs_metrics::scopes::{JobView, TaskRates, job_values, vertex_id};
use flink_rs_rest_api as api;

use super::{Early, Jm, error, find};
use crate::jobmanager::{Job, JobManager};

/// The tasks of each vertex of the job's current attempt, as (subtask index, statistics),
/// in subtask order.
pub(super) fn tasks_by_vertex(job: &Job) -> Vec<Vec<(usize, TaskStats)>> {
    let mut out: Vec<Vec<(usize, TaskStats)>> = vec![Vec::new(); job.vertices.len()];
    for t in job.handle().task_stats() {
        let Some((name, subtask, _)) = split_task_name(&t.task) else {
            continue;
        };
        if let Some(v) = job.vertices.iter().position(|(n, _)| n == name) {
            out[v].push((subtask, t));
        }
    }
    for v in &mut out {
        v.sort_by_key(|(i, _)| *i);
    }
    out
}

/// Counters summed over `tasks`.
pub(super) fn vertex_metrics<'a>(tasks: impl Iterator<Item = &'a TaskStats>) -> api::VertexMetrics {
    let mut m = api::VertexMetrics::default();
    for t in tasks {
        m.read_records += t.records_in;
        m.write_records += t.records_out;
        m.read_bytes += t.bytes_in;
        m.write_bytes += t.bytes_out;
        m.accumulated_backpressured_time += t.backpressured.as_millis() as u64;
        m.accumulated_idle_time += t.idle.as_millis() as u64;
    }
    m
}

/// The job and the index of its vertex `vid` (32 hex digits), or a 404 naming what is
/// missing.
fn find_vertex(jm: &JobManager, id: &str, vid: &str) -> Early<(std::sync::Arc<Job>, usize)> {
    let job = find(jm, id)?;
    match (0..job.vertices.len()).find(|i| vertex_id(*i) == vid) {
        Some(i) => Ok((job, i)),
        None => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "Vertex {vid} not found in job {id}: its vertices are {}",
                (0..job.vertices.len())
                    .map(vertex_id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// `GET /jobs/{id}/plan`.
pub(super) async fn plan(State(jm): Jm, Path(id): Path<String>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let nodes = job
        .vertices
        .iter()
        .zip(&job.inputs)
        .enumerate()
        .map(|(i, ((name, p), inputs))| api::PlanNode {
            id: vertex_id(i),
            parallelism: *p,
            description: name.clone(),
            inputs: inputs
                .iter()
                .enumerate()
                .map(|(num, (from, ship))| api::PlanInput {
                    num,
                    id: vertex_id(*from),
                    ship_strategy: (*ship).into(),
                    exchange: "pipelined_bounded".into(),
                })
                .collect(),
        })
        .collect();
    axum::Json(api::JobPlan {
        plan: api::Plan {
            jid: job.id.clone(),
            name: job.name.clone(),
            kind: "STREAMING".into(),
            nodes,
        },
    })
    .into_response()
}

/// `GET /jobs/{id}/exceptions`: the failures of the job's attempts, newest first; the root
/// exception is why the job failed, else the newest failure.
pub(super) async fn exceptions(State(jm): Jm, Path(id): Path<String>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let stats = job.handle().checkpoint_stats();
    let (status, cause) = job.status();
    let entries: Vec<api::ExceptionEntry> = stats
        .failures
        .iter()
        .rev()
        .map(|f| api::ExceptionEntry {
            exception_name: "flink_rs::Error".into(),
            stacktrace: f.message.clone(),
            timestamp: f.timestamp_ms,
        })
        .collect();
    let (root, timestamp) = match (status, cause, entries.first()) {
        (api::JobStatus::Failed, Some(c), _) => (Some(c), job.end_ms()),
        (_, _, Some(e)) => (Some(e.stacktrace.clone()), Some(e.timestamp)),
        _ => (None, None),
    };
    axum::Json(api::JobExceptions {
        root_exception: root,
        timestamp,
        exception_history: api::ExceptionHistory {
            truncated: stats.restarts as usize > FAILURES_KEPT,
            entries,
        },
    })
    .into_response()
}

/// `GET /jobs/{id}/vertices/{vid}`: the vertex's subtasks, where they run, their counters.
pub(super) async fn vertex(State(jm): Jm, Path((id, vid)): Path<(String, String)>) -> Response {
    let (job, v) = match find_vertex(&jm, &id, &vid) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let placement = jm.placement(&job.id);
    let status = job.status().0.as_str().to_string();
    let subtasks = tasks_by_vertex(&job)
        .swap_remove(v)
        .into_iter()
        .map(|(i, t)| api::SubtaskDetail {
            subtask: i,
            status: status.clone(),
            taskmanager_id: placement.get(&t.task).cloned(),
            metrics: vertex_metrics(std::iter::once(&t)),
        })
        .collect();
    let (name, parallelism) = job.vertices[v].clone();
    axum::Json(api::VertexDetail {
        id: vid,
        name,
        parallelism,
        now: flink_rs_core::operator::now_millis(),
        subtasks,
    })
    .into_response()
}

/// `GET /jobs/{id}/vertices/{vid}/backpressure`: the share of the last seconds each subtask
/// spent waiting on full output channels (Flink's `backPressuredTimeMsPerSecond` / 1000), and
/// the levels Flink gives them.
pub(super) async fn backpressure(
    State(jm): Jm,
    Path((id, vid)): Path<(String, String)>,
) -> Response {
    let (job, v) = match find_vertex(&jm, &id, &vid) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let now = Instant::now();
    let subtasks: Vec<api::SubtaskBackPressure> = tasks_by_vertex(&job)
        .swap_remove(v)
        .into_iter()
        .map(|(i, t)| {
            let r = TaskRates::of(jm.rates(), &job.id, &t, now);
            let ratio = (r.backpressured_ms / 1000.0).clamp(0.0, 1.0);
            api::SubtaskBackPressure {
                subtask: i,
                backpressure_level: api::backpressure_level(ratio).into(),
                ratio,
                idle_ratio: (r.idle_ms / 1000.0).clamp(0.0, 1.0),
                busy_ratio: (r.busy_ms / 1000.0).clamp(0.0, 1.0),
            }
        })
        .collect();
    let worst = subtasks.iter().map(|s| s.ratio).fold(0.0, f64::max);
    axum::Json(api::VertexBackPressure {
        status: "ok".into(),
        backpressure_level: api::backpressure_level(worst).into(),
        end_timestamp: flink_rs_core::operator::now_millis(),
        subtasks,
    })
    .into_response()
}

/// Flink's value of "no watermark yet" (`Long.MIN_VALUE`).
const NO_WATERMARK: i64 = i64::MIN;

/// `GET /jobs/{id}/vertices/{vid}/watermarks`: each subtask's input and output watermark as
/// Flink's metrics `N.currentInputWatermark` / `N.currentOutputWatermark` (epoch ms).
pub(super) async fn watermarks(State(jm): Jm, Path((id, vid)): Path<(String, String)>) -> Response {
    let (job, v) = match find_vertex(&jm, &id, &vid) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut out = Vec::new();
    for (i, t) in tasks_by_vertex(&job).swap_remove(v) {
        for (name, w) in [
            ("currentInputWatermark", t.input_watermark),
            ("currentOutputWatermark", t.watermark),
        ] {
            out.push(api::MetricValue {
                id: format!("{i}.{name}"),
                value: Some(w.unwrap_or(NO_WATERMARK).to_string()),
            });
        }
    }
    axum::Json(out).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct MetricsQuery {
    get: Option<String>,
}

/// `GET /jobs/{id}/metrics`: the names of the job's metrics; `?get=a,b` their values. An
/// unknown name is an error naming the known ones.
pub(super) async fn job_metrics(
    State(jm): Jm,
    Path(id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let stats = job.handle().checkpoint_stats();
    let values = job_values(&JobView {
        job_id: &job.id,
        job_name: &job.name,
        status: job.status().0,
        uptime_ms: flink_rs_core::operator::now_millis() - job.start_ms,
        checkpoints: &stats,
    });
    let Some(get) = q.get else {
        let names = values
            .into_iter()
            .map(|(n, _, _)| api::MetricValue { id: n, value: None });
        return axum::Json(names.collect::<Vec<_>>()).into_response();
    };
    let mut out = Vec::new();
    for name in get.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match values.iter().find(|(n, _, _)| n == name) {
            Some((n, _, v)) => out.push(api::MetricValue {
                id: n.clone(),
                value: Some(format!("{v}")),
            }),
            None => {
                let known: Vec<&str> = values.iter().map(|(n, _, _)| n.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown metric `{name}` in ?get=; the job's metrics are {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    axum::Json(out).into_response()
}

/// `GET /taskmanagers/{tmid}`.
pub(super) async fn taskmanager(State(jm): Jm, Path(tmid): Path<String>) -> Response {
    match jm.taskmanagers().iter().find(|t| t.id == tmid) {
        Some(t) => axum::Json(super::taskmanager_info(t)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("TaskManager {tmid} not found: no registered taskmanager has this id"),
        ),
    }
}
