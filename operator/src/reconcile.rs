//! The FlinkJob reconciler.
//!
//! Each pass: finalizer → validation (an invalid spec creates nothing; its message lands in
//! the Degraded condition and an Event) → the lifecycle decision (first deployment, suspend,
//! resume, upgrade per `upgradeMode`, restart of a failed job with backoff, on-demand
//! savepoint) → server-side apply of the owned objects (ConfigMap, jobmanager Deployment and
//! Service, taskmanager Deployment) → status from the jobmanager's REST API, published with
//! server-side apply → an Event for every lifecycle transition.
//!
//! Self-healing splits between Kubernetes and the engine: Deployments replace deleted or
//! failed pods; the jobmanager runs in application mode, so a replaced jobmanager restores
//! the job from its latest checkpoint by itself (same job id), and taskmanagers re-register.
//! The operator steps in for what neither does: a job that FAILED is restarted from its
//! latest checkpoint by rolling the jobmanager, with exponential backoff shown in status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::crd::{
    Condition, DesiredState, FlinkJob, FlinkJobStatus, LifecycleState, SavepointInfo, UpgradeMode,
};
use crate::jm::{JmClient, JobView, now};
use crate::metrics::Metrics;
use crate::resources::{self, RunPlan};
use crate::validate::validate;

pub const FINALIZER: &str = "flinkrs.io/finalizer";
pub const MANAGER: &str = "flink-rs-operator";
const SAVEPOINT_HISTORY: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Jm(#[from] crate::jm::JmError),
    #[error("object without a namespace")]
    NoNamespace,
}

/// What every reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub jm: JmClient,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Base delay of the failed-job restart backoff (doubles per restart, capped at 5 min).
    pub restart_backoff: Duration,
}

impl Context {
    pub fn new(client: kube::Client, jm: JmClient, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            jm,
            metrics,
            restart_backoff: Duration::from_secs(10),
        }
    }
}

