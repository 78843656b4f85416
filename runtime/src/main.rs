//! The `flink-rs` command line.
//!
//! Subcommands so far: `bench` (the end-to-end benchmark workloads behind `bench/run`).
//! `run`, `explain`, `jobmanager`, `taskmanager` and `job` arrive with the SQL and cluster
//! issues.

use anyhow::Context;
use clap::{Parser, Subcommand};

use flink_rs::bench::{Workload, run};

#[derive(Parser)]
#[command(
    name = "flink-rs",
    version,
    about = "Stateful stream processing, Flink-style, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a benchmark workload in the embedded mini-cluster and prints one JSON line.
    Bench {
        /// filter | tumble-count | hot-items
        workload: String,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            workload,
            parallelism,
            events,
        } => {
            let w: Workload = workload.parse()?;
            let result = run(w, parallelism, events)
                .with_context(|| format!("benchmark `{workload}` failed"))?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}
