//! The jobmanager's REST API, with Apache Flink's resource paths and field names where they
//! fit (documented in `docs/rest-api.yaml`, OpenAPI 3). Errors answer `{"errors": [..]}`
//! as Flink does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::jobmanager::{Job, JobManager, Operation};
use crate::executor::JobStatus;
use crate::operator::now_millis;

type Jm = State<Arc<JobManager>>;
/// An early answer (an error response), boxed: responses are large.
type Early<T> = Result<T, Box<Response>>;

pub(crate) fn router(jm: Arc<JobManager>) -> Router {
    Router::new()
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/jobmanager/config", get(jobmanager_config))
        .route("/jobs", get(list_jobs).post(submit))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job_detail).patch(cancel))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/savepoints", axum::routing::post(savepoint))
        .route("/jobs/{id}/savepoints/{rid}", get(operation))
        .route("/jobs/{id}/stop", axum::routing::post(stop))
        .route("/taskmanagers", get(taskmanagers))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(jm)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "errors": [msg.into()] }))).into_response()
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

fn state_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Created => "CREATED",
        JobStatus::Running => "RUNNING",
        JobStatus::Restarting => "RESTARTING",
        JobStatus::Finished => "FINISHED",
        JobStatus::Failed => "FAILED",
        JobStatus::Canceled => "CANCELED",
    }
}

async fn overview(State(jm): Jm) -> Response {
    let tms = jm.taskmanagers();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jm.jobs() {
        let key = match j.status().0 {
            JobStatus::Finished => "jobs-finished",
            JobStatus::Failed => "jobs-failed",
            JobStatus::Canceled => "jobs-cancelled",
            _ => "jobs-running",
        };
        *counts.entry(key).or_default() += 1;
    }
    axum::Json(json!({
        "taskmanagers": tms.len(),
        "slots-total": tms.iter().map(|t| t.slots).sum::<usize>(),
        "slots-available": tms.iter().map(|t| t.free_slots).sum::<usize>(),
        "jobs-running": counts.get("jobs-running").copied().unwrap_or(0),
        "jobs-finished": counts.get("jobs-finished").copied().unwrap_or(0),
        "jobs-cancelled": counts.get("jobs-cancelled").copied().unwrap_or(0),
        "jobs-failed": counts.get("jobs-failed").copied().unwrap_or(0),
        "flink-version": format!("flink-rs {}", env!("CARGO_PKG_VERSION")),
    }))
    .into_response()
}

async fn config() -> Response {
    axum::Json(json!({
        "flink-version": format!("flink-rs {}", env!("CARGO_PKG_VERSION")),
        "refresh-interval": 3000,
        "timezone-name": "UTC",
        "timezone-offset": 0,
    }))
    .into_response()
}

/// `GET /jobmanager/config`: the jobmanager's configuration as Flink lists it
/// (`[{"key", "value"}]`), values of secret-looking keys hidden as Flink hides them. The
/// operator reads `flink-rs.operator.plan` here to know which deployment answers.
async fn jobmanager_config(State(jm): Jm) -> Response {
    let hidden = ["password", "secret", "token", "access-key", "secret-key"];
    let entries: Vec<Value> = jm
        .config()
        .pairs()
        .into_iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let v = if hidden.iter().any(|h| lower.contains(h)) {
                "******".to_string()
            } else {
                v
            };
            json!({ "key": k, "value": v })
        })
        .collect();
    axum::Json(Value::Array(entries)).into_response()
}

