//! What one reconcile pass of a live FlinkJob does, as a pure function of the spec, the
//! status the last pass wrote and what was observed: [`decide`]. No I/O here, so every rule
//! is a unit test below; `super` carries the decision out.
//!
//! The rules that keep a job's state safe (`docs/operator.md` has the whole table):
//! - **Status is the plan.** The job id, the restore path, whether it runs and the deployment
//!   generation live in status; the owned objects are rendered from status only, after it
//!   is written. A pass that fails half-way leaves status saying what to converge to.
//! - **Two-phase savepoints.** A savepoint for an upgrade, a suspension or a deletion is first
//!   recorded in status (`pendingSavepoint`, with a trigger id and the target spec hash),
//!   then requested with that trigger id (idempotent on the jobmanager), then polled across
//!   passes; only its completion, read from the jobmanager, moves the plan on.
//! - **The job's own latest snapshot wins.** A redeployment that keeps the job id (a restart
//!   of a failed job, a last-state upgrade, a suspension without savepoint) keeps the restore
//!   path too: the jobmanager starts from the job's own newest checkpoint (or the savepoint it
//!   was stopped with), and from the restore path only while the job has no checkpoint.
//!   No transition clears the state of a job that keeps its id.
//! - **Only the current deployment's answer counts.** A jobmanager whose plan hash differs
//!   (an old pod still terminating) is not asked about the current job.

use std::time::Duration;

use crate::clock;
use crate::crd::{
    DesiredState, FlinkJob, FlinkJobStatus, LifecycleState, PendingSavepoint, SavepointInfo,
    SavepointReason, UpgradeMode,
};
use crate::jm::{JobView, SavepointPoll};
use crate::job_state::{JobState, JobStatus};
use crate::resources::RunPlan;

use super::conditions::{self, DEGRADED, PROGRESSING, READY};
use super::{job_id, spec_hash};

/// Savepoints kept in `status.savepoints`.
pub const SAVEPOINT_HISTORY: usize = 10;
/// A job RUNNING this long has its restart counter reset.
pub const HEALTHY_RESET: Duration = Duration::from_secs(600);
/// Longest wait between restarts of a failed job.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);
/// A deployment whose job is not RUNNING this long after it started is Degraded.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// What the jobmanager of the current deployment says about its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The plan runs no jobmanager (nothing deployed, or suspended).
    NotRunning,
    /// No answer from the jobmanager's address.
    Unreachable(String),
    /// No answer about the current deployment yet: the jobmanager that answered runs another
    /// plan (an old pod), or does not know the job yet (starting).
    NotYet,
    Job(JobView),
}

impl Observation {
    /// A jobmanager's answer about the job of the deployment whose plan hash is `plan`:
    /// an answer from a jobmanager of another plan (an old pod still terminating, which may
    /// say FAILED or RUNNING of the old job) is no answer yet.
    pub fn of(answer: Result<Option<JobView>, crate::jm::JmError>, plan: &str) -> Observation {
        match answer {
            Ok(Some(v)) if v.plan.as_deref() == Some(plan) => Observation::Job(v),
            Ok(_) => Observation::NotYet,
            Err(e) => Observation::Unreachable(e.to_string()),
        }
    }

    fn state(&self) -> Option<&JobState> {
        match self {
            Observation::Job(j) => Some(&j.state),
            _ => None,
        }
    }

    fn running(&self) -> bool {
        self.state() == Some(&JobState::Known(JobStatus::Running))
    }

    /// Says what the job is, for messages.
    fn describe(&self) -> String {
        match self {
            Observation::NotRunning => "not deployed".into(),
            Observation::Unreachable(e) => format!("unreachable ({e})"),
            Observation::NotYet => "not reported yet".into(),
            Observation::Job(j) => j.state.to_string(),
        }
    }
}

