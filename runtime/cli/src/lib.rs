//! # flink_rs: stateful stream processing on Arrow batches
//!
//! Apache Flink's model (parallel dataflows, event time and watermarks, windows, keyed state
//! and timers, exactly-once checkpoints) rebuilt in Rust. This crate is the command line
//! (`flink-rs run | jobmanager | taskmanager | job | bench`) and the one library a user
//! depends on: it gathers the workspace's crates under one name.
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`api`], [`state`], [`window`], [`checkpoint`], [`executor`], … | `flink-rs-core` | the engine and the DataStream API |
//! | [`connectors`] | `flink-rs-connectors` | sources and sinks |
//! | [`sql`] | `flink-rs-sql` | Flink SQL: planner and streaming SQL operators (DataFusion inside) |
//! | [`cluster`] | `flink-rs-cluster` | jobmanager, taskmanager, control and data plane, REST |
//! | [`rest_api`] | `flink-rs-rest-api` | the REST API's JSON types |
//! | [`bench`] | this crate | the end-to-end benchmark workloads |
//!
//!
//! ```
//! use std::time::Duration;
//! use flink_rs::prelude::*;
//!
//! let env = StreamExecutionEnvironment::new();
//! let bids = env.from_source(
//!     BidGenerator::bounded(10_000),
//!     Some(WatermarkStrategy::bounded_out_of_orderness("ts", Duration::from_secs(1))),
//! );
//! let counts = bids
//!     .key_by("auction")
//!     .window(Windows::tumbling(Duration::from_secs(10)))
//!     .aggregate(Count)
//!     .unwrap()
//!     .collect();
//! env.execute().unwrap();
//! assert_eq!(counts.rows().iter().map(|r| r[4].as_i64().unwrap()).sum::<i64>(), 10_000);
//! ```

pub use flink_rs_cluster as cluster;
pub use flink_rs_connectors as connectors;
pub use flink_rs_core::{
    Error, Result, api, checkpoint, element, error, exchange, executor, graph, key, operator,
    operators, rows, source, state, task, watermark, window,
};
pub use flink_rs_metrics as metrics;
pub use flink_rs_rest_api as rest_api;
pub use flink_rs_sql as sql;

pub mod bench;
pub mod progress;

/// The names most jobs need.
pub mod prelude {
    pub use flink_rs_connectors::{
        BidGenerator, BlackholeSink, CollectionSource, DataGen, FieldGen, FileFormat, FileSink,
        FileSource, NexmarkGenerator, PrintSink,
    };
    pub use flink_rs_core::api::{
        DataStream, KeyedStream, StreamExecutionEnvironment, WindowedStream, schema,
    };
    pub use flink_rs_core::checkpoint::{CheckpointingMode, RestartStrategy, RestoreFrom};
    pub use flink_rs_core::element::Timestamp;
    pub use flink_rs_core::error::{Error, Result};
    pub use flink_rs_core::executor::{CheckpointStats, JobHandle, JobOutcome};
    pub use flink_rs_core::graph::ExecutionConfig;
    pub use flink_rs_core::key::{Key, KeySelector};
    pub use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
    pub use flink_rs_core::rows::{Row, Value};
    pub use flink_rs_core::state::{StateRegistry, StateTtlConfig, TimeDomain, ValueState};
    pub use flink_rs_core::watermark::WatermarkStrategy;
    pub use flink_rs_core::window::{
        AggregateFunction, Avg, Count, Max, Min, ProcessWindowFunction, RowRef, Sum, Window,
        Windows,
    };
}
