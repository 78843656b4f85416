//! A running job as its caller sees it: the [`JobHandle`] (status, checkpoint statistics,
//! savepoint, stop, cancel, wait), how a job ended, and job ids.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use crate::checkpoint::{CheckpointId, SnapshotKind};
use crate::error::{Error, Result};
use crate::exchange::TaskMetrics;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every source ended and every task finished.
    Finished,
    /// The job was cancelled.
    Cancelled,
    /// The job was stopped with a savepoint, written to `savepoint`.
    Stopped { savepoint: String },
}

/// What a task reports of itself ([`JobHandle::task_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStats {
    /// `{vertex name} ({subtask + 1}/{parallelism})`, see [`split_task_name`].
    pub task: String,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time spent waiting on full output channels.
    pub backpressured: Duration,
    /// Whether the task is waiting on a full output channel now.
    pub blocked: bool,
    /// Time spent waiting for input with nothing to do.
    pub idle: Duration,
    /// The last watermark emitted (epoch ms), when one was.
    pub watermark: Option<i64>,
    /// The watermark of the task's input (epoch ms), when one arrived.
    pub input_watermark: Option<i64>,
}

impl TaskStats {
    /// A snapshot of a task's counters.
    pub fn read(task: &str, m: &TaskMetrics) -> TaskStats {
        let wm = |w: i64| Some(w).filter(|w| *w != i64::MIN && *w != i64::MAX);
        TaskStats {
            task: task.to_string(),
            records_in: m.records_in.load(Ordering::Relaxed),
            records_out: m.records_out.load(Ordering::Relaxed),
            bytes_in: m.bytes_in.load(Ordering::Relaxed),
            bytes_out: m.bytes_out.load(Ordering::Relaxed),
            backpressured: m.backpressured(),
            blocked: m.blocked_since_ms.load(Ordering::Relaxed) > 0,
            idle: Duration::from_nanos(m.idle_ns.load(Ordering::Relaxed)),
            watermark: wm(m.watermark.load(Ordering::Relaxed)),
            input_watermark: wm(m.input_watermark.load(Ordering::Relaxed)),
        }
    }
}

/// A task name's parts: `("Source: s -> Sink: t", 1, 2)` for `Source: s -> Sink: t (2/2)`
/// (vertex name, subtask index from 0, parallelism).
pub fn split_task_name(task: &str) -> Option<(&str, usize, usize)> {
    let rest = task.strip_suffix(')')?;
    let open = rest.rfind(" (")?;
    let (n, p) = rest[open + 2..].split_once('/')?;
    let n: usize = n.parse().ok()?;
    let p: usize = p.parse().ok()?;
    (n >= 1 && n <= p).then_some((&rest[..open], n - 1, p))
}

/// A checkpoint or savepoint that completed.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedCheckpoint {
    pub id: CheckpointId,
    pub kind: SnapshotKind,
    /// Its directory (URL).
    pub path: String,
    /// When it completed (epoch ms).
    pub timestamp_ms: i64,
    /// From trigger to `_metadata` written.
    pub duration: Duration,
    /// Bytes of state files it wrote (with incremental checkpoints, what it added).
    pub state_size: u64,
    /// Bytes of every state file it is made of, shared ones included.
    pub full_size: u64,
    /// The longest a task was held taking its snapshot (Flink's sync duration).
    pub sync_duration: Duration,
}

/// Checkpointing and recovery counters of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointStats {
    pub triggered: u64,
    pub completed: u64,
    pub failed: u64,
    /// Completed checkpoints that wrote only what changed since an earlier one (incremental
    /// checkpoints).
    pub incremental: u64,
    /// Times the job was restarted after a failure.
    pub restarts: u32,
    /// The checkpoint the job (last) restored from.
    pub restored: Option<String>,
    /// The newest completed checkpoint or savepoint.
    pub latest: Option<CompletedCheckpoint>,
    /// Recent completions, newest last (at most 16).
    pub history: Vec<CompletedCheckpoint>,
    /// The newest checkpoint that failed.
    pub latest_failed: Option<FailedCheckpoint>,
    /// Why the job's attempts failed, newest last (at most [`FAILURES_KEPT`]).
    pub failures: Vec<JobFailure>,
}

/// How many failures [`CheckpointStats::failures`] keeps.
pub const FAILURES_KEPT: usize = 16;

impl CheckpointStats {
    /// Counts a failed checkpoint and remembers it as the latest failed one.
    pub fn checkpoint_failed(&mut self, id: CheckpointId, message: String) {
        self.failed += 1;
        self.latest_failed = Some(FailedCheckpoint {
            id,
            timestamp_ms: crate::operator::now_millis(),
            message,
        });
    }

