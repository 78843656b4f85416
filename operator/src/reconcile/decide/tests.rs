//! One test per rule of [`decide`](super::decide): the status a pass writes from the status
//! the last one wrote and what it observed.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::crd::CheckpointInfo;

const NOW: i64 = 1_800_000_000;
const POLICY: Policy = Policy {
    restart_backoff: Duration::from_secs(10),
};

fn job(extra: Value) -> FlinkJob {
    let mut v = json!({
        "apiVersion": "flinkrs.io/v1alpha1", "kind": "FlinkJob",
        "metadata": { "name": "bids", "namespace": "jobs", "uid": "uid-1", "generation": 3 },
        "spec": {
            "image": "flink-rs:test",
            "job": { "sql": "INSERT INTO b SELECT 1", "parallelism": 1, "upgradeMode": "savepoint" },
            "checkpointing": { "storage": "s3://bucket/cp" },
        },
    });
    merge(&mut v, &extra);
    serde_json::from_value(v).expect("FlinkJob")
}

fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn observed(job: Observation) -> Observed {
    Observed {
        job,
        savepoint: None,
        pods: None,
        now: NOW,
    }
}

fn view(state: JobStatus) -> Observation {
    Observation::Job(JobView {
        state: state.into(),
        last_checkpoint: Some(CheckpointInfo {
            id: 7,
            path: "s3://bucket/cp/chk-7".into(),
            time: "2027-01-15T08:00:00Z".into(),
        }),
        failure: Some("boom".into()),
        restarts: 2,
        plan: None,
    })
}

/// The status after the first deployment of `fj`, running.
fn deployed(fj: &FlinkJob) -> FlinkJobStatus {
    let d = decide(
        fj,
        &FlinkJobStatus::default(),
        &observed(Observation::NotRunning),
        POLICY,
    );
    let mut st = d.status;
    st.lifecycle_state = Some(LifecycleState::Running);
    st
}

fn edited(fj: &FlinkJob) -> FlinkJob {
    let mut f = fj.clone();
    f.spec.job.parallelism = 2;
    f
}

fn with_savepoint(mut o: Observed, poll: SavepointPoll) -> Observed {
    o.savepoint = Some(Ok(poll));
    o
}

/// A running job's spec edited in savepoint mode: (the new FlinkJob, the pass that asked
/// for the upgrade savepoint).
fn upgrade_requested() -> (FlinkJob, Decision) {
    let fj = job(json!({}));
    let new = edited(&fj);
    let d = decide(
        &new,
        &deployed(&fj),
        &observed(view(JobStatus::Running)),
        POLICY,
    );
    (new, d)
}

/// The pass after the pending savepoint of `st` completed at `path` (the job stopped).
fn completed(fj: &FlinkJob, st: &FlinkJobStatus, path: &str) -> Decision {
    decide(
        fj,
        st,
        &with_savepoint(
            observed(view(JobStatus::Finished)),
            SavepointPoll::Completed(path.into()),
        ),
        POLICY,
    )
}

#[test]
fn first_deployment_mints_a_job_id_and_restores_the_initial_savepoint() {
    let fj = job(json!({ "spec": { "job": { "initialSavepointPath": "s3://old/sp-1" } } }));
    let d = decide(
        &fj,
        &FlinkJobStatus::default(),
        &observed(Observation::NotRunning),
        POLICY,
    );
    let st = &d.status;
    assert!(d.deploy && !d.trigger);
    assert_eq!(st.job_id.as_deref(), Some(job_id(&fj, 1).as_str()));
    assert_eq!(st.restored_from.as_deref(), Some("s3://old/sp-1"));
    assert_eq!(st.deployments, 1);
    assert_eq!(st.lifecycle_state, Some(LifecycleState::Deploying));
    assert_eq!(st.deployed_spec_hash, Some(spec_hash(&fj)));
    let plan = plan_of(st).expect("plan");
    assert!(plan.running);
    assert_eq!(plan.spec_hash, spec_hash(&fj));
}

