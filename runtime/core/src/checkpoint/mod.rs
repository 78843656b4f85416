//! Checkpoints, savepoints and recovery: Flink's asynchronous barrier snapshots.
//!
//! The job master (see [`crate::executor`]) triggers a checkpoint by asking every source task
//! to snapshot its position and send a [`Barrier`] in order with its data. A task with several
//! input channels aligns the barrier (exactly-once: a channel that delivered the barrier is held
//! back until every channel has) or only counts it (at-least-once), snapshots the keyed and
//! operator state of its chain, forwards the barrier and goes on processing; where the task
//! runs, its state files are written to object storage off the task thread ([`writer`]: the
//! embedded executor's master, or the taskmanager, which sends the jobmanager only their
//! handles), and once every task has answered, the master writes `_metadata` last: only then is the checkpoint complete, and only then do sinks
//! publish what they pre-committed on that barrier (two-phase commit).
//!
//! Layout: `{state.checkpoints.dir}/{job-id}/chk-{n}/{operator-uid}-{subtask}.state` plus
//! `_metadata`; savepoints are the same files in a directory of their own with relative paths,
//! so they can be moved. Formats: [`format`].

pub mod format;
pub mod restore;
pub mod storage;
pub mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::key::KeyGroup;

pub use format::{CheckpointMetadata, FORMAT_VERSION};
pub use restore::{RestoredCheckpoint, find_latest, load_checkpoint};
pub use storage::CheckpointStorage;

/// Checkpoint ids count up from 1 over the life of a job, across restores.
pub type CheckpointId = u64;

/// The id used for the snapshot every task takes when its input has ended (Flink's final
/// checkpoint): it commits what sinks still hold when the whole job has finished.
pub const FINAL_CHECKPOINT: CheckpointId = u64::MAX;

/// A periodic checkpoint or a savepoint (same snapshot, different owner and life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// The marker that travels with the data: everything before it on a channel belongs to
/// checkpoint `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub id: CheckpointId,
    pub kind: SnapshotKind,
    /// Stop-with-savepoint: sources stop after sending this barrier.
    pub stop: bool,
    /// Incremental checkpoints: the newest complete checkpoint, which a store that took
    /// part in it may write only its changes since (a store that did not writes all of its
    /// state). `None`: every store writes all of its state (savepoints, full checkpoints).
    pub base: Option<CheckpointId>,
}

impl Barrier {
    /// A full checkpoint's barrier.
    pub fn checkpoint(id: CheckpointId) -> Self {
        Barrier {
            id,
            kind: SnapshotKind::Checkpoint,
            stop: false,
            base: None,
        }
    }
}

/// Barrier handling on multi-input tasks (`execution.checkpointing.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointingMode {
    /// Align barriers: state reflects exactly the records before the barrier.
    ExactlyOnce,
    /// Do not align: records after a barrier may be counted in the snapshot, so after a
    /// restore they are seen again (no loss, possible duplicates).
    AtLeastOnce,
}

/// What one operator instance hands over in a snapshot.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct OperatorSnapshot {
    /// Keyed state (and timers) per key group: moves to whichever subtask owns the key group
    /// after a restore, at any parallelism.
    pub keyed: Vec<(KeyGroup, Vec<u8>)>,
    /// Non-keyed state of this instance (source positions, pending sink commits).
    pub operator: Option<Vec<u8>>,
    /// Keyed state still to be encoded from a consistent view of the store (the disk
    /// backend's asynchronous part); [`OperatorSnapshot::resolve`] adds it to `keyed`, off
    /// the task thread.
    #[serde(skip)]
    pub deferred: Option<DeferredKeyed>,
    /// Incremental checkpoints: the keyed state holds only what changed since this
    /// checkpoint (see [`crate::state::merge_key_group_chain`]).
    #[serde(default)]
    pub base: Option<CheckpointId>,
    /// Incremental checkpoints: the state file goes to the job's shared directory, where
    /// later checkpoints may refer to it.
    #[serde(default)]
    pub shared: bool,
}

impl OperatorSnapshot {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.operator.is_none() && self.deferred.is_none()
    }

    /// Encodes the deferred keyed state, if any, into `keyed` (in memory: the state-file
    /// writer streams it to a file instead, see [`format::spool_state_file`]).
    pub fn resolve(&mut self) -> crate::error::Result<()> {
        if let Some(d) = self.deferred.take() {
            d.run(&mut |kg, blob| {
                self.keyed.push((kg, blob));
                Ok(())
            })?;
            self.keyed.sort_by_key(|(kg, _)| *kg);
        }
        Ok(())
    }
}

/// Where a deferred encoding hands each key group's blob.
pub type EmitKeyGroup<'a> = dyn FnMut(KeyGroup, Vec<u8>) -> crate::error::Result<()> + 'a;

type Encode = Box<dyn FnOnce(&mut EmitKeyGroup<'_>) -> crate::error::Result<()> + Send>;

/// An encoding of keyed state that runs later, once, one key group at a time (see
/// [`OperatorSnapshot::deferred`]).
#[derive(Clone)]
pub struct DeferredKeyed {
    encode: std::sync::Arc<std::sync::Mutex<Option<Encode>>>,
    /// A local directory for the state file while it is written and uploaded.
    spool: std::path::PathBuf,
}

impl DeferredKeyed {
    pub fn new(
        spool: std::path::PathBuf,
        f: impl FnOnce(&mut EmitKeyGroup<'_>) -> crate::error::Result<()> + Send + 'static,
    ) -> Self {
        DeferredKeyed {
            encode: std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(f)))),
            spool,
        }
    }

    /// The local directory to write the state file in.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool
    }

    /// Encodes, handing `emit` each key group's blob in key-group order.
    pub fn run(self, emit: &mut EmitKeyGroup<'_>) -> crate::error::Result<()> {
        let f = self
            .encode
            .lock()
            .map_err(|_| crate::error::Error::Checkpoint("a snapshot's encoding panicked".into()))?
            .take();
        match f {
            Some(f) => f(emit),
            None => Err(crate::error::Error::Checkpoint(
                "a snapshot's keyed state was encoded twice".into(),
            )),
        }
    }
}

