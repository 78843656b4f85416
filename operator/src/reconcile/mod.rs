//! The FlinkJob reconciler.
//!
//! A pass reads the FlinkJob fresh from the API server (never acting on a cached copy that
//! may be stale), then:
//! 1. finalizer: added first; on deletion, [`cleanup`] (an optional savepoint) before it is
//!    released, and the owned objects go with their owner (garbage collection);
//! 2. validation: an invalid spec creates nothing; its message lands in the Degraded
//!    condition and an Event;
//! 3. observation: the current deployment's job from its jobmanager (only a jobmanager whose
//!    plan hash is the current one counts), the pending savepoint, the pods;
//! 4. [`decide::decide`], a pure function of spec, status and observation;
//! 5. status written first (the plan and any savepoint intent in it, with the object's
//!    resourceVersion as precondition), then the savepoint request, then the owned objects
//!    rendered from status by server-side apply, then Events.
//!
//! Self-healing splits between Kubernetes and the engine: Deployments replace deleted or
//! failed pods; the jobmanager runs in application mode, so a replaced jobmanager restores
//! the job from its latest checkpoint by itself (same job id), and taskmanagers re-register.
//! The operator steps in for what neither does: a job that FAILED is restarted from its
//! latest checkpoint by rolling the jobmanager, with exponential backoff shown in status.

pub mod conditions;
pub mod controller;
pub mod decide;
pub mod rest_token;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::clock;
use crate::crd::{DesiredState, FlinkJob, FlinkJobStatus, LifecycleState, SavepointReason};
use crate::jm::{Endpoint, HttpJm, JobManagerApi, SavepointPoll};
use crate::metrics::Metrics;
use crate::resources::{self, RunPlan};
use crate::validate::{validate, validate_settings};

use decide::{Decision, Note, Observation, Observed, Policy, plan_of};

pub const FINALIZER: &str = "flinkrs.io/finalizer";
pub const MANAGER: &str = "flink-rs-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Jm(#[from] crate::jm::JmError),
    #[error("object without a namespace")]
    NoNamespace,
    #[error("issuing the job's TLS certificates: {0}")]
    Certificates(#[from] flink_rs_certificates::CertError),
}

/// Where a FlinkJob's jobmanager REST API is reached from the operator.
pub type RestUrl = Box<dyn Fn(&FlinkJob) -> String + Send + Sync>;

/// What every reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub jm: Arc<dyn JobManagerApi>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    /// The jobmanager's REST address: its Service's in-cluster name
    /// ([`resources::rest_url`]); tests map it to where their processes listen.
    pub rest_url: RestUrl,
    /// Consecutive failed passes per object (uid): the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When set, every job gets NetworkPolicies admitting only its own pods and this
    /// operator ([`resources::network_policies`]).
    pub network_policies: Option<resources::OperatorPeer>,
    /// When set, jobs read and write files only under these prefixes and their checkpoint
    /// storage ([`resources::allowed_paths`]).
    pub allowed_paths: Option<Vec<String>>,
}

impl Context {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self::with(
            client,
            Arc::new(HttpJm::default()),
            Box::new(resources::rest_url),
            metrics,
        )
    }

    /// A context with another jobmanager client and address mapping.
    pub fn with(
        client: kube::Client,
        jm: Arc<dyn JobManagerApi>,
        rest_url: RestUrl,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            jm,
            metrics,
            policy: Policy {
                restart_backoff: Duration::from_secs(10),
            },
            rest_url,
            failures: Mutex::default(),
            network_policies: None,
            allowed_paths: None,
        }
    }

    /// Restricts where jobs read and write files: `prefixes` and each job's checkpoint
    /// storage (`flink-rs.filesystem.allowed-paths` in its configuration).
    pub fn with_allowed_paths(mut self, prefixes: Vec<String>) -> Self {
        self.allowed_paths = Some(prefixes);
        self
    }

    /// Turns on the jobs' NetworkPolicies.
    pub fn with_network_policies(mut self, operator: resources::OperatorPeer) -> Self {
        self.network_policies = Some(operator);
        self
    }

    fn failures(&self, fj: &FlinkJob, failed: bool) -> u32 {
        let key = fj.uid().unwrap_or_else(|| fj.name_any());
        let Ok(mut m) = self.failures.lock() else {
            return 0;
        };
        if failed {
            let n = m.entry(key).or_insert(0);
            *n += 1;
            *n
        } else {
            m.remove(&key);
            0
        }
    }
}

