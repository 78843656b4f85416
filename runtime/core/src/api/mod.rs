//! The Rust DataStream API: build a job graph fluently, then execute it.
//!
//! Users reach it through the `flink-rs` crate's prelude (`use flink_rs::prelude::*`), which
//! also brings the connectors; its crate documentation has a whole job.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

mod collect;
pub mod print;

pub use collect::{CollectSink, Collected};
pub use print::PrintSink;

use crate::error::{Error, Result};
use crate::executor::{JobHandle, JobOutcome, execute};
use crate::graph::{Edge, ExecutionConfig, JobGraph, Node, NodeId, NodeKind, Partitioning};
use crate::key::KeySelector;
use crate::operator::{Operator, OperatorContext, OperatorFactory};
use crate::operators::{
    FilterOperator, FlatMapRowsOperator, IdentityOperator, MapBatchOperator, ProcessFunction,
    ProcessOperator, SinkOperator,
};
use crate::rows::{Row, row_at};
use crate::source::{Sink, Source};
use crate::state::{StateBackend, StateBackendConfig};
use crate::watermark::WatermarkStrategy;
use crate::window::{
    AggregateFunction, AggregateLogic, Count, ProcessLogic, ProcessWindowFunction, Reduce,
    WindowLogic, WindowOperator, WindowSpec, Windows, window_output_schema,
};

struct Builder {
    graph: JobGraph,
    /// Set by [`StreamExecutionEnvironment::set_state_backend`]; otherwise the configured one.
    explicit_backend: Option<Arc<dyn StateBackend>>,
    /// The configured backend, made once for the configuration it was made from.
    configured_backend: Option<(StateBackendConfig, Arc<dyn StateBackend>)>,
    side_schemas: HashMap<(NodeId, String), SchemaRef>,
}

impl Builder {
    /// The backend of operators created now: the explicit one, else the configured one (one
    /// instance per configuration, so all the job's stores share its memory budget).
    fn backend(&mut self) -> Arc<dyn StateBackend> {
        if let Some(b) = &self.explicit_backend {
            return b.clone();
        }
        let config = &self.graph.config.state_backend;
        match &self.configured_backend {
            Some((c, b)) if c == config => b.clone(),
            _ => {
                let b = config.build();
                self.configured_backend = Some((config.clone(), b.clone()));
                b
            }
        }
    }
}

