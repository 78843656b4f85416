//! The jobmanager's REST API, with Apache Flink's resource paths and field names where they
//! fit (documented in `docs/rest-api.yaml`, OpenAPI 3). Errors answer `{"errors": [..]}`
//! as Flink does.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flink_rs_rest_api as api;
use serde::de::DeserializeOwned;
use serde_json::json;

pub(crate) mod auth;
mod body_limit;
mod dashboard;
mod monitoring;

use super::jobmanager::{Job, JobManager, Operation};
use flink_rs_core::checkpoint::SnapshotKind;
use flink_rs_core::executor::{CompletedCheckpoint, JobStatus};
use flink_rs_core::operator::now_millis;

type Jm = State<Arc<JobManager>>;
/// An early answer (an error response), boxed: responses are large.
type Early<T> = Result<T, Box<Response>>;

/// The REST API of `jm`; with `token`, every request but the dashboard's page must carry it.
pub(crate) fn router(jm: Arc<JobManager>, token: Option<Arc<auth::BearerToken>>) -> Router {
    let app = Router::new()
        .route("/", get(dashboard::index))
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/jobmanager/config", get(jobmanager_config))
        .route("/jobs", get(list_jobs).post(submit))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job_detail).patch(cancel))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/plan", get(monitoring::plan))
        .route("/jobs/{id}/exceptions", get(monitoring::exceptions))
        .route("/jobs/{id}/metrics", get(monitoring::job_metrics))
        .route("/jobs/{id}/vertices/{vid}", get(monitoring::vertex))
        .route(
            "/jobs/{id}/vertices/{vid}/backpressure",
            get(monitoring::backpressure),
        )
        .route(
            "/jobs/{id}/vertices/{vid}/watermarks",
            get(monitoring::watermarks),
        )
        .route("/taskmanagers/{tmid}", get(monitoring::taskmanager))
        .route("/jobs/{id}/savepoints", axum::routing::post(savepoint))
        .route("/jobs/{id}/savepoints/{rid}", get(operation))
        .route("/jobs/{id}/stop", axum::routing::post(stop))
        .route("/taskmanagers", get(taskmanagers))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(jm)
        .layer(axum::extract::DefaultBodyLimit::max(
            body_limit::MAX_BODY_BYTES,
        ));
    let app = match token {
        Some(t) => app.layer(axum::middleware::from_fn_with_state(t, auth::require)),
        None => app,
    };
    // Outermost: an oversized body is refused before authentication reads anything.
    app.layer(axum::middleware::from_fn(body_limit::bounded))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(api::ErrorResponse::new(msg))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found: no such REST resource")
}

fn find(jm: &JobManager, id: &str) -> Early<Arc<Job>> {
    jm.job(id).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!("Job {id} not found: no job with this id"),
        ))
    })
}

async fn overview(State(jm): Jm) -> Response {
    let tms = jm.taskmanagers();
    let jobs = jm.jobs();
    let count = |f: &dyn Fn(JobStatus) -> bool| jobs.iter().filter(|j| f(j.status().0)).count();
    axum::Json(api::ClusterOverview {
        taskmanagers: tms.len(),
        slots_total: tms.iter().map(|t| t.slots).sum(),
        slots_available: tms.iter().map(|t| t.free_slots).sum(),
        jobs_running: count(&|s| !s.is_terminal()),
        jobs_finished: count(&|s| s == JobStatus::Finished),
        jobs_cancelled: count(&|s| s == JobStatus::Canceled),
        jobs_failed: count(&|s| s == JobStatus::Failed),
        flink_version: version(),
    })
    .into_response()
}

fn version() -> String {
    format!("flink-rs {}", env!("CARGO_PKG_VERSION"))
}

async fn config() -> Response {
    axum::Json(api::DashboardConfig {
        flink_version: version(),
        refresh_interval: 3000,
        timezone_name: "UTC".into(),
        timezone_offset: 0,
    })
    .into_response()
}

/// `GET /jobmanager/config`: the jobmanager's configuration as Flink lists it
/// (`[{"key", "value"}]`), values of secret-looking keys hidden as Flink hides them. The
/// operator reads `flink-rs.operator.plan` here to know which deployment answers.
async fn jobmanager_config(State(jm): Jm) -> Response {
    let hidden = ["password", "secret", "token", "access-key", "secret-key"];
    let entries: Vec<api::ConfigEntry> = jm
        .config()
        .pairs()
        .into_iter()
        .map(|(key, value)| {
            let lower = key.to_ascii_lowercase();
            let value = if hidden.iter().any(|h| lower.contains(h)) {
                "******".to_string()
            } else {
                value
            };
            api::ConfigEntry { key, value }
        })
        .collect();
    axum::Json(entries).into_response()
}