impl std::fmt::Debug for DeferredKeyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeferredKeyed")
    }
}

/// What an operator instance gets back on restore.
#[derive(Debug, Default, Clone)]
pub struct RestoredState {
    /// Which checkpoint this comes from.
    pub checkpoint_id: CheckpointId,
    /// Keyed state of exactly the key groups this instance now owns.
    pub keyed: Vec<(KeyGroup, Bytes)>,
    /// The non-keyed state of every old instance, by old subtask index (union
    /// redistribution: each operator takes what belongs to it).
    pub operator: Vec<(usize, Bytes)>,
    /// The parallelism the state was written at.
    pub old_parallelism: usize,
    /// How the state is laid out, as the snapshot records it (`None`: the operator's own
    /// layout, or a snapshot older than the record); an operator that can read another
    /// operator's layout ([`crate::graph::Node::reads_layouts`]) converts it.
    pub layout: Option<String>,
}

/// Checkpointing settings (Flink's keys in comments).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// `execution.checkpointing.interval`; `None` disables periodic checkpoints.
    pub interval: Option<Duration>,
    /// `execution.checkpointing.mode`.
    pub mode: CheckpointingMode,
    /// `execution.checkpointing.timeout`.
    pub timeout: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints`.
    pub max_concurrent: usize,
    /// `execution.checkpointing.min-pause`.
    pub min_pause: Duration,
    /// `execution.checkpointing.tolerable-failed-checkpoints`.
    pub tolerable_failures: u32,
    /// `state.checkpoints.num-retained`.
    pub retained: usize,
    /// `state.checkpoints.dir`: a path or `file://`, `s3://`, `gs://`, `az://` URL.
    pub dir: Option<String>,
    /// `state.savepoints.dir`.
    pub savepoint_dir: Option<String>,
    /// Object-store options (`s3.endpoint`, `s3.access-key`, …); credentials otherwise come
    /// from the environment as the cloud SDKs read them.
    pub storage_options: BTreeMap<String, String>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: None,
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            max_concurrent: 1,
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            retained: 1,
            dir: None,
            savepoint_dir: None,
            storage_options: BTreeMap::new(),
        }
    }
}

/// How a failed job is brought back (`restart-strategy.type` and its options).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RestartStrategy {
    /// Fail the job on the first failure.
    #[default]
    None,
    /// `fixed-delay`: up to `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// `exponential-delay`: delays grow by `multiplier` up to `max`; they reset after the job
    /// has run `reset_after` without failing.
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset_after: Duration,
        attempts: u32,
    },
    /// `failure-rate`: fail when more than `max_failures` happen within `interval`.
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
}

/// Tracks failures against a [`RestartStrategy`].
#[derive(Debug, Clone)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    next_delay: Option<Duration>,
    failures: Vec<std::time::Instant>,
    last_start: std::time::Instant,
}

impl RestartTracker {
    pub fn new(strategy: RestartStrategy) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            next_delay: None,
            failures: Vec::new(),
            last_start: std::time::Instant::now(),
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Marks the start of an attempt (for exponential backoff's reset).
    pub fn started(&mut self) {
        self.last_start = std::time::Instant::now();
    }

    /// A failure happened: how long to wait before restarting, or `None` to give up.
    pub fn on_failure(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (self.restarts < *attempts).then_some(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
                attempts,
            } => {
                if now.duration_since(self.last_start) >= *reset_after {
                    self.next_delay = None;
                }
                let d = self.next_delay.unwrap_or(*initial).min(*max);
                self.next_delay = Some(d.mul_f64(multiplier.max(1.0)).min(*max));
                (self.restarts < *attempts).then_some(d)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.failures.push(now);
                self.failures
                    .retain(|t| now.duration_since(*t) <= *interval);
                (self.failures.len() as u32 <= *max_failures).then_some(*delay)
            }
        };
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }
}

/// Where a job starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The latest complete checkpoint of this job id in `state.checkpoints.dir`, if any
    /// (what a replaced jobmanager pod does).
    Latest,
    /// A checkpoint or savepoint directory (holding `_metadata`).
    Path(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_gives_up_after_its_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay: Duration::from_millis(5),
        });
        assert_eq!(t.on_failure(), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(), Some(Duration::from_millis(5)));
        assert_eq!(t.on_failure(), None);
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn exponential_delay_grows_to_its_cap() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(35),
            multiplier: 2.0,
            reset_after: Duration::from_secs(3600),
            attempts: 10,
        });
        let d: Vec<_> = (0..4).filter_map(|_| t.on_failure()).collect();
        assert_eq!(
            d,
            [10, 20, 35, 35].map(Duration::from_millis).to_vec(),
            "delays double and stop at the cap"
        );
    }

    #[test]
    fn failure_rate_fails_past_the_limit() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::ZERO,
        });
        assert!(t.on_failure().is_some());
        assert!(t.on_failure().is_some());
        assert!(t.on_failure().is_none());
    }
}