/// The controller's entry point.
pub async fn reconcile(fj: Arc<FlinkJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<FlinkJob> = Api::namespaced(ctx.client.clone(), &ns);
    let r = finalizer(&api, FINALIZER, fj, |event| async {
        match event {
            Finalizer::Apply(fj) => apply(&fj, &ctx).await,
            Finalizer::Cleanup(fj) => cleanup(&fj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()));
    ctx.metrics.reconciled(start.elapsed(), r.is_err());
    r
}

/// Requeue after an error, with a short fixed delay (the controller's own backoff adds to it).
pub fn error_policy(_fj: Arc<FlinkJob>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
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

/// A job id per deployment, derived from the object's uid: 32 hex digits.
pub fn job_id(fj: &FlinkJob, deployment: u32) -> String {
    let uid = fj.uid().unwrap_or_else(|| fj.name_any());
    let a = resources::hash(&format!("{uid}/{deployment}"));
    let b = resources::hash(&format!("{deployment}/{uid}"));
    format!("{a}{b}")
}

fn condition(type_: &str, on: bool, reason: &str, message: &str, g: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now(),
        observed_generation: g,
    }
}

/// Sets a condition, keeping its transition time when its status did not change.
fn set_condition(status: &mut FlinkJobStatus, c: Condition) {
    match status.conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(old) => {
            let t = if old.status == c.status {
                old.last_transition_time.clone()
            } else {
                c.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time: t,
                ..c
            };
        }
        None => status.conditions.push(c),
    }
}

async fn event(ctx: &Context, fj: &FlinkJob, warn: bool, reason: &str, note: String) {
    let e = Event {
        type_: if warn {
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

async fn publish_status(
    ctx: &Context,
    fj: &FlinkJob,
    status: &FlinkJobStatus,
) -> Result<(), Error> {
    if fj.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<FlinkJob> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": "flinkrs.io/v1alpha1",
        "kind": "FlinkJob",
        "status": status,
    });
    api.patch_status(
        &fj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

fn record_savepoint(status: &mut FlinkJobStatus, path: &str, trigger: &str) {
    status.savepoints.push(SavepointInfo {
        path: path.into(),
        time: now(),
        trigger: trigger.into(),
    });
    let n = status.savepoints.len();
    if n > SAVEPOINT_HISTORY {
        status.savepoints.drain(..n - SAVEPOINT_HISTORY);
    }
}

fn seconds_since(rfc: &str) -> Option<i64> {
    // Parses what jm::now() writes: YYYY-MM-DDTHH:MM:SSZ.
    let p = |a: usize, b: usize| rfc.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        p(0, 4)?,
        p(5, 7)?,
        p(8, 10)?,
        p(11, 13)?,
        p(14, 16)?,
        p(17, 19)?,
    );
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let then = days * 86_400 + h * 3600 + mi * 60 + s;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .ok()?;
    Some(now_s - then)
}

/// One reconcile of a live FlinkJob.
async fn apply(fj: &FlinkJob, ctx: &Context) -> Result<Action, Error> {
    let ns = fj.namespace().ok_or(Error::NoNamespace)?;
    let generation = fj.metadata.generation;
    let old = fj.status.clone().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = generation;

    // 1. Validation: nothing is created for an invalid spec.
    if let Err(e) = validate(&fj.spec) {
        let msg = e.to_string();
        set_condition(
            &mut st,
            condition("Degraded", true, "InvalidSpec", &msg, generation),
        );
        set_condition(
            &mut st,
            condition("Ready", false, "InvalidSpec", &msg, generation),
        );
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
    st.error = None;

    let url = resources::rest_url(fj);
    let hash = spec_hash(fj);
    let suspended = fj.spec.job.state == DesiredState::Suspended;
    let mut plan: Option<RunPlan> = st.job_id.clone().map(|id| RunPlan {
        job_id: id,
        restore_from: st.restored_from.clone(),
        running: st.lifecycle_state != Some(LifecycleState::Suspended),
        restart_generation: st.restarts,
    });
    let observed: Option<JobView> = match &plan {
        Some(p) if p.running => ctx.jm.job(&url, &p.job_id).await.ok().flatten(),
        _ => None,
    };
    let job_running = observed.as_ref().is_some_and(|j| j.state == "RUNNING");
    let mut transition: Option<(LifecycleState, String)> = None;

    match plan.as_mut() {
        // 2a. First deployment.
        None => {
            if suspended {
                st.lifecycle_state = Some(LifecycleState::Suspended);
                set_condition(
                    &mut st,
                    condition(
                        "Ready",
                        false,
                        "Suspended",
                        "the job is suspended before its first deployment",
                        generation,
                    ),
                );
                publish_status(ctx, fj, &st).await?;
                return Ok(Action::await_change());
            }
            st.deployments = 1;
            let p = RunPlan {
                job_id: job_id(fj, 1),
                restore_from: fj.spec.job.initial_savepoint_path.clone(),
                running: true,
                restart_generation: 0,
            };
            st.job_id = Some(p.job_id.clone());
            st.restored_from = p.restore_from.clone();
            st.deployed_spec_hash = Some(hash.clone());
            st.last_savepoint_trigger_nonce = fj.spec.job.savepoint_trigger_nonce;
            transition = Some((
                LifecycleState::Deploying,
                format!("deploying job {}", p.job_id),
            ));
            plan = Some(p);
        }
        Some(p) => {
            if suspended && p.running {
                // 2b. Suspend: savepoint, then no pods.
                if job_running {
                    let sp = ctx.jm.savepoint(&url, &p.job_id, true).await?;
                    record_savepoint(&mut st, &sp, "suspend");
                    p.restore_from = Some(sp);
                } else if let Some(cp) = observed.as_ref().and_then(|j| j.last_checkpoint.clone()) {
                    p.restore_from = Some(cp.path);
                }
                p.running = false;
                st.restored_from = p.restore_from.clone();
                transition = Some((
                    LifecycleState::Suspended,
                    match &p.restore_from {
                        Some(r) => format!("suspended; resumes from {r}"),
                        None => "suspended; no savepoint (the job was not running)".into(),
                    },
                ));
            } else if !suspended && !p.running {
                // 2c. Resume from the suspension's savepoint, as a new job.
                st.deployments += 1;
                p.job_id = job_id(fj, st.deployments);
                p.running = true;
                st.job_id = Some(p.job_id.clone());
                st.deployed_spec_hash = Some(hash.clone());
                transition = Some((
                    LifecycleState::Deploying,
                    format!(
                        "resuming as job {} from {}",
                        p.job_id,
                        p.restore_from.as_deref().unwrap_or("nothing")
                    ),
                ));
            } else if p.running && st.deployed_spec_hash.as_deref() != Some(hash.as_str()) {
                // 2d. Upgrade per upgradeMode.
                let mode = fj.spec.job.upgrade_mode;
                match mode {
                    UpgradeMode::Stateless => {
                        st.deployments += 1;
                        p.job_id = job_id(fj, st.deployments);
                        p.restore_from = None;
                    }
                    UpgradeMode::Savepoint => {
                        if job_running {
                            let sp = ctx.jm.savepoint(&url, &p.job_id, true).await?;
                            record_savepoint(&mut st, &sp, "upgrade");
                            p.restore_from = Some(sp);
                        } else {
                            // No running job to savepoint: fall back to its latest checkpoint.
                            p.restore_from = observed
                                .as_ref()
                                .and_then(|j| j.last_checkpoint.as_ref())
                                .or(st.last_checkpoint.as_ref())
                                .map(|c| c.path.clone())
                                .or(p.restore_from.clone());
                        }
                        st.deployments += 1;
                        p.job_id = job_id(fj, st.deployments);
                    }
                    UpgradeMode::LastState => {
                        // Same job id: the new jobmanager resumes its latest checkpoint.
                        p.restore_from = None;
                    }
                }
                st.job_id = Some(p.job_id.clone());
                st.deployed_spec_hash = Some(hash.clone());
                transition = Some((
                    LifecycleState::Upgrading,
                    format!(
                        "spec changed; upgrading ({}) to job {}{}",
                        serde_json::to_value(mode)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        p.job_id,
                        p.restore_from
                            .as_deref()
                            .map(|r| format!(" from {r}"))
                            .unwrap_or_default()
                    ),
                ));
            } else if observed.as_ref().is_some_and(|j| j.state == "FAILED") {
                // 2e. A failed job: restart from its latest checkpoint, with backoff.
                let delay = ctx
                    .restart_backoff
                    .saturating_mul(1u32 << st.restarts.min(5))
                    .min(Duration::from_secs(300));
                let due = st
                    .last_restart_time
                    .as_deref()
                    .and_then(seconds_since)
                    .is_none_or(|s| s >= delay.as_secs() as i64);
                let failure = observed
                    .as_ref()
                    .and_then(|j| j.failure.clone())
                    .unwrap_or_else(|| "unknown".into());
                if due {
                    st.restarts += 1;
                    st.last_restart_time = Some(now());
                    p.restart_generation = st.restarts;
                    p.restore_from = None;
                    transition = Some((
                        LifecycleState::Deploying,
                        format!(
                            "job failed ({failure}); restart {} from its latest checkpoint",
                            st.restarts
                        ),
                    ));
                } else {
                    st.lifecycle_state = Some(LifecycleState::Failed);
                    let msg = format!(
                        "{failure}; restarting in up to {}s (restart {})",
                        delay.as_secs(),
                        st.restarts + 1
                    );
                    set_condition(
                        &mut st,
                        condition("Degraded", true, "JobFailed", &msg, generation),
                    );
                    set_condition(
                        &mut st,
                        condition("Ready", false, "JobFailed", &failure, generation),
                    );
                    publish_status(ctx, fj, &st).await?;
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
            }
        }
    }
    let Some(plan) = plan else {
        return Ok(Action::await_change());
    };

    // 3. The owned objects, by server-side apply.
    let cm = resources::config_map(fj, &plan);
    ssa(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
        &resources::config_map_name(fj),
        &cm,
    )
    .await?;
    let svc = resources::service(fj);
    ssa(
        &Api::<Service>::namespaced(ctx.client.clone(), &ns),
        &resources::service_name(fj),
        &svc,
    )
    .await?;
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &ns);
    ssa(
        &deployments,
        &resources::jobmanager_name(fj),
        &resources::jobmanager(fj, &plan),
    )
    .await?;
    ssa(
        &deployments,
        &resources::taskmanager_name(fj),
        &resources::taskmanager(fj, &plan),
    )
    .await?;
    st.restored_from = plan.restore_from.clone();

    // 4. On-demand savepoint.
    if plan.running
        && fj.spec.job.savepoint_trigger_nonce.is_some()
        && fj.spec.job.savepoint_trigger_nonce != st.last_savepoint_trigger_nonce
        && job_running
        && transition.is_none()
    {
        match ctx.jm.savepoint(&url, &plan.job_id, false).await {
            Ok(sp) => {
                record_savepoint(&mut st, &sp, "manual");
                st.last_savepoint_trigger_nonce = fj.spec.job.savepoint_trigger_nonce;
                event(
                    ctx,
                    fj,
                    false,
                    "SavepointCompleted",
                    format!("savepoint {sp}"),
                )
                .await;
            }
            Err(e) => event(ctx, fj, true, "SavepointFailed", e.to_string()).await,
        }
    }

    // 5. Status from the jobmanager.
    let lifecycle = if let Some((l, msg)) = &transition {
        let warn = *l == LifecycleState::Failed;
        event(ctx, fj, warn, &format!("{l:?}"), msg.clone()).await;
        *l
    } else if !plan.running {
        LifecycleState::Suspended
    } else {
        match observed.as_ref().map(|j| j.state.as_str()) {
            Some("RUNNING") | Some("FINISHED") => LifecycleState::Running,
            Some("FAILED") => LifecycleState::Failed,
            _ => match st.lifecycle_state {
                Some(LifecycleState::Upgrading) => LifecycleState::Upgrading,
                _ => LifecycleState::Deploying,
            },
        }
    };
    if transition.is_none() && st.lifecycle_state != Some(lifecycle) {
        event(
            ctx,
            fj,
            false,
            &format!("{lifecycle:?}"),
            format!("job {} is {lifecycle:?}", plan.job_id),
        )
        .await;
    }
    st.lifecycle_state = Some(lifecycle);
    if let Some(j) = &observed {
        st.job_state = Some(j.state.clone());
        if j.last_checkpoint.is_some() {
            st.last_checkpoint = j.last_checkpoint.clone();
        }
    } else if transition.is_some() || !plan.running {
        st.job_state = None;
    }
    let g = generation;
    match lifecycle {
        LifecycleState::Running => {
            let msg = format!(
                "job {} is {}",
                plan.job_id,
                st.job_state.clone().unwrap_or_default()
            );
            set_condition(&mut st, condition("Ready", true, "JobRunning", &msg, g));
            set_condition(&mut st, condition("Progressing", false, "Stable", "", g));
            set_condition(&mut st, condition("Degraded", false, "Healthy", "", g));
        }
        LifecycleState::Suspended => {
            set_condition(
                &mut st,
                condition(
                    "Ready",
                    false,
                    "Suspended",
                    "spec.job.state is suspended",
                    g,
                ),
            );
            set_condition(&mut st, condition("Progressing", false, "Suspended", "", g));
            set_condition(&mut st, condition("Degraded", false, "Healthy", "", g));
        }
        LifecycleState::Failed => {
            set_condition(&mut st, condition("Ready", false, "JobFailed", "", g));
            set_condition(
                &mut st,
                condition(
                    "Degraded",
                    true,
                    "JobFailed",
                    observed
                        .as_ref()
                        .and_then(|j| j.failure.as_deref())
                        .unwrap_or("the job failed"),
                    g,
                ),
            );
        }
        other => {
            let msg = transition
                .as_ref()
                .map(|t| t.1.clone())
                .unwrap_or_else(|| "waiting for the jobmanager".into());
            set_condition(
                &mut st,
                condition("Ready", false, &format!("{other:?}"), &msg, g),
            );
            set_condition(
                &mut st,
                condition("Progressing", true, &format!("{other:?}"), &msg, g),
            );
            set_condition(&mut st, condition("Degraded", false, "Healthy", "", g));
        }
    }
    publish_status(ctx, fj, &st).await?;
    Ok(Action::requeue(match lifecycle {
        LifecycleState::Running | LifecycleState::Suspended => Duration::from_secs(10),
        _ => Duration::from_secs(3),
    }))
}

/// Deletion: an optional savepoint; owned objects go with their owner (garbage collection).
async fn cleanup(fj: &FlinkJob, ctx: &Context) -> Result<Action, Error> {
    let mut st = fj.status.clone().unwrap_or_default();
    st.lifecycle_state = Some(LifecycleState::Deleting);
    if fj.spec.job.savepoint_on_deletion == Some(true) {
        if let Some(id) = st.job_id.clone() {
            let url = resources::rest_url(fj);
            match ctx.jm.job(&url, &id).await {
                Ok(Some(j)) if j.state == "RUNNING" => {
                    let sp = ctx.jm.savepoint(&url, &id, true).await?;
                    record_savepoint(&mut st, &sp, "deletion");
                    event(
                        ctx,
                        fj,
                        false,
                        "Deleting",
                        format!("stopped with savepoint {sp}"),
                    )
                    .await;
                }
                _ => {
                    event(
                        ctx,
                        fj,
                        true,
                        "Deleting",
                        "no running job to savepoint".into(),
                    )
                    .await
                }
            }
        }
    } else {
        event(
            ctx,
            fj,
            false,
            "Deleting",
            "deleting the job and its pods".into(),
        )
        .await;
    }
    publish_status(ctx, fj, &st).await?;
    Ok(Action::await_change())
}