    /// Remembers why an attempt failed (the oldest is forgotten past [`FAILURES_KEPT`]).
    pub fn attempt_failed(&mut self, message: String) {
        if self.failures.len() == FAILURES_KEPT {
            self.failures.remove(0);
        }
        self.failures.push(JobFailure {
            timestamp_ms: crate::operator::now_millis(),
            message,
        });
    }
}

/// A checkpoint that did not complete.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedCheckpoint {
    pub id: CheckpointId,
    /// When it was given up (epoch ms).
    pub timestamp_ms: i64,
    pub message: String,
}

/// Why an attempt of the job failed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    /// When (epoch ms).
    pub timestamp_ms: i64,
    pub message: String,
}

/// Where a job is in its life, with Flink's names (`GET /jobs/{id}` reports them). The type
/// is the REST API's, so that the engine, the cluster and the operator share one.
pub use flink_rs_rest_api::JobStatus;

pub struct Shared {
    pub(super) stats: Mutex<CheckpointStats>,
    pub(super) metrics: Mutex<Vec<(String, Arc<TaskMetrics>)>>,
    pub(super) status: Mutex<(JobStatus, Option<String>)>,
}

impl Shared {
    fn task_stats(&self) -> Vec<TaskStats> {
        self.metrics
            .lock()
            .map(|m| m.iter().map(|(n, m)| TaskStats::read(n, m)).collect())
            .unwrap_or_default()
    }

    pub(super) fn stats(&self, f: impl FnOnce(&mut CheckpointStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    pub(super) fn set_status(&self, status: JobStatus, error: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            *s = (status, error);
        }
    }
}

pub(super) enum Command {
    Cancel,
    Checkpoint {
        reply: Sender<Result<String>>,
    },
    Savepoint {
        dir: Option<String>,
        stop: bool,
        reply: Sender<Result<String>>,
    },
}

/// A running job: cancel it, take savepoints, watch it, wait for it.
pub struct JobHandle {
    pub(super) master: JoinHandle<Result<JobOutcome>>,
    pub(super) commands: Sender<Command>,
    pub(super) shared: Arc<Shared>,
    pub(super) job_id: String,
}

impl JobHandle {
    /// A job that ended before this process started (a jobmanager restarted after its job
    /// finished, was cancelled or failed for good): it reports `status` and never runs again,
    /// which would repeat output its sinks committed. Savepoints are declined.
    pub fn ended(job_id: String, status: JobStatus) -> JobHandle {
        let (commands, _) = bounded(1);
        let outcome = match status {
            JobStatus::Canceled => Ok(JobOutcome::Cancelled),
            JobStatus::Failed => Err(Error::User(format!(
                "job {job_id} had failed before this process started"
            ))),
            _ => Ok(JobOutcome::Finished),
        };
        JobHandle {
            master: std::thread::spawn(move || outcome),
            commands,
            shared: Arc::new(Shared {
                stats: Mutex::new(CheckpointStats::default()),
                metrics: Mutex::new(Vec::new()),
                status: Mutex::new((status, None)),
            }),
            job_id,
        }
    }

    /// The job's id (names its checkpoint directory).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The job's state and, when it failed, why.
    pub fn status(&self) -> (JobStatus, Option<String>) {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or((JobStatus::Failed, Some("status lock poisoned".into())))
    }

    /// Asks every task to stop; [`wait`](Self::wait) then returns `Cancelled`.
    pub fn cancel(&self) {
        let _ = self.commands.send(Command::Cancel);
    }

    /// A function that cancels the job, usable from another thread (a signal handler).
    pub fn cancel_handle(&self) -> impl Fn() + Send + 'static + use<> {
        let commands = self.commands.clone();
        move || {
            let _ = commands.send(Command::Cancel);
        }
    }

    /// True when the job has ended.
    pub fn is_finished(&self) -> bool {
        self.master.is_finished()
    }

    /// Per task of the current attempt: records, time backpressured, watermark.
    pub fn task_stats(&self) -> Vec<TaskStats> {
        self.shared.task_stats()
    }

