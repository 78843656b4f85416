//! Turns a [`JobGraph`] into running tasks in this process (the mini-cluster) and supervises
//! them: operators are chained, every chain runs once per parallel subtask on its own thread,
//! chains are connected by bounded channels, and a job master thread triggers checkpoints,
//! writes them to storage, restarts the job from the latest one after a failure, and takes
//! savepoints on request.
//!
//! Chaining rule (Flink's): node B joins the chain of A when A→B is A's only output, B's only
//! input, a forward edge of the main output, and both have the same parallelism.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::checkpoint::format::{
    METADATA_FORMAT, OperatorMetadata, SubtaskMetadata, encode_state_file,
};
use crate::checkpoint::restore::{self, checkpoint_ids};
use crate::checkpoint::{
    Barrier, CheckpointId, CheckpointMetadata, CheckpointStorage, FINAL_CHECKPOINT, FORMAT_VERSION,
    RestartTracker, RestoreFrom, RestoredCheckpoint, SnapshotKind, find_latest, load_checkpoint,
};
use crate::error::{Error, Result};
use crate::exchange::{
    EdgeOutput, Emitter, Envelope, Route, Target, TaskMetrics, key_group_owners,
};
use crate::graph::{JobGraph, NodeId, NodeKind, Partitioning};
use crate::key::key_group_range;
use crate::operator::{OperatorContext, now_millis};
use crate::task::{Chain, TaskControl, TaskEvent, TaskLink, TaskStates, run_input, run_source};
use crate::watermark::SplitWatermarks;

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
    pub task: String,
    pub records_in: u64,
    pub records_out: u64,
    /// Time spent waiting on full output channels.
    pub backpressured: Duration,
    /// The last watermark emitted (epoch ms), when one was.
    pub watermark: Option<i64>,
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
    /// Bytes of state files.
    pub state_size: u64,
}

/// Checkpointing and recovery counters of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointStats {
    pub triggered: u64,
    pub completed: u64,
    pub failed: u64,
    /// Times the job was restarted after a failure.
    pub restarts: u32,
    /// The checkpoint the job (last) restored from.
    pub restored: Option<String>,
    /// The newest completed checkpoint or savepoint.
    pub latest: Option<CompletedCheckpoint>,
    /// Recent completions, newest last (at most 16).
    pub history: Vec<CompletedCheckpoint>,
}

/// Where a job is in its life, with Flink's names (`GET /jobs/{id}` reports them). The type
/// is the REST API's, so that the engine, the cluster and the operator share one.
pub use flink_rs_rest_api::JobStatus;

pub struct Shared {
    stats: Mutex<CheckpointStats>,
    metrics: Mutex<Vec<(String, Arc<TaskMetrics>)>>,
    status: Mutex<(JobStatus, Option<String>)>,
}

impl Shared {
    fn stats(&self, f: impl FnOnce(&mut CheckpointStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn set_status(&self, status: JobStatus, error: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            *s = (status, error);
        }
    }
}

enum Command {
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
    master: JoinHandle<Result<JobOutcome>>,
    commands: Sender<Command>,
    shared: Arc<Shared>,
    job_id: String,
}

impl JobHandle {
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
        let Ok(m) = self.shared.metrics.lock() else {
            return Vec::new();
        };
        m.iter()
            .map(|(n, m)| TaskStats {
                task: n.clone(),
                records_in: m.records_in.load(Ordering::Relaxed),
                records_out: m.records_out.load(Ordering::Relaxed),
                backpressured: m.backpressured(),
                watermark: Some(m.watermark.load(Ordering::Relaxed))
                    .filter(|w| *w != i64::MIN && *w != i64::MAX),
            })
            .collect()
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

    /// Checkpoint and restart counters.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    fn savepoint(&self, dir: Option<&str>, stop: bool) -> Result<String> {
        let (tx, rx) = bounded(1);
        self.commands
            .send(Command::Savepoint {
                dir: dir.map(str::to_string),
                stop,
                reply: tx,
            })
            .map_err(|_| Error::Checkpoint("the job has ended".into()))?;
        rx.recv()
            .map_err(|_| Error::Checkpoint("the job ended before the savepoint completed".into()))?
    }

    /// Triggers a checkpoint now (besides the periodic ones) and waits for it; returns its
    /// path. Needs `state.checkpoints.dir` (or an interval, which implies a default one).
    pub fn trigger_checkpoint(&self) -> Result<String> {
        let (tx, rx) = bounded(1);
        self.commands
            .send(Command::Checkpoint { reply: tx })
            .map_err(|_| Error::Checkpoint("the job has ended".into()))?;
        rx.recv().map_err(|_| {
            Error::Checkpoint("the job ended before the checkpoint completed".into())
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

/// Checks what the executor relies on, with messages naming the offending node.
pub fn validate(graph: &JobGraph) -> Result<()> {
    for (i, n) in graph.nodes.iter().enumerate() {
        if n.id != i {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has id {} at position {i}",
                n.name, n.id
            )));
        }
        if n.parallelism == 0 {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has parallelism 0",
                n.name
            )));
        }
        if n.parallelism > usize::from(graph.config.max_parallelism) {
            return Err(Error::InvalidGraph(format!(
                "node `{}` has parallelism {} above max parallelism {}",
                n.name, n.parallelism, graph.config.max_parallelism
            )));
        }
        let has_inputs = graph.inputs(i).next().is_some();
        match n.kind {
            NodeKind::Source { .. } if has_inputs => {
                return Err(Error::InvalidGraph(format!(
                    "source `{}` has inputs",
                    n.name
                )));
            }
            NodeKind::Operator(_) if !has_inputs => {
                return Err(Error::InvalidGraph(format!(
                    "operator `{}` has no input",
                    n.name
                )));
            }
            _ => {}
        }
    }
    for e in &graph.edges {
        if e.from >= e.to || e.to >= graph.nodes.len() {
            return Err(Error::InvalidGraph(format!(
                "edge {} -> {} is not forward in the graph",
                e.from, e.to
            )));
        }
        if matches!(e.partitioning, Partitioning::Forward)
            && graph.nodes[e.from].parallelism != graph.nodes[e.to].parallelism
        {
            return Err(Error::InvalidGraph(format!(
                "forward edge `{}` -> `{}` joins different parallelisms ({} and {}); use rebalance",
                graph.nodes[e.from].name,
                graph.nodes[e.to].name,
                graph.nodes[e.from].parallelism,
                graph.nodes[e.to].parallelism
            )));
        }
    }
    Ok(())
}