#[test]
fn a_running_job_is_ready_and_its_checkpoint_lands_in_status() {
    let fj = job(json!({}));
    let d = decide(
        &fj,
        &deployed(&fj),
        &observed(view(JobStatus::Running)),
        POLICY,
    );
    assert!(!d.deploy && !d.trigger);
    assert_eq!(d.status.lifecycle_state, Some(LifecycleState::Running));
    assert_eq!(d.status.job_state.as_deref(), Some("RUNNING"));
    assert_eq!(d.status.job_restarts, Some(2), "kubectl get fj shows them");
    assert_eq!(d.status.last_checkpoint.as_ref().map(|c| c.id), Some(7));
    let ready = conditions::get(&d.status, READY).expect("ready");
    assert_eq!(ready.status, "True");
}

#[test]
fn savepoint_upgrade_records_its_intent_before_anything_moves() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let new = edited(&fj);
    let d = decide(&new, &st, &observed(view(JobStatus::Running)), POLICY);
    assert!(d.trigger, "the savepoint is requested");
    assert!(!d.deploy, "nothing is redeployed before it completes");
    let sp = d
        .status
        .pending_savepoint
        .clone()
        .expect("intent in status");
    assert_eq!(sp.reason, SavepointReason::Upgrade);
    assert_eq!(sp.job_id, st.job_id.clone().expect("id"));
    assert_eq!(sp.target_spec_hash, Some(spec_hash(&new)));
    assert_eq!(d.status.job_id, st.job_id, "the plan is unchanged");
    assert_eq!(d.status.deployed_spec_hash, st.deployed_spec_hash);

    // In progress: nothing changes, the intent stays.
    let waiting = decide(
        &new,
        &d.status,
        &with_savepoint(
            observed(view(JobStatus::Running)),
            SavepointPoll::InProgress,
        ),
        POLICY,
    );
    assert!(!waiting.deploy && !waiting.trigger);
    assert_eq!(waiting.status.pending_savepoint, Some(sp.clone()));

    // Completed: a new job from the savepoint, for the spec the savepoint was taken for.
    let done = completed(&new, &d.status, "s3://bucket/sp-9");
    assert!(done.deploy);
    assert_eq!(done.status.pending_savepoint, None);
    assert_eq!(done.status.job_id, Some(job_id(&fj, 2)));
    assert_eq!(
        done.status.restored_from.as_deref(),
        Some("s3://bucket/sp-9")
    );
    assert_eq!(done.status.deployed_spec_hash, Some(spec_hash(&new)));
    assert_eq!(done.status.deployments, 2);
    assert_eq!(
        done.status.savepoints.last().map(|s| s.trigger.as_str()),
        Some("upgrade")
    );
}

#[test]
fn a_lost_savepoint_request_is_asked_again_with_the_same_trigger_id() {
    let (new, d) = upgrade_requested();
    let again = decide(
        &new,
        &d.status,
        &with_savepoint(observed(view(JobStatus::Running)), SavepointPoll::Unknown),
        POLICY,
    );
    assert!(again.trigger && !again.deploy);
    assert_eq!(again.status.pending_savepoint, d.status.pending_savepoint);
}

#[test]
fn an_unconfirmable_upgrade_savepoint_keeps_the_job_id_and_its_snapshots() {
    let fj = job(json!({}));
    let new = edited(&fj);
    let st = deployed(&fj);
    let d = decide(&new, &st, &observed(view(JobStatus::Running)), POLICY);
    let lost = decide(
        &new,
        &d.status,
        &with_savepoint(observed(view(JobStatus::Finished)), SavepointPoll::Unknown),
        POLICY,
    );
    assert!(lost.deploy);
    assert_eq!(lost.status.pending_savepoint, None);
    assert_eq!(lost.status.job_id, st.job_id, "own snapshots: same job id");
    assert_eq!(lost.status.restored_from, st.restored_from);
    assert_eq!(lost.status.deployed_spec_hash, Some(spec_hash(&new)));
    assert!(lost.notes.iter().any(|n| n.warning));
}