/// Where a job is assembled (Flink's `StreamExecutionEnvironment`).
#[derive(Clone)]
pub struct StreamExecutionEnvironment {
    inner: Rc<RefCell<Builder>>,
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamExecutionEnvironment {
    /// An environment with default configuration (parallelism 1, in-memory state).
    pub fn new() -> Self {
        Self::with_config(ExecutionConfig::default())
    }

    /// An environment with the given configuration.
    pub fn with_config(config: ExecutionConfig) -> Self {
        StreamExecutionEnvironment {
            inner: Rc::new(RefCell::new(Builder {
                graph: JobGraph {
                    nodes: Vec::new(),
                    edges: Vec::new(),
                    config,
                },
                explicit_backend: None,
                configured_backend: None,
                side_schemas: HashMap::new(),
            })),
        }
    }

    /// Default parallelism for operators created from now on.
    pub fn set_parallelism(&self, parallelism: usize) -> &Self {
        self.inner.borrow_mut().graph.config.parallelism = parallelism.max(1);
        self
    }

    /// Replaces the state backend for operators created from now on.
    /// Without one, operators use the backend the configuration names
    /// (`state.backend.type`, see [`ExecutionConfig::state_backend`]).
    pub fn set_state_backend(&self, backend: Arc<dyn StateBackend>) -> &Self {
        self.inner.borrow_mut().explicit_backend = Some(backend);
        self
    }

    /// Where this job's files may be (`flink-rs.filesystem.allowed-paths`), for connectors
    /// that open paths.
    pub fn allowed_paths(&self) -> Option<crate::paths::AllowedPaths> {
        self.inner.borrow().graph.config.allowed_paths.clone()
    }

    /// Adjusts the configuration.
    pub fn configure(&self, f: impl FnOnce(&mut ExecutionConfig)) -> &Self {
        f(&mut self.inner.borrow_mut().graph.config);
        self
    }

    /// A stream read from `source`, with event time from `watermarks` (per source split).
    pub fn from_source(
        &self,
        source: impl Source,
        watermarks: Option<WatermarkStrategy>,
    ) -> DataStream {
        let schema = source.schema();
        let time_column = watermarks.as_ref().map(|w| w.timestamp_column.clone());
        let mut b = self.inner.borrow_mut();
        let id = b.graph.nodes.len();
        let parallelism = b.graph.config.parallelism;
        b.graph.nodes.push(Node {
            id,
            name: "Source".into(),
            parallelism,
            kind: NodeKind::Source {
                source: Arc::new(source),
                watermarks,
            },
            schema: schema.clone(),
            uid: None,
            state_layout: None,
            reads_layouts: Vec::new(),
        });
        drop(b);
        DataStream {
            env: self.inner.clone(),
            node: id,
            side: None,
            schema,
            time_column,
            partitioning: None,
        }
    }

    /// The job graph built so far.
    pub fn graph(&self) -> JobGraph {
        self.inner.borrow().graph.clone()
    }

    /// Starts the job and returns at once.
    pub fn execute_async(&self) -> Result<JobHandle> {
        execute(self.graph())
    }

    /// Runs the job to its end (bounded inputs) or until it fails.
    pub fn execute(&self) -> Result<JobOutcome> {
        self.execute_async()?.wait()
    }
}

/// A stream of batches with one schema (Flink's `DataStream`).
#[derive(Clone)]
pub struct DataStream {
    env: Rc<RefCell<Builder>>,
    node: NodeId,
    side: Option<String>,
    schema: SchemaRef,
    time_column: Option<String>,
    partitioning: Option<Partitioning>,
}

impl DataStream {
    /// Where this job's files may be (see [`StreamExecutionEnvironment::allowed_paths`]).
    pub fn allowed_paths(&self) -> Option<crate::paths::AllowedPaths> {
        self.env.borrow().graph.config.allowed_paths.clone()
    }

    /// The object-storage options of the job (`s3.*` keys), which connectors writing to
    /// object storage open it with, as checkpoints are.
    pub fn storage_options(&self) -> std::collections::BTreeMap<String, String> {
        self.env
            .borrow()
            .graph
            .config
            .checkpoint
            .storage_options
            .clone()
    }

    /// The schema of the stream's batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The event-time column, when the stream has one.
    pub fn time_column(&self) -> Option<&str> {
        self.time_column.as_deref()
    }

    /// The same stream with its event time read from `column`, a copy of its current
    /// event-time column under another name (as a projection `window_time AS rowtime` makes):
    /// the watermarks flowing with the rows stay valid for it.
    pub fn with_time_column(mut self, column: &str) -> Result<DataStream> {
        let field = self
            .schema
            .field_with_name(column)
            .map_err(|_| Error::config("time column", format!("no column `{column}`")))?;
        if !matches!(
            field.data_type(),
            DataType::Int64 | DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _)
        ) {
            return Err(Error::ColumnType {
                name: column.to_string(),
                expected: "Int64 or Timestamp(Millisecond) event time".into(),
                actual: field.data_type().to_string(),
            });
        }
        self.time_column = Some(column.to_string());
        Ok(self)
    }