/// Groups nodes into chains; returns the chains (lists of node ids, head first).
pub fn chains(graph: &JobGraph) -> Vec<Vec<NodeId>> {
    let mut chain_of: Vec<usize> = Vec::with_capacity(graph.nodes.len());
    let mut chains: Vec<Vec<NodeId>> = Vec::new();
    for n in &graph.nodes {
        let ins: Vec<_> = graph.inputs(n.id).collect();
        let joined = match ins.as_slice() {
            [e] if graph.config.chaining
                && matches!(e.partitioning, Partitioning::Forward)
                && e.side_output.is_none()
                && e.input == 0
                && graph.outputs(e.from).count() == 1
                && graph.nodes[e.from].parallelism == n.parallelism =>
            {
                Some(chain_of[e.from])
            }
            _ => None,
        };
        match joined {
            Some(c) => {
                chains[c].push(n.id);
                chain_of.push(c);
            }
            None => {
                chain_of.push(chains.len());
                chains.push(vec![n.id]);
            }
        }
    }
    chains
}

/// Starts a job in this process. Problems with the graph, its configuration or the
/// checkpoint it restores from are returned here, before anything runs.
pub fn execute(graph: JobGraph) -> Result<JobHandle> {
    execute_with(graph, None)
}

/// Runs a job whose tasks a cluster deploys (`remote`), or in this process (`None`). With a
/// cluster the first deployment happens on the job master thread (it may wait for slots), so
/// this returns at once with the job `Created`.
pub fn execute_with(graph: JobGraph, remote: Option<Arc<dyn RemoteDeployer>>) -> Result<JobHandle> {
    validate(&graph)?;
    let cfg = graph.config.clone();
    let job_id = cfg.job_id.clone().unwrap_or_else(random_job_id);
    let storage = match (&cfg.checkpoint.dir, cfg.checkpoint.interval) {
        (Some(dir), _) => Some(CheckpointStorage::open(
            dir,
            &cfg.checkpoint.storage_options,
        )?),
        (None, Some(_)) => {
            let dir = std::env::temp_dir().join("flink-rs").join("checkpoints");
            Some(CheckpointStorage::open(
                &dir.display().to_string(),
                &cfg.checkpoint.storage_options,
            )?)
        }
        (None, None) => None,
    };
    let restored = match &cfg.restore {
        None => None,
        Some(RestoreFrom::Latest) => match &storage {
            Some(s) => match restore::latest_snapshot(s, &job_id)? {
                Some(c) => Some(c),
                // Never a quiet fresh start: the caller asked for state that is not there.
                None => {
                    return Err(Error::config(
                        "execution.savepoint.path",
                        format!(
                            "`latest`: no completed checkpoint of job {job_id} in {}",
                            s.url()
                        ),
                    ));
                }
            },
            None => {
                return Err(Error::config(
                    "execution.savepoint.path",
                    "`latest` needs state.checkpoints.dir",
                ));
            }
        },
        Some(RestoreFrom::Path(p)) => {
            let s = CheckpointStorage::open(p, &cfg.checkpoint.storage_options)?;
            Some(load_checkpoint(&s, "")?)
        }
    };
    let mut next_id = 1;
    if let Some(r) = &restored {
        if r.id() != FINAL_CHECKPOINT {
            next_id = r.id() + 1;
        }
    }
    if let Some(s) = &storage {
        if let Some(max) = checkpoint_ids(s, &job_id)?.first() {
            next_id = next_id.max(max + 1);
        }
    }
    let plan = Arc::new(Plan {
        chains: chains(&graph),
        graph,
        job_id: job_id.clone(),
        storage,
        remote,
    });
    let shared = Arc::new(Shared {
        stats: Mutex::new(CheckpointStats::default()),
        metrics: Mutex::new(Vec::new()),
        status: Mutex::new((JobStatus::Created, None)),
    });
    let restored = restored.map(Arc::new);
    if let Some(r) = &restored {
        shared.stats(|s| s.restored = Some(r.url.clone()));
    }
    let (upload_tx, upload_rx) = unbounded();
    let first = if plan.remote.is_none() {
        let a = deploy(&plan, restored.as_deref(), &shared)?;
        shared.set_status(JobStatus::Running, None);
        Some(a)
    } else {
        None
    };
    let (cmd_tx, cmd_rx) = unbounded();
    let master_shared = shared.clone();
    let master = std::thread::Builder::new()
        .name("job-master".into())
        .spawn(move || {
            let status = master_shared.clone();
            let mut m = Master {
                plan,
                shared: master_shared,
                commands: cmd_rx,
                uploads: upload_rx,
                upload_tx,
                next_id,
                first_id: next_id,
                initial: restored,
                graveyard: Vec::new(),
            };
            let result = match first {
                Some(a) => m.run(a),
                None => match m.first_remote_deploy() {
                    Ok(Some(a)) => m.run(a),
                    Ok(None) => Ok(JobOutcome::Cancelled),
                    Err(e) => Err(e),
                },
            };
            match &result {
                Ok(JobOutcome::Cancelled) => status.set_status(JobStatus::Canceled, None),
                Ok(_) => status.set_status(JobStatus::Finished, None),
                Err(e) => status.set_status(JobStatus::Failed, Some(e.to_string())),
            }
            result
        })
        .map_err(|e| Error::io("spawn job master thread", "", e))?;
    Ok(JobHandle {
        master,
        commands: cmd_tx,
        shared,
        job_id,
    })
}