/// Everything a pass observed before deciding.
#[derive(Debug, Clone)]
pub struct Observed {
    pub job: Observation,
    /// The answer about `status.pendingSavepoint` (`Err`: the jobmanager did not answer).
    pub savepoint: Option<Result<SavepointPoll, String>>,
    /// A problem of the pods (CrashLoopBackOff, a missing Secret, …), if any.
    pub pods: Option<String>,
    /// Unix seconds.
    pub now: i64,
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What a pass does: write `status` (the plan inside), then request the pending savepoint
/// when `trigger`, then render the owned objects from status when `deploy`.
#[derive(Debug, Clone)]
pub struct Decision {
    pub status: FlinkJobStatus,
    pub trigger: bool,
    pub deploy: bool,
    pub notes: Vec<Note>,
    pub requeue: Duration,
}

/// The plan that `status` describes (`None` before the first deployment).
pub fn plan_of(st: &FlinkJobStatus) -> Option<RunPlan> {
    Some(RunPlan {
        job_id: st.job_id.clone()?,
        restore_from: st.restored_from.clone(),
        running: st.lifecycle_state != Some(LifecycleState::Suspended),
        restart_generation: st.deployments,
        spec_hash: st.deployed_spec_hash.clone().unwrap_or_default(),
        // Set when the objects are applied, from the TLS Secret.
        tls_version: None,
        rest_token_version: None,
        allowed_paths: None,
    })
}

/// Tunables of [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// First delay between restarts of a failed job (doubles per restart).
    pub restart_backoff: Duration,
}

struct Pass<'a> {
    fj: &'a FlinkJob,
    obs: &'a Observed,
    st: FlinkJobStatus,
    trigger: bool,
    deploy: bool,
    notes: Vec<Note>,
    requeue: Option<Duration>,
}

impl Pass<'_> {
    fn note(&mut self, warning: bool, reason: &str, message: String) {
        self.notes.push(Note {
            warning,
            reason: reason.into(),
            message,
        });
    }

    fn generation(&self) -> Option<i64> {
        self.fj.metadata.generation
    }

    /// A new deployment of the job: the jobmanager pod is replaced (a new plan hash).
    fn redeploy(&mut self, lifecycle: LifecycleState) {
        self.st.deployments += 1;
        self.st.lifecycle_state = Some(lifecycle);
        self.st.running_since = None;
        self.st.job_state = None;
        self.deploy = true;
    }

    /// A new job id (for the next deployment): its checkpoints start afresh under its own
    /// directory.
    fn new_job(&mut self, restore_from: Option<String>) {
        self.st.job_id = Some(job_id(self.fj, self.st.deployments + 1));
        self.st.restored_from = restore_from;
    }

    fn record_savepoint(&mut self, path: &str, reason: SavepointReason) {
        self.st.savepoints.push(SavepointInfo {
            path: path.into(),
            time: clock::rfc3339(self.obs.now * 1000),
            trigger: reason.as_str().into(),
        });
        let n = self.st.savepoints.len();
        if n > SAVEPOINT_HISTORY {
            self.st.savepoints.drain(..n - SAVEPOINT_HISTORY);
        }
    }

    fn request_savepoint(&mut self, reason: SavepointReason) {
        let job = self.st.job_id.clone().unwrap_or_default();
        let target_spec_hash = (reason == SavepointReason::Upgrade).then(|| spec_hash(self.fj));
        let nonce = (reason == SavepointReason::Manual)
            .then_some(self.fj.spec.job.savepoint_trigger_nonce)
            .flatten();
        // One id per intent: a new request never matches an older one on the jobmanager.
        let trigger_id = crate::resources::hash(&format!(
            "{}/{job}/{}/{}/{}/{:?}/{:?}",
            self.fj.metadata.uid.as_deref().unwrap_or_default(),
            self.st.deployments,
            reason.as_str(),
            self.obs.now,
            target_spec_hash,
            nonce
        ));
        self.st.pending_savepoint = Some(PendingSavepoint {
            trigger_id,
            job_id: job,
            reason,
            target_spec_hash,
            nonce,
            time: clock::rfc3339(self.obs.now * 1000),
        });
        self.trigger = true;
        self.requeue = Some(Duration::from_secs(1));
    }
}