async fn list_jobs(State(jm): Jm) -> Response {
    let jobs: Vec<Value> = jm
        .jobs()
        .iter()
        .map(|j| json!({ "id": j.id, "status": state_name(j.status().0) }))
        .collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

async fn jobs_overview(State(jm): Jm) -> Response {
    let jobs: Vec<Value> = jm.jobs().iter().map(|j| summary(j)).collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

fn summary(j: &Job) -> Value {
    let (state, _) = j.status();
    let end = j.end_ms();
    json!({
        "jid": j.id,
        "name": j.name,
        "state": state_name(state),
        "start-time": j.start_ms,
        "end-time": end.unwrap_or(-1),
        "duration": end.unwrap_or_else(now_millis) - j.start_ms,
    })
}

/// `POST /jobs`: the SQL script as the body (`text/plain`), or JSON
/// `{"sql": "...", "settings": {"key": "value"}}`.
async fn submit(State(jm): Jm, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (script, settings) = if is_json {
        #[derive(serde::Deserialize)]
        struct Body {
            sql: String,
            #[serde(default)]
            settings: BTreeMap<String, String>,
        }
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) => (b.sql, b.settings.into_iter().collect::<Vec<_>>()),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "malformed JSON body: {e}; expected {{\"sql\": \"...\", \"settings\": {{}}}}"
                    ),
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
        Ok(Ok(job)) => axum::Json(json!({ "jobid": job.id })).into_response(),
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
    let metrics = job.handle().task_metrics();
    let vertices: Vec<Value> = job
        .vertices
        .iter()
        .enumerate()
        .map(|(i, (name, p))| {
            let prefix = format!("{name} (");
            let (rin, rout) = metrics
                .iter()
                .filter(|(n, _, _)| n.starts_with(&prefix))
                .fold((0u64, 0u64), |(a, b), (_, i, o)| (a + i, b + o));
            json!({
                "id": format!("{i:032x}"),
                "name": name,
                "parallelism": p,
                "status": state_name(state),
                "metrics": { "read-records": rin, "write-records": rout },
            })
        })
        .collect();
    let stats = job.handle().checkpoint_stats();
    let mut v = summary(&job);
    if let Value::Object(m) = &mut v {
        m.insert("now".into(), json!(now_millis()));
        m.insert("vertices".into(), json!(vertices));
        m.insert("restarts".into(), json!(stats.restarts));
        if let Some(e) = err {
            m.insert("failure-cause".into(), json!(e));
        }
    }
    axum::Json(v).into_response()
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
    let cp = |c: &crate::executor::CompletedCheckpoint| {
        json!({
            "id": c.id,
            "status": "COMPLETED",
            "is_savepoint": c.kind == crate::checkpoint::SnapshotKind::Savepoint,
            "external_path": c.path,
            "latest_ack_timestamp": c.timestamp_ms,
            "state_size": c.state_size,
            "end_to_end_duration": c.duration.as_millis() as u64,
        })
    };
    let in_progress = s.triggered.saturating_sub(s.completed + s.failed);
    axum::Json(json!({
        "counts": {
            "total": s.triggered,
            "completed": s.completed,
            "failed": s.failed,
            "in_progress": in_progress,
            "restored": u64::from(s.restored.is_some()),
        },
        "latest": {
            "completed": s.latest.as_ref().map(cp),
            "restored": s.restored.as_ref().map(|p| json!({ "external_path": p })),
        },
        "history": s.history.iter().rev().map(cp).collect::<Vec<_>>(),
        "restarts": s.restarts,
    }))
    .into_response()
}

fn body_json(body: &Bytes) -> Early<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON body: {e}"),
        ))
    })
}

fn string_field(v: &Value, keys: &[&str]) -> Early<Option<String>> {
    for k in keys {
        match v.get(*k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(_) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!("`{k}` must be a string"),
                )));
            }
        }
    }
    Ok(None)
}

/// `POST /jobs/{id}/savepoints` `{"target-directory": "...", "cancel-job": false,
/// "triggerId": "..."}` (the trigger id, optional, makes the request idempotent).
async fn savepoint(State(jm): Jm, Path(id): Path<String>, body: Bytes) -> Response {
    trigger(&jm, &id, &body, false).unwrap_or_else(|r| *r)
}

/// `POST /jobs/{id}/stop` `{"targetDirectory": "..."}`: stop with a savepoint.
async fn stop(State(jm): Jm, Path(id): Path<String>, body: Bytes) -> Response {
    trigger(&jm, &id, &body, true).unwrap_or_else(|r| *r)
}

/// Starts a savepoint (`stop`, or the body's `cancel-job`: and stops the job); answers
/// its request id.
fn trigger(jm: &JobManager, id: &str, body: &Bytes, stop: bool) -> Early<Response> {
    let job = find(jm, id)?;
    let v = body_json(body)?;
    let dir = string_field(&v, &["target-directory", "targetDirectory"])?;
    let stop = stop
        || v.get("cancel-job")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let trigger_id = string_field(&v, &["triggerId"])?;
    let rid = jm.savepoint(&job, dir, stop, trigger_id);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "request-id": rid })),
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
            axum::Json(json!({ "status": { "id": "IN_PROGRESS" } })).into_response()
        }
        Some(Operation::Completed(p)) => axum::Json(json!({
            "status": { "id": "COMPLETED" },
            "operation": { "location": p },
        }))
        .into_response(),
        Some(Operation::Failed(e)) => axum::Json(json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": { "class": "flink_rs::Error", "stack-trace": e } },
        }))
        .into_response(),
    }
}