/// Deploys attempts of a job on a cluster (the jobmanager's side of it).
pub trait RemoteDeployer: Send + Sync {
    /// Starts every task of one attempt on the cluster's taskmanagers. `restore` is the
    /// checkpoint directory to restore from. Fails (and leaves nothing running) when too few
    /// slots are free or a taskmanager refuses.
    fn deploy(&self, request: DeployRequest<'_>) -> Result<RemoteAttempt>;
}

/// What a cluster needs to deploy one attempt.
pub struct DeployRequest<'a> {
    pub job_id: &'a str,
    pub attempt: u64,
    pub restore: Option<&'a str>,
    /// Every task of the plan: (chain, subtask, name), in task-index order.
    pub tasks: &'a [(usize, usize, String)],
    /// Record counters per task, kept current from the taskmanagers' heartbeats.
    pub metrics: Vec<Arc<TaskMetrics>>,
}

/// A deployed attempt as the job master sees it.
pub struct RemoteAttempt {
    pub controls: Vec<ControlTx>,
    pub events: Receiver<TaskEvent>,
    /// Cancels the attempt's tasks wherever they run.
    pub teardown: Box<dyn FnOnce() + Send>,
}

/// Where the job master's messages to one task go.
pub enum ControlTx {
    Local(Sender<TaskControl>),
    Remote(Box<dyn Fn(TaskControl) + Send>),
    /// The task runs elsewhere (a taskmanager's share of an attempt).
    Absent,
}