#[test]
fn an_unanswered_savepoint_is_waited_for() {
    let (new, d) = upgrade_requested();
    let mut o = observed(Observation::Unreachable("refused".into()));
    o.savepoint = Some(Err("refused".into()));
    let wait = decide(&new, &d.status, &o, POLICY);
    assert!(!wait.deploy && !wait.trigger);
    assert_eq!(wait.status.pending_savepoint, d.status.pending_savepoint);
}

#[test]
fn last_state_upgrade_keeps_the_job_id_and_the_restore_path() {
    let fj = job(
        json!({ "spec": { "job": { "upgradeMode": "last-state", "initialSavepointPath": "s3://x/sp" } } }),
    );
    let st = deployed(&fj);
    let d = decide(
        &edited(&fj),
        &st,
        &observed(view(JobStatus::Running)),
        POLICY,
    );
    assert!(d.deploy && !d.trigger);
    assert_eq!(d.status.job_id, st.job_id);
    assert_eq!(d.status.restored_from.as_deref(), Some("s3://x/sp"));
    assert_eq!(d.status.deployments, st.deployments + 1, "the pods roll");
    assert_eq!(d.status.lifecycle_state, Some(LifecycleState::Upgrading));
}

#[test]
fn stateless_upgrade_starts_a_new_job_without_state() {
    let fj = job(json!({ "spec": { "job": { "upgradeMode": "stateless" } } }));
    let st = deployed(&fj);
    let d = decide(
        &edited(&fj),
        &st,
        &observed(view(JobStatus::Running)),
        POLICY,
    );
    assert!(d.deploy);
    assert_eq!(d.status.job_id, Some(job_id(&fj, 2)));
    assert_eq!(d.status.restored_from, None);
}

#[test]
fn a_failed_job_restarts_with_its_restore_path_and_backs_off() {
    let fj = job(json!({ "spec": { "job": { "initialSavepointPath": "s3://x/sp" } } }));
    let st = deployed(&fj);
    let d = decide(&fj, &st, &observed(view(JobStatus::Failed)), POLICY);
    assert!(d.deploy);
    assert_eq!(d.status.job_id, st.job_id);
    assert_eq!(
        d.status.restored_from.as_deref(),
        Some("s3://x/sp"),
        "a job with no checkpoint since its restore must not start empty"
    );
    assert_eq!(d.status.restarts, 1);
    // It fails again at once: the next restart waits (20 s after the first).
    let mut again = d.status.clone();
    again.lifecycle_state = Some(LifecycleState::Running);
    let mut o = observed(view(JobStatus::Failed));
    o.now = NOW + 5;
    let wait = decide(&fj, &again, &o, POLICY);
    assert!(!wait.deploy);
    assert_eq!(wait.status.lifecycle_state, Some(LifecycleState::Failed));
    assert_eq!(wait.requeue, Duration::from_secs(15));
    assert_eq!(
        conditions::get(&wait.status, DEGRADED).map(|c| c.status.as_str()),
        Some("True")
    );
    o.now = NOW + 20;
    let due = decide(&fj, &wait.status, &o, POLICY);
    assert!(due.deploy);
    assert_eq!(due.status.restarts, 2);
}

#[test]
fn a_long_healthy_run_resets_the_restart_counter() {
    let fj = job(json!({}));
    let mut st = deployed(&fj);
    st.restarts = 3;
    st.last_restart_time = Some(clock::rfc3339(NOW * 1000));
    let d = decide(&fj, &st, &observed(view(JobStatus::Running)), POLICY);
    assert_eq!(d.status.restarts, 3);
    let mut o = observed(view(JobStatus::Running));
    o.now = NOW + HEALTHY_RESET.as_secs() as i64;
    let later = decide(&fj, &d.status, &o, POLICY);
    assert_eq!(later.status.restarts, 0);
}