async fn list_jobs(State(jm): Jm) -> Response {
    let jobs = jm
        .jobs()
        .iter()
        .map(|j| api::JobListEntry {
            id: j.id.clone(),
            status: j.status().0.as_str().into(),
        })
        .collect();
    axum::Json(api::JobList { jobs }).into_response()
}

async fn jobs_overview(State(jm): Jm) -> Response {
    let jobs = jm.jobs().iter().map(|j| summary(j)).collect();
    axum::Json(api::JobsOverview { jobs }).into_response()
}

fn summary(j: &Job) -> api::JobSummary {
    let (state, _) = j.status();
    let end = j.end_ms();
    api::JobSummary {
        jid: j.id.clone(),
        name: j.name.clone(),
        state: state.as_str().into(),
        start_time: j.start_ms,
        end_time: end.unwrap_or(-1),
        duration: end.unwrap_or_else(now_millis) - j.start_ms,
    }
}

/// `POST /jobs`: the SQL script as the body (`text/plain`), or JSON
/// `{"sql": "...", "settings": {"key": "value"}}`.
async fn submit(State(jm): Jm, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (script, settings) = if is_json {
        match parse_json::<api::SubmitRequest>(&body) {
            Ok(b) => (b.sql, b.settings.into_iter().collect::<Vec<_>>()),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{e}; expected {{\"sql\": \"...\", \"settings\": {{}}}}"),
                );
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => (s, Vec::new()),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"),
        }
    };
    if script.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: POST the SQL script of the job",
        );
    }
    let jm2 = jm.clone();
    let r = tokio::task::spawn_blocking(move || jm2.submit(&script, settings, None)).await;
    match r {
        Ok(Ok(job)) => axum::Json(api::SubmitResponse {
            jobid: job.id.clone(),
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn job_detail(State(jm): Jm, Path(id): Path<String>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let (state, err) = job.status();
    let per_vertex = monitoring::tasks_by_vertex(&job);
    let vertices = job
        .vertices
        .iter()
        .zip(&per_vertex)
        .enumerate()
        .map(|(i, ((name, p), tasks))| api::Vertex {
            id: flink_rs_metrics::scopes::vertex_id(i),
            name: name.clone(),
            parallelism: *p,
            status: state.as_str().into(),
            metrics: monitoring::vertex_metrics(tasks.iter().map(|(_, t)| t)),
        })
        .collect();
    let stats = job.handle().checkpoint_stats();
    axum::Json(api::JobDetail {
        summary: summary(&job),
        now: now_millis(),
        vertices,
        restarts: stats.restarts,
        failure_cause: err,
    })
    .into_response()
}

#[derive(serde::Deserialize)]
struct CancelQuery {
    mode: Option<String>,
}

async fn cancel(State(jm): Jm, Path(id): Path<String>, Query(q): Query<CancelQuery>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    match q.mode.as_deref() {
        None | Some("cancel") => {
            job.handle().cancel();
            (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("unknown mode `{other}`; supported: cancel"),
        ),
    }
}

async fn checkpoints(State(jm): Jm, Path(id): Path<String>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let s = job.handle().checkpoint_stats();
    let in_progress = s.triggered.saturating_sub(s.completed + s.failed);
    axum::Json(api::CheckpointStatistics {
        counts: api::CheckpointCounts {
            total: s.triggered,
            completed: s.completed,
            failed: s.failed,
            in_progress,
            restored: u64::from(s.restored.is_some()),
        },
        latest: api::LatestCheckpoints {
            completed: s.latest.as_ref().map(completed),
            restored: s.restored.as_ref().map(|p| api::RestoredCheckpoint {
                external_path: p.clone(),
            }),
            failed: s.latest_failed.as_ref().map(|f| api::FailedCheckpoint {
                id: f.id,
                status: "FAILED".into(),
                failure_timestamp: f.timestamp_ms,
                failure_message: f.message.clone(),
            }),
        },
        history: s.history.iter().rev().map(completed).collect(),
        restarts: s.restarts,
    })
    .into_response()
}

fn completed(c: &CompletedCheckpoint) -> api::CompletedCheckpoint {
    api::CompletedCheckpoint {
        id: c.id,
        status: "COMPLETED".into(),
        is_savepoint: c.kind == SnapshotKind::Savepoint,
        external_path: c.path.clone(),
        latest_ack_timestamp: c.timestamp_ms,
        state_size: c.full_size,
        checkpointed_size: c.state_size,
        end_to_end_duration: c.duration.as_millis() as u64,
    }
}

/// The body as JSON of `T`; an empty body is `T`'s default.
fn body_json<T: DeserializeOwned + Default>(body: &Bytes) -> Early<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    parse_json(body).map_err(|m| Box::new(error(StatusCode::BAD_REQUEST, m)))
}

/// The body as JSON of `T`; the error names the field (``malformed JSON body: `cancel-job`:
/// invalid type …``).
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("`{path}`: ")
        };
        format!("malformed JSON body: {at}{}", e.inner())
    })
}