    /// Whether the job's state backend keeps state beyond a memory budget on disk
    /// ([`StateBackend::spills`]): operators that keep their own tables on the heap for speed
    /// (the sliced window aggregate, the columnar interval join, the Top-N of a bounded
    /// input) are then planned as the store-based operators whose results they equal.
    pub fn backend_spills(&self) -> bool {
        self.env.borrow_mut().backend().spills()
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn set_parallelism(self, parallelism: usize) -> Self {
        {
            let mut b = self.env.borrow_mut();
            let g = &mut b.graph;
            g.nodes[self.node].parallelism = parallelism.max(1);
            let node = self.node;
            let ps: Vec<usize> = g.nodes.iter().map(|n| n.parallelism).collect();
            for e in g
                .edges
                .iter_mut()
                .filter(|e| e.to == node || e.from == node)
            {
                if matches!(e.partitioning, Partitioning::Forward) && ps[e.from] != ps[e.to] {
                    e.partitioning = Partitioning::Rebalance;
                }
            }
        }
        self
    }

    /// Sets the stable id of the operator that produces this stream: its state in a
    /// checkpoint or savepoint is found by this id, so a changed job can still restore it.
    pub fn uid(self, uid: &str) -> Self {
        self.env.borrow_mut().graph.nodes[self.node].uid = Some(uid.to_string());
        self
    }

    /// Declares that the operator producing this stream keeps its state in a layout of its
    /// own (not the state backend's stores): checkpoints record it, and a restore into an
    /// operator with another layout (the same SQL job planned for the other state backend,
    /// say) fails naming both instead of misreading the state.
    pub fn state_layout(self, layout: &'static str) -> Self {
        self.env.borrow_mut().graph.nodes[self.node].state_layout = Some(layout);
        self
    }

    /// Declares that the operator producing this stream also restores state in `layout`,
    /// converting it (see [`crate::graph::Node::reads_layouts`]).
    pub fn reads_state_layout(self, layout: &'static str) -> Self {
        self.env.borrow_mut().graph.nodes[self.node]
            .reads_layouts
            .push(layout);
        self
    }

    /// Names the operator that produces this stream (shown in plans and task names).
    pub fn name(self, name: &str) -> Self {
        self.env.borrow_mut().graph.nodes[self.node].name = name.to_string();
        self
    }

    fn add_operator(
        &self,
        inputs: &[(&DataStream, Partitioning, usize)],
        name: &str,
        schema: SchemaRef,
        time_column: Option<String>,
        factory: OperatorFactory,
    ) -> DataStream {
        let mut b = self.env.borrow_mut();
        let id = b.graph.nodes.len();
        let parallelism = b.graph.config.parallelism;
        b.graph.nodes.push(Node {
            id,
            name: name.to_string(),
            parallelism,
            kind: NodeKind::Operator(factory),
            schema: schema.clone(),
            uid: None,
            state_layout: None,
            reads_layouts: Vec::new(),
        });
        for (s, partitioning, input) in inputs {
            let partitioning = match partitioning {
                Partitioning::Forward if b.graph.nodes[s.node].parallelism != parallelism => {
                    Partitioning::Rebalance
                }
                p => p.clone(),
            };
            b.graph.edges.push(Edge {
                from: s.node,
                to: id,
                partitioning,
                side_output: s.side.clone(),
                input: *input,
            });
        }
        DataStream {
            env: self.env.clone(),
            node: id,
            side: None,
            schema,
            time_column,
            partitioning: None,
        }
    }

    fn edge(&self) -> Partitioning {
        self.partitioning.clone().unwrap_or(Partitioning::Forward)
    }

    fn one_input(&self, name: &str, schema: SchemaRef, factory: OperatorFactory) -> DataStream {
        self.add_operator(
            &[(self, self.edge(), 0)],
            name,
            schema,
            self.time_column.clone(),
            factory,
        )
    }

    /// Transforms whole batches; `schema` is the output schema. The fast path.
    pub fn map_batches(
        &self,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> DataStream {
        let f = Arc::new(f);
        let time = self
            .time_column
            .clone()
            .filter(|c| schema.index_of(c).is_ok());
        let mut s = self.one_input(
            "Map",
            schema,
            Arc::new(move |_| Ok(Box::new(MapBatchOperator(f.clone())) as Box<dyn Operator>)),
        );
        s.time_column = time;
        s
    }

    /// Keeps only the named columns, in the given order.
    pub fn select(&self, columns: &[String]) -> Result<DataStream> {
        let idx: Vec<usize> = columns
            .iter()
            .map(|c| crate::key::column_index(&self.schema, c))
            .collect::<Result<_>>()?;
        let out = Arc::new(self.schema.project(&idx)?);
        Ok(self
            .map_batches(out, move |b| Ok(b.project(&idx)?))
            .name("Select"))
    }

    /// Appends a column computed from each whole batch (like SQL's computed columns).
    pub fn with_column(
        &self,
        field: Field,
        f: impl Fn(&RecordBatch) -> Result<arrow::array::ArrayRef> + Send + Sync + 'static,
    ) -> DataStream {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(field);
        let out = Arc::new(Schema::new(fields));
        let out2 = out.clone();
        self.map_batches(out, move |b| {
            let mut cols = b.columns().to_vec();
            cols.push(f(&b)?);
            Ok(RecordBatch::try_new(out2.clone(), cols)?)
        })
    }

    /// Keeps rows where the batch predicate is true (e.g. an Arrow comparison kernel).
    pub fn filter(
        &self,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync + 'static,
    ) -> DataStream {
        let p = Arc::new(predicate);
        self.one_input(
            "Filter",
            self.schema.clone(),
            Arc::new(move |_| Ok(Box::new(FilterOperator(p.clone())) as Box<dyn Operator>)),
        )
    }

    /// Keeps rows for which `f` is true, one row at a time (convenient, slower than `filter`).
    pub fn filter_rows(&self, f: impl Fn(&Row) -> bool + Send + Sync + 'static) -> DataStream {
        self.filter(move |b| {
            Ok((0..b.num_rows())
                .map(|r| Some(f(&row_at(b, r))))
                .collect::<BooleanArray>())
        })
    }

    /// Maps each row to zero or more rows of `schema`.
    pub fn flat_map_rows(
        &self,
        schema: SchemaRef,
        f: impl Fn(&Row, &mut Vec<Row>) -> Result<()> + Send + Sync + 'static,
    ) -> DataStream {
        let f: crate::operators::FlatMapFn = Arc::new(f);
        let s2 = schema.clone();
        let time = self
            .time_column
            .clone()
            .filter(|c| schema.index_of(c).is_ok());
        let mut s = self.one_input(
            "FlatMap",
            schema,
            Arc::new(move |_| {
                Ok(Box::new(FlatMapRowsOperator::new(f.clone(), s2.clone())?) as Box<dyn Operator>)
            }),
        );
        s.time_column = time;
        s
    }

    /// Maps each row to one row of `schema`.
    pub fn map_rows(
        &self,
        schema: SchemaRef,
        f: impl Fn(&Row) -> Result<Row> + Send + Sync + 'static,
    ) -> DataStream {
        self.flat_map_rows(schema, move |r, out| {
            out.push(f(r)?);
            Ok(())
        })
        .name("Map")
    }

    /// Partitions by key: every row of a key goes to the same parallel instance.
    pub fn key_by(&self, key: impl Into<KeySelector>) -> KeyedStream {
        KeyedStream {
            stream: self.clone(),
            key: key.into(),
        }
    }

    /// Distributes batches round-robin to the next operator.
    pub fn rebalance(&self) -> DataStream {
        let mut s = self.clone();
        s.partitioning = Some(Partitioning::Rebalance);
        s
    }

    /// Sends every batch to every instance of the next operator.
    pub fn broadcast(&self) -> DataStream {
        let mut s = self.clone();
        s.partitioning = Some(Partitioning::Broadcast);
        s
    }

    /// Merges streams of the same schema.
    pub fn union(&self, others: &[DataStream]) -> Result<DataStream> {
        for o in others {
            if o.schema.fields() != self.schema.fields() {
                return Err(Error::InvalidGraph(format!(
                    "union of streams with different schemas: {:?} vs {:?}",
                    self.schema.fields(),
                    o.schema.fields()
                )));
            }
        }
        let mut inputs = vec![(self, self.edge(), 0)];
        inputs.extend(others.iter().map(|o| (o, o.edge(), 0)));
        let time = self
            .time_column
            .clone()
            .filter(|t| others.iter().all(|o| o.time_column.as_ref() == Some(t)));
        Ok(self.add_operator(
            &inputs,
            "Union",
            self.schema.clone(),
            time,
            Arc::new(|_| Ok(Box::new(IdentityOperator) as Box<dyn Operator>)),
        ))
    }

    /// Connects two streams for a two-input process function (no keys: state is per instance).
    pub fn connect(&self, other: &DataStream) -> ConnectedStreams {
        ConnectedStreams {
            first: (self.clone(), None),
            second: (other.clone(), None),
        }
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output(&self, tag: &str) -> Result<DataStream> {
        let schema = self
            .env
            .borrow()
            .side_schemas
            .get(&(self.node, tag.to_string()))
            .cloned()
            .ok_or_else(|| {
                Error::InvalidGraph(format!("the operator has no side output `{tag}`"))
            })?;
        let mut s = self.clone();
        s.side = Some(tag.to_string());
        s.schema = schema;
        Ok(s)
    }

    /// Writes the stream to a sink; the returned stream stands for the sink (to name it, set
    /// its uid or parallelism).
    pub fn sink(&self, sink: impl Sink) -> DataStream {
        let sink = Arc::new(sink);
        let schema = self.schema.clone();
        self.one_input(
            "Sink",
            self.schema.clone(),
            Arc::new(move |ctx: &OperatorContext| {
                Ok(Box::new(SinkOperator::new(sink.create_writer(
                    ctx.subtask,
                    ctx.parallelism,
                    &schema,
                )?)) as Box<dyn Operator>)
            }),
        )
    }

    /// Prints rows to stdout as Flink's print sink does.
    pub fn print(&self) {
        self.sink(PrintSink::stdout());
    }

    /// Collects the stream in memory (tests, small results).
    pub fn collect(&self) -> Collected {
        let sink = CollectSink::default();
        let handle = sink.handle();
        self.sink(sink);
        handle
    }
}

impl From<&str> for KeySelector {
    fn from(s: &str) -> Self {
        KeySelector::column(s)
    }
}

/// A stream partitioned by key (Flink's `KeyedStream`).
#[derive(Clone)]
pub struct KeyedStream {
    stream: DataStream,
    key: KeySelector,
}

impl KeyedStream {
    /// Windows over the keyed stream.
    pub fn window(&self, windows: Windows) -> WindowedStream {
        WindowedStream {
            keyed: self.clone(),
            windows,
            allowed_lateness: 0,
            late_tag: None,
        }
    }

    /// A stateful function with timers, emitting rows of `schema`.
    pub fn process<F: ProcessFunction>(&self, schema: SchemaRef, f: F) -> DataStream {
        let s = &self.stream;
        let inputs = vec![(Some(self.key.clone()), s.time_column.clone())];
        process_node(
            &[(s, Partitioning::Hash(self.key.clone()), 0)],
            inputs,
            schema,
            f,
        )
    }

    /// An operator of the engine's own (not a row function) over the keyed stream,
    /// partitioned by its key; `factory` creates its instances.
    pub fn transform(&self, name: &str, schema: SchemaRef, factory: OperatorFactory) -> DataStream {
        let s = &self.stream;
        s.add_operator(
            &[(s, Partitioning::Hash(self.key.clone()), 0)],
            name,
            schema,
            None,
            factory,
        )
    }

    /// Connects two keyed streams for a keyed two-input process function.
    pub fn connect(&self, other: &KeyedStream) -> ConnectedStreams {
        ConnectedStreams {
            first: (self.stream.clone(), Some(self.key.clone())),
            second: (other.stream.clone(), Some(other.key.clone())),
        }
    }
}

fn process_node<F: ProcessFunction>(
    edges: &[(&DataStream, Partitioning, usize)],
    inputs: Vec<(Option<KeySelector>, Option<String>)>,
    schema: SchemaRef,
    f: F,
) -> DataStream {
    let first = edges[0].0;
    let backend = first.env.borrow_mut().backend();
    let s2 = schema.clone();
    first.add_operator(
        edges,
        "KeyedProcess",
        schema,
        None,
        Arc::new(move |ctx| {
            Ok(Box::new(ProcessOperator::new(
                f.clone(),
                inputs.clone(),
                s2.clone(),
                backend.as_ref(),
                ctx,
            )?) as Box<dyn Operator>)
        }),
    )
}

/// Two streams feeding one two-input process function (Flink's `ConnectedStreams`).
pub struct ConnectedStreams {
    first: (DataStream, Option<KeySelector>),
    second: (DataStream, Option<KeySelector>),
}

impl ConnectedStreams {
    /// Each input with its partitioning (by its key, when keyed) and input index.
    fn edges(&self) -> [(&DataStream, Partitioning, usize); 2] {
        let part = |s: &DataStream, k: &Option<KeySelector>| match k {
            Some(k) => Partitioning::Hash(k.clone()),
            None => s.edge(),
        };
        let (a, ka) = &self.first;
        let (b, kb) = &self.second;
        [(a, part(a, ka), 0), (b, part(b, kb), 1)]
    }

    /// A two-input operator of the engine's own (not a row function) over the two streams,
    /// each partitioned by its key; `factory` creates its instances.
    pub fn transform(&self, name: &str, schema: SchemaRef, factory: OperatorFactory) -> DataStream {
        let edges = self.edges();
        edges[0].0.add_operator(&edges, name, schema, None, factory)
    }

    /// Applies `f`; its `process_element` gets input 0 or 1.
    pub fn process<F: ProcessFunction>(&self, schema: SchemaRef, f: F) -> DataStream {
        let (a, ka) = &self.first;
        let (b, kb) = &self.second;
        process_node(
            &self.edges(),
            vec![
                (ka.clone(), a.time_column.clone()),
                (kb.clone(), b.time_column.clone()),
            ],
            schema,
            f,
        )
    }
}

/// A keyed stream with windows (Flink's `WindowedStream`).
#[derive(Clone)]
pub struct WindowedStream {
    keyed: KeyedStream,
    windows: Windows,
    allowed_lateness: i64,
    late_tag: Option<String>,
}

impl WindowedStream {
    /// Keeps window state this long after the watermark passes a window's end; records
    /// arriving meanwhile update the window and fire it again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness.as_millis() as i64;
        self
    }

    /// Sends records too late for any window to the side output `tag`.
    pub fn side_output_late_data(mut self, tag: &str) -> Self {
        self.late_tag = Some(tag.to_string());
        self
    }

    /// Incremental aggregation with an [`AggregateFunction`].
    pub fn aggregate<A: AggregateFunction>(&self, f: A) -> Result<DataStream> {
        self.build(AggregateLogic(f))
    }

    /// Incremental aggregation over slices of time ([`SlicedWindowOperator`]: one
    /// accumulator per key and slice, windows merged from their slices when they fire) where
    /// the windows allow it: event-time tumbling, sliding or cumulative windows without
    /// allowed lateness or a late side output, on a backend that keeps state in memory (the
    /// sliced operator's tables are its own, on the heap). Otherwise as
    /// [`aggregate`](Self::aggregate), whose results it equals, with state and timers in
    /// the backend's store.
    pub fn sliced_aggregate<A: AggregateFunction>(&self, mut f: A) -> Result<DataStream> {
        let input = &self.keyed.stream;
        let spills = input.env.borrow_mut().backend().spills();
        let sliceable = crate::window::slicing(&self.windows).is_some()
            && self.allowed_lateness == 0
            && self.late_tag.is_none()
            && input.time_column.is_some();
        let Some(time) = input.time_column.clone().filter(|_| sliceable && !spills) else {
            let keyed = self.aggregate(f)?;
            // A sliceable aggregate is here only on a backend that spills: it takes the
            // heap backend's slices from a savepoint (`window/operator/from_slices.rs`).
            return Ok(if sliceable {
                keyed.reads_state_layout(crate::window::SLICED_STATE_LAYOUT)
            } else {
                keyed
            });
        };
        let out_schema = self.output_schema(f.bind(&input.schema)?)?;
        let (windows, key, schema) = (self.windows, self.keyed.key.clone(), out_schema.clone());
        Ok(input
            .add_operator(
                &[(input, Partitioning::Hash(self.keyed.key.clone()), 0)],
                &format!("Window({:?})", self.windows.kind),
                out_schema,
                Some("window_time".to_string()),
                Arc::new(move |ctx| {
                    Ok(Box::new(crate::window::SlicedWindowOperator::new(
                        f.clone(),
                        windows,
                        key.clone(),
                        time.clone(),
                        schema.clone(),
                        ctx,
                    )?) as Box<dyn Operator>)
                }),
            )
            .state_layout(crate::window::SLICED_STATE_LAYOUT))
    }

    /// Counts rows per key and window (field `count`).
    pub fn count(&self) -> Result<DataStream> {
        self.aggregate(Count)
    }

    /// Reduces rows per key and window to one row of the input schema.
    pub fn reduce(
        &self,
        f: impl Fn(Row, &Row) -> Row + Send + Sync + 'static,
    ) -> Result<DataStream> {
        self.aggregate(Reduce::new(f))
    }

    /// A full-window function that sees all rows of each window.
    pub fn process<F: ProcessWindowFunction>(&self, f: F) -> Result<DataStream> {
        self.build(ProcessLogic(f))
    }

    /// The windows' output schema (key, window bounds, then the function's `fields`), once
    /// the windows are found valid.
    fn output_schema(&self, fields: Vec<Field>) -> Result<SchemaRef> {
        self.windows
            .validate()
            .map_err(|m| Error::config("window", m))?;
        let key_field = self.keyed.key.key_field(&self.keyed.stream.schema)?;
        Ok(window_output_schema(key_field, fields))
    }

    fn build<L: WindowLogic>(&self, mut logic: L) -> Result<DataStream> {
        let input = &self.keyed.stream;
        let out_schema = self.output_schema(logic.bind(&input.schema)?)?;
        let spec = WindowSpec {
            windows: self.windows,
            key: self.keyed.key.clone(),
            time_column: input.time_column.clone(),
            allowed_lateness: self.allowed_lateness,
            late_tag: self.late_tag.clone(),
            backend: input.env.borrow_mut().backend(),
        };
        if spec.windows.domain == crate::state::TimeDomain::EventTime && spec.time_column.is_none()
        {
            return Err(Error::config(
                "window",
                "event-time windows need a stream with a watermark strategy (from_source with Some(WatermarkStrategy))",
            ));
        }
        let s2 = out_schema.clone();
        let name = format!("Window({:?})", self.windows.kind);
        let stream = input.add_operator(
            &[(input, Partitioning::Hash(self.keyed.key.clone()), 0)],
            &name,
            out_schema,
            Some("window_time".to_string()),
            Arc::new(move |ctx| {
                Ok(Box::new(WindowOperator::new(
                    logic.clone(),
                    spec.clone(),
                    s2.clone(),
                    ctx,
                )?) as Box<dyn Operator>)
            }),
        );
        if let Some(tag) = &self.late_tag {
            stream
                .env
                .borrow_mut()
                .side_schemas
                .insert((stream.node, tag.clone()), input.schema.clone());
        }
        Ok(stream)
    }
}

/// Builds a schema from `(name, type, nullable)` triples.
pub fn schema(fields: &[(&str, arrow::datatypes::DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ))
}