/// One pass over a live FlinkJob whose spec is valid.
pub fn decide(fj: &FlinkJob, old: &FlinkJobStatus, obs: &Observed, policy: Policy) -> Decision {
    let mut p = Pass {
        fj,
        obs,
        st: old.clone(),
        trigger: false,
        deploy: false,
        notes: Vec::new(),
        requeue: None,
    };
    p.st.observed_generation = fj.metadata.generation;
    p.st.error = None;
    let pending = old.pending_savepoint.clone();
    match pending {
        Some(sp) => savepoint_answer(&mut p, &sp),
        None => lifecycle(&mut p, policy),
    }
    report(&mut p);
    let requeue = p.requeue.unwrap_or(match p.st.lifecycle_state {
        Some(LifecycleState::Running | LifecycleState::Suspended) => Duration::from_secs(10),
        _ => Duration::from_secs(3),
    });
    Decision {
        status: p.st,
        trigger: p.trigger,
        deploy: p.deploy,
        notes: p.notes,
        requeue,
    }
}

/// Phase two of a savepoint: act on the jobmanager's answer, and on nothing else.
fn savepoint_answer(p: &mut Pass<'_>, sp: &PendingSavepoint) {
    let answer = p.obs.savepoint.clone();
    match answer {
        Some(Ok(SavepointPoll::Completed(path))) => {
            p.st.pending_savepoint = None;
            p.record_savepoint(&path, sp.reason);
            p.note(
                false,
                "SavepointCompleted",
                format!(
                    "{} savepoint of job {}: {path}",
                    sp.reason.as_str(),
                    sp.job_id
                ),
            );
            match sp.reason {
                SavepointReason::Manual => p.st.last_savepoint_trigger_nonce = sp.nonce,
                SavepointReason::Upgrade => {
                    p.new_job(Some(path.clone()));
                    p.st.deployed_spec_hash = sp.target_spec_hash.clone();
                    p.redeploy(LifecycleState::Upgrading);
                    let id = p.st.job_id.clone().unwrap_or_default();
                    p.note(
                        false,
                        "Upgrading",
                        format!("upgrading (savepoint) to job {id} from {path}"),
                    );
                }
                SavepointReason::Suspend => {
                    // The next job resumes from the savepoint; minted now, so that status
                    // alone says where a resume starts.
                    p.new_job(Some(path.clone()));
                    suspend(p, format!("suspended with savepoint {path}"));
                }
                // Deletion savepoints are answered in `super::cleanup`.
                SavepointReason::Deletion => {}
            }
        }
        Some(Ok(SavepointPoll::InProgress)) => {
            p.requeue = Some(Duration::from_secs(2));
        }
        Some(Ok(SavepointPoll::Failed(cause))) => {
            p.st.pending_savepoint = None;
            if sp.reason == SavepointReason::Manual {
                // A failed manual savepoint is reported, not retried in a loop.
                p.st.last_savepoint_trigger_nonce = sp.nonce;
            }
            p.st.error = Some(format!("{} savepoint failed: {cause}", sp.reason.as_str()));
            p.note(
                true,
                "SavepointFailed",
                format!(
                    "{} savepoint of job {} failed: {cause}",
                    sp.reason.as_str(),
                    sp.job_id
                ),
            );
            p.requeue = Some(Duration::from_secs(10));
        }
        Some(Ok(SavepointPoll::Unknown)) if p.obs.job.running() => {
            // The jobmanager lost the request (replaced) or never got it: ask again, with the
            // same trigger id.
            p.trigger = true;
            p.requeue = Some(Duration::from_secs(2));
        }
        Some(Ok(SavepointPoll::Unknown)) if matches!(p.obs.job, Observation::Job(_)) => {
            // The job is no longer running and the request is gone: the savepoint cannot be
            // confirmed. Continue from the job's own latest snapshot (the savepoint it was
            // stopped with, if that completed, else its latest checkpoint): same job id.
            p.st.pending_savepoint = None;
            let why = format!(
                "the {} savepoint of job {} cannot be confirmed (job {})",
                sp.reason.as_str(),
                sp.job_id,
                p.obs.job.describe()
            );
            match sp.reason {
                SavepointReason::Manual => {
                    p.st.last_savepoint_trigger_nonce = sp.nonce;
                    p.note(true, "SavepointFailed", why);
                }
                SavepointReason::Upgrade => {
                    p.st.deployed_spec_hash = sp.target_spec_hash.clone();
                    p.redeploy(LifecycleState::Upgrading);
                    p.note(
                        true,
                        "Upgrading",
                        format!(
                            "{why}; upgrading job {} from its latest snapshot",
                            sp.job_id
                        ),
                    );
                }
                SavepointReason::Suspend => suspend(
                    p,
                    format!("{why}; suspended, resumes from its latest snapshot"),
                ),
                SavepointReason::Deletion => {}
            }
        }
        // Unreachable, or not reported yet: wait for an answer.
        _ => p.requeue = Some(Duration::from_secs(3)),
    }
}

