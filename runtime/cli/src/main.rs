//! The `flink-rs` command line.
//!
//! Subcommands: `run` (a SQL script in the embedded mini-cluster), `sql` (the interactive
//! SQL client, [`sql_client`]), `explain` (its dataflow
//! plan), and `bench` (the end-to-end benchmark workloads behind `bench/run`, with or without
//! checkpoints, and the checkpoint/recovery benchmark `checkpoint-state`), `jobmanager` and
//! `taskmanager` (the processes of a standalone cluster), `job` (the REST API's client), and
//! `tls-certificates` (a CA and key pair for a cluster's internal TLS).

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};

use flink_rs::bench::{BenchOptions, Workload, checkpoint_state, run_with};

mod sql_client;

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
    /// Runs a Flink SQL script in the embedded mini-cluster. Bounded jobs exit when done;
    /// unbounded ones run until Ctrl-C, which cancels them.
    Run {
        /// The script (`-` reads standard input).
        script: String,
        /// Default parallelism (`parallelism.default`).
        #[arg(long)]
        parallelism: Option<usize>,
        /// A configuration key, as in Flink (`--set execution.checkpointing.interval=10s`);
        /// wins over the script's SET statements. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Start from a checkpoint or savepoint directory, or `latest`: the newest complete
        /// checkpoint of this job in state.checkpoints.dir (the job id is `pipeline.job-id`,
        /// else derived from `pipeline.name`, else from the script; an error when there is
        /// none).
        #[arg(long)]
        from_checkpoint: Option<String>,
        /// No progress line (it is drawn only when standard error is a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// The interactive SQL client (Flink's sql-client.sh): statements run as they are typed,
    /// SELECT results shown as they come, INSERTs submitted. `-f` runs a script statement by
    /// statement and stops at the first error.
    Sql {
        /// Run this script's statements instead of reading them interactively.
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        #[arg(long)]
        parallelism: Option<usize>,
        /// A configuration key for the session (`--set sql-client.execution.result-mode=changelog`).
        /// Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A jobmanager's REST address: INSERTs are submitted there instead of to the embedded
        /// mini-cluster (SELECTs run here).
        #[arg(long)]
        jobmanager: Option<String>,
        /// A file holding the jobmanager's REST token (`rest.authentication.token-file`).
        #[arg(long, env = "FLINK_RS_REST_TOKEN_FILE", requires = "jobmanager")]
        token_file: Option<String>,
    },
    /// Prints the dataflow plan of a SQL script (operators, parallelism, exchanges).
    Explain {
        script: String,
        #[arg(long)]
        parallelism: Option<usize>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Starts a jobmanager: REST API (`rest.port`, 8081), taskmanager registration over gRPC
    /// (`jobmanager.rpc.port`, 6123), the job masters of the submitted jobs.
    Jobmanager {
        /// A configuration file of `key: value` lines with Flink's keys.
        #[arg(long)]
        config: Option<String>,
        /// Application mode: run this SQL script as job `--job-id` at start (restoring from
        /// `execution.savepoint.path`, else from the job's latest checkpoint).
        #[arg(long, requires = "job_id")]
        job: Option<String>,
        /// The job id in application mode (32 hex digits are usual; any name works).
        #[arg(long)]
        job_id: Option<String>,
        /// A configuration key (wins over the file and the environment). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Starts a taskmanager that offers `taskmanager.numberOfTaskSlots` slots to the
    /// jobmanager at `--jobmanager host:port` (or `JOB_MANAGER_RPC_ADDRESS`).
    Taskmanager {
        #[arg(long)]
        config: Option<String>,
        /// The jobmanager's RPC address (`jobmanager.rpc.address[:jobmanager.rpc.port]`).
        #[arg(long)]
        jobmanager: Option<String>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Talks to a running jobmanager's REST API.
    Job {
        /// The jobmanager's REST address.
        #[arg(
            long,
            env = "FLINK_RS_REST",
            default_value = "http://127.0.0.1:8081",
            global = true
        )]
        url: String,
        /// A file holding the jobmanager's REST token (its `rest.authentication.token-file`),
        /// sent as `Authorization: Bearer …`.
        #[arg(long, env = "FLINK_RS_REST_TOKEN_FILE", global = true)]
        token_file: Option<String>,
        /// For an `https://` URL: a PEM file of the certificates that the jobmanager's must
        /// chain to (its `security.ssl.rest.truststore` or CA); without it, the system's.
        #[arg(long, env = "FLINK_RS_REST_TRUSTSTORE", global = true)]
        truststore: Option<String>,
        /// A PEM file with this client's private key and certificate chain, for a jobmanager
        /// that requires client certificates (`security.ssl.rest.authentication-enabled`).
        #[arg(
            long,
            env = "FLINK_RS_REST_KEYSTORE",
            global = true,
            requires = "truststore"
        )]
        keystore: Option<String>,
        #[command(subcommand)]
        action: JobAction,
    },
    /// Writes certificates for a cluster's internal TLS into a directory: `ca.pem` (the
    /// truststore) and `cluster.pem` (the keystore: private key and chain, mode 0600), and
    /// prints the `security.ssl.internal.*` keys that use them.
    TlsCertificates {
        /// Where to write the files.
        #[arg(long)]
        dir: String,
        /// Host names or addresses the processes are reached at (repeatable; `localhost` and
        /// `127.0.0.1` are always included). With `security.ssl.verify-hostname: false` the
        /// names are not checked and may be left out.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Keep the files when both are already there (a restarted init container must not
        /// replace the certificates that running processes hold).
        #[arg(long)]
        if_absent: bool,
    },
    /// Runs a benchmark workload in the embedded mini-cluster and prints one JSON line.
    Bench {
        /// filter | tumble-count | hot-items | checkpoint-state | large-state | nexmark-q0 … nexmark-q22 | filter-sql | tumble-count-sql | latency
        workload: String,
        #[arg(long, default_value_t = 1)]
        parallelism: usize,
        /// Events to generate (default 20,000,000; not for `latency`, which runs for a time).
        #[arg(long)]
        events: Option<u64>,
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
        /// The keyed-state backend: hashmap (default) or disk (`state.backend.type`;
        /// rocksdb and forst are accepted as disk).
        #[arg(long, default_value = "hashmap")]
        state_backend: String,
        /// The disk backend's memory budget (`taskmanager.memory.managed.size`, e.g. 256m).
        #[arg(long)]
        managed_memory: Option<String>,
        /// Incremental checkpoints (`execution.checkpointing.incremental`; disk backend).
        #[arg(long)]
        incremental: bool,
        /// Nexmark queries: run on a standalone cluster of 1 jobmanager and this many
        /// taskmanagers (processes on 127.0.0.1) instead of the mini-cluster.
        #[arg(long)]
        cluster: Option<usize>,
        /// latency: input rates in events per second, comma-separated (default
        /// 100000,1000000,10000000).
        #[arg(long, value_delimiter = ',')]
        rates: Option<Vec<u64>>,
        /// latency: seconds each job runs at each rate (default 10).
        #[arg(long)]
        seconds: Option<f64>,
        /// latency: the jobs to measure, comma-separated (default windowless,windowed).
        #[arg(long, value_delimiter = ',')]
        jobs: Option<Vec<String>>,
        /// A Flink configuration key for the job, e.g.
        /// `execution.buffer-timeout.interval=5ms` (repeatable). With --cluster, every
        /// process's configuration (e.g. the `security.ssl.internal.*` keys).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Subcommand)]
enum JobAction {
    /// Submits a SQL script; prints the job id.
    Submit {
        script: String,
        #[arg(long)]
        parallelism: Option<usize>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Lists the jobs: id, state, name.
    List,
    /// Prints a job's details as JSON (`GET /jobs/{id}`).
    Status { id: String },
    /// Cancels a job.
    Cancel { id: String },
    /// Takes a savepoint; prints its location.
    Savepoint {
        id: String,
        #[arg(long)]
        dir: Option<String>,
    },
    /// Stops a job with a savepoint; prints its location.
    Stop {
        id: String,
        #[arg(long)]
        dir: Option<String>,
    },
}

/// With `FLINK_RS_EXIT_WITH_PARENT=1` (set by test harnesses), the process exits when the
/// process that started it is gone, so no server outlives a test that failed.
fn exit_with_parent() {
    if std::env::var_os("FLINK_RS_EXIT_WITH_PARENT").is_none() {
        return;
    }
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(300));
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(1);
                }
            }
        });
}

