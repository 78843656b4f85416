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

pub type JmFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JmError>> + Send + 'a>>;

/// The calls the reconciler makes to a jobmanager.
pub trait JobManagerApi: Send + Sync {
    /// The job `id`, or `None` when the jobmanager does not know it.
    fn job<'a>(&'a self, url: &'a str, id: &'a str) -> JmFuture<'a, Option<JobView>>;
    /// Requests a savepoint (`stop`: and stops the job with it). Idempotent per
    /// `trigger_id`: a request the jobmanager already has starts nothing new.
    fn trigger_savepoint<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        trigger_id: &'a str,
        stop: bool,
    ) -> JmFuture<'a, ()>;
    /// Where the savepoint request `trigger_id` is.
    fn savepoint_status<'a>(
        &'a self,
        url: &'a str,
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
    async fn get(&self, url: &str, path: &str) -> Result<(u16, Value), JmError> {
        let r = self
            .client
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let code = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    async fn job_view(&self, url: &str, id: &str) -> Result<Option<JobView>, JmError> {
        let (code, v) = self.get(url, &format!("/jobs/{id}")).await?;
        if code == 404 {
            return Ok(None);
        }
        if code != 200 {
            return Err(failed(url, format!("GET /jobs/{id}: {code} {v}")));
        }
        let detail: api::JobDetail = read(url, "GET /jobs/{id}", v)?;
        let (_, cp) = self.get(url, &format!("/jobs/{id}/checkpoints")).await?;
        let cp: api::CheckpointStatistics = read(url, "GET /jobs/{id}/checkpoints", cp)?;
        let last_checkpoint = cp.latest.completed.map(|c| CheckpointInfo {
            id: c.id,
            path: c.external_path,
            time: rfc3339(c.latest_ack_timestamp),
        });
        let (_, config) = self.get(url, "/jobmanager/config").await?;
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
        url: &str,
        id: &str,
        trigger_id: &str,
        stop: bool,
    ) -> Result<(), JmError> {
        let req = if stop {
            self.client
                .post(format!("{url}/jobs/{id}/stop"))
                .json(&api::StopRequest {
                    target_directory: None,
                    trigger_id: Some(trigger_id.into()),
                })
        } else {
            self.client
                .post(format!("{url}/jobs/{id}/savepoints"))
                .json(&api::SavepointRequest {
                    target_directory: None,
                    cancel_job: false,
                    trigger_id: Some(trigger_id.into()),
                })
        };
        let r = req.send().await.map_err(|e| unreachable(url, e))?;
        let code = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        match serde_json::from_value::<api::TriggerResponse>(v.clone()) {
            Ok(t) if t.request_id == trigger_id => Ok(()),
            _ => Err(failed(
                url,
                format!("savepoint of job {id} not accepted: {code} {v}"),
            )),
        }
    }

    async fn poll(&self, url: &str, id: &str, trigger_id: &str) -> Result<SavepointPoll, JmError> {
        let (code, s) = self
            .get(url, &format!("/jobs/{id}/savepoints/{trigger_id}"))
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

fn failed(url: &str, message: String) -> JmError {
    JmError::Failed {
        url: url.into(),
        message,
    }
}

impl JobManagerApi for HttpJm {
    fn job<'a>(&'a self, url: &'a str, id: &'a str) -> JmFuture<'a, Option<JobView>> {
        Box::pin(self.job_view(url, id))
    }

    fn trigger_savepoint<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        trigger_id: &'a str,
        stop: bool,
    ) -> JmFuture<'a, ()> {
        Box::pin(self.trigger(url, id, trigger_id, stop))
    }

    fn savepoint_status<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        trigger_id: &'a str,
    ) -> JmFuture<'a, SavepointPoll> {
        Box::pin(self.poll(url, id, trigger_id))
    }
}
