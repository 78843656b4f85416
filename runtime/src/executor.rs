//! Turns a [`JobGraph`] into running tasks in this process (the mini-cluster): operators are
//! chained, every chain runs once per parallel subtask on its own thread, and chains are
//! connected by bounded channels.
//!
//! Chaining rule (Flink's): node B joins the chain of A when A→B is A's only output, B's only
//! input, a forward edge of the main output, and both have the same parallelism.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use crate::error::{Error, Result};
use crate::exchange::{
    EdgeOutput, Emitter, Envelope, Route, Target, TaskMetrics, key_group_owners,
};
use crate::graph::{JobGraph, NodeId, NodeKind, Partitioning};
use crate::operator::OperatorContext;
use crate::task::{Chain, run_input, run_source};
use crate::watermark::SplitWatermarks;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every source ended and every task finished.
    Finished,
    /// The job was cancelled.
    Cancelled,
}

struct Shared {
    cancel: Arc<AtomicBool>,
    cancelled_by_user: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn fail(&self, err: Error) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// A running job: cancel it or wait for it.
pub struct JobHandle {
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    metrics: Vec<(String, Arc<TaskMetrics>)>,
}

impl JobHandle {
    /// Asks every task to stop; [`wait`](Self::wait) then returns `Cancelled`.
    pub fn cancel(&self) {
        self.shared.cancelled_by_user.store(true, Ordering::SeqCst);
        self.shared.cancel.store(true, Ordering::SeqCst);
    }

    /// True when every task thread has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Records in and out per task so far, as `(task name, in, out)`.
    pub fn task_metrics(&self) -> Vec<(String, u64, u64)> {
        self.metrics
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    m.records_in.load(Ordering::Relaxed),
                    m.records_out.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Waits for every task; the first task failure is the job's error.
    pub fn wait(self) -> Result<JobOutcome> {
        for t in self.threads {
            // Panics are caught inside the thread; a join error cannot carry more information.
            let _ = t.join();
        }
        let err = self.shared.error.lock().ok().and_then(|mut e| e.take());
        match err {
            Some(e) => Err(e),
            None if self.shared.cancelled_by_user.load(Ordering::SeqCst) => {
                Ok(JobOutcome::Cancelled)
            }
            None => Ok(JobOutcome::Finished),
        }
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

/// Starts a job in this process.
pub fn execute(graph: JobGraph) -> Result<JobHandle> {
    validate(&graph)?;
    let cfg = graph.config.clone();
    let chains = chains(&graph);
    let mut chain_of = vec![0; graph.nodes.len()];
    for (c, nodes) in chains.iter().enumerate() {
        for n in nodes {
            chain_of[*n] = c;
        }
    }

    // Input channels of every chain head subtask, and who sends on which channel.
    let mut receivers: HashMap<(usize, usize), crossbeam_channel::Receiver<Envelope>> =
        HashMap::new();
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
            let (tx, rx) = bounded(cfg.channel_capacity);
            receivers.insert((c, j), rx);
            senders.insert((c, j), tx);
            channel_inputs.insert((c, j), Vec::new());
        }
        for (ei, e) in graph.edges.iter().enumerate().filter(|(_, e)| e.to == head) {
            let up_p = graph.nodes[e.from].parallelism;
            for j in 0..p {
                let inputs = channel_inputs.entry((c, j)).or_default();
                let tx = senders
                    .get(&(c, j))
                    .cloned()
                    .ok_or_else(|| Error::InvalidGraph("missing channel".into()))?;
                let ups: Vec<usize> = if matches!(e.partitioning, Partitioning::Forward) {
                    vec![j]
                } else {
                    (0..up_p).collect()
                };
                for u in ups {
                    let channel = inputs.len() as u32;
                    inputs.push(e.input);
                    edge_targets.entry((ei, u)).or_default().push(Target {
                        tx: tx.clone(),
                        channel,
                    });
                }
            }
        }
    }
    drop(senders);

    let shared = Arc::new(Shared {
        cancel: Arc::new(AtomicBool::new(false)),
        cancelled_by_user: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let mut threads = Vec::new();
    let mut all_metrics = Vec::new();
    let spawned = spawn_tasks(
        &graph,
        &chains,
        &shared,
        &mut receivers,
        &mut channel_inputs,
        &mut edge_targets,
        &mut threads,
        &mut all_metrics,
    );
    if let Err(e) = spawned {
        // Stop what already started: a job runs whole or not at all.
        shared.cancel.store(true, Ordering::SeqCst);
        drop(receivers);
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    Ok(JobHandle {
        threads,
        shared,
        metrics: all_metrics,
    })
}

type Receivers = HashMap<(usize, usize), crossbeam_channel::Receiver<Envelope>>;

#[allow(clippy::too_many_arguments)]
fn spawn_tasks(
    graph: &JobGraph,
    chains: &[Vec<NodeId>],
    shared: &Arc<Shared>,
    receivers: &mut Receivers,
    channel_inputs: &mut HashMap<(usize, usize), Vec<usize>>,
    edge_targets: &mut HashMap<(usize, usize), Vec<Target>>,
    threads: &mut Vec<JoinHandle<()>>,
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
            let mut ops = Vec::new();
            for n in nodes {
                let node = &graph.nodes[*n];
                if let NodeKind::Operator(factory) = &node.kind {
                    let ctx = OperatorContext {
                        name: node.name.clone(),
                        subtask: j,
                        parallelism: node.parallelism,
                        max_parallelism: cfg.max_parallelism,
                    };
                    let mut op = factory(&ctx)?;
                    op.open(&ctx)?;
                    ops.push(op);
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
                shared.cancel.clone(),
            );
            let chain = Chain { ops, emitter };
            let cancel = shared.cancel.clone();
            let body: Box<dyn FnOnce() -> Result<()> + Send> = match &head.kind {
                NodeKind::Source { source, watermarks } => {
                    let reader = source.create_reader(j, p)?;
                    let wm = watermarks
                        .clone()
                        .map(|s| SplitWatermarks::new(s, reader.splits()));
                    Box::new(move || run_source(chain, reader, wm, metrics, cancel))
                }
                NodeKind::Operator(_) => {
                    let rx = receivers
                        .remove(&(c, j))
                        .ok_or_else(|| Error::InvalidGraph(format!("no input for {task_name}")))?;
                    let inputs = channel_inputs.remove(&(c, j)).unwrap_or_default();
                    Box::new(move || run_input(chain, rx, inputs, metrics, cancel))
                }
            };
            let shared2 = shared.clone();
            let name2 = task_name.clone();
            let handle = std::thread::Builder::new()
                .name(thread_name(&task_name))
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(Error::Cancelled)) => shared2.cancel.store(true, Ordering::SeqCst),
                        Ok(Err(e)) => {
                            tracing::error!(task = %name2, error = %e, "task failed");
                            shared2.fail(Error::TaskFailed {
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
                            shared2.fail(Error::TaskPanicked {
                                task: name2,
                                message,
                            })
                        }
                    }
                })
                .map_err(|e| Error::io("spawn task thread", "", e))?;
            threads.push(handle);
        }
    }
    Ok(())
}

fn thread_name(task: &str) -> String {
    task.chars().take(60).collect()
}
