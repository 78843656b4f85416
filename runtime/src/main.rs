//! The `flink-rs` command line.
//!
//! Subcommands so far: `bench` (the end-to-end benchmark workloads behind `bench/run`,
//! with or without checkpoints, and the checkpoint/recovery benchmark `checkpoint-state`).
//! `run`, `explain`, `jobmanager`, `taskmanager` and `job` arrive with the SQL and cluster
//! issues.

use anyhow::Context;
use clap::{Parser, Subcommand};

use flink_rs::bench::{BenchOptions, Workload, checkpoint_state, run_with};

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
        /// filter | tumble-count | hot-items | checkpoint-state
        workload: String,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        /// Checkpoint every this many milliseconds (off when not given).
        #[arg(long)]
        checkpoint_interval: Option<u64>,
        /// Where checkpoints go (a temporary directory when not given).
        #[arg(long)]
        checkpoint_dir: Option<String>,
        /// checkpoint-state: bytes of keyed state to build, checkpoint and recover.
        #[arg(long, default_value_t = 1 << 30)]
        state_bytes: u64,
        /// checkpoint-state: milliseconds between the checkpoint and the injected failure
        /// (default: mid-way through a 10 s checkpoint interval).
        #[arg(long, default_value_t = 5000)]
        fail_after_ms: u64,
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
            checkpoint_interval,
            checkpoint_dir,
            state_bytes,
            fail_after_ms,
        } => {
            let opts = BenchOptions {
                checkpoint_interval: checkpoint_interval.map(std::time::Duration::from_millis),
                checkpoint_dir,
                fail_after: std::time::Duration::from_millis(fail_after_ms),
            };
            if workload == "checkpoint-state" {
                let result = checkpoint_state(state_bytes, &opts)
                    .context("benchmark `checkpoint-state` failed")?;
                println!("{}", serde_json::to_string(&result)?);
                return Ok(());
            }
            let w: Workload = workload.parse()?;
            let result = run_with(w, parallelism, events, &opts)
                .with_context(|| format!("benchmark `{workload}` failed"))?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}