impl ControlTx {
    pub fn send(&self, c: TaskControl) {
        match self {
            ControlTx::Local(tx) => {
                let _ = tx.send(c);
            }
            ControlTx::Remote(f) => f(c),
            ControlTx::Absent => {}
        }
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

fn random_job_id() -> String {
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

/// What stays the same over every attempt of a job.
struct Plan {
    graph: JobGraph,
    chains: Vec<Vec<NodeId>>,
    job_id: String,
    storage: Option<CheckpointStorage>,
    remote: Option<Arc<dyn RemoteDeployer>>,
}

/// One deployment of the job (or, on a taskmanager, its share of one): its task threads and
/// their links.
pub struct Attempt {
    threads: Vec<JoinHandle<()>>,
    pub cancel: Arc<AtomicBool>,
    pub controls: Vec<ControlTx>,
    /// Per task: (chain index, subtask, name).
    pub tasks: Vec<(usize, usize, String)>,
    sources: Vec<usize>,
    pub events: Receiver<TaskEvent>,
    on_teardown: Option<Box<dyn FnOnce() + Send>>,
}

impl Attempt {
    fn broadcast(&self, c: TaskControl) {
        for tx in &self.controls {
            tx.send(c);
        }
    }

    pub fn teardown(mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(f) = self.on_teardown.take() {
            f();
        }
        drop(self.controls);
        for t in self.threads {
            // Panics are caught inside the thread; a join error carries nothing more.
            let _ = t.join();
        }
    }
}

/// Record counters of the tasks started in this process, by task name.
pub type NamedMetrics = Vec<(String, Arc<TaskMetrics>)>;

/// Every task of a plan, in task-index order: (chain, subtask, name).
pub fn task_list(graph: &JobGraph, chains: &[Vec<NodeId>]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (c, nodes) in chains.iter().enumerate() {
        let p = graph.nodes[nodes[0]].parallelism;
        let chain_name = nodes
            .iter()
            .map(|n| graph.nodes[*n].name.as_str())
            .collect::<Vec<_>>()
            .join(" -> ");
        for j in 0..p {
            out.push((c, j, format!("{chain_name} ({}/{p})", j + 1)));
        }
    }
    out
}

/// How a taskmanager's share of an attempt connects to the tasks that run elsewhere.
pub struct Hosting<'a> {
    /// Whether the task with this index runs here.
    pub local: &'a dyn Fn(usize) -> bool,
    /// A sender for input channel `channel` of remote task `task`.
    pub connect: &'a dyn Fn(usize, u32) -> Result<Sender<Envelope>>,
    /// Makes the input of local task `task` reachable from other taskmanagers.
    pub register_input: &'a dyn Fn(usize, Sender<Envelope>),
}

/// A taskmanager's share of one attempt: starts the tasks that `hosting` places here,
/// connected to the others through it.
pub fn deploy_share(
    graph: &JobGraph,
    restored: Option<&RestoredCheckpoint>,
    attempt_id: u64,
    hosting: &Hosting<'_>,
) -> Result<(Attempt, NamedMetrics)> {
    let chains = chains(graph);
    deploy_tasks(graph, &chains, restored, attempt_id, Some(hosting))
}

type Receivers = HashMap<(usize, usize), crossbeam_channel::Receiver<Envelope>>;

/// Checks that a checkpoint fits the job: same key groups, and (unless allowed) no state for
/// operators the job does not have.
fn check_restore(graph: &JobGraph, r: &RestoredCheckpoint) -> Result<()> {
    if r.metadata.max_parallelism != graph.config.max_parallelism {
        return Err(Error::Checkpoint(format!(
            "{} was written with max parallelism {}, the job has {}; key groups cannot be remapped",
            r.url, r.metadata.max_parallelism, graph.config.max_parallelism
        )));
    }
    let uids: Vec<String> = graph.nodes.iter().map(|n| n.uid()).collect();
    for op in &r.metadata.operators {
        if !uids.contains(&op.uid) && !graph.config.allow_non_restored_state {
            return Err(Error::Checkpoint(format!(
                "{} has state for operator `{}` ({}) that the job does not have; set allowNonRestoredState to drop it (job operators: {})",
                r.url,
                op.uid,
                op.name,
                uids.join(", ")
            )));
        }
    }
    Ok(())
}

/// Creates the channels and threads of one attempt, restoring every operator from
/// `restored` when given. On error nothing is left running.
fn deploy(plan: &Plan, restored: Option<&RestoredCheckpoint>, shared: &Shared) -> Result<Attempt> {
    let graph = &plan.graph;
    if let Some(r) = restored {
        check_restore(graph, r)?;
    }
    let attempt_id = mix_attempt();
    if let Some(remote) = &plan.remote {
        let tasks = task_list(graph, &plan.chains);
        let metrics: Vec<Arc<TaskMetrics>> = tasks
            .iter()
            .map(|_| Arc::new(TaskMetrics::default()))
            .collect();
        let r = remote.deploy(DeployRequest {
            job_id: &plan.job_id,
            attempt: attempt_id,
            restore: restored.map(|r| r.url.as_str()),
            tasks: &tasks,
            metrics: metrics.clone(),
        })?;
        let sources = tasks
            .iter()
            .enumerate()
            .filter(|(_, (c, _, _))| {
                matches!(
                    graph.nodes[plan.chains[*c][0]].kind,
                    NodeKind::Source { .. }
                )
            })
            .map(|(i, _)| i)
            .collect();
        if let Ok(mut m) = shared.metrics.lock() {
            *m = tasks
                .iter()
                .zip(metrics)
                .map(|((_, _, n), m)| (n.clone(), m))
                .collect();
        }
        return Ok(Attempt {
            threads: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            controls: r.controls,
            tasks,
            sources,
            events: r.events,
            on_teardown: Some(r.teardown),
        });
    }
    let (attempt, metrics) = deploy_tasks(graph, &plan.chains, restored, attempt_id, None)?;
    if let Ok(mut m) = shared.metrics.lock() {
        *m = metrics;
    }
    Ok(attempt)
}

/// Starts the tasks of one attempt that run in this process: all of them, or with `hosting`
/// those it places here.
fn deploy_tasks(
    graph: &JobGraph,
    chains: &[Vec<NodeId>],
    restored: Option<&RestoredCheckpoint>,
    attempt_id: u64,
    hosting: Option<&Hosting<'_>>,
) -> Result<(Attempt, NamedMetrics)> {
    let cfg = &graph.config;
    let mut offsets = Vec::with_capacity(chains.len());
    let mut chain_of = HashMap::new();
    let mut total = 0;
    for (c, nodes) in chains.iter().enumerate() {
        offsets.push(total);
        total += graph.nodes[nodes[0]].parallelism;
        for n in nodes {
            chain_of.insert(*n, c);
        }
    }
    let local = |task: usize| hosting.is_none_or(|h| (h.local)(task));

    // Input channels of every chain head subtask, and who sends on which channel.
    let mut receivers: Receivers = HashMap::new();
    let mut senders: HashMap<(usize, usize), Sender<Envelope>> = HashMap::new();
    let mut channel_inputs: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    // (edge index, upstream subtask) -> targets indexed like downstream subtasks
    let mut edge_targets: HashMap<(usize, usize), Vec<Target>> = HashMap::new();
    for (c, nodes) in chains.iter().enumerate() {
        let head = nodes[0];
        let p = graph.nodes[head].parallelism;
        if matches!(graph.nodes[head].kind, NodeKind::Source { .. }) {
            continue;
        }
        for j in 0..p {
            channel_inputs.insert((c, j), Vec::new());
            if !local(offsets[c] + j) {
                continue;
            }
            let (tx, rx) = bounded(cfg.channel_capacity);
            if let Some(h) = hosting {
                (h.register_input)(offsets[c] + j, tx.clone());
            }
            receivers.insert((c, j), rx);
            senders.insert((c, j), tx);
        }
        for (ei, e) in graph.edges.iter().enumerate().filter(|(_, e)| e.to == head) {
            let up_p = graph.nodes[e.from].parallelism;
            let up_chain = *chain_of
                .get(&e.from)
                .ok_or_else(|| Error::InvalidGraph("edge from a node in no chain".into()))?;
            for j in 0..p {
                let inputs = channel_inputs.entry((c, j)).or_default();
                let ups: Vec<usize> = if matches!(e.partitioning, Partitioning::Forward) {
                    vec![j]
                } else {
                    (0..up_p).collect()
                };
                for u in ups {
                    let channel = inputs.len() as u32;
                    inputs.push(e.input);
                    if !local(offsets[up_chain] + u) {
                        continue;
                    }
                    let tx = match (senders.get(&(c, j)), hosting) {
                        (Some(tx), _) => tx.clone(),
                        (None, Some(h)) => (h.connect)(offsets[c] + j, channel)?,
                        (None, None) => {
                            return Err(Error::InvalidGraph("missing channel".into()));
                        }
                    };
                    edge_targets
                        .entry((ei, u))
                        .or_default()
                        .push(Target::new(tx, channel));
                }
            }
        }
    }
    drop(senders);

    let (events_tx, events) = unbounded();
    let mut attempt = Attempt {
        threads: Vec::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        controls: Vec::new(),
        tasks: Vec::new(),
        sources: Vec::new(),
        events,
        on_teardown: None,
    };
    let mut metrics = Vec::new();
    let spawned = spawn_tasks(
        graph,
        chains,
        restored,
        attempt_id,
        &local,
        &events_tx,
        &mut receivers,
        &mut channel_inputs,
        &mut edge_targets,
        &mut attempt,
        &mut metrics,
    );
    if let Err(e) = spawned {
        // Stop what already started: a job runs whole or not at all.
        drop(receivers);
        attempt.teardown();
        return Err(e);
    }
    Ok((attempt, metrics))
}

fn mix_attempt() -> u64 {
    crate::key::mix64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32),
    )
}

