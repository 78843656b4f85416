//! The job master: runs a job's attempts one after another, waits for their task events,
//! triggers checkpoints on the interval and savepoints on request, and after a failure
//! restarts the job from its latest checkpoint as the restart strategy allows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::writer::StateLayout;
use crate::checkpoint::{
    CheckpointId, FINAL_CHECKPOINT, RestartTracker, RestoredCheckpoint, SnapshotKind, find_latest,
    load_checkpoint,
};
use crate::error::{Error, Result};
use crate::task::{Chain, SnapshotData, TaskControl, TaskEvent, TaskStates};

use super::coordinator::*;
use super::deploy::*;
use super::job::*;

pub(super) enum AttemptEnd {
    Finished,
    Cancelled,
    Stopped(String),
    Failed(Error),
}

/// The job master: supervises attempts, coordinates checkpoints.
pub(super) struct Master {
    pub(super) plan: Arc<Plan>,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: Receiver<Command>,
    pub(super) uploads: Receiver<Upload>,
    pub(super) upload_tx: Sender<Upload>,
    /// How this master names and places the state files it writes.
    pub(super) layout: StateLayout,
    pub(super) next_id: CheckpointId,
    /// The first checkpoint id of this execution: a checkpoint of the job with a lower id
    /// was taken before what it started from (a previous run), so a failover never goes
    /// back to it.
    pub(super) first_id: CheckpointId,
    /// What the job started from (restored again when no newer checkpoint exists).
    pub(super) initial: Option<Arc<RestoredCheckpoint>>,
    /// Chains of failed tasks, freed after the next attempt is deployed.
    pub(super) graveyard: Vec<Chain>,
    /// Checkpoints of a failed attempt whose state files were still being written: the
    /// next attempt deletes them as their uploads return, so a restart does not wait.
    pub(super) given_up: InFlight,
    /// Incremental checkpoints: the metadata of the checkpoints this master completed that
    /// later ones may build on (the newest few).
    pub(super) completed:
        std::collections::BTreeMap<CheckpointId, Arc<crate::checkpoint::CheckpointMetadata>>,
    /// The savepoint a stop-with-savepoint completed, while the job stops.
    pub(super) stop: Option<StopSavepoint>,
}

/// A completed stop-with-savepoint whose job has not ended yet. Its sinks may have committed
/// up to it, so a failover before the end goes back to it, not to an older checkpoint; and
/// the request is answered only at the end: a savepoint reported before the job is stopped
/// (and its end recorded) lets an operator start the next job while this one may still run.
pub(super) struct StopSavepoint {
    pub(super) id: CheckpointId,
    pub(super) storage: crate::checkpoint::CheckpointStorage,
    pub(super) dir: String,
    pub(super) path: String,
    pub(super) reply: Option<Sender<Result<String>>>,
}

impl Master {
    /// Answers the stop-with-savepoint request, if one completed, once the job ended with
    /// `outcome`.
    pub(super) fn answer_stop(&mut self, outcome: &Result<JobOutcome>) {
        let Some(stop) = self.stop.take() else { return };
        let Some(reply) = stop.reply else { return };
        let _ = reply.send(match outcome {
            Ok(JobOutcome::Stopped { savepoint }) => Ok(savepoint.clone()),
            Ok(_) => Err(Error::SnapshotDeclined(format!(
                "savepoint {} completed, but the job ended otherwise before it stopped",
                stop.path
            ))),
            Err(e) => Err(Error::SnapshotDeclined(format!(
                "savepoint {} completed, but the job failed before it stopped: {e}",
                stop.path
            ))),
        });
    }

    /// The stop did not happen (the attempt failed or was cancelled first): the request is
    /// answered with `why`; the savepoint stays what a failover restores.
    fn stop_failed(&mut self, why: &str) {
        if let Some(stop) = &mut self.stop
            && let Some(reply) = stop.reply.take()
        {
            let _ = reply.send(Err(Error::SnapshotDeclined(format!(
                "savepoint {} completed, but the job did not stop: {why}; it goes on from that savepoint",
                stop.path
            ))));
        }
    }
}

