//! The logical job graph: operators with their parallelism, connected by edges that say how
//! records are distributed (forward, hash by key, rebalance, broadcast). The DataStream API
//! builds it; the executor turns it into chained, parallel tasks.

use std::fmt;
use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::checkpoint::{CheckpointConfig, RestartStrategy, RestoreFrom};
use crate::key::{DEFAULT_MAX_PARALLELISM, KeySelector};
use crate::operator::OperatorFactory;
use crate::source::SourceRef;
use crate::state::StateBackendConfig;
use crate::watermark::WatermarkStrategy;

/// Index of a node in its graph.
pub type NodeId = usize;

/// How records cross an edge between parallel instances.
#[derive(Clone)]
pub enum Partitioning {
    /// Subtask i to subtask i (both sides must have the same parallelism).
    Forward,
    /// By key group of the key: every record of a key reaches the same subtask.
    Hash(KeySelector),
    /// Round-robin over downstream subtasks.
    Rebalance,
    /// Every record to every downstream subtask.
    Broadcast,
}

impl fmt::Debug for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Forward => write!(f, "FORWARD"),
            Partitioning::Hash(k) => write!(f, "HASH[{}]", k.column_names().join(", ")),
            Partitioning::Rebalance => write!(f, "REBALANCE"),
            Partitioning::Broadcast => write!(f, "BROADCAST"),
        }
    }
}

/// What a node does.
#[derive(Clone)]
pub enum NodeKind {
    /// Reads from a connector, assigning watermarks per split.
    Source {
        source: SourceRef,
        watermarks: Option<WatermarkStrategy>,
    },
    /// Transforms its inputs.
    Operator(OperatorFactory),
}

/// An operator of the job.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub parallelism: usize,
    pub kind: NodeKind,
    /// Schema of the main output.
    pub schema: SchemaRef,
    /// Stable id for state mapping (`None`: derived from position and name).
    pub uid: Option<String>,
    /// How the operator lays out its state, when it is not the keyed store's layout
    /// ([`DEFAULT_STATE_LAYOUT`]): recorded in checkpoints, so that a restore into an
    /// operator that keeps its state otherwise is refused by name.
    pub state_layout: Option<&'static str>,
    /// Other layouts the operator converts when it restores them (a window aggregate on
    /// the disk backend reads the heap backend's slices): a snapshot taken with another
    /// state backend restores into it.
    pub reads_layouts: Vec<&'static str>,
}

/// The state layout of operators that keep keyed state in the state backend's stores (and of
/// those without keyed state).
pub const DEFAULT_STATE_LAYOUT: &str = "keyed-store";

impl Node {
    /// The operator's stable id: the explicit uid, or `{id}-{name}` made file-name safe.
    pub fn uid(&self) -> String {
        self.uid.clone().unwrap_or_else(|| {
            let slug: String = self
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{}-{}", self.id, slug.trim_matches('-'))
        })
    }

    /// How the operator lays out its state (see [`Node::state_layout`]).
    pub fn state_layout(&self) -> &'static str {
        self.state_layout.unwrap_or(DEFAULT_STATE_LAYOUT)
    }
}

/// A connection between two nodes.
#[derive(Clone, Debug)]
pub struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub partitioning: Partitioning,
    /// `Some(tag)` when the edge carries the side output `tag` of `from`.
    pub side_output: Option<String>,
    /// Which input of `to` this is (0, or 1 for the second input of a two-input operator).
    pub input: usize,
}

/// Runtime knobs of a job (Flink's names in comments).
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// Rows per batch that sources and exchanges aim for.
    pub batch_size: usize,
    /// Longest a partly filled batch waits in an exchange before it is sent
    /// (`execution.buffer-timeout.interval`; zero sends every batch at once).
    pub linger: Duration,
    /// `execution.buffer-timeout.enabled`: when false, partly filled batches wait until they
    /// are full or a watermark, barrier or the end of input flushes them (throughput first).
    pub buffer_timeout_enabled: bool,
    /// Batches in flight per channel: the bound that makes backpressure.
    pub channel_capacity: usize,
    /// Number of key groups (`pipeline.max-parallelism`).
    pub max_parallelism: u16,
    /// Default parallelism of new operators (`parallelism.default`).
    pub parallelism: usize,
    /// Whether forward edges of equal parallelism fuse into one task (`pipeline.operator-chaining`).
    pub chaining: bool,
    /// The job's id: names its checkpoint directory, so a restarted process finds its own
    /// checkpoints (`pipeline.job-id`); random when not set (`flink-rs run` derives a stable
    /// one, see [`crate::executor::derived_job_id`]).
    pub job_id: Option<String>,
    /// The job's name (`pipeline.name`).
    pub pipeline_name: Option<String>,
    /// Checkpointing (`execution.checkpointing.*`, `state.checkpoints.*`).
    pub checkpoint: CheckpointConfig,
    /// `restart-strategy.*`.
    pub restart: RestartStrategy,
    /// Where the job starts from (`execution.savepoint.path`; `latest` for the newest
    /// checkpoint of `job_id`).
    pub restore: Option<RestoreFrom>,
    /// `execution.savepoint.ignore-unclaimed-state`: allow a savepoint with state for
    /// operators the job no longer has.
    pub allow_non_restored_state: bool,
    /// The keyed-state backend (`state.backend.type`, `taskmanager.memory.managed.size`,
    /// `io.tmp.dirs`).
    pub state_backend: StateBackendConfig,
    /// `flink-rs.filesystem.allowed-paths`: where the job's files may be (a cluster setting;
    /// `None`: anywhere).
    pub allowed_paths: Option<crate::paths::AllowedPaths>,
}

impl ExecutionConfig {
    /// How long a partly filled batch may wait in an exchange: `None` when only a full
    /// batch (or a control element) sends it.
    pub fn buffer_timeout(&self) -> Option<Duration> {
        self.buffer_timeout_enabled.then_some(self.linger)
    }
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            batch_size: 8192,
            linger: Duration::from_millis(100),
            buffer_timeout_enabled: true,
            channel_capacity: 8,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            parallelism: 1,
            chaining: true,
            job_id: None,
            pipeline_name: None,
            checkpoint: CheckpointConfig::default(),
            restart: RestartStrategy::default(),
            restore: None,
            allow_non_restored_state: false,
            state_backend: StateBackendConfig::default(),
            allowed_paths: None,
        }
    }
}

/// A complete job: nodes in topological order (every edge goes from a lower to a higher id).
#[derive(Clone, Default)]
pub struct JobGraph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub config: ExecutionConfig,
}

impl JobGraph {
    /// Edges leaving `node`.
    pub fn outputs(&self, node: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.from == node)
    }

    /// Edges entering `node`.
    pub fn inputs(&self, node: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.to == node)
    }

    /// A human-readable plan: one line per operator with its parallelism and inputs.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let kind = match n.kind {
                NodeKind::Source { .. } => "Source",
                NodeKind::Operator(_) => "Operator",
            };
            s.push_str(&format!(
                "[{}] {} {} (parallelism {})",
                n.id, kind, n.name, n.parallelism
            ));
            let ins: Vec<String> = self
                .inputs(n.id)
                .map(|e| {
                    let side = e
                        .side_output
                        .as_ref()
                        .map(|t| format!(" side `{t}`"))
                        .unwrap_or_default();
                    format!("{:?} from [{}]{}", e.partitioning, e.from, side)
                })
                .collect();
            if !ins.is_empty() {
                s.push_str(" <- ");
                s.push_str(&ins.join(", "));
            }
            s.push('\n');
        }
        s
    }
}