#[allow(clippy::too_many_arguments)]
fn spawn_tasks(
    graph: &JobGraph,
    chains: &[Vec<NodeId>],
    restored: Option<&RestoredCheckpoint>,
    attempt_id: u64,
    local: &dyn Fn(usize) -> bool,
    events_tx: &Sender<TaskEvent>,
    receivers: &mut Receivers,
    channel_inputs: &mut HashMap<(usize, usize), Vec<usize>>,
    edge_targets: &mut HashMap<(usize, usize), Vec<Target>>,
    attempt: &mut Attempt,
    all_metrics: &mut Vec<(String, Arc<TaskMetrics>)>,
) -> Result<()> {
    let cfg = &graph.config;
    for (c, nodes) in chains.iter().enumerate() {
        let head = &graph.nodes[nodes[0]];
        let tail = *nodes.last().unwrap_or(&head.id);
        let p = head.parallelism;
        let chain_name = nodes
            .iter()
            .map(|n| graph.nodes[*n].name.as_str())
            .collect::<Vec<_>>()
            .join(" -> ");
        for j in 0..p {
            let task_name = format!("{chain_name} ({}/{p})", j + 1);
            let index = attempt.tasks.len();
            if !local(index) {
                attempt.controls.push(ControlTx::Absent);
                attempt.tasks.push((c, j, task_name));
                continue;
            }
            let mut ops = Vec::new();
            let mut node_ids = Vec::new();
            for n in nodes {
                let node = &graph.nodes[*n];
                if let NodeKind::Operator(factory) = &node.kind {
                    let ctx = OperatorContext {
                        name: node.name.clone(),
                        subtask: j,
                        parallelism: node.parallelism,
                        max_parallelism: cfg.max_parallelism,
                        uid: node.uid(),
                        attempt: attempt_id,
                    };
                    let mut op = factory(&ctx)?;
                    if let Some(state) = restored.and_then(|r| {
                        r.state_for(&ctx.uid, j, node.parallelism, cfg.max_parallelism)
                    }) {
                        op.restore_state(state).map_err(|e| {
                            Error::Checkpoint(format!(
                                "restoring operator `{}` ({}) subtask {j}: {e}",
                                node.name, ctx.uid
                            ))
                        })?;
                    }
                    op.open(&ctx)?;
                    ops.push(op);
                    node_ids.push(*n);
                }
            }
            let mut edges = Vec::new();
            for (ei, e) in graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.from == tail)
            {
                let targets = edge_targets.remove(&(ei, j)).unwrap_or_default();
                let down_p = graph.nodes[e.to].parallelism;
                let route = match &e.partitioning {
                    Partitioning::Forward => Route::Forward,
                    Partitioning::Hash(k) => Route::Hash {
                        key: k.clone(),
                        owner: key_group_owners(cfg.max_parallelism, down_p),
                    },
                    Partitioning::Rebalance => Route::Rebalance { next: j },
                    Partitioning::Broadcast => Route::Broadcast,
                };
                edges.push(EdgeOutput::new(e.side_output.clone(), route, targets));
            }
            let metrics = Arc::new(TaskMetrics::default());
            all_metrics.push((task_name.clone(), metrics.clone()));
            let emitter = Emitter::new(
                edges,
                cfg.batch_size,
                cfg.linger,
                cfg.max_parallelism,
                metrics.clone(),
                attempt.cancel.clone(),
            );
            let chain = Chain {
                ops,
                node_ids,
                emitter,
            };
            let (control_tx, control_rx) = unbounded();
            let link = TaskLink {
                index,
                control: control_rx,
                events: events_tx.clone(),
                cancel: attempt.cancel.clone(),
                mode: cfg.checkpoint.mode,
            };
            // A body hands its chain back. After a failure it goes to the master, which frees
            // it once the next attempt has restored (freeing a large state takes seconds, and
            // doing it while the next attempt restores slowed both down).
            type Body = Box<dyn FnOnce() -> (Result<()>, Chain) + Send>;
            let body: Body = match &head.kind {
                NodeKind::Source { source, watermarks } => {
                    let uid = head.uid();
                    let reader =
                        match restored.and_then(|r| r.state_for(&uid, j, p, cfg.max_parallelism)) {
                            Some(state) => {
                                source.restore_reader(j, p, &state.operator).map_err(|e| {
                                    Error::Checkpoint(format!(
                                        "restoring source `{}` ({uid}) subtask {j}: {e}",
                                        head.name
                                    ))
                                })?
                            }
                            None => source.create_reader(j, p)?,
                        };
                    let wm = watermarks
                        .clone()
                        .map(|s| SplitWatermarks::new(s, reader.splits()));
                    let node = head.id;
                    attempt.sources.push(index);
                    Box::new(move || {
                        let mut chain = chain;
                        let r = run_source(&mut chain, reader, node, wm, metrics, link);
                        (r, chain)
                    })
                }
                NodeKind::Operator(_) => {
                    let rx = receivers
                        .remove(&(c, j))
                        .ok_or_else(|| Error::InvalidGraph(format!("no input for {task_name}")))?;
                    let inputs = channel_inputs.remove(&(c, j)).unwrap_or_default();
                    Box::new(move || {
                        let mut chain = chain;
                        let r = run_input(&mut chain, rx, inputs, metrics, link);
                        (r, chain)
                    })
                }
            };
            let events = events_tx.clone();
            let name2 = task_name.clone();
            let cancel = attempt.cancel.clone();
            let handle = std::thread::Builder::new()
                .name(thread_name(&task_name))
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    let (result, chain) = match result {
                        Ok((r, chain)) => (Ok(r), Some(chain)),
                        Err(panic) => (Err(panic), None),
                    };
                    let error = match result {
                        Ok(Ok(())) | Ok(Err(Error::Cancelled)) => None,
                        Ok(Err(e)) => {
                            if !cancel.load(Ordering::Relaxed) {
                                tracing::error!(task = %name2, error = %e, "task failed");
                            }
                            Some(Error::TaskFailed {
                                task: name2,
                                message: e.to_string(),
                            })
                        }
                        Err(panic) => {
                            let message = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown panic".into());
                            Some(Error::TaskPanicked {
                                task: name2,
                                message,
                            })
                        }
                    };
                    let leftovers = if error.is_some() {
                        chain.map(Box::new)
                    } else {
                        drop(chain);
                        None
                    };
                    let _ = events.send(TaskEvent::Exited {
                        task: index,
                        error,
                        leftovers,
                    });
                })
                .map_err(|e| Error::io("spawn task thread", "", e))?;
            attempt.threads.push(handle);
            attempt.controls.push(ControlTx::Local(control_tx));
            attempt.tasks.push((c, j, task_name));
        }
    }
    Ok(())
}