fn suspend(p: &mut Pass<'_>, message: String) {
    p.st.lifecycle_state = Some(LifecycleState::Suspended);
    p.st.job_state = None;
    p.st.running_since = None;
    p.deploy = true;
    p.note(false, "Suspended", message);
}

/// Phase one: what the spec asks of the job as it is.
fn lifecycle(p: &mut Pass<'_>, policy: Policy) {
    let fj = p.fj;
    let spec = &fj.spec;
    let hash = spec_hash(fj);
    let want_running = spec.job.state == DesiredState::Running;
    let has_storage = spec.checkpointing.is_some();

    // First deployment.
    if p.st.job_id.is_none() {
        if !want_running {
            p.st.lifecycle_state = Some(LifecycleState::Suspended);
            return;
        }
        p.st.deployed_spec_hash = Some(hash);
        p.st.last_savepoint_trigger_nonce = spec.job.savepoint_trigger_nonce;
        p.new_job(spec.job.initial_savepoint_path.clone());
        p.redeploy(LifecycleState::Deploying);
        let id = p.st.job_id.clone().unwrap_or_default();
        p.note(
            false,
            "Deploying",
            match &p.st.restored_from {
                Some(r) => format!("deploying job {id} from {r}"),
                None => format!("deploying job {id}"),
            },
        );
        return;
    }

    let running = p.st.lifecycle_state != Some(LifecycleState::Suspended);
    if !running {
        if want_running {
            let id = p.st.job_id.clone().unwrap_or_default();
            p.st.deployed_spec_hash = Some(hash);
            p.redeploy(LifecycleState::Deploying);
            p.note(
                false,
                "Deploying",
                match &p.st.restored_from {
                    Some(r) => format!("resuming job {id} (from its latest snapshot, else {r})"),
                    None => format!("resuming job {id} from its latest snapshot"),
                },
            );
        }
        return;
    }

    if !want_running {
        if !has_storage {
            suspend(
                p,
                "suspended; the job has no checkpointing, so it resumes without state".into(),
            );
        } else if p.obs.job.running() {
            p.request_savepoint(SavepointReason::Suspend);
        } else {
            let why = p.obs.job.describe();
            suspend(
                p,
                format!(
                    "suspended without savepoint (job {why}); resumes from its latest checkpoint"
                ),
            );
        }
        return;
    }

    if p.st.deployed_spec_hash.as_deref() != Some(hash.as_str()) {
        upgrade(p, hash, has_storage);
        return;
    }

    if p.obs.job.state() == Some(&JobState::Known(JobStatus::Failed)) {
        restart_failed(p, policy);
        return;
    }

    let nonce = spec.job.savepoint_trigger_nonce;
    if nonce.is_some() && nonce != p.st.last_savepoint_trigger_nonce {
        if !has_storage {
            p.st.last_savepoint_trigger_nonce = nonce;
            p.note(
                true,
                "SavepointFailed",
                "spec.checkpointing is not set: there is nowhere to write a savepoint".into(),
            );
        } else if p.obs.job.running() {
            p.request_savepoint(SavepointReason::Manual);
        }
    }
}

