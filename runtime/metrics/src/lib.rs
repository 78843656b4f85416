//! # flink_rs_metrics: what a process tells Prometheus
//!
//! Every flink-rs process (jobmanager, taskmanager, the mini-cluster of `flink-rs run`)
//! answers Prometheus on `metrics.reporter.prom.port`, with the names and labels of Apache
//! Flink's Prometheus reporter, so that dashboards and alerts written for Flink work:
//!
//! - [`families`]: a scrape's metric families, encoded by `prometheus-client`;
//! - [`scopes`]: Flink's metric names for tasks, operators, jobs and the cluster;
//! - [`rates`]: per-second rates (`…PerSecond`, `…TimeMsPerSecond`) from counters;
//! - [`process`]: the process's CPU and memory, from `/proc` (no JVM);
//! - [`reporter`]: the HTTP endpoint;
//! - [`local`]: the scrape of a mini-cluster (`flink-rs run`).
//!
//! The record path only bumps the engine's own atomic counters
//! ([`flink_rs_core::exchange::TaskMetrics`]); everything here runs at scrape time.

pub mod families;
pub mod local;
pub mod process;
pub mod rates;
pub mod reporter;
pub mod scopes;

pub use families::Families;
pub use rates::Rates;
pub use reporter::{MetricsError, Reporter};