fn thread_name(task: &str) -> String {
    task.chars().take(60).collect()
}

/// The result of writing one state file.
struct Upload {
    id: CheckpointId,
    result: Result<()>,
}

/// A checkpoint or savepoint in flight.
struct Pending {
    barrier: Barrier,
    started: Instant,
    storage: CheckpointStorage,
    /// Directory of the checkpoint within `storage`.
    dir: String,
    acked: Vec<bool>,
    uploads: usize,
    subtasks: HashMap<NodeId, Vec<SubtaskMetadata>>,
    reply: Option<Sender<Result<String>>>,
}

enum AttemptEnd {
    Finished,
    Cancelled,
    Stopped(String),
    Failed(Error),
}

/// The job master: supervises attempts, coordinates checkpoints.
struct Master {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    uploads: Receiver<Upload>,
    upload_tx: Sender<Upload>,
    next_id: CheckpointId,
    /// The first checkpoint id of this execution: a checkpoint of the job with a lower id
    /// was taken before what it started from (a previous run), so a failover never goes
    /// back to it.
    first_id: CheckpointId,
    /// What the job started from (restored again when no newer checkpoint exists).
    initial: Option<Arc<RestoredCheckpoint>>,
    /// Chains of failed tasks, freed after the next attempt is deployed.
    graveyard: Vec<Chain>,
}