fn upgrade(p: &mut Pass<'_>, hash: String, has_storage: bool) {
    let mode = p.fj.spec.job.upgrade_mode;
    let id = p.st.job_id.clone().unwrap_or_default();
    match mode {
        UpgradeMode::Savepoint if has_storage && p.obs.job.running() => {
            p.request_savepoint(SavepointReason::Upgrade);
            return;
        }
        UpgradeMode::Stateless => {
            p.new_job(None);
            let new = p.st.job_id.clone().unwrap_or_default();
            p.note(
                false,
                "Upgrading",
                format!("spec changed; upgrading (stateless) to job {new}, without state"),
            );
        }
        UpgradeMode::LastState => p.note(
            false,
            "Upgrading",
            format!("spec changed; upgrading (last-state) job {id} from its latest checkpoint"),
        ),
        UpgradeMode::Savepoint => {
            let why = p.obs.job.describe();
            p.note(
                true,
                "Upgrading",
                format!(
                    "spec changed; job {id} is {why}, so no savepoint can be taken: upgrading it from its latest checkpoint"
                ),
            );
        }
    }
    p.st.deployed_spec_hash = Some(hash);
    p.redeploy(LifecycleState::Upgrading);
}

fn restart_failed(p: &mut Pass<'_>, policy: Policy) {
    let delay = policy
        .restart_backoff
        .saturating_mul(1u32 << p.st.restarts.min(5))
        .min(MAX_RESTART_DELAY);
    let waited =
        p.st.last_restart_time
            .as_deref()
            .and_then(clock::parse)
            .map(|t| p.obs.now - t);
    let failure = match &p.obs.job {
        Observation::Job(j) => j.failure.clone().unwrap_or_else(|| "unknown cause".into()),
        _ => "unknown cause".into(),
    };
    match waited {
        Some(w) if w < delay.as_secs() as i64 => {
            let left = delay.as_secs() as i64 - w;
            p.st.lifecycle_state = Some(LifecycleState::Failed);
            p.st.error = Some(format!(
                "job failed: {failure}; restart {} in {left}s",
                p.st.restarts + 1
            ));
            p.requeue = Some(Duration::from_secs(left.max(1) as u64));
        }
        _ => {
            p.st.restarts += 1;
            p.st.last_restart_time = Some(clock::rfc3339(p.obs.now * 1000));
            let id = p.st.job_id.clone().unwrap_or_default();
            let n = p.st.restarts;
            p.redeploy(LifecycleState::Deploying);
            p.note(
                true,
                "JobFailed",
                format!("job {id} failed ({failure}); restart {n} from its latest checkpoint"),
            );
        }
    }
}

