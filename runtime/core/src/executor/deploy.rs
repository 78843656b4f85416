//! Deployment: one attempt of a job turned into task threads and the channels between them,
//! in this process or (for a cluster) a taskmanager's share of it; the interface a cluster
//! implements to deploy attempts remotely ([`RemoteDeployer`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::checkpoint::{CheckpointStorage, RestoredCheckpoint};
use crate::error::{Error, Result};
use crate::exchange::{
    EdgeOutput, Emitter, Envelope, Route, Target, TaskMetrics, key_group_owners,
};
use crate::graph::{JobGraph, NodeId, NodeKind, Partitioning};
use crate::operator::OperatorContext;
use crate::task::{Chain, TaskControl, TaskEvent, TaskLink, run_input, run_source};
use crate::watermark::SplitWatermarks;

use super::chaining::*;
use super::job::*;

/// Deploys attempts of a job on a cluster (the jobmanager's side of it).
pub trait RemoteDeployer: Send + Sync {
    /// Starts every task of one attempt on the cluster's taskmanagers. `restore` is the
    /// checkpoint directory to restore from. Fails (and leaves nothing running) when too few
    /// slots are free or a taskmanager refuses.
    fn deploy(&self, request: DeployRequest<'_>) -> Result<RemoteAttempt>;

    /// The job ended in `status` (called before the job reports it): a cluster that runs
    /// jobs again after a restart records here that this one must not be.
    fn job_ended(&self, _job_id: &str, _status: JobStatus) {}
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

/// What stays the same over every attempt of a job.
pub(super) struct Plan {
    pub(super) graph: JobGraph,
    pub(super) chains: Vec<Vec<NodeId>>,
    pub(super) job_id: String,
    pub(super) storage: Option<CheckpointStorage>,
    pub(super) remote: Option<Arc<dyn RemoteDeployer>>,
}

/// One deployment of the job (or, on a taskmanager, its share of one): its task threads and
/// their links.
pub struct Attempt {
    pub(super) threads: Vec<JoinHandle<()>>,
    pub cancel: Arc<AtomicBool>,
    pub controls: Vec<ControlTx>,
    /// Per task: (chain index, subtask, name).
    pub tasks: Vec<(usize, usize, String)>,
    pub(super) sources: Vec<usize>,
    pub events: Receiver<TaskEvent>,
    pub(super) on_teardown: Option<Box<dyn FnOnce() + Send>>,
}

impl Attempt {
    pub(super) fn broadcast(&self, c: TaskControl) {
        for tx in &self.controls {
            tx.send(c.clone());
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

pub(super) type Receivers = HashMap<(usize, usize), crossbeam_channel::Receiver<Envelope>>;

/// Checks that a checkpoint fits the job: same key groups, and (unless allowed) no state for
/// operators the job does not have.
pub(super) fn check_restore(graph: &JobGraph, r: &RestoredCheckpoint) -> Result<()> {
    if r.metadata.max_parallelism != graph.config.max_parallelism {
        return Err(Error::SnapshotIncompatible(format!(
            "{} was written with max parallelism {}, the job has {}; key groups cannot be remapped",
            r.url, r.metadata.max_parallelism, graph.config.max_parallelism
        )));
    }
    let uids: Vec<String> = graph.nodes.iter().map(|n| n.uid()).collect();
    for op in &r.metadata.operators {
        let node = uids
            .iter()
            .position(|u| *u == op.uid)
            .map(|i| &graph.nodes[i]);
        if let (Some(node), Some(found)) = (node, &op.state_layout)
            && node.state_layout() != found
            && !node.reads_layouts.contains(&found.as_str())
        {
            return Err(Error::SnapshotIncompatible(format!(
                "{} holds the state of operator `{}` ({}) in the layout `{found}`, but the job runs it with the layout `{}`: {}",
                r.url,
                op.uid,
                op.name,
                node.state_layout(),
                layout_hint(found, node.state_layout())
            )));
        }
        if node.is_none() && !graph.config.allow_non_restored_state {
            return Err(Error::SnapshotIncompatible(format!(
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

/// Why two state layouts of one operator can differ, and what to do.
fn layout_hint(found: &str, want: &str) -> &'static str {
    use crate::graph::DEFAULT_STATE_LAYOUT;
    if found == DEFAULT_STATE_LAYOUT || want == DEFAULT_STATE_LAYOUT {
        "window aggregates (SQL's, and the DataStream API's `sliced_aggregate`), SQL's inner \
         interval, window and regular joins, and the Top-N of a bounded input keep their \
         state on the heap in layouts of their own with `state.backend.type: hashmap` and in \
         the state backend's stores with `disk`; they move from `hashmap` to `disk` through \
         a savepoint, but not back (a window's accumulator cannot be split into slices \
         again): resume with the state backend the snapshot was taken with"
    } else {
        "the operator was changed since the snapshot was taken; give the new operator \
         another uid (and allowNonRestoredState to drop the old state)"
    }
}

/// Creates the channels and threads of one attempt, restoring every operator from
/// `restored` when given. On error nothing is left running.
pub(super) fn deploy(
    plan: &Plan,
    restored: Option<&RestoredCheckpoint>,
    shared: &Shared,
) -> Result<Attempt> {
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
pub(super) fn deploy_tasks(
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

pub(super) fn mix_attempt() -> u64 {
    crate::key::mix64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32),
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_tasks(
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
                    let state = match restored {
                        Some(r) => {
                            r.state_for(&ctx.uid, j, node.parallelism, cfg.max_parallelism)?
                        }
                        None => None,
                    };
                    if let Some(state) = state {
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
                cfg.buffer_timeout(),
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
                    let state = match restored {
                        Some(r) => r.state_for(&uid, j, p, cfg.max_parallelism)?,
                        None => None,
                    };
                    let reader = match state {
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

pub(super) fn thread_name(task: &str) -> String {
    task.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::StreamExecutionEnvironment;
    use crate::checkpoint::RestoreFrom;
    use crate::executor::chains;
    use crate::testing::SequenceSource;

    fn values(rows: &[crate::rows::Row]) -> Vec<i64> {
        let mut v: Vec<i64> = rows.iter().filter_map(|r| r[0].as_i64()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn tasks_are_named_by_chain_and_subtask_as_flink_names_them() {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        let _ = env
            .from_source(SequenceSource::new(10, 5), None)
            .rebalance()
            .collect();
        let g = env.graph();
        let tasks = task_list(&g, &chains(&g));
        assert_eq!(tasks.len(), 4, "{tasks:?}");
        assert_eq!(tasks[0].0, 0);
        assert_eq!(tasks[1].1, 1);
        assert!(tasks[0].2.starts_with("Source"), "{tasks:?}");
        assert!(tasks[1].2.ends_with("(2/2)"), "{tasks:?}");
    }

    #[test]
    fn every_record_crosses_a_redistributing_edge_once() {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(3);
        let out = env
            .from_source(SequenceSource::new(10_000, 64), None)
            .rebalance()
            .filter_rows(|_| true)
            .collect();
        env.execute().expect("job runs");
        assert_eq!(values(&out.rows()), (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_checkpoint_of_other_key_groups_or_operators_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |max_parallelism: u16, without_gone: bool, restore: bool| {
            let env = StreamExecutionEnvironment::new();
            let d = dir.path().to_string_lossy().to_string();
            env.configure(move |c| {
                c.job_id = Some("0123456789abcdef0123456789abcdef".into());
                c.max_parallelism = max_parallelism;
                c.checkpoint.dir = Some(d);
                c.checkpoint.interval = Some(Duration::from_millis(20));
                c.restore = restore.then_some(RestoreFrom::Latest);
            });
            let mut src = SequenceSource::new(2_000, 10);
            src.pause = Duration::from_millis(1);
            let s = env.from_source(src, None).uid("seq");
            let s = if without_gone {
                s
            } else {
                s.filter_rows(|_| true).uid("gone")
            };
            let _ = s.collect();
            env.execute()
        };
        run(128, false, false).expect("the first run writes checkpoints");
        let e = run(64, false, true).expect_err("another max parallelism");
        assert!(e.to_string().contains("max parallelism 128"), "{e}");
        let e = run(128, true, true).expect_err("an operator the job lost");
        assert!(
            e.to_string().contains("`gone`") && e.to_string().contains("allowNonRestoredState"),
            "{e}"
        );
    }
}
