//! The operator's view of a jobmanager: its REST API (`docs/rest-api.yaml`), and nothing of
//! the engine's internals. [`JobManagerApi`] is what the reconciler calls; [`HttpJm`] is the
//! only implementation the binary has (tests bring their own).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use flink_rs_rest_api as api;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::rfc3339;
use crate::crd::CheckpointInfo;
use crate::job_state::JobState;

/// The configuration key a jobmanager of the operator's carries the hash of its deployment
/// plan in; `GET /jobmanager/config` shows it, so an answer from an old pod that is still
/// terminating is told apart from one of the current deployment.
pub const PLAN_KEY: &str = "flink-rs.operator.plan";
/// The configuration key the job id of the deployment plan is in: a jobmanager pod whose
/// `--job-id` (from its Deployment template) differs is of an older deployment and refuses
/// to start (the ConfigMap is applied before the Deployments).
pub const JOB_KEY: &str = "flink-rs.operator.job-id";

#[derive(Debug, thiserror::Error)]
pub enum JmError {
    #[error("jobmanager at {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("jobmanager at {url}: {message}")]
    Failed { url: String, message: String },
}

/// What the operator reads of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub state: JobState,
    pub last_checkpoint: Option<CheckpointInfo>,
    pub failure: Option<String>,
    /// Times the jobmanager restarted the job after failures (its restart strategy).
    pub restarts: u32,
    /// The deployment plan of the jobmanager that answered ([`PLAN_KEY`]).
    pub plan: Option<String>,
}

/// The answer about a savepoint request.
#[derive(Debug, Clone, PartialEq)]
pub enum SavepointPoll {
    InProgress,
    Completed(String),
    Failed(String),
    /// The jobmanager knows no such request (it was replaced, or never received it).
    Unknown,
}

/// Where a job's jobmanager answers: its REST base URL, and the bearer token it requires
/// (the job's `{name}-rest-token` Secret; `None` before the Secret exists).
#[derive(Clone, Default)]
pub struct Endpoint {
    pub url: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

pub type JmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JmError>> + Send + 'a>>;

/// The calls the reconciler makes to a jobmanager.
pub trait JobManagerApi: Send + Sync {
    /// The job `id`, or `None` when the jobmanager does not know it.
    fn job<'a>(&'a self, at: &'a Endpoint, id: &'a str) -> JmFuture<'a, Option<JobView>>;
    /// Requests a savepoint (`stop`: and stops the job with it). Idempotent per
    /// `trigger_id`: a request the jobmanager already has starts nothing new.
    fn trigger_savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
        trigger_id: &'a str,
        stop: bool,
    ) -> JmFuture<'a, ()>;
    /// Where the savepoint request `trigger_id` is.
    fn savepoint_status<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
        trigger_id: &'a str,
    ) -> JmFuture<'a, SavepointPoll>;
}

/// The jobmanager's REST API over HTTP.
#[derive(Clone)]
pub struct HttpJm {
    client: reqwest::Client,
}