impl Master {
    pub(super) fn run(&mut self, first: Attempt) -> Result<JobOutcome> {
        let mut tracker = RestartTracker::new(self.plan.graph.config.restart.clone());
        let mut attempt = first;
        loop {
            tracker.started();
            let (end, a) = self.run_attempt(attempt);
            attempt = a;
            let error = match end {
                AttemptEnd::Finished => {
                    attempt.teardown();
                    return Ok(JobOutcome::Finished);
                }
                AttemptEnd::Cancelled => {
                    attempt.teardown();
                    return Ok(JobOutcome::Cancelled);
                }
                AttemptEnd::Stopped(savepoint) => {
                    attempt.teardown();
                    return Ok(JobOutcome::Stopped { savepoint });
                }
                AttemptEnd::Failed(e) => e,
            };
            self.stop_failed(&error.to_string());
            self.shared
                .set_status(JobStatus::Restarting, Some(error.to_string()));
            self.shared.stats(|s| s.attempt_failed(error.to_string()));
            attempt.teardown();
            attempt = loop {
                let Some(delay) = tracker.on_failure() else {
                    self.given_up.settle(&self.uploads);
                    return Err(error);
                };
                self.shared.stats(|s| s.restarts = tracker.restarts());
                tracing::warn!(error = %error, restart = tracker.restarts(), ?delay, "job failed; restarting");
                if self.pause(delay) {
                    return Ok(JobOutcome::Cancelled);
                }
                let redeployed = self.redeploy();
                let dead = std::mem::take(&mut self.graveyard);
                if !dead.is_empty() {
                    let _ = std::thread::Builder::new()
                        .name("free-failed-state".into())
                        .spawn(move || {
                            // After the new attempt's state is decoded: both at once slowed
                            // both down (two threads on the allocator and the page tables).
                            let give_up = Instant::now() + Duration::from_secs(60);
                            while crate::state::restore_progress::active() > 0
                                && Instant::now() < give_up
                            {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            drop(dead)
                        });
                }
                match redeployed {
                    Ok(a) => {
                        self.shared.set_status(JobStatus::Running, None);
                        break a;
                    }
                    Err(e) => tracing::error!(error = %e, "restart failed"),
                }
            };
        }
    }

    /// Sleeps `delay` unless a cancel arrives (then true). Savepoint requests are refused.
    pub(super) fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(left) {
                Ok(Command::Cancel) => return true,
                Ok(Command::Savepoint { reply, .. }) | Ok(Command::Checkpoint { reply }) => {
                    let _ =
                        reply.send(Err(Error::SnapshotDeclined("the job is restarting".into())));
                }
                Err(_) => return false,
            }
        }
    }

    /// A cluster job's first deployment: retried while slots are missing, for up to
    /// five minutes (Flink's `slot.request.timeout`). `None` when cancelled meanwhile.
    pub(super) fn first_remote_deploy(&mut self) -> Result<Option<Attempt>> {
        let until = Instant::now() + Duration::from_secs(300);
        loop {
            match self.redeploy() {
                Ok(a) => {
                    self.shared.set_status(JobStatus::Running, None);
                    return Ok(Some(a));
                }
                Err(e) if Instant::now() < until => {
                    tracing::info!(error = %e, "cannot deploy yet; retrying");
                    if self.pause(Duration::from_millis(500)) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deploys again from the newest complete checkpoint of this execution (or what the job
    /// started from).
    pub(super) fn redeploy(&mut self) -> Result<Attempt> {
        let t0 = Instant::now();
        let latest = match &self.plan.storage {
            Some(s) => find_latest(s, &self.plan.job_id)?
                .filter(|c| c.id() >= self.first_id)
                .map(Arc::new),
            None => None,
        };
        tracing::info!(ms = t0.elapsed().as_millis() as u64, "checkpoint loaded");
        // A stop savepoint newer than the latest checkpoint: its sinks may have committed.
        let stopped = match &self.stop {
            Some(stop) if latest.as_ref().is_none_or(|c| c.id() < stop.id) => {
                Some(Arc::new(load_checkpoint(&stop.storage, &stop.dir)?))
            }
            _ => None,
        };
        let from = stopped.or(latest).or_else(|| self.initial.clone());
        if let Some(r) = &from {
            tracing::info!(checkpoint = %r.url, "restoring");
            self.shared.stats(|s| s.restored = Some(r.url.clone()));
        }
        let t1 = Instant::now();
        let a = deploy(&self.plan, from.as_deref(), &self.shared);
        tracing::info!(
            ms = t1.elapsed().as_millis() as u64,
            "restored and deployed"
        );
        a
    }

    pub(super) fn run_attempt(&mut self, attempt: Attempt) -> (AttemptEnd, Attempt) {
        let mut inflight = std::mem::take(&mut self.given_up);
        let end = self.attempt_loop(&attempt, &mut inflight);
        self.abandon(&mut inflight, |id| {
            Error::Checkpoint(format!("checkpoint {id} abandoned: the attempt ended"))
        });
        match end {
            // Another attempt follows (or the job fails for good: `run` settles then).
            AttemptEnd::Failed(_) => self.given_up = inflight,
            _ => inflight.settle(&self.uploads),
        }
        (end, attempt)
    }

    /// Waits for an attempt's task events, uploads and commands until the attempt ends.
    fn attempt_loop(&mut self, attempt: &Attempt, inflight: &mut InFlight) -> AttemptEnd {
        let plan = self.plan.clone();
        let cfg = &plan.graph.config.checkpoint;
        let n = attempt.tasks.len();
        let mut finished: Vec<Option<TaskStates>> = (0..n).map(|_| None).collect();
        let mut exited = 0usize;
        let mut consecutive_failures = 0u32;
        let mut last_trigger = Instant::now();
        let mut last_completion = Instant::now();
        let mut stopping: Option<String> = None;
        let mut final_sent = false;
        let tick = Duration::from_millis(10);
        loop {
            crossbeam_channel::select! {
                recv(attempt.events) -> ev => {
                    let Ok(ev) = ev else { return AttemptEnd::Failed(Error::Cancelled) };
                    match ev {
                        TaskEvent::Exited { task, error, leftovers } => {
                            exited += 1;
                            if let Some(chain) = leftovers {
                                self.graveyard.push(*chain);
                            }
                            if let Some(e) = error {
                                self.abandon(inflight, |id| {
                                    Error::Checkpoint(format!("checkpoint {id} abandoned: the job failed: {e}"))
                                });
                                return AttemptEnd::Failed(e);
                            }
                            let _ = task;
                            if exited == n {
                                if let Some(sp) = stopping.take() {
                                    return AttemptEnd::Stopped(sp);
                                }
                                if final_sent {
                                    return AttemptEnd::Finished;
                                }
                                return AttemptEnd::Cancelled;
                            }
                        }
                        TaskEvent::Snapshot { task, id, states, sync } => {
                            if let Some(p) = inflight.pending.iter_mut().find(|p| p.barrier.id == id) {
                                p.acked[task] = true;
                                p.sync = p.sync.max(sync);
                                match states {
                                    SnapshotData::States(states) => {
                                        let (_, subtask, _) = attempt.tasks[task];
                                        self.store_states(p, subtask, states);
                                    }
                                    SnapshotData::Written(handles) => p.add(handles),
                                }
                            }
                        }
                        TaskEvent::Declined { task, id, reason, finished } => {
                            let why = format!("declined by {}: {reason}", attempt.tasks[task].2);
                            if finished {
                                let mut uncounted = 0;
                                self.fail_checkpoint(inflight, id, &why, &mut uncounted);
                            } else {
                                self.fail_checkpoint(inflight, id, &why, &mut consecutive_failures);
                            }
                        }
                        TaskEvent::Finished { task, states } => {
                            finished[task] = Some(states);
                            if finished.iter().all(|f| f.is_some()) {
                                self.abandon(inflight, |_| Error::SnapshotDeclined("the job finished first".into()));
                                if let Err(e) = self.final_checkpoint(attempt, inflight, &mut finished) {
                                    return AttemptEnd::Failed(e);
                                }
                                attempt.broadcast(TaskControl::Complete(FINAL_CHECKPOINT));
                                final_sent = true;
                            }
                        }
                    }
                }
                recv(self.uploads) -> up => {
                    if let Ok(up) = up {
                        let id = up.id;
                        if let Some(e) = inflight.uploaded(up) {
                            self.fail_checkpoint(inflight, id, &e.to_string(), &mut consecutive_failures);
                        }
                    }
                }
                recv(self.commands) -> cmd => {
                    match cmd {
                        Ok(Command::Cancel) | Err(_) => {
                            self.abandon(inflight, |id| {
                                Error::Checkpoint(format!("checkpoint {id} abandoned: the job was cancelled"))
                            });
                            return AttemptEnd::Cancelled;
                        }
                        Ok(Command::Checkpoint { reply }) => {
                            match &plan.storage {
                                Some(storage) if finished.iter().all(|f| f.is_none()) && stopping.is_none() => {
                                    let dir = format!("{}/chk-{}", plan.job_id, self.next_id);
                                    self.trigger(attempt, &mut inflight.pending, storage.clone(), dir, SnapshotKind::Checkpoint, false, Some(reply));
                                }
                                Some(_) => { let _ = reply.send(Err(Error::SnapshotDeclined("the job is finishing; no checkpoint can be taken".into()))); }
                                None => { let _ = reply.send(Err(Error::config("state.checkpoints.dir", "checkpointing is not configured"))); }
                            }
                        }
                        Ok(Command::Savepoint { dir, stop, reply }) => {
                            if finished.iter().any(|f| f.is_some()) || stopping.is_some() {
                                let _ = reply.send(Err(Error::SnapshotDeclined("the job is finishing; no savepoint can be taken".into())));
                            } else {
                                match self.savepoint_storage(dir.as_deref()) {
                                    Ok(storage) => {
                                        let id = self.next_id;
                                        let dir = format!("savepoint-{}-{id}", &plan.job_id[..plan.job_id.len().min(6)]);
                                        self.trigger(attempt, &mut inflight.pending, storage, dir, SnapshotKind::Savepoint, stop, Some(reply));
                                    }
                                    Err(e) => { let _ = reply.send(Err(e)); }
                                }
                            }
                        }
                    }
                }
                default(tick) => {}
            }
            // Completions, in id order.
            while let Some(i) = inflight
                .pending
                .iter()
                .position(|p| p.uploads == 0 && p.acked.iter().all(|a| *a))
            {
                let p = inflight.pending.remove(i);
                let (id, kind) = (p.barrier.id, p.barrier.kind);
                match self.complete(p, inflight) {
                    Ok((path, stop)) => {
                        consecutive_failures = 0;
                        last_completion = Instant::now();
                        // An intermediate savepoint commits no side effects (as in Flink):
                        // a failover goes back to the latest checkpoint, which must not
                        // find output published after it. The next checkpoint's commit
                        // (cumulative) publishes what the savepoint staged.
                        if kind == SnapshotKind::Checkpoint || stop {
                            attempt.broadcast(TaskControl::Complete(id));
                        }
                        if stop {
                            attempt.broadcast(TaskControl::Stop);
                            stopping = Some(path);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(checkpoint = id, error = %e, "checkpoint failed");
                        self.shared
                            .stats(|s| s.checkpoint_failed(id, e.to_string()));
                        consecutive_failures += 1;
                    }
                }
            }
            // Timeouts.
            let now = Instant::now();
            let expired: Vec<CheckpointId> = inflight
                .pending
                .iter()
                .filter(|p| now.duration_since(p.started) > cfg.timeout)
                .map(|p| p.barrier.id)
                .collect();
            for id in expired {
                self.fail_checkpoint(inflight, id, "timed out", &mut consecutive_failures);
            }
            if consecutive_failures > cfg.tolerable_failures {
                return AttemptEnd::Failed(Error::Checkpoint(format!(
                    "{consecutive_failures} consecutive checkpoints failed, more than the {} tolerated",
                    cfg.tolerable_failures
                )));
            }
            // Periodic trigger.
            if let (Some(interval), Some(storage)) = (cfg.interval, &plan.storage) {
                let running = finished.iter().all(|f| f.is_none()) && stopping.is_none();
                let checkpoints = inflight
                    .pending
                    .iter()
                    .filter(|p| p.barrier.kind == SnapshotKind::Checkpoint)
                    .count();
                if running
                    && checkpoints < cfg.max_concurrent.max(1)
                    && now.duration_since(last_trigger) >= interval
                    && now.duration_since(last_completion) >= cfg.min_pause
                {
                    last_trigger = now;
                    let dir = format!("{}/chk-{}", plan.job_id, self.next_id);
                    self.trigger(
                        attempt,
                        &mut inflight.pending,
                        storage.clone(),
                        dir,
                        SnapshotKind::Checkpoint,
                        false,
                        None,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::api::StreamExecutionEnvironment;
    use crate::checkpoint::RestartStrategy;
    use crate::testing::SequenceSource;

    fn failing_job(
        restart: RestartStrategy,
        dir: &std::path::Path,
    ) -> (StreamExecutionEnvironment, crate::api::Collected) {
        let env = StreamExecutionEnvironment::new();
        let d = dir.to_string_lossy().to_string();
        env.configure(move |c| {
            c.checkpoint.dir = Some(d);
            c.checkpoint.interval = Some(Duration::from_millis(10));
            c.restart = restart;
        });
        let mut src = SequenceSource::new(3_000, 10);
        src.pause = Duration::from_millis(1);
        src.fail_at = Some((2_000, Arc::new(AtomicBool::new(false))));
        let out = env.from_source(src, None).collect();
        (env, out)
    }

    #[test]
    fn a_failed_task_restarts_the_job_from_its_latest_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let restart = RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(10),
        };
        let (env, out) = failing_job(restart, dir.path());
        let job = env.execute_async().expect("starts");
        let stats = job.checkpoint_stats_handle();
        assert_eq!(job.wait().expect("recovers"), JobOutcome::Finished);
        let s = stats();
        assert_eq!(s.restarts, 1);
        let restored = s.restored.expect("restored from a checkpoint");
        assert!(restored.contains("chk-"), "{restored}");
        // The collect sink is not transactional: what came after the checkpoint is seen
        // twice, but nothing is lost and the replay starts at the checkpoint, not at 0.
        let mut v: Vec<i64> = out.rows().iter().filter_map(|r| r[0].as_i64()).collect();
        let seen = v.len();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v, (0..3_000).collect::<Vec<_>>());
        assert!(seen < 2 * 3_000, "replayed from the start: {seen} rows");
        // Checkpoints in flight at the failure were deleted, by the next attempt or at the
        // end: every directory left is a complete checkpoint.
        for job in std::fs::read_dir(dir.path())
            .expect("checkpoint dir")
            .flatten()
        {
            for chk in std::fs::read_dir(job.path()).expect("job dir").flatten() {
                let name = chk.file_name().to_string_lossy().to_string();
                if name.starts_with("chk-") {
                    assert!(
                        chk.path().join("_metadata").exists(),
                        "incomplete {name} left"
                    );
                }
            }
        }
    }

    #[test]
    fn without_a_restart_strategy_the_first_failure_fails_the_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (env, _) = failing_job(RestartStrategy::None, dir.path());
        let job = env.execute_async().expect("starts");
        while !job.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (status, cause) = job.status();
        assert_eq!(status, JobStatus::Failed);
        assert!(cause.is_some_and(|c| c.contains("injected failure at")));
        let e = job.wait().expect_err("fails");
        assert!(e.to_string().contains("injected failure at"), "{e}");
    }
}