#[test]
fn suspend_of_a_running_job_goes_through_a_savepoint_and_resume_starts_from_it() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let off = job(json!({ "spec": { "job": { "state": "suspended" } } }));
    let d = decide(&off, &st, &observed(view(JobStatus::Running)), POLICY);
    assert!(d.trigger && !d.deploy);
    assert_eq!(
        d.status.pending_savepoint.as_ref().map(|s| s.reason),
        Some(SavepointReason::Suspend)
    );
    let done = completed(&off, &d.status, "s3://bucket/sp-3");
    assert!(done.deploy);
    assert_eq!(done.status.lifecycle_state, Some(LifecycleState::Suspended));
    assert!(!plan_of(&done.status).expect("plan").running);
    assert_eq!(
        done.status.restored_from.as_deref(),
        Some("s3://bucket/sp-3")
    );
    let resumed = decide(
        &fj,
        &done.status,
        &observed(Observation::NotRunning),
        POLICY,
    );
    assert!(resumed.deploy);
    let plan = plan_of(&resumed.status).expect("plan");
    assert!(plan.running);
    assert_eq!(plan.job_id, job_id(&fj, 2), "a new job, from the savepoint");
    assert_eq!(plan.restore_from.as_deref(), Some("s3://bucket/sp-3"));
}

#[test]
fn suspend_without_a_running_job_keeps_the_job_and_its_checkpoints() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let off = job(json!({ "spec": { "job": { "state": "suspended" } } }));
    for o in [
        Observation::Unreachable("refused".into()),
        view(JobStatus::Restarting),
        Observation::NotYet,
    ] {
        let d = decide(&off, &st, &observed(o.clone()), POLICY);
        assert!(d.deploy && !d.trigger, "{o:?}");
        assert_eq!(d.status.lifecycle_state, Some(LifecycleState::Suspended));
        assert_eq!(
            d.status.job_id, st.job_id,
            "resumes from its own latest checkpoint"
        );
        let resumed = decide(&fj, &d.status, &observed(Observation::NotRunning), POLICY);
        assert_eq!(resumed.status.job_id, st.job_id);
    }
}

#[test]
fn a_job_without_checkpointing_can_be_suspended() {
    let fj = job(json!({ "spec": { "job": { "upgradeMode": "stateless" } } }));
    let mut fj = fj;
    fj.spec.checkpointing = None;
    let st = deployed(&fj);
    let mut off = fj.clone();
    off.spec.job.state = DesiredState::Suspended;
    let d = decide(&off, &st, &observed(view(JobStatus::Running)), POLICY);
    assert!(d.deploy && !d.trigger);
    assert_eq!(d.status.lifecycle_state, Some(LifecycleState::Suspended));
}

#[test]
fn a_manual_savepoint_is_answered_once_even_when_it_fails() {
    let fj = job(json!({ "spec": { "job": { "savepointTriggerNonce": 1 } } }));
    let st = deployed(&fj);
    let again = job(json!({ "spec": { "job": { "savepointTriggerNonce": 2 } } }));
    let d = decide(&again, &st, &observed(view(JobStatus::Running)), POLICY);
    assert!(d.trigger);
    let sp = d.status.pending_savepoint.clone().expect("pending");
    assert_eq!((sp.reason, sp.nonce), (SavepointReason::Manual, Some(2)));
    let failed = decide(
        &again,
        &d.status,
        &with_savepoint(
            observed(view(JobStatus::Running)),
            SavepointPoll::Failed("disk".into()),
        ),
        POLICY,
    );
    assert_eq!(failed.status.pending_savepoint, None);
    assert_eq!(failed.status.last_savepoint_trigger_nonce, Some(2));
    assert!(
        failed
            .notes
            .iter()
            .any(|n| n.warning && n.reason == "SavepointFailed")
    );
    let next = decide(
        &again,
        &failed.status,
        &observed(view(JobStatus::Running)),
        POLICY,
    );
    assert!(!next.trigger, "not retried in a loop");
}