/// `POST /jobs/{id}/savepoints` `{"target-directory": "...", "cancel-job": false,
/// "triggerId": "..."}` (the trigger id, optional, makes the request idempotent).
async fn savepoint(State(jm): Jm, Path(id): Path<String>, body: Bytes) -> Response {
    let r = body_json::<api::SavepointRequest>(&body)
        .and_then(|b| trigger(&jm, &id, b.target_directory, b.cancel_job, b.trigger_id));
    r.unwrap_or_else(|r| *r)
}

/// `POST /jobs/{id}/stop` `{"targetDirectory": "...", "triggerId": "..."}`: stop with a
/// savepoint.
async fn stop(State(jm): Jm, Path(id): Path<String>, body: Bytes) -> Response {
    let r = body_json::<api::StopRequest>(&body)
        .and_then(|b| trigger(&jm, &id, b.target_directory, true, b.trigger_id));
    r.unwrap_or_else(|r| *r)
}

/// Starts a savepoint (`stop`: and stops the job with it); answers its request id.
fn trigger(
    jm: &JobManager,
    id: &str,
    dir: Option<String>,
    stop: bool,
    trigger_id: Option<String>,
) -> Early<Response> {
    let job = find(jm, id)?;
    if let (Some(d), Some(allowed)) = (&dir, jm.allowed_paths()) {
        allowed
            .check("target-directory", d)
            .map_err(|m| Box::new(error(StatusCode::BAD_REQUEST, m)))?;
    }
    let request_id = jm.savepoint(&job, dir, stop, trigger_id);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(api::TriggerResponse { request_id }),
    )
        .into_response())
}

async fn operation(State(jm): Jm, Path((id, rid)): Path<(String, String)>) -> Response {
    let job = match find(&jm, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    match job.operation(&rid) {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no savepoint request {rid} for job {id}"),
        ),
        Some(Operation::InProgress) => {
            axum::Json(api::OperationStatus::in_progress()).into_response()
        }
        Some(Operation::Completed(p)) => {
            axum::Json(api::OperationStatus::completed(p)).into_response()
        }
        Some(Operation::Failed(e)) => {
            axum::Json(api::OperationStatus::failed("flink_rs::Error", e)).into_response()
        }
    }
}

async fn taskmanagers(State(jm): Jm) -> Response {
    let taskmanagers = jm.taskmanagers().iter().map(taskmanager_info).collect();
    axum::Json(api::TaskManagers { taskmanagers }).into_response()
}

fn taskmanager_info(t: &super::jobmanager::TaskManagerInfo) -> api::TaskManagerInfo {
    api::TaskManagerInfo {
        id: t.id.clone(),
        path: t.data_address.clone(),
        data_port: t
            .data_address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok()),
        slots_number: t.slots,
        free_slots: t.free_slots,
        time_since_last_heartbeat: t.since_heartbeat_ms,
        registered_at: t.registered_ms,
        hardware: api::Hardware {
            physical_memory: t.memory_bytes,
        },
    }
}

/// The jobmanager's metrics in Prometheus text format (as on its reporter's port).
async fn metrics(State(jm): Jm) -> Response {
    let collect: flink_rs_metrics::reporter::Collect =
        Arc::new(move || super::metrics::jobmanager_families(&jm));
    flink_rs_metrics::reporter::scrape(&collect)
}