/// Lifecycle, job state and conditions from what was observed.
fn report(p: &mut Pass<'_>) {
    let g = p.generation();
    if !p.deploy
        && p.st.lifecycle_state != Some(LifecycleState::Suspended)
        && let Observation::Job(j) = &p.obs.job
    {
        p.st.job_state = Some(j.state.to_string());
        p.st.job_restarts = Some(j.restarts);
        if j.last_checkpoint.is_some() {
            p.st.last_checkpoint = j.last_checkpoint.clone();
        }
        match j.state {
            JobState::Known(JobStatus::Running | JobStatus::Finished) => {
                if p.st.lifecycle_state != Some(LifecycleState::Running) {
                    let id = p.st.job_id.clone().unwrap_or_default();
                    p.note(false, "Running", format!("job {id} is {}", j.state));
                }
                p.st.lifecycle_state = Some(LifecycleState::Running);
                let now = clock::rfc3339(p.obs.now * 1000);
                let since = p.st.running_since.get_or_insert(now).clone();
                let healthy = clock::parse(&since)
                    .is_some_and(|t| p.obs.now - t >= HEALTHY_RESET.as_secs() as i64);
                if healthy && p.st.restarts > 0 {
                    p.st.restarts = 0;
                    p.st.last_restart_time = None;
                }
            }
            JobState::Known(JobStatus::Failed) => {}
            _ => p.st.running_since = None,
        }
    }
    let lifecycle = p.st.lifecycle_state.unwrap_or(LifecycleState::Created);
    let id = p.st.job_id.clone().unwrap_or_default();
    let pending = p.st.pending_savepoint.as_ref().map(|s| {
        format!(
            "waiting for the {} savepoint of job {}",
            s.reason.as_str(),
            s.job_id
        )
    });
    let st = &mut p.st;
    match (&pending, lifecycle) {
        (Some(msg), _) => {
            conditions::set(st, READY, false, "Savepoint", msg, g);
            conditions::set(st, PROGRESSING, true, "Savepoint", msg, g);
        }
        (None, LifecycleState::Running) => {
            let msg = format!("job {id} is {}", st.job_state.clone().unwrap_or_default());
            match &p.obs.job {
                Observation::Unreachable(e) => {
                    let msg = format!("the jobmanager does not answer: {e}");
                    conditions::set(st, READY, false, "JobManagerUnreachable", &msg, g);
                }
                _ => conditions::set(st, READY, true, "JobRunning", &msg, g),
            }
            conditions::set(st, PROGRESSING, false, "Stable", "", g);
        }
        (None, LifecycleState::Suspended) => {
            let msg = "spec.job.state is suspended";
            conditions::set(st, READY, false, "Suspended", msg, g);
            conditions::set(st, PROGRESSING, false, "Suspended", "", g);
        }
        (None, LifecycleState::Failed) => {
            let msg = st.error.clone().unwrap_or_default();
            conditions::set(st, READY, false, "JobFailed", &msg, g);
            conditions::set(st, PROGRESSING, false, "JobFailed", &msg, g);
        }
        (None, other) => {
            let msg = format!("job {id}: {:?}, {}", other, p.obs.job.describe());
            let reason = format!("{other:?}");
            conditions::set(st, READY, false, &reason, &msg, g);
            conditions::set(st, PROGRESSING, true, &reason, &msg, g);
        }
    }
    // A rollout that does not come up: the Progressing condition has said so too long.
    let stuck = matches!(
        lifecycle,
        LifecycleState::Deploying | LifecycleState::Upgrading
    ) && pending.is_none()
        && conditions::get(st, PROGRESSING)
            .filter(|c| c.status == "True")
            .and_then(|c| clock::parse(&c.last_transition_time))
            .is_some_and(|t| p.obs.now - t >= DEPLOY_TIMEOUT.as_secs() as i64);
    let timeout = stuck.then(|| {
        format!(
            "job {id} is not running {} s after its deployment started (job {})",
            DEPLOY_TIMEOUT.as_secs(),
            p.obs.job.describe()
        )
    });
    let problem = st.error.clone().or_else(|| p.obs.pods.clone()).or(timeout);
    match problem {
        Some(msg) => {
            let reason = if st.error.is_none() && p.obs.pods.is_some() {
                "PodsUnhealthy"
            } else if st.error.is_none() {
                "DeploymentTimeout"
            } else if lifecycle == LifecycleState::Failed {
                "JobFailed"
            } else {
                "Error"
            };
            let was = conditions::get(st, DEGRADED).map(|c| c.message.clone());
            conditions::set(st, DEGRADED, true, reason, &msg, g);
            if was.as_deref() != Some(msg.as_str()) && reason != "Error" {
                p.notes.push(Note {
                    warning: true,
                    reason: reason.into(),
                    message: msg,
                });
            }
        }
        None => conditions::set(st, DEGRADED, false, "Healthy", "", g),
    }
}

#[cfg(test)]
mod tests;