#[test]
fn an_unreachable_jobmanager_does_not_flip_a_running_job_to_deploying() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let d = decide(
        &fj,
        &st,
        &observed(Observation::Unreachable("timeout".into())),
        POLICY,
    );
    assert_eq!(d.status.lifecycle_state, Some(LifecycleState::Running));
    let ready = conditions::get(&d.status, READY).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "JobManagerUnreachable")
    );
}

#[test]
fn stuck_pods_show_in_degraded_and_an_event() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let mut o = observed(Observation::NotYet);
    o.pods = Some("pod bids-jobmanager-0 container jobmanager: CreateContainerConfigError: secret \"s3\" not found".into());
    let d = decide(&fj, &st, &o, POLICY);
    let degraded = conditions::get(&d.status, DEGRADED).expect("degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "PodsUnhealthy")
    );
    assert!(degraded.message.contains("secret"));
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.reason == "PodsUnhealthy")
    );
    // Said once, not every pass.
    let again = decide(&fj, &d.status, &o, POLICY);
    assert!(!again.notes.iter().any(|n| n.reason == "PodsUnhealthy"));
}

#[test]
fn an_old_jobmanager_s_answer_is_not_the_current_job_s_state() {
    let fj = job(json!({}));
    let st = deployed(&fj);
    let answer = |plan: &str| {
        Ok(Some(JobView {
            state: JobState::Known(JobStatus::Failed),
            last_checkpoint: None,
            failure: Some("killed while terminating".into()),
            restarts: 0,
            plan: Some(plan.into()),
        }))
    };
    // A terminating old pod says FAILED: no restart.
    let old = Observation::of(answer("old-plan"), "new-plan");
    assert_eq!(old, Observation::NotYet);
    let d = decide(&fj, &st, &observed(old), POLICY);
    assert!(!d.deploy && d.status.restarts == 0);
    // The current one says FAILED: a restart.
    let current = Observation::of(answer("new-plan"), "new-plan");
    let d = decide(&fj, &st, &observed(current), POLICY);
    assert!(d.deploy && d.status.restarts == 1);
    let unreachable = Observation::of(
        Err(crate::jm::JmError::Unreachable {
            url: "http://jm".into(),
            message: "refused".into(),
        }),
        "new-plan",
    );
    assert!(matches!(unreachable, Observation::Unreachable(_)));
}

#[test]
fn a_deployment_that_never_comes_up_is_degraded_after_the_timeout() {
    let fj = job(json!({}));
    let first = decide(
        &fj,
        &FlinkJobStatus::default(),
        &observed(Observation::NotRunning),
        POLICY,
    );
    let mut st = first.status;
    let started = conditions::get(&st, PROGRESSING)
        .expect("progressing")
        .clone();
    assert_eq!(started.status, "True");
    let t0 = clock::parse(&started.last_transition_time).expect("time");
    let mut o = observed(Observation::NotYet);
    o.now = t0 + 10;
    let d = decide(&fj, &st, &o, POLICY);
    assert_eq!(
        conditions::get(&d.status, DEGRADED).map(|c| c.status.as_str()),
        Some("False")
    );
    st = d.status;
    o.now = t0 + DEPLOY_TIMEOUT.as_secs() as i64;
    let late = decide(&fj, &st, &o, POLICY);
    let degraded = conditions::get(&late.status, DEGRADED).expect("degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "DeploymentTimeout")
    );
    assert!(
        late.notes
            .iter()
            .any(|n| n.warning && n.reason == "DeploymentTimeout")
    );
}