impl Default for HttpJm {
    fn default() -> Self {
        HttpJm {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl HttpJm {
    /// A request to the jobmanager at `at`, with its token.
    fn request(
        &self,
        at: &Endpoint,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", at.url));
        match &at.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get(&self, at: &Endpoint, path: &str) -> Result<(u16, Value), JmError> {
        let url = at.url.as_str();
        let r = self
            .request(at, reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let code = r.status().as_u16();
        if code == 401 {
            return Err(refused(at, &format!("GET {path}")));
        }
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    async fn job_view(&self, at: &Endpoint, id: &str) -> Result<Option<JobView>, JmError> {
        let url = at.url.as_str();
        let (code, v) = self.get(at, &format!("/jobs/{id}")).await?;
        if code == 404 {
            return Ok(None);
        }
        if code != 200 {
            return Err(failed(url, format!("GET /jobs/{id}: {code} {v}")));
        }
        let detail: api::JobDetail = read(url, "GET /jobs/{id}", v)?;
        let (_, cp) = self.get(at, &format!("/jobs/{id}/checkpoints")).await?;
        let cp: api::CheckpointStatistics = read(url, "GET /jobs/{id}/checkpoints", cp)?;
        let last_checkpoint = cp.latest.completed.map(|c| CheckpointInfo {
            id: c.id,
            path: c.external_path,
            time: rfc3339(c.latest_ack_timestamp),
        });
        let (_, config) = self.get(at, "/jobmanager/config").await?;
        let config: Vec<api::ConfigEntry> = read(url, "GET /jobmanager/config", config)?;
        let plan = config
            .into_iter()
            .find(|e| e.key == PLAN_KEY)
            .map(|e| e.value);
        Ok(Some(JobView {
            state: JobState::parse(&detail.summary.state),
            last_checkpoint,
            failure: detail.failure_cause,
            restarts: detail.restarts,
            plan,
        }))
    }

    async fn trigger(
        &self,
        at: &Endpoint,
        id: &str,
        trigger_id: &str,
        stop: bool,
    ) -> Result<(), JmError> {
        let url = at.url.as_str();
        let post = reqwest::Method::POST;
        let req = if stop {
            self.request(at, post, &format!("/jobs/{id}/stop"))
                .json(&api::StopRequest {
                    target_directory: None,
                    trigger_id: Some(trigger_id.into()),
                })
        } else {
            self.request(at, post, &format!("/jobs/{id}/savepoints"))
                .json(&api::SavepointRequest {
                    target_directory: None,
                    cancel_job: false,
                    trigger_id: Some(trigger_id.into()),
                })
        };
        let r = req.send().await.map_err(|e| unreachable(url, e))?;
        let code = r.status().as_u16();
        if code == 401 {
            return Err(refused(at, &format!("POST savepoint of job {id}")));
        }
        let v: Value = r.json().await.unwrap_or(Value::Null);
        match serde_json::from_value::<api::TriggerResponse>(v.clone()) {
            Ok(t) if t.request_id == trigger_id => Ok(()),
            _ => Err(failed(
                url,
                format!("savepoint of job {id} not accepted: {code} {v}"),
            )),
        }
    }

    async fn poll(
        &self,
        at: &Endpoint,
        id: &str,
        trigger_id: &str,
    ) -> Result<SavepointPoll, JmError> {
        let url = at.url.as_str();
        let (code, s) = self
            .get(at, &format!("/jobs/{id}/savepoints/{trigger_id}"))
            .await?;
        if code == 404 {
            return Ok(SavepointPoll::Unknown);
        }
        if code != 200 {
            return Err(failed(
                url,
                format!("GET savepoint {trigger_id}: {code} {s}"),
            ));
        }
        let s: api::OperationStatus = read(url, "GET savepoint status", s)?;
        Ok(match s.outcome() {
            None => SavepointPoll::InProgress,
            Some(Ok(location)) => SavepointPoll::Completed(location),
            Some(Err(cause)) => SavepointPoll::Failed(cause),
        })
    }
}

/// An answer read as the REST API's type `T`; one that does not fit is a failure naming
/// the request.
fn read<T: DeserializeOwned>(url: &str, what: &str, v: Value) -> Result<T, JmError> {
    serde_json::from_value::<T>(v.clone())
        .map_err(|e| failed(url, format!("{what}: unexpected answer ({e}): {v}")))
}

fn unreachable(url: &str, e: reqwest::Error) -> JmError {
    JmError::Unreachable {
        url: url.into(),
        message: e.to_string(),
    }
}

/// A 401: the jobmanager does not take the token the operator sent (or none was sent).
fn refused(at: &Endpoint, what: &str) -> JmError {
    failed(
        &at.url,
        format!(
            "{what}: 401 Unauthorized: the jobmanager refused {} (it reads its token from the \
             job's `<name>-rest-token` Secret at start)",
            if at.token.is_some() {
                "the job's REST token"
            } else {
                "a request without a token"
            }
        ),
    )
}

fn failed(url: &str, message: String) -> JmError {
    JmError::Failed {
        url: url.into(),
        message,
    }
}

impl JobManagerApi for HttpJm {
    fn job<'a>(&'a self, at: &'a Endpoint, id: &'a str) -> JmFuture<'a, Option<JobView>> {
        Box::pin(self.job_view(at, id))
    }

    fn trigger_savepoint<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
        trigger_id: &'a str,
        stop: bool,
    ) -> JmFuture<'a, ()> {
        Box::pin(self.trigger(at, id, trigger_id, stop))
    }

    fn savepoint_status<'a>(
        &'a self,
        at: &'a Endpoint,
        id: &'a str,
        trigger_id: &'a str,
    ) -> JmFuture<'a, SavepointPoll> {
        Box::pin(self.poll(at, id, trigger_id))
    }
}