    /// Records in and out per task of the current attempt, as `(task name, in, out)`.
    pub fn task_metrics(&self) -> Vec<(String, u64, u64)> {
        let Ok(m) = self.shared.metrics.lock() else {
            return Vec::new();
        };
        m.iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    m.records_in.load(Ordering::Relaxed),
                    m.records_out.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// A function that reads the checkpoint counters, usable after the handle is consumed by
    /// [`wait`](Self::wait).
    pub fn checkpoint_stats_handle(&self) -> impl Fn() -> CheckpointStats + Send + use<> {
        let shared = self.shared.clone();
        move || shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A function that reads the per-task record counters, usable after `wait`.
    pub fn task_metrics_handle(&self) -> impl Fn() -> Vec<(String, u64, u64)> + Send + use<> {
        let shared = self.shared.clone();
        move || {
            shared
                .metrics
                .lock()
                .map(|m| {
                    m.iter()
                        .map(|(n, m)| {
                            (
                                n.clone(),
                                m.records_in.load(Ordering::Relaxed),
                                m.records_out.load(Ordering::Relaxed),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    /// A function that reads the per-task statistics, usable after `wait`.
    pub fn task_stats_handle(&self) -> impl Fn() -> Vec<TaskStats> + Send + Sync + use<> {
        let shared = self.shared.clone();
        move || shared.task_stats()
    }

    /// A function that reads the job's state, usable after `wait`.
    pub fn status_handle(&self) -> impl Fn() -> (JobStatus, Option<String>) + Send + Sync + use<> {
        let shared = self.shared.clone();
        move || {
            shared
                .status
                .lock()
                .map(|s| s.clone())
                .unwrap_or((JobStatus::Failed, Some("status lock poisoned".into())))
        }
    }

    /// Checkpoint and restart counters.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub(super) fn savepoint(&self, dir: Option<&str>, stop: bool) -> Result<String> {
        let (tx, rx) = bounded(1);
        self.commands
            .send(Command::Savepoint {
                dir: dir.map(str::to_string),
                stop,
                reply: tx,
            })
            .map_err(|_| Error::SnapshotDeclined("the job has ended".into()))?;
        rx.recv().map_err(|_| {
            Error::SnapshotDeclined("the job ended before the savepoint completed".into())
        })?
    }

    /// Triggers a checkpoint now (besides the periodic ones) and waits for it; returns its
    /// path. Needs `state.checkpoints.dir` (or an interval, which implies a default one).
    pub fn trigger_checkpoint(&self) -> Result<String> {
        let (tx, rx) = bounded(1);
        self.commands
            .send(Command::Checkpoint { reply: tx })
            .map_err(|_| Error::SnapshotDeclined("the job has ended".into()))?;
        rx.recv().map_err(|_| {
            Error::SnapshotDeclined("the job ended before the checkpoint completed".into())
        })?
    }

    /// Takes a savepoint into `dir` (or `state.savepoints.dir`) and returns its path; the job
    /// goes on running.
    pub fn trigger_savepoint(&self, dir: Option<&str>) -> Result<String> {
        self.savepoint(dir, false)
    }

    /// Takes a savepoint and stops the job (Flink's stop-with-savepoint): sources stop after
    /// the savepoint's barrier, sinks commit up to it, and [`wait`](Self::wait) returns
    /// `Stopped`.
    pub fn stop_with_savepoint(&self, dir: Option<&str>) -> Result<String> {
        self.savepoint(dir, true)
    }

    /// Waits for the job to end; a failure the restart strategy gave up on is the error.
    pub fn wait(self) -> Result<JobOutcome> {
        self.master
            .join()
            .map_err(|_| Error::Checkpoint("the job master panicked".into()))?
    }
}

/// A fresh random job id (32 hex digits, as Flink's).
pub fn new_job_id() -> String {
    random_job_id()
}

/// A job id (32 hex digits) that is the same for the same `name` in every process and
/// build: `flink-rs run` names a job by `pipeline.name`, else by its script, so a second run
/// of the same job finds the first run's checkpoints (`--from-checkpoint latest`).
pub fn derived_job_id(name: &str) -> String {
    // FNV-1a, 64 bits, twice with different offsets: stable, unlike std's hashers.
    let fnv = |offset: u64| {
        name.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

pub(super) fn random_job_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn task_names_split_into_vertex_subtask_and_parallelism() {
        assert_eq!(
            split_task_name("Source: s -> Sink: t (2/2)"),
            Some(("Source: s -> Sink: t", 1, 2))
        );
        assert_eq!(split_task_name("f(x) (1/4)"), Some(("f(x)", 0, 4)));
        assert_eq!(split_task_name("no subtask"), None);
        assert_eq!(split_task_name("bad (3/2)"), None);
    }

    use super::*;

    #[test]
    fn derived_job_ids_are_stable_per_name_and_look_like_flinks() {
        let a = derived_job_id("orders");
        assert_eq!(a, derived_job_id("orders"));
        assert_ne!(a, derived_job_id("orders2"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn fresh_job_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..64).map(|_| new_job_id()).collect();
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|i| i.len() == 32));
    }
}
