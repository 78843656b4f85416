//! The distributed cluster: a jobmanager (REST API, gRPC control plane, the job masters of
//! its jobs) and taskmanagers (slots running tasks, connected to each other by the TCP data
//! plane). `flink-rs jobmanager` and `flink-rs taskmanager` start them.
//!
//! How a job runs on it: the jobmanager compiles the submitted SQL into a plan and places
//! subtask `j` of every chain in slot `j` (Flink's slot sharing: a slot holds one parallel
//! slice of the whole pipeline). Each taskmanager receives the script and the placement,
//! compiles the same plan itself (every worker runs the same binary; no code is shipped) and
//! starts its tasks; channels between tasks in the same taskmanager stay in-process, the
//! others go over [`net`]. The job master is the engine's own ([`flink_rs_core::executor`]): it
//! triggers checkpoints, collects the handles of the state files the taskmanagers write to
//! checkpoint storage themselves ([`snapshot_writer`]), writes `_metadata`, and on a task
//! failure or a lost taskmanager redeploys every task from the latest completed checkpoint
//! on the slots available.

pub mod client;
mod client_error;
pub mod config;
mod error;
pub mod jobmanager;
mod metrics;
pub(crate) mod net;
mod rest;
pub(crate) mod snapshot_writer;
pub mod taskmanager;
pub mod tls;

/// The generated gRPC types and services (`proto/cluster.proto`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("flinkrs.cluster.v1");
}

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use rest::auth::{TOKEN_FILE_KEY, read_token_file};

/// `--set` arguments that make a jobmanager listen on 127.0.0.1 at ports the OS picks; it
/// then prints where on its first line (read it with [`started_addresses`]).
pub const JOBMANAGER_LOOPBACK_ARGS: [&str; 8] = [
    "--set",
    "jobmanager.bind-host=127.0.0.1",
    "--set",
    "rest.bind-address=127.0.0.1",
    "--set",
    "jobmanager.rpc.port=0",
    "--set",
    "rest.port=0",
];

/// `--set` arguments that make a taskmanager listen on, and advertise, 127.0.0.1.
pub const TASKMANAGER_LOOPBACK_ARGS: [&str; 4] = [
    "--set",
    "taskmanager.bind-host=127.0.0.1",
    "--set",
    "taskmanager.host=127.0.0.1",
];

/// The jobmanager's RPC and REST addresses (`host:port`) from the line it prints first,
/// `jobmanager rpc=HOST:PORT rest=HOST:PORT`.
pub fn started_addresses(line: &str) -> Option<(String, String)> {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(k))
            .map(str::to_string)
    };
    Some((field("rpc=")?, field("rest=")?))
}