async fn taskmanagers(State(jm): Jm) -> Response {
    let tms: Vec<Value> = jm
        .taskmanagers()
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "path": t.data_address,
                "dataPort": t.data_address.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()),
                "slotsNumber": t.slots,
                "freeSlots": t.free_slots,
                "timeSinceLastHeartbeat": t.since_heartbeat_ms,
                "registeredAt": t.registered_ms,
                "hardware": { "physicalMemory": t.memory_bytes },
            })
        })
        .collect();
    axum::Json(json!({ "taskmanagers": tms })).into_response()
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// Prometheus text format.
async fn metrics(State(jm): Jm) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    let tms = jm.taskmanagers();
    let _ = writeln!(
        out,
        "# HELP flinkrs_taskmanagers Registered taskmanagers.\n# TYPE flinkrs_taskmanagers gauge\nflinkrs_taskmanagers {}",
        tms.len()
    );
    let _ = writeln!(
        out,
        "# HELP flinkrs_slots_available Free task slots.\n# TYPE flinkrs_slots_available gauge\nflinkrs_slots_available {}",
        tms.iter().map(|t| t.free_slots).sum::<usize>()
    );
    let jobs = jm.jobs();
    let _ = writeln!(
        out,
        "# HELP flinkrs_job_running 1 while the job runs.\n# TYPE flinkrs_job_running gauge"
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "flinkrs_job_running{{job_id=\"{}\",state=\"{}\"}} {}",
            j.id,
            state_name(j.status().0),
            u8::from(j.status().0 == JobStatus::Running)
        );
    }
    let _ = writeln!(
        out,
        "# HELP flinkrs_task_records_in_total Records into a task.\n# TYPE flinkrs_task_records_in_total counter"
    );
    let mut outs = String::new();
    for j in &jobs {
        for (task, rin, rout) in j.handle().task_metrics() {
            let _ = writeln!(
                out,
                "flinkrs_task_records_in_total{{job_id=\"{}\",task=\"{}\"}} {rin}",
                j.id,
                label(&task)
            );
            let _ = writeln!(
                outs,
                "flinkrs_task_records_out_total{{job_id=\"{}\",task=\"{}\"}} {rout}",
                j.id,
                label(&task)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP flinkrs_task_records_out_total Records out of a task.\n# TYPE flinkrs_task_records_out_total counter\n{}",
        outs.trim_end()
    );
    let _ = writeln!(
        out,
        "# HELP flinkrs_checkpoints_total Checkpoints by outcome.\n# TYPE flinkrs_checkpoints_total counter"
    );
    let mut last = String::from(
        "# HELP flinkrs_last_checkpoint_duration_seconds Duration of the latest completed checkpoint.\n# TYPE flinkrs_last_checkpoint_duration_seconds gauge\n",
    );
    let mut size = String::from(
        "# HELP flinkrs_last_checkpoint_size_bytes State size of the latest completed checkpoint.\n# TYPE flinkrs_last_checkpoint_size_bytes gauge\n",
    );
    let mut bp = String::from(
        "# HELP flinkrs_task_backpressured_seconds_total Time a task waited on full output channels.\n# TYPE flinkrs_task_backpressured_seconds_total counter\n",
    );
    let mut lag = String::from(
        "# HELP flinkrs_task_watermark_lag_seconds Wall clock minus the task's last watermark.\n# TYPE flinkrs_task_watermark_lag_seconds gauge\n",
    );
    let now = now_millis();
    for j in &jobs {
        for t in j.handle().task_stats() {
            let _ = writeln!(
                bp,
                "flinkrs_task_backpressured_seconds_total{{job_id=\"{}\",task=\"{}\"}} {}",
                j.id,
                label(&t.task),
                t.backpressured.as_secs_f64()
            );
            if let Some(w) = t.watermark {
                let _ = writeln!(
                    lag,
                    "flinkrs_task_watermark_lag_seconds{{job_id=\"{}\",task=\"{}\"}} {}",
                    j.id,
                    label(&t.task),
                    (now - w) as f64 / 1000.0
                );
            }
        }
    }
    out.push_str(&bp);
    out.push_str(&lag);
    let mut restarts = String::from(
        "# HELP flinkrs_job_restarts_total Restarts after failures.\n# TYPE flinkrs_job_restarts_total counter\n",
    );
    for j in &jobs {
        let s = j.handle().checkpoint_stats();
        let _ = writeln!(
            out,
            "flinkrs_checkpoints_total{{job_id=\"{}\",outcome=\"completed\"}} {}\nflinkrs_checkpoints_total{{job_id=\"{}\",outcome=\"failed\"}} {}",
            j.id, s.completed, j.id, s.failed
        );
        let _ = writeln!(
            restarts,
            "flinkrs_job_restarts_total{{job_id=\"{}\"}} {}",
            j.id, s.restarts
        );
        if let Some(c) = &s.latest {
            let _ = writeln!(
                last,
                "flinkrs_last_checkpoint_duration_seconds{{job_id=\"{}\"}} {}",
                j.id,
                c.duration.as_secs_f64()
            );
            let _ = writeln!(
                size,
                "flinkrs_last_checkpoint_size_bytes{{job_id=\"{}\"}} {}",
                j.id, c.state_size
            );
        }
    }
    out.push_str(&last);
    out.push_str(&size);
    out.push_str(&restarts);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
