//! # flink_rs: stateful stream processing on Arrow batches
//!
//! The engine of flink-rs: Apache Flink's model (parallel dataflows, event time and
//! watermarks, windows, keyed state and timers) rebuilt in Rust. Data moves between operators
//! as Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es; control elements (watermarks,
//! idleness, end of input) travel in order with them on the same bounded channels.
//!
//! Layers, from the bottom: [`element`] and [`key`] (what travels and how it is partitioned),
//! [`graph`] (the logical job), [`operator`] and [`source`] (contracts for operators and
//! connectors), [`state`] and [`window`] (stateful operators), [`checkpoint`] (snapshot
//! formats, storage, restore), [`executor`] (tasks, threads, channels, the job master that
//! checkpoints and restarts), and [`api`] (the DataStream API users write jobs with). Connectors live in
//! [`connectors`] and depend only on the contracts. Nothing in this crate depends on the SQL
//! planner, the cluster or the Kubernetes operator; they depend on it.

pub mod api;
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod connectors;
pub mod element;
pub mod error;
mod exchange;
pub mod executor;
pub mod graph;
pub mod key;
pub mod operator;
pub mod operators;
pub mod rows;
pub mod source;
pub mod sql;
pub mod state;
mod task;
#[cfg(test)]
mod testing;
pub mod watermark;
pub mod window;

pub use error::{Error, Result};

/// The names most jobs need.
pub mod prelude {
    pub use crate::api::{
        DataStream, KeyedStream, StreamExecutionEnvironment, WindowedStream, schema,
    };
    pub use crate::checkpoint::{CheckpointingMode, RestartStrategy, RestoreFrom};
    pub use crate::connectors::{
        BidGenerator, BlackholeSink, CollectionSource, DataGen, FieldGen, FileFormat, FileSink,
        FileSource, NexmarkGenerator, PrintSink,
    };
    pub use crate::element::Timestamp;
    pub use crate::error::{Error, Result};
    pub use crate::executor::{CheckpointStats, JobHandle, JobOutcome};
    pub use crate::graph::ExecutionConfig;
    pub use crate::key::{Key, KeySelector};
    pub use crate::operators::{ProcessContext, ProcessFunction, RowCollector};
    pub use crate::rows::{Row, Value};
    pub use crate::state::{StateRegistry, StateTtlConfig, TimeDomain, ValueState};
    pub use crate::watermark::WatermarkStrategy;
    pub use crate::window::{
        AggregateFunction, Avg, Count, Max, Min, ProcessWindowFunction, RowRef, Sum, Window,
        Windows,
    };
}
