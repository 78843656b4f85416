//! # flink_rs_core: the engine of flink-rs
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
//! the `flink-rs-connectors` crate and depend only on the contracts; `print` and `collect`,
//! which the DataStream API offers on every stream, are [`api`]'s own. Nothing in this crate
//! depends on the SQL planner (`flink-rs-sql`), the cluster (`flink-rs-cluster`) or the
//! Kubernetes operator; they depend on it, and a test of the workspace keeps it so.

pub mod api;
pub mod checkpoint;
pub mod element;
pub mod error;
pub mod exchange;
pub mod executor;
pub mod graph;
pub mod key;
pub mod operator;
pub mod operators;
pub mod paths;
pub mod rows;
pub mod source;
pub mod state;
pub mod task;
pub mod testing;
pub mod watermark;
pub mod window;

pub use error::{Error, Result};