/// Stops when SIGINT or SIGTERM arrives.
fn stop_on_signal() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                });
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                // The servers have no more work worth waiting for.
                std::process::exit(0);
            }
        })
        .context("starting the signal handler")?;
    Ok(stop)
}

/// `--parallelism` and `--set key=value` as configuration pairs.
fn settings(parallelism: Option<usize>, set: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(p) = parallelism {
        out.push(("parallelism.default".to_string(), p.to_string()));
    }
    for s in set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set expects KEY=VALUE, got `{s}`"))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Reads and compiles a script; SQL errors name the file, statement, line and column.
fn compile(path: &str, sets: &[(String, String)]) -> anyhow::Result<flink_rs::sql::SqlJob> {
    compile_text(path, sets).map(|(_, job)| job)
}

/// The script's text and the job compiled from it.
fn compile_text(
    path: &str,
    sets: &[(String, String)],
) -> anyhow::Result<(String, flink_rs::sql::SqlJob)> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the script from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    };
    let job = flink_rs::sql::compile(&text, flink_rs::graph::ExecutionConfig::default(), sets)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    Ok((text, job))
}

/// Runs the command; a failure prints `error: …` with its causes and exits with status 1.
/// Never a Rust backtrace, even with `RUST_BACKTRACE` set: these are a user's errors (bad
/// SQL, a missing file, an unreachable jobmanager), not the program's.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writing to a closed pipe ends the process silently, as `cat` or `grep` do, so that
/// `flink-rs run job.sql | head` stops when `head` has read enough, instead of failing the
/// printing task (and restarting it) over and over. Rust starts programs with SIGPIPE
/// ignored; this restores the default for the commands whose output is meant for a pipe.
/// Sockets are unaffected: the standard library sends with `MSG_NOSIGNAL`.
#[allow(unsafe_code)]
fn end_quietly_on_closed_pipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler code; it is called once, at
    // start-up, before this process writes to any pipe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in log files and container logs.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    exit_with_parent();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Run { .. } | Command::Explain { .. } | Command::Job { .. } | Command::Sql { .. }
    ) {
        end_quietly_on_closed_pipe();
    }
    match cli.command {
        Command::Run {
            script,
            parallelism,
            set,
            from_checkpoint,
            quiet,
        } => {
            let mut sets = settings(parallelism, &set)?;
            if let Some(cp) = from_checkpoint {
                sets.push(("execution.savepoint.path".into(), cp));
            }
            let (text, job) = compile_text(&script, &sets)?;
            // The same job gets the same id in every run, so `latest` finds its checkpoints.
            job.env.configure(|c| {
                if c.job_id.is_none() {
                    let name = c.pipeline_name.clone().unwrap_or(text);
                    c.job_id = Some(flink_rs::executor::derived_job_id(&name));
                }
            });
            let job_name = job
                .settings
                .get("pipeline.name")
                .cloned()
                .unwrap_or_else(|| script.clone());
            let handle = job.env.execute_async().context("starting the job")?;
            eprintln!("job {} started", handle.job_id());
            let metrics = flink_rs::metrics::local::collect(flink_rs::metrics::local::LocalJob {
                job_id: handle.job_id().to_string(),
                job_name,
                start_ms: flink_rs::operator::now_millis(),
                tasks: Box::new(handle.task_stats_handle()),
                checkpoints: Box::new(handle.checkpoint_stats_handle()),
                status: Box::new(handle.status_handle()),
            });
            // A process started by hand answers on loopback unless told otherwise.
            let _reporter = flink_rs::metrics::Reporter::from_settings(
                |k| job.settings.get(k).cloned(),
                "127.0.0.1",
                metrics,
            )
            .context("starting the metrics reporter")?;
            if let Some(r) = &_reporter {
                eprintln!("{}", r.announcement());
            }
            let _progress = (!quiet && std::io::stderr().is_terminal())
                .then(|| flink_rs::progress::Progress::start(handle.task_stats_handle()));
            let cancel = handle.cancel_handle();
            std::thread::Builder::new()
                .name("ctrl-c".into())
                .spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                            eprintln!("cancelling the job (Ctrl-C)");
                            cancel();
                        }
                    }
                })
                .context("starting the Ctrl-C handler")?;
            let outcome = handle.wait().context("the job failed");
            drop(_progress);
            let outcome = outcome?;
            eprintln!(
                "job {}",
                match outcome {
                    flink_rs::executor::JobOutcome::Finished => "finished".to_string(),
                    flink_rs::executor::JobOutcome::Cancelled => "cancelled".to_string(),
                    flink_rs::executor::JobOutcome::Stopped { savepoint } =>
                        format!("stopped with savepoint {savepoint}"),
                }
            );
        }
        Command::Sql {
            file,
            parallelism,
            set,
            jobmanager,
            token_file,
        } => {
            let jobmanager = match jobmanager {
                Some(url) => {
                    let mut client = flink_rs::cluster::client::RestClient::new(&url)?;
                    if let Some(f) = token_file {
                        let token = flink_rs::cluster::read_token_file(&f)
                            .with_context(|| format!("--token-file {f}"))?;
                        client = client.with_token(token);
                    }
                    Some(client)
                }
                None => None,
            };
            sql_client::run(sql_client::Options {
                file,
                settings: settings(parallelism, &set)?,
                jobmanager,
            })?;
        }
        Command::Explain {
            script,
            parallelism,
            set,
        } => {
            let job = compile(&script, &settings(parallelism, &set)?)?;
            print!("{}", job.env.graph().explain());
            if !job.unread_fields.is_empty() {
                println!(
                    "nexmark fields no statement reads (generated empty): {}",
                    job.unread_fields.join(", ")
                );
            }
        }
        Command::Jobmanager {
            config,
            job,
            job_id,
            set,
        } => {
            let cfg =
                flink_rs::cluster::ClusterConfig::load(config.as_deref(), &settings(None, &set)?)
                    .context("reading the configuration")?;
            let application = match (job, job_id) {
                (Some(path), Some(job_id)) => Some(flink_rs::cluster::jobmanager::Application {
                    script: std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {path}"))?,
                    job_id,
                }),
                _ => None,
            };
            flink_rs::cluster::jobmanager::run(cfg, stop_on_signal()?, application)
                .context("jobmanager")?;
        }
        Command::Taskmanager {
            config,
            jobmanager,
            set,
        } => {
            let mut cfg =
                flink_rs::cluster::ClusterConfig::load(config.as_deref(), &settings(None, &set)?)
                    .context("reading the configuration")?;
            if let Some(jm) = jobmanager {
                cfg.set("jobmanager.rpc.address", &jm);
            }
            let opts = flink_rs::cluster::taskmanager::TaskManagerOptions::from_config(&cfg)
                .context("taskmanager configuration")?;
            flink_rs::cluster::taskmanager::run(opts, stop_on_signal()?).context("taskmanager")?;
        }
        Command::Job {
            url,
            token_file,
            truststore,
            keystore,
            action,
        } => {
            let mut client = flink_rs::cluster::client::RestClient::new(&url)?;
            if let Some(f) = token_file {
                let token = flink_rs::cluster::read_token_file(&f)
                    .with_context(|| format!("--token-file {f}"))?;
                client = client.with_token(token);
            }
            if let Some(t) = truststore {
                anyhow::ensure!(
                    url.starts_with("https://"),
                    "--truststore is for an https:// URL; {url} is not one"
                );
                client = client.with_tls(&t, keystore.as_deref())?;
            }
            job_command(&client, action)?
        }
        Command::TlsCertificates {
            dir,
            hosts,
            days,
            if_absent,
        } => {
            let path = std::path::Path::new(&dir);
            let existing = flink_rs::cluster::tls::Generated::in_dir(path);
            let files = if if_absent && existing.keystore.is_file() && existing.truststore.is_file()
            {
                eprintln!("{dir} already holds ca.pem and cluster.pem: kept");
                existing
            } else {
                flink_rs::cluster::tls::generate(path, &hosts, days)
                    .with_context(|| format!("writing certificates into {dir}"))?
            };
            println!("{}: true", flink_rs::cluster::tls::INTERNAL_ENABLED);
            println!(
                "{}: {}",
                flink_rs::cluster::tls::INTERNAL_KEYSTORE,
                files.keystore.display()
            );
            println!(
                "{}: {}",
                flink_rs::cluster::tls::INTERNAL_TRUSTSTORE,
                files.truststore.display()
            );
        }
        Command::Bench {
            workload,
            parallelism,
            events,
            checkpoint_interval,
            checkpoint_dir,
            state_bytes,
            fail_after_ms,
            state_backend,
            managed_memory,
            incremental,
            cluster,
            rates,
            seconds,
            jobs,
            set,
        } => {
            let kind =
                flink_rs::state::StateBackendKind::parse(&state_backend).with_context(|| {
                    format!("--state-backend {state_backend}: expected hashmap or disk")
                })?;
            if managed_memory.is_some() && kind != flink_rs::state::StateBackendKind::Disk {
                anyhow::bail!(
                    "--managed-memory is the disk state backend's budget: add --state-backend disk"
                );
            }
            let state_backend = flink_rs::state::StateBackendConfig {
                kind,
                managed_memory: managed_memory
                    .as_deref()
                    .map(|m| {
                        flink_rs::state::parse_memory_size(m)
                            .filter(|b| *b > 0)
                            .with_context(|| {
                                format!("--managed-memory {m}: expected a size such as 256m")
                            })
                    })
                    .transpose()?,
                local_dir: None,
                incremental,
                write_buffer: None,
            };
            state_backend
                .validate()
                .map_err(|e| anyhow::anyhow!("--incremental: {e}"))?;
            let opts = BenchOptions {
                checkpoint_interval: checkpoint_interval.map(std::time::Duration::from_millis),
                checkpoint_dir,
                fail_after: std::time::Duration::from_millis(fail_after_ms),
                state_backend,
                settings: settings(None, &set)?,
            };
            if workload == "latency" {
                if events.is_some() || cluster.is_some() || opts.checkpoint_interval.is_some() {
                    anyhow::bail!(
                        "workload `latency` runs in the mini-cluster, for --seconds per rate, \
                         without checkpoints: --events, --cluster and --checkpoint-interval do not apply"
                    );
                }
                let result = latency_bench(
                    parallelism,
                    rates.unwrap_or_else(|| vec![100_000, 1_000_000, 10_000_000]),
                    seconds.unwrap_or(10.0),
                    &jobs.unwrap_or_else(|| vec!["windowless".into(), "windowed".into()]),
                    &opts,
                )?;
                eprint!("{}", flink_rs::bench::table(&result));
                println!("{}", serde_json::to_string(&result)?);
                return Ok(());
            }
            if rates.is_some() || seconds.is_some() || jobs.is_some() {
                anyhow::bail!("--rates, --seconds and --jobs are options of workload `latency`");
            }
            let events = events.unwrap_or(20_000_000);
            if !set.is_empty() && (workload == "checkpoint-state" || workload.starts_with("kafka-"))
            {
                anyhow::bail!("--set: workload `{workload}` does not take configuration keys");
            }
            if let Some(tms) = cluster {
                let result = flink_rs::bench::run_nexmark_cluster(
                    &workload,
                    parallelism,
                    events,
                    tms,
                    &opts,
                )
                .with_context(|| format!("benchmark `{workload}` on a cluster failed"))?;
                println!("{}", serde_json::to_string(&result)?);
                return Ok(());
            }
            if workload == "checkpoint-state" {
                let result = checkpoint_state(state_bytes, &opts)
                    .context("benchmark `checkpoint-state` failed")?;
                println!("{}", serde_json::to_string(&result)?);
                return Ok(());
            }
            if workload.starts_with("kafka-") {
                let result = flink_rs::bench::run_kafka(&workload, parallelism, events, &opts)
                    .with_context(|| format!("benchmark `{workload}` failed"))?;
                println!("{}", serde_json::to_string(&result)?);
                return Ok(());
            }
            if workload.starts_with("nexmark-")
                || workload.ends_with("-sql")
                || workload == "large-state"
            {
                let result = flink_rs::bench::run_nexmark(&workload, parallelism, events, &opts)
                    .with_context(|| format!("benchmark `{workload}` failed"))?;
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

/// `bench latency`: checks the options and runs every job at every rate.
fn latency_bench(
    parallelism: usize,
    rates: Vec<u64>,
    seconds: f64,
    jobs: &[String],
    opts: &BenchOptions,
) -> anyhow::Result<flink_rs::bench::LatencyResult> {
    use flink_rs::bench::{LatencyJob, LatencyOptions};
    if !(seconds > 0.0 && seconds.is_finite()) {
        anyhow::bail!("--seconds {seconds}: expected a positive number of seconds");
    }
    let jobs = jobs
        .iter()
        .map(|j| {
            LatencyJob::ALL
                .into_iter()
                .find(|k| k.name() == j.trim())
                .with_context(|| {
                    format!("--jobs: unknown job `{j}`; expected windowless or windowed")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = flink_rs::bench::job_config(opts).context("--set")?;
    flink_rs::bench::run_latency(&LatencyOptions {
        rates,
        run_for: std::time::Duration::from_secs_f64(seconds),
        parallelism,
        jobs,
        config,
    })
    .context("benchmark `latency` failed")
}

fn job_command(
    client: &flink_rs::cluster::client::RestClient,
    action: JobAction,
) -> anyhow::Result<()> {
    match action {
        JobAction::Submit {
            script,
            parallelism,
            set,
        } => {
            let text = if script == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the script from stdin")?
            } else {
                std::fs::read_to_string(&script).with_context(|| format!("reading {script}"))?
            };
            let id = client
                .submit(&text, &settings(parallelism, &set)?)
                .with_context(|| format!("submitting {script}"))?;
            println!("{id}");
        }
        JobAction::List => {
            for j in client.jobs()?.jobs {
                println!("{}\t{}\t{}", j.jid, j.state, j.name);
            }
        }
        JobAction::Status { id } => {
            let v = client.get(&format!("/jobs/{id}"))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        JobAction::Cancel { id } => {
            client.cancel(&id)?;
            eprintln!("cancelling job {id}");
        }
        JobAction::Savepoint { id, dir } => {
            let p = client.savepoint(
                &id,
                dir.as_deref(),
                false,
                std::time::Duration::from_secs(600),
            )?;
            println!("{p}");
        }
        JobAction::Stop { id, dir } => {
            let p = client.savepoint(
                &id,
                dir.as_deref(),
                true,
                std::time::Duration::from_secs(600),
            )?;
            println!("{p}");
        }
    }
    Ok(())
}