/// The controller's entry point.
pub async fn reconcile(cached: Arc<FlinkJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let r = pass(&cached, &ctx).await;
    ctx.metrics.reconciled(start.elapsed(), r.is_err());
    match &r {
        Ok(_) => {
            ctx.failures(&cached, false);
        }
        Err(e) => report_error(&cached, &ctx, e).await,
    }
    r
}

/// Requeue after an error with exponential backoff (1 s doubling to 5 min per object).
pub fn error_policy(fj: Arc<FlinkJob>, e: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx
        .failures
        .lock()
        .ok()
        .and_then(|m| m.get(&fj.uid().unwrap_or_else(|| fj.name_any())).copied())
        .unwrap_or(1);
    let delay =
        Duration::from_secs(1u64 << n.saturating_sub(1).min(8)).min(Duration::from_secs(300));
    tracing::warn!(error = %e, object = %fj.name_any(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Every failed pass shows in the Degraded condition and an Event (best effort: the API
/// may be what fails).
async fn report_error(fj: &FlinkJob, ctx: &Context, e: &Error) {
    let n = ctx.failures(fj, true);
    let msg = format!("reconcile failed ({n} in a row): {e}");
    event(ctx, fj, true, "ReconcileError", msg.clone()).await;
    let Ok(api) = flinkjobs(fj, ctx) else { return };
    let Ok(Some(fresh)) = api.get_opt(&fj.name_any()).await else {
        return;
    };
    let mut st = fresh.status.clone().unwrap_or_default();
    st.error = Some(msg.clone());
    conditions::set(
        &mut st,
        conditions::DEGRADED,
        true,
        "ReconcileError",
        &msg,
        fresh.metadata.generation,
    );
    let _ = publish_status(ctx, &fresh, &st).await;
}

fn flinkjobs(fj: &FlinkJob, ctx: &Context) -> Result<Api<FlinkJob>, Error> {
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    Ok(Api::namespaced(ctx.client.clone(), &ns))
}

/// The job-affecting part of the spec: a change rolls out per upgradeMode.
pub fn spec_hash(fj: &FlinkJob) -> String {
    let mut spec = fj.spec.clone();
    spec.job.state = DesiredState::Running;
    spec.job.savepoint_trigger_nonce = None;
    spec.job.savepoint_on_deletion = None;
    spec.job.initial_savepoint_path = None;
    resources::hash(&serde_json::to_string(&spec).unwrap_or_default())
}

/// The job id of a FlinkJob's `deployment`-th new job, derived from the object's uid: 32 hex
/// digits.
pub fn job_id(fj: &FlinkJob, deployment: u32) -> String {
    let uid = fj.uid().unwrap_or_else(|| fj.name_any());
    let a = resources::hash(&format!("{uid}/{deployment}"));
    let b = resources::hash(&format!("{deployment}/{uid}"));
    format!("{a}{b}")
}

async fn pass(cached: &FlinkJob, ctx: &Context) -> Result<Action, Error> {
    let api = flinkjobs(cached, ctx)?;
    // Act only on what the API server holds now, never on a cached copy.
    let Some(fj) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let has_finalizer = fj.finalizers().iter().any(|f| f == FINALIZER);
    if fj.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return match cleanup(&fj, ctx).await? {
            Some(wait) => Ok(Action::requeue(wait)),
            None => {
                remove_finalizer(&api, &fj).await?;
                Ok(Action::await_change())
            }
        };
    }
    if !has_finalizer {
        add_finalizer(&api, &fj).await?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    apply(&fj, ctx).await
}

async fn add_finalizer(api: &Api<FlinkJob>, fj: &FlinkJob) -> Result<(), Error> {
    let patch = if fj.metadata.finalizers.is_none() {
        json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": fj.resource_version() },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])
    } else {
        json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": fj.resource_version() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ])
    };
    json_patch(api, fj, patch).await
}

async fn remove_finalizer(api: &Api<FlinkJob>, fj: &FlinkJob) -> Result<(), Error> {
    let Some(i) = fj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch = json!([
        { "op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{i}") },
    ]);
    json_patch(api, fj, patch).await
}

async fn json_patch(
    api: &Api<FlinkJob>,
    fj: &FlinkJob,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    api.patch(
        &fj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

async fn event(ctx: &Context, fj: &FlinkJob, warning: bool, reason: &str, note: String) {
    let e = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&e, &fj.object_ref(&())).await {
        tracing::warn!(error = %err, reason, "cannot publish event");
    }
}

async fn ssa<K>(api: &Api<K>, name: &str, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Writes status whole, with the object's resourceVersion as precondition: a pass that
/// read an old object fails here (409) instead of overwriting what a newer pass wrote.
async fn publish_status(
    ctx: &Context,
    fj: &FlinkJob,
    status: &FlinkJobStatus,
) -> Result<(), Error> {
    if fj.status.as_ref() == Some(status) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": "flinkrs.io/v1alpha1",
        "kind": "FlinkJob",
        "metadata": { "resourceVersion": fj.resource_version() },
        "status": status,
    });
    flinkjobs(fj, ctx)?
        .patch_status(
            &fj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

/// Where the job's jobmanager answers, with the token it requires.
async fn endpoint(fj: &FlinkJob, ctx: &Context) -> Result<Endpoint, Error> {
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    Ok(Endpoint {
        url: (ctx.rest_url)(fj),
        token: rest_token::read(fj, ctx, &ns).await?,
    })
}

/// What the current deployment looks like from outside.
async fn observe(fj: &FlinkJob, st: &FlinkJobStatus, ctx: &Context) -> Result<Observed, Error> {
    let at = endpoint(fj, ctx).await?;
    let job = match plan_of(st) {
        Some(plan) if plan.running => Observation::of(
            ctx.jm.job(&at, &plan.job_id).await,
            &resources::plan_hash(fj, &plan),
        ),
        _ => Observation::NotRunning,
    };
    let savepoint = match &st.pending_savepoint {
        Some(sp) => Some(
            ctx.jm
                .savepoint_status(&at, &sp.job_id, &sp.trigger_id)
                .await
                .map_err(|e| e.to_string()),
        ),
        None => None,
    };
    Ok(Observed {
        job,
        savepoint,
        pods: pod_problem(fj, ctx).await?,
        now: clock::unix_now(),
    })
}

/// Container states that a pod does not leave by itself.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
];

/// The first pod of the FlinkJob that is stuck, as a message naming pod, container and why.
async fn pod_problem(fj: &FlinkJob, ctx: &Context) -> Result<Option<String>, Error> {
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("app.kubernetes.io/instance={}", fj.name_any());
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    for pod in list.items {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for c in statuses {
            let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.clone().unwrap_or_default();
            if STUCK.contains(&reason.as_str()) {
                return Ok(Some(format!(
                    "pod {} container {}: {reason}{} (restarts: {})",
                    pod.name_any(),
                    c.name,
                    waiting
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    c.restart_count
                )));
            }
        }
    }
    Ok(None)
}

/// One reconcile of a live FlinkJob.
async fn apply(fj: &FlinkJob, ctx: &Context) -> Result<Action, Error> {
    let old = fj.status.clone().unwrap_or_default();
    if let Err(e) =
        validate(&fj.spec).and_then(|()| validate_settings(&fj.spec, ctx.allowed_paths.is_some()))
    {
        let msg = e.to_string();
        let mut st = old.clone();
        st.observed_generation = fj.metadata.generation;
        let g = fj.metadata.generation;
        conditions::set(&mut st, conditions::DEGRADED, true, "InvalidSpec", &msg, g);
        conditions::set(&mut st, conditions::READY, false, "InvalidSpec", &msg, g);
        st.error = Some(msg.clone());
        if st.job_id.is_none() {
            st.lifecycle_state = Some(LifecycleState::Failed);
        }
        if old.error.as_deref() != Some(msg.as_str()) {
            event(ctx, fj, true, "InvalidSpec", msg).await;
        }
        publish_status(ctx, fj, &st).await?;
        return Ok(Action::await_change());
    }
    let observed = observe(fj, &old, ctx).await?;
    let d = decide::decide(fj, &old, &observed, ctx.policy);
    carry_out(fj, ctx, d).await
}

async fn carry_out(fj: &FlinkJob, ctx: &Context, d: Decision) -> Result<Action, Error> {
    // 1. Status first: the plan and any savepoint intent survive whatever happens next.
    publish_status(ctx, fj, &d.status).await?;
    // 2. The savepoint request, idempotent by its trigger id.
    if d.trigger
        && let Some(sp) = &d.status.pending_savepoint
    {
        let at = endpoint(fj, ctx).await?;
        if let Err(e) = ctx
            .jm
            .trigger_savepoint(&at, &sp.job_id, &sp.trigger_id, sp.reason.stops())
            .await
        {
            // Kept pending: the next pass asks where it is, and asks again if it is unknown.
            event(
                ctx,
                fj,
                true,
                "SavepointRequestFailed",
                format!("{} savepoint of job {}: {e}", sp.reason.as_str(), sp.job_id),
            )
            .await;
        }
    }
    // 3. The owned objects, rendered from status. Not while the spec differs from the
    // deployed one (an upgrade savepoint in flight): that would roll the pods early.
    if let Some(plan) = plan_of(&d.status)
        && (!plan.running || plan.spec_hash == spec_hash(fj))
    {
        apply_objects(fj, ctx, &plan).await?;
    }
    for Note {
        warning,
        reason,
        message,
    } in d.notes
    {
        event(ctx, fj, warning, &reason, message).await;
    }
    Ok(Action::requeue(d.requeue))
}

async fn apply_objects(fj: &FlinkJob, ctx: &Context, plan: &RunPlan) -> Result<(), Error> {
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    // The Secret first: pods mounting it must not start before it exists.
    let mut plan = plan.clone();
    if resources::managed_tls(fj) {
        plan.tls_version = Some(tls::ensure(fj, ctx, &ns).await?);
    }
    let token = rest_token::ensure(fj, ctx, &ns).await?;
    plan.rest_token_version = Some(resources::rest_token_version(&token));
    plan.allowed_paths = ctx
        .allowed_paths
        .as_ref()
        .map(|p| resources::allowed_paths(fj, p));
    let plan = &plan;
    ssa(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &resources::config_map_name(fj),
        &resources::config_map(fj, plan),
    )
    .await?;
    ssa(
        &Api::<Service>::namespaced(ctx.client.clone(), &ns),
        &resources::service_name(fj),
        &resources::service(fj),
    )
    .await?;
    if let Some(operator) = &ctx.network_policies {
        let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &ns);
        for p in resources::network_policies(fj, operator) {
            ssa(&api, &p.name_any(), &p).await?;
        }
    }
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &ns);
    ssa(
        &deployments,
        &resources::jobmanager_name(fj),
        &resources::jobmanager(fj, plan),
    )
    .await?;
    ssa(
        &deployments,
        &resources::taskmanager_name(fj),
        &resources::taskmanager(fj, plan),
    )
    .await
}

/// Deletion. With `savepointOnDeletion` and a running job: a stop-with-savepoint, two-phase
/// like every savepoint; `Some(wait)` while it is in flight. Anything that makes the
/// savepoint impossible (no checkpointing, the job not running, the jobmanager gone, the
/// savepoint failing) is said in a Warning Event naming the job's last checkpoint, and the
/// deletion goes on: a finalizer never blocks forever.
async fn cleanup(fj: &FlinkJob, ctx: &Context) -> Result<Option<Duration>, Error> {
    let mut st = fj.status.clone().unwrap_or_default();
    st.lifecycle_state = Some(LifecycleState::Deleting);
    let wanted = fj.spec.job.savepoint_on_deletion == Some(true);
    let last = st
        .last_checkpoint
        .as_ref()
        .map(|c| format!("its last checkpoint is {}", c.path))
        .unwrap_or_else(|| "it has no checkpoint".into());
    let at = endpoint(fj, ctx).await?;
    if let Some(sp) = st.pending_savepoint.clone() {
        match ctx
            .jm
            .savepoint_status(&at, &sp.job_id, &sp.trigger_id)
            .await
        {
            Ok(SavepointPoll::InProgress) => return Ok(Some(Duration::from_secs(2))),
            Ok(SavepointPoll::Completed(path)) => {
                st.pending_savepoint = None;
                st.savepoints.push(crate::crd::SavepointInfo {
                    path: path.clone(),
                    time: clock::now(),
                    trigger: sp.reason.as_str().into(),
                });
                publish_status(ctx, fj, &st).await?;
                event(
                    ctx,
                    fj,
                    false,
                    "Deleting",
                    format!("job {} stopped with savepoint {path}", sp.job_id),
                )
                .await;
                return Ok(None);
            }
            other => {
                event(
                    ctx,
                    fj,
                    true,
                    "Deleting",
                    format!(
                        "the {} savepoint of job {} did not complete ({other:?}); {last}",
                        sp.reason.as_str(),
                        sp.job_id
                    ),
                )
                .await;
                return Ok(None);
            }
        }
    }
    let plan = plan_of(&st).filter(|p| p.running);
    let (true, Some(plan)) = (wanted, plan) else {
        event(
            ctx,
            fj,
            false,
            "Deleting",
            "deleting the job and its pods".into(),
        )
        .await;
        return Ok(None);
    };
    if fj.spec.checkpointing.is_none() {
        let msg = "savepointOnDeletion: spec.checkpointing is not set, so there is nowhere to write a savepoint; deleting without one";
        event(ctx, fj, true, "Deleting", msg.into()).await;
        return Ok(None);
    }
    let running = match ctx.jm.job(&at, &plan.job_id).await {
        Ok(Some(v)) => v.state == crate::job_state::JobStatus::Running,
        _ => false,
    };
    if !running {
        let msg = format!(
            "savepointOnDeletion: job {} is not running; {last}",
            plan.job_id
        );
        event(ctx, fj, true, "Deleting", msg).await;
        return Ok(None);
    }
    let trigger_id = resources::hash(&format!(
        "{}/{}/deletion",
        fj.uid().unwrap_or_default(),
        plan.job_id
    ));
    st.pending_savepoint = Some(crate::crd::PendingSavepoint {
        trigger_id: trigger_id.clone(),
        job_id: plan.job_id.clone(),
        reason: SavepointReason::Deletion,
        target_spec_hash: None,
        nonce: None,
        time: clock::now(),
    });
    publish_status(ctx, fj, &st).await?;
    if let Err(e) = ctx
        .jm
        .trigger_savepoint(&at, &plan.job_id, &trigger_id, true)
        .await
    {
        event(ctx, fj, true, "SavepointRequestFailed", e.to_string()).await;
    }
    Ok(Some(Duration::from_secs(1)))
}