impl Master {
    fn run(&mut self, first: Attempt) -> Result<JobOutcome> {
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
            self.shared
                .set_status(JobStatus::Restarting, Some(error.to_string()));
            attempt.teardown();
            attempt = loop {
                let Some(delay) = tracker.on_failure() else {
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
    fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(left) {
                Ok(Command::Cancel) => return true,
                Ok(Command::Savepoint { reply, .. }) | Ok(Command::Checkpoint { reply }) => {
                    let _ = reply.send(Err(Error::Checkpoint("the job is restarting".into())));
                }
                Err(_) => return false,
            }
        }
    }

    /// A cluster job's first deployment: retried while slots are missing, for up to
    /// five minutes (Flink's `slot.request.timeout`). `None` when cancelled meanwhile.
    fn first_remote_deploy(&mut self) -> Result<Option<Attempt>> {
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
    fn redeploy(&mut self) -> Result<Attempt> {
        let t0 = Instant::now();
        let latest = match &self.plan.storage {
            Some(s) => find_latest(s, &self.plan.job_id)?
                .filter(|c| c.id() >= self.first_id)
                .map(Arc::new),
            None => None,
        };
        tracing::info!(ms = t0.elapsed().as_millis() as u64, "checkpoint loaded");
        let from = latest.or_else(|| self.initial.clone());
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

    fn run_attempt(&mut self, attempt: Attempt) -> (AttemptEnd, Attempt) {
        let plan = self.plan.clone();
        let cfg = &plan.graph.config.checkpoint;
        let n = attempt.tasks.len();
        let mut pending: Vec<Pending> = Vec::new();
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
                    let Ok(ev) = ev else { return (AttemptEnd::Failed(Error::Cancelled), attempt) };
                    match ev {
                        TaskEvent::Exited { task, error, leftovers } => {
                            exited += 1;
                            if let Some(chain) = leftovers {
                                self.graveyard.push(*chain);
                            }
                            if let Some(e) = error {
                                for p in pending.drain(..) {
                                    self.abandon(p, &format!("the job failed: {e}"));
                                }
                                return (AttemptEnd::Failed(e), attempt);
                            }
                            let _ = task;
                            if exited == n {
                                if let Some(sp) = stopping.take() {
                                    return (AttemptEnd::Stopped(sp), attempt);
                                }
                                if final_sent {
                                    return (AttemptEnd::Finished, attempt);
                                }
                                return (AttemptEnd::Cancelled, attempt);
                            }
                        }
                        TaskEvent::Snapshot { task, id, states } => {
                            if let Some(p) = pending.iter_mut().find(|p| p.barrier.id == id) {
                                p.acked[task] = true;
                                let (_, subtask, _) = attempt.tasks[task];
                                if let Err(e) = self.store_states(p, subtask, states) {
                                    self.fail_checkpoint(&mut pending, id, &e.to_string(), &mut consecutive_failures);
                                }
                            }
                        }
                        TaskEvent::Declined { task, id, reason, finished } => {
                            let why = format!("declined by {}: {reason}", attempt.tasks[task].2);
                            if finished {
                                let mut uncounted = 0;
                                self.fail_checkpoint(&mut pending, id, &why, &mut uncounted);
                            } else {
                                self.fail_checkpoint(&mut pending, id, &why, &mut consecutive_failures);
                            }
                        }
                        TaskEvent::Finished { task, states } => {
                            finished[task] = Some(states);
                            if finished.iter().all(|f| f.is_some()) {
                                for p in pending.drain(..) {
                                    if let Some(r) = p.reply {
                                        let _ = r.send(Err(Error::Checkpoint("the job finished first".into())));
                                    }
                                }
                                if let Err(e) = self.final_checkpoint(&attempt, &mut finished) {
                                    return (AttemptEnd::Failed(e), attempt);
                                }
                                attempt.broadcast(TaskControl::Complete(FINAL_CHECKPOINT));
                                final_sent = true;
                            }
                        }
                    }
                }
                recv(self.uploads) -> up => {
                    if let Ok(up) = up {
                        if let Some(p) = pending.iter_mut().find(|p| p.barrier.id == up.id) {
                            p.uploads = p.uploads.saturating_sub(1);
                            if let Err(e) = up.result {
                                self.fail_checkpoint(&mut pending, up.id, &e.to_string(), &mut consecutive_failures);
                            }
                        }
                    }
                }
                recv(self.commands) -> cmd => {
                    match cmd {
                        Ok(Command::Cancel) | Err(_) => {
                            for p in pending.drain(..) {
                                self.abandon(p, "the job was cancelled");
                            }
                            return (AttemptEnd::Cancelled, attempt);
                        }
                        Ok(Command::Checkpoint { reply }) => {
                            match &plan.storage {
                                Some(storage) if finished.iter().all(|f| f.is_none()) && stopping.is_none() => {
                                    let dir = format!("{}/chk-{}", plan.job_id, self.next_id);
                                    self.trigger(&attempt, &mut pending, storage.clone(), dir, SnapshotKind::Checkpoint, false, Some(reply));
                                }
                                Some(_) => { let _ = reply.send(Err(Error::Checkpoint("the job is finishing; no checkpoint can be taken".into()))); }
                                None => { let _ = reply.send(Err(Error::config("state.checkpoints.dir", "checkpointing is not configured"))); }
                            }
                        }
                        Ok(Command::Savepoint { dir, stop, reply }) => {
                            if finished.iter().any(|f| f.is_some()) || stopping.is_some() {
                                let _ = reply.send(Err(Error::Checkpoint("the job is finishing; no savepoint can be taken".into())));
                            } else {
                                match self.savepoint_storage(dir.as_deref()) {
                                    Ok(storage) => {
                                        let id = self.next_id;
                                        let dir = format!("savepoint-{}-{id}", &plan.job_id[..plan.job_id.len().min(6)]);
                                        self.trigger(&attempt, &mut pending, storage, dir, SnapshotKind::Savepoint, stop, Some(reply));
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
            while let Some(i) = pending
                .iter()
                .position(|p| p.uploads == 0 && p.acked.iter().all(|a| *a))
            {
                let p = pending.remove(i);
                let (id, kind) = (p.barrier.id, p.barrier.kind);
                match self.complete(p) {
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
                        self.shared.stats(|s| s.failed += 1);
                        consecutive_failures += 1;
                    }
                }
            }
            // Timeouts.
            let now = Instant::now();
            let expired: Vec<CheckpointId> = pending
                .iter()
                .filter(|p| now.duration_since(p.started) > cfg.timeout)
                .map(|p| p.barrier.id)
                .collect();
            for id in expired {
                self.fail_checkpoint(&mut pending, id, "timed out", &mut consecutive_failures);
            }
            if consecutive_failures > cfg.tolerable_failures {
                return (
                    AttemptEnd::Failed(Error::Checkpoint(format!(
                        "{consecutive_failures} consecutive checkpoints failed, more than the {} tolerated",
                        cfg.tolerable_failures
                    ))),
                    attempt,
                );
            }
            // Periodic trigger.
            if let (Some(interval), Some(storage)) = (cfg.interval, &plan.storage) {
                let running = finished.iter().all(|f| f.is_none()) && stopping.is_none();
                let checkpoints = pending
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
                        &attempt,
                        &mut pending,
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

    #[allow(clippy::too_many_arguments)]
    fn trigger(
        &mut self,
        attempt: &Attempt,
        pending: &mut Vec<Pending>,
        storage: CheckpointStorage,
        dir: String,
        kind: SnapshotKind,
        stop: bool,
        reply: Option<Sender<Result<String>>>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let barrier = Barrier { id, kind, stop };
        pending.push(Pending {
            barrier,
            started: Instant::now(),
            storage,
            dir,
            acked: vec![false; attempt.tasks.len()],
            uploads: 0,
            subtasks: HashMap::new(),
            reply,
        });
        self.shared.stats(|s| s.triggered += 1);
        for t in &attempt.sources {
            attempt.controls[*t].send(TaskControl::Trigger(barrier));
        }
    }

    fn savepoint_storage(&self, dir: Option<&str>) -> Result<CheckpointStorage> {
        let cfg = &self.plan.graph.config.checkpoint;
        let dir = dir.or(cfg.savepoint_dir.as_deref()).ok_or_else(|| {
            Error::config(
                "state.savepoints.dir",
                "no savepoint directory given and none configured",
            )
        })?;
        CheckpointStorage::open(dir, &cfg.storage_options)
    }

    /// Encodes a task's states and starts their uploads.
    fn store_states(&self, p: &mut Pending, subtask: usize, states: TaskStates) -> Result<()> {
        let graph = &self.plan.graph;
        for (node, snap) in states {
            let n = &graph.nodes[node];
            let kgs = key_group_range(graph.config.max_parallelism, n.parallelism, subtask);
            let mut meta = SubtaskMetadata {
                subtask,
                key_groups: [kgs.start, kgs.end],
                file: None,
                size: 0,
                crc32: 0,
            };
            if !snap.is_empty() {
                let file = encode_state_file(snap);
                let name = format!("{}-{subtask}.state", n.uid());
                meta.size = file.size;
                meta.crc32 = file.crc32;
                let bytes = file.chunks;
                meta.file = Some(name.clone());
                p.uploads += 1;
                let tx = self.upload_tx.clone();
                let id = p.barrier.id;
                p.storage
                    .put_async(format!("{}/{name}", p.dir), bytes, move |result| {
                        let _ = tx.send(Upload { id, result });
                    });
            }
            p.subtasks.entry(node).or_default().push(meta);
        }
        Ok(())
    }

    fn metadata(
        &self,
        id: CheckpointId,
        kind: SnapshotKind,
        finished: bool,
        mut subtasks: HashMap<NodeId, Vec<SubtaskMetadata>>,
    ) -> CheckpointMetadata {
        let graph = &self.plan.graph;
        let operators = graph
            .nodes
            .iter()
            .filter_map(|n| {
                let mut subs = subtasks.remove(&n.id)?;
                subs.sort_by_key(|s| s.subtask);
                Some(OperatorMetadata {
                    uid: n.uid(),
                    name: n.name.clone(),
                    parallelism: n.parallelism,
                    subtasks: subs,
                })
            })
            .collect();
        CheckpointMetadata {
            format: METADATA_FORMAT.into(),
            version: FORMAT_VERSION,
            job_id: self.plan.job_id.clone(),
            checkpoint_id: id,
            kind,
            timestamp_ms: now_millis(),
            max_parallelism: graph.config.max_parallelism,
            finished,
            operators,
        }
    }

    /// Writes `_metadata` (the completion marker) and retires old checkpoints.
    fn complete(&mut self, p: Pending) -> Result<(String, bool)> {
        let id = p.barrier.id;
        let meta = self.metadata(id, p.barrier.kind, false, p.subtasks);
        let size = meta.state_size();
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Checkpoint(format!("encoding _metadata: {e}")))?;
        let r = p
            .storage
            .put(&format!("{}/_metadata", p.dir), Bytes::from(json));
        let path = p.storage.url_of(&p.dir);
        if let Err(e) = r {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(Error::Checkpoint(format!("{path}: {e}"))));
            }
            return Err(e);
        }
        if p.barrier.stop
            && let Some(storage) = &self.plan.storage
        {
            // Before the sinks commit it: see `restore::STOP_SAVEPOINT`.
            let marker = serde_json::json!({ "id": id, "path": path }).to_string();
            let file = format!("{}/{}", self.plan.job_id, restore::STOP_SAVEPOINT);
            if let Err(e) = storage.put(&file, Bytes::from(marker)) {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(Error::Checkpoint(format!("{path}: {e}"))));
                }
                return Err(e);
            }
        }
        let done = CompletedCheckpoint {
            id,
            kind: p.barrier.kind,
            path: path.clone(),
            timestamp_ms: meta.timestamp_ms,
            duration: p.started.elapsed(),
            state_size: size,
        };
        tracing::info!(checkpoint = id, path = %path, bytes = size, ms = done.duration.as_millis() as u64, "checkpoint complete");
        self.shared.stats(|s| {
            s.completed += 1;
            s.latest = Some(done.clone());
            s.history.push(done);
            if s.history.len() > 16 {
                s.history.remove(0);
            }
        });
        if let Some(reply) = p.reply {
            let _ = reply.send(Ok(path.clone()));
        }
        if p.barrier.kind == SnapshotKind::Checkpoint {
            self.retire(id);
        }
        Ok((path, p.barrier.stop))
    }

    /// Deletes checkpoints older than the newest `state.checkpoints.num-retained`.
    fn retire(&self, newest: CheckpointId) {
        let Some(storage) = &self.plan.storage else {
            return;
        };
        let keep = self.plan.graph.config.checkpoint.retained.max(1);
        let job = &self.plan.job_id;
        match checkpoint_ids(storage, job) {
            Ok(ids) => {
                for id in ids.into_iter().filter(|i| *i <= newest).skip(keep) {
                    if let Err(e) = storage.delete_dir(&format!("{job}/chk-{id}")) {
                        tracing::warn!(checkpoint = id, error = %e, "cannot delete old checkpoint");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list checkpoints"),
        }
    }

    /// Drops a checkpoint in flight when its attempt ends: tells whoever waits for it and
    /// deletes what was written.
    fn abandon(&self, p: Pending, why: &str) {
        if let Some(r) = p.reply {
            let _ = r.send(Err(Error::Checkpoint(format!(
                "checkpoint {} abandoned: {why}",
                p.barrier.id
            ))));
        }
        let _ = p.storage.delete_dir(&p.dir);
    }

    fn fail_checkpoint(
        &self,
        pending: &mut Vec<Pending>,
        id: CheckpointId,
        why: &str,
        consecutive: &mut u32,
    ) {
        let Some(i) = pending.iter().position(|p| p.barrier.id == id) else {
            return;
        };
        let p = pending.remove(i);
        tracing::warn!(checkpoint = id, reason = why, "checkpoint failed");
        self.shared.stats(|s| s.failed += 1);
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(Error::Checkpoint(format!(
                "savepoint {id} failed: {why}"
            ))));
        } else {
            *consecutive += 1;
        }
        let _ = p.storage.delete_dir(&p.dir);
    }

    /// Every task finished: store their final states as a finished checkpoint (when
    /// checkpointing is configured), so a restart after this point restores the end state.
    fn final_checkpoint(
        &mut self,
        attempt: &Attempt,
        finished: &mut [Option<TaskStates>],
    ) -> Result<()> {
        let Some(storage) = self.plan.storage.clone() else {
            return Ok(());
        };
        let id = self.next_id;
        self.next_id += 1;
        let dir = format!("{}/chk-{id}", self.plan.job_id);
        let (tx, rx) = unbounded();
        let mut p = Pending {
            barrier: Barrier {
                id,
                kind: SnapshotKind::Checkpoint,
                stop: false,
            },
            started: Instant::now(),
            storage: storage.clone(),
            dir: dir.clone(),
            acked: Vec::new(),
            uploads: 0,
            subtasks: HashMap::new(),
            reply: None,
        };
        let upload_tx = std::mem::replace(&mut self.upload_tx, tx);
        let mut result = Ok(());
        for (task, states) in finished.iter_mut().enumerate() {
            let (_, subtask, _) = attempt.tasks[task];
            if let Some(states) = states.take() {
                result = result.and(self.store_states(&mut p, subtask, states));
            }
        }
        for _ in 0..p.uploads {
            match rx.recv() {
                Ok(Upload { result: Err(e), .. }) => result = result.and(Err(e)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.upload_tx = upload_tx;
        result?;
        let meta = self.metadata(id, SnapshotKind::Checkpoint, true, p.subtasks);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Checkpoint(format!("encoding _metadata: {e}")))?;
        storage.put(&format!("{dir}/_metadata"), Bytes::from(json))?;
        self.retire(id);
        Ok(())
    }
}
