//! The end-to-end benchmark workloads behind `bench/run` (`flink-rs bench`): the same
//! deterministic bid stream the Apache Flink anchor runs, through the same three jobs.
//!
//! Output is one JSON line: `workload`, `parallelism`, `events`, `seconds` (from just before
//! the first record is generated to the job's end), `events_per_sec`, `peak_rss_bytes`.

mod kafka;
mod latency;

pub use kafka::run_kafka;
pub use latency::{LatencyJob, LatencyOptions, LatencyResult, LatencyRun, run_latency, table};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};

use crate::api::{StreamExecutionEnvironment, schema};
use crate::connectors::{BidGenerator, BlackholeSink};
use crate::error::{Error, Result};
use crate::graph::ExecutionConfig;
use crate::key::column_index;
use crate::operators::{ProcessContext, ProcessFunction, RowCollector};
use crate::rows::{Row, Value};
use crate::state::{StateBackendConfig, StateBackendKind, StateRegistry, TimeDomain, ValueState};
use crate::watermark::WatermarkStrategy;
use crate::window::{Count, Windows};

/// The benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// W1: `auction % 123 = 0` → blackhole.
    Filter,
    /// W2: COUNT per `auction % 10000` in 10 s tumbling windows, watermark ts − 1 s.
    TumbleCount,
    /// W3: count per auction in 10 s windows sliding by 2 s, then the max count per window.
    HotItems,
}

impl std::str::FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "filter" => Ok(Workload::Filter),
            "tumble-count" => Ok(Workload::TumbleCount),
            "hot-items" => Ok(Workload::HotItems),
            other => Err(Error::config(
                "workload",
                format!("unknown workload `{other}`; expected filter, tumble-count or hot-items"),
            )),
        }
    }
}

impl Workload {
    /// The name printed in results.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Filter => "filter",
            Workload::TumbleCount => "tumble-count",
            Workload::HotItems => "hot-items",
        }
    }
}

/// One benchmark result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub workload: String,
    pub parallelism: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub peak_rss_bytes: u64,
    /// Rows that reached the sink (a sanity check that the job did its work). Not measured
    /// on a cluster (the sinks run in other processes): absent there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_rows: Option<u64>,
    /// Checkpoint interval when checkpointing was on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Checkpoints completed during the run (with checkpointing on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints_completed: Option<u64>,
    /// Where it ran, when not in the embedded mini-cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The keyed-state backend (`hashmap` or `disk`).
    pub state_backend: String,
    /// The disk backend's memory budget (`taskmanager.memory.managed.size`), in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_memory_bytes: Option<u64>,
    /// On a cluster: the jobmanager's own peak RSS (part of `peak_rss_bytes`). State does
    /// not pass through it, so it stays flat whatever the state size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobmanager_peak_rss_bytes: Option<u64>,
}

/// Checkpointing for a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub checkpoint_interval: Option<Duration>,
    /// Where checkpoints go (a temporary directory when not set).
    pub checkpoint_dir: Option<String>,
    /// checkpoint-state: how long after the checkpoint completes the failure is injected.
    pub fail_after: Duration,
    /// The keyed-state backend (`--state-backend`, `--managed-memory`).
    pub state_backend: StateBackendConfig,
    /// Flink configuration keys (`--set KEY=VALUE`), applied before the workload's own.
    pub settings: Vec<(String, String)>,
}

fn int_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a [i64]> {
    let i = column_index(&b.schema(), name)?;
    b.column(i)
        .as_primitive_opt::<Int64Type>()
        .map(|a| a.values().as_ref())
        .ok_or_else(|| Error::ColumnType {
            name: name.into(),
            expected: "Int64".into(),
            actual: b.column(i).data_type().to_string(),
        })
}

/// Max count per window (W3's second stage): keyed by `window_end`, fires at `window_time`.
#[derive(Clone, Default)]
struct MaxPerWindow {
    max: Option<ValueState<i64>>,
}

impl ProcessFunction for MaxPerWindow {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.max = Some(states.value("max"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(max), Some(count)) = (&self.max, row.get(4).and_then(Value::as_i64)) else {
            return Err(Error::User(
                "hot-items: expected a count in column 4".into(),
            ));
        };
        let best = max.get(ctx).map_or(count, |m| m.max(count));
        max.update(ctx, best);
        if let Some(t) = ctx.timestamp() {
            ctx.register_event_time_timer(t);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: i64,
        _d: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        if let Some(max) = &self.max {
            if let Some(m) = max.get(ctx) {
                out.collect(vec![ctx.current_key().to_value(), Value::Int(m)])?;
            }
            max.clear(ctx);
        }
        Ok(())
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            checkpoint_interval: None,
            checkpoint_dir: None,
            fail_after: Duration::from_secs(5),
            state_backend: StateBackendConfig::default(),
            settings: Vec::new(),
        }
    }
}

/// Nexmark queries as SQL scripts (`examples/nexmark/`), by name.
pub const NEXMARK_QUERIES: &[(&str, &str)] = &[
    (
        "nexmark-q0",
        include_str!("../../../../examples/nexmark/q0.sql"),
    ),
    (
        "nexmark-q1",
        include_str!("../../../../examples/nexmark/q1.sql"),
    ),
    (
        "nexmark-q2",
        include_str!("../../../../examples/nexmark/q2.sql"),
    ),
    (
        "nexmark-q3",
        include_str!("../../../../examples/nexmark/q3.sql"),
    ),
    (
        "nexmark-q4",
        include_str!("../../../../examples/nexmark/q4.sql"),
    ),
    (
        "nexmark-q5",
        include_str!("../../../../examples/nexmark/q5.sql"),
    ),
    (
        "nexmark-q5-counts",
        include_str!("../../../../examples/nexmark/q5_counts.sql"),
    ),
    (
        "nexmark-q7",
        include_str!("../../../../examples/nexmark/q7.sql"),
    ),
    (
        "nexmark-q8",
        include_str!("../../../../examples/nexmark/q8.sql"),
    ),
    (
        "nexmark-q9",
        include_str!("../../../../examples/nexmark/q9.sql"),
    ),
    (
        "nexmark-q11",
        include_str!("../../../../examples/nexmark/q11.sql"),
    ),
    (
        "nexmark-q18",
        include_str!("../../../../examples/nexmark/q18.sql"),
    ),
    (
        "nexmark-q19",
        include_str!("../../../../examples/nexmark/q19.sql"),
    ),
    (
        "nexmark-q15",
        include_str!("../../../../examples/nexmark/q15.sql"),
    ),
    (
        "nexmark-q16",
        include_str!("../../../../examples/nexmark/q16.sql"),
    ),
    (
        "nexmark-q17",
        include_str!("../../../../examples/nexmark/q17.sql"),
    ),
    (
        "nexmark-q20",
        include_str!("../../../../examples/nexmark/q20.sql"),
    ),
    (
        "nexmark-q21",
        include_str!("../../../../examples/nexmark/q21.sql"),
    ),
    (
        "nexmark-q22",
        include_str!("../../../../examples/nexmark/q22.sql"),
    ),
];

const NEXMARK_DDL: &str = include_str!("../../../../examples/nexmark/ddl.sql");

/// W1 and W2 as SQL over the same bid stream (what a cluster can run), by name.
pub const BID_SQL_WORKLOADS: &[(&str, &str)] = &[
    (
        "filter-sql",
        include_str!("../../../../examples/bench/w1_filter.sql"),
    ),
    (
        "tumble-count-sql",
        include_str!("../../../../examples/bench/w2_tumble_count.sql"),
    ),
];

/// The large-state workload: window state for half as many keys as events.
const LARGE_STATE_SQL: &str = include_str!("../../../../examples/bench/large_state.sql");

/// The script of a SQL workload over `events` events.
fn sql_workload(name: &str, events: u64) -> Result<String> {
    if name == "large-state" {
        let keys = (events / 2).max(1);
        return Ok(LARGE_STATE_SQL
            .replace(
                "'number-of-rows' = '10000000'",
                &format!("'number-of-rows' = '{events}'"),
            )
            .replace("id % 5000000", &format!("id % {keys}")));
    }
    if let Some((_, q)) = BID_SQL_WORKLOADS.iter().find(|(n, _)| *n == name) {
        return Ok(q.replace(
            "'number-of-rows' = '20000000'",
            &format!("'number-of-rows' = '{events}'"),
        ));
    }
    if let Some((_, q)) = NEXMARK_QUERIES.iter().find(|(n, _)| *n == name) {
        let ddl = NEXMARK_DDL.replace(
            "'events.num' = '10000000'",
            &format!("'events.num' = '{events}'"),
        );
        return Ok(format!("{ddl}\n{q}"));
    }
    let known: Vec<&str> = NEXMARK_QUERIES
        .iter()
        .chain(BID_SQL_WORKLOADS)
        .map(|(n, _)| *n)
        .chain(["large-state"])
        .collect();
    Err(Error::config(
        "workload",
        format!(
            "unknown workload `{name}`; SQL workloads: {}",
            known.join(", ")
        ),
    ))
}

/// Runs a Nexmark SQL query over `events` generated events.
pub fn run_nexmark(
    name: &str,
    parallelism: usize,
    events: u64,
    opts: &BenchOptions,
) -> Result<BenchResult> {
    let script = sql_workload(name, events)?;
    run_script(name, &script, parallelism, events, opts, |blackhole| {
        blackhole
    })
}

/// Runs a SQL script as workload `name`; `output_rows` turns the rows that reached
/// blackhole sinks into the rows the workload wrote.
fn run_script(
    name: &str,
    script: &str,
    parallelism: usize,
    events: u64,
    opts: &BenchOptions,
    output_rows: impl FnOnce(u64) -> u64,
) -> Result<BenchResult> {
    let mut config = ExecutionConfig::default();
    let scratch = configure_checkpoints(&mut config, opts)?;
    let job = crate::sql::compile(
        script,
        config,
        &[("parallelism.default".into(), parallelism.to_string())],
    )
    .map_err(|e| Error::User(e.to_string()))?;
    let before = BlackholeSink::total_rows();
    let (seconds, completed) = timed_run(&job.env, &scratch)?;
    let output_rows = output_rows(BlackholeSink::total_rows() - before);
    Ok(BenchResult::new(
        name,
        parallelism,
        events,
        seconds,
        output_rows,
        opts,
        completed,
    ))
}

/// Builds and runs one workload; returns its measurements.
pub fn run(workload: Workload, parallelism: usize, events: u64) -> Result<BenchResult> {
    run_with(workload, parallelism, events, &BenchOptions::default())
}

/// [`run`] with checkpointing options.
pub fn run_with(
    workload: Workload,
    parallelism: usize,
    events: u64,
    opts: &BenchOptions,
) -> Result<BenchResult> {
    let mut config = ExecutionConfig {
        parallelism,
        ..ExecutionConfig::default()
    };
    let scratch = configure_checkpoints(&mut config, opts)?;
    let env = StreamExecutionEnvironment::with_config(config);
    let sink = BlackholeSink::default();
    let bids = env.from_source(
        BidGenerator::bounded(events),
        Some(WatermarkStrategy::bounded_out_of_orderness(
            "ts",
            Duration::from_secs(1),
        )),
    );
    match workload {
        Workload::Filter => bids
            .filter(|b| {
                let a = int_column(b, "auction")?;
                Ok(BooleanArray::new(
                    BooleanBuffer::collect_bool(a.len(), |i| a[i] % 123 == 0),
                    None,
                ))
            })
            .sink(sink.clone())
            .name("Sink"),
        Workload::TumbleCount => bids
            .with_column(Field::new("k", DataType::Int64, false), |b| {
                let k: Int64Array = int_column(b, "auction")?
                    .iter()
                    .map(|a| a % 10_000)
                    .collect();
                Ok(Arc::new(k))
            })
            .key_by("k")
            .window(Windows::tumbling(Duration::from_secs(10)))
            .aggregate(Count)?
            .sink(sink.clone())
            .name("Sink"),
        Workload::HotItems => {
            let counts = bids
                .key_by("auction")
                .window(Windows::sliding(
                    Duration::from_secs(10),
                    Duration::from_secs(2),
                ))
                .aggregate(Count)?;
            let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
            counts
                .key_by("window_end")
                .process(
                    schema(&[
                        ("window_end", ts, false),
                        ("max_count", DataType::Int64, false),
                    ]),
                    MaxPerWindow::default(),
                )
                .sink(sink.clone())
                .name("Sink")
        }
    };
    let (seconds, completed) = timed_run(&env, &scratch)?;
    Ok(BenchResult::new(
        workload.name(),
        parallelism,
        events,
        seconds,
        sink.rows(),
        opts,
        completed,
    ))
}

impl BenchResult {
    fn new(
        workload: &str,
        parallelism: usize,
        events: u64,
        seconds: f64,
        output_rows: u64,
        opts: &BenchOptions,
        checkpoints_completed: u64,
    ) -> Self {
        BenchResult {
            workload: workload.to_string(),
            parallelism,
            events,
            seconds,
            events_per_sec: events as f64 / seconds.max(1e-9),
            peak_rss_bytes: peak_rss_bytes(),
            output_rows: Some(output_rows),
            checkpoint_interval_ms: opts.checkpoint_interval.map(|d| d.as_millis() as u64),
            checkpoints_completed: opts.checkpoint_interval.map(|_| checkpoints_completed),
            mode: None,
            state_backend: opts.state_backend.kind.name().to_string(),
            managed_memory_bytes: (opts.state_backend.kind == StateBackendKind::Disk).then(|| {
                opts.state_backend
                    .managed_memory
                    .unwrap_or(crate::state::DEFAULT_MANAGED_MEMORY)
            }),
            jobmanager_peak_rss_bytes: None,
        }
    }
}

/// The state backend and the `--set` keys of `opts`, applied to `config`.
fn apply_options(config: &mut ExecutionConfig, opts: &BenchOptions) -> Result<()> {
    config.state_backend = opts.state_backend.clone();
    for (k, v) in &opts.settings {
        crate::sql::apply_setting(config, k, v).map_err(|e| Error::config(k, e))?;
    }
    Ok(())
}

/// A job's configuration from `opts` (no checkpointing: for workloads that run without).
pub fn job_config(opts: &BenchOptions) -> Result<ExecutionConfig> {
    let mut config = ExecutionConfig::default();
    apply_options(&mut config, opts)?;
    Ok(config)
}

/// Applies `opts` (state backend, `--set` keys) and turns checkpointing on when asked;
/// returns the scratch directory (removed after the run).
fn configure_checkpoints(
    config: &mut ExecutionConfig,
    opts: &BenchOptions,
) -> Result<std::path::PathBuf> {
    apply_options(config, opts)?;
    let scratch = tempdir_for("bench-checkpoints")?;
    if let Some(interval) = opts.checkpoint_interval {
        config.checkpoint.interval = Some(interval);
        config.checkpoint.dir = Some(
            opts.checkpoint_dir
                .clone()
                .unwrap_or_else(|| scratch.display().to_string()),
        );
    }
    Ok(scratch)
}

/// Runs a job to its end: seconds from start to end, and checkpoints completed.
fn timed_run(env: &StreamExecutionEnvironment, scratch: &std::path::Path) -> Result<(f64, u64)> {
    let start = Instant::now();
    let completed = wait_with_stats(env.execute_async()?)?.completed;
    let seconds = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(scratch);
    Ok((seconds, completed))
}

/// Waits for a job, returning its final checkpoint counters.
fn wait_with_stats(job: crate::executor::JobHandle) -> Result<crate::executor::CheckpointStats> {
    let shared = job.checkpoint_stats_handle();
    job.wait()?;
    Ok(shared())
}

fn tempdir_for(what: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flink-rs-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    Ok(dir)
}

/// Result of the checkpoint-state benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateBenchResult {
    pub workload: String,
    /// Keys held in keyed state.
    pub keys: u64,
    /// Bytes written for the checkpoint (state files).
    pub checkpoint_bytes: u64,
    /// From trigger to `_metadata` written.
    pub checkpoint_seconds: f64,
    /// How long taking the snapshot held the task (the synchronous part; the rest is
    /// written while the task goes on).
    pub checkpoint_sync_seconds: f64,
    /// Keys whose state changed between the first checkpoint and the second (after the
    /// first, updates go to 1 % of the keys).
    pub keys_changed: u64,
    /// Bytes the second checkpoint wrote: the whole state again, or (incremental
    /// checkpoints) about what changed.
    pub second_checkpoint_bytes: u64,
    /// Bytes of state the second checkpoint is made of (files shared with the first
    /// included).
    pub second_checkpoint_full_bytes: u64,
    pub second_checkpoint_seconds: f64,
    pub second_checkpoint_sync_seconds: f64,
    /// From the injected failure to the first record processed by the restored job.
    pub recovery_seconds: f64,
    /// From the injected failure until all restored state is decoded (large restores decode
    /// in the background while the job already processes).
    pub state_restored_seconds: f64,
    /// How long after the checkpoint completed the failure was injected.
    pub fail_after_seconds: f64,
    pub peak_rss_bytes: u64,
    /// The keyed-state backend (`hashmap` or `disk`).
    pub state_backend: String,
    /// Incremental checkpoints (`execution.checkpointing.incremental`).
    pub incremental: bool,
}

/// Keeps a counter and a `value_bytes` long text per key (a typical small record); fails once
/// when asked and records when it is processing again.
#[derive(Clone)]
struct BigState {
    value: Option<ValueState<(i64, String)>>,
    value_bytes: usize,
    fail: Arc<std::sync::atomic::AtomicBool>,
    failed_at: Arc<std::sync::Mutex<Option<FailedAt>>>,
}

/// When the injected failure happened, and when a record was processed again.
type FailedAt = (Instant, Option<Instant>);

impl ProcessFunction for BigState {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.value = Some(states.value("payload"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _out: &mut RowCollector,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        if let Ok(mut f) = self.failed_at.lock() {
            if let Some((_, back @ None)) = f.as_mut() {
                *back = Some(Instant::now());
            }
        }
        if self.fail.swap(false, Ordering::SeqCst) {
            if let Ok(mut f) = self.failed_at.lock() {
                *f = Some((Instant::now(), None));
            }
            return Err(Error::User("injected failure".into()));
        }
        let Some(v) = &self.value else {
            return Err(Error::User("not opened".into()));
        };
        let id = row.first().and_then(Value::as_i64).unwrap_or(0);
        let (count, text) = v
            .get(ctx)
            .unwrap_or_else(|| (0, format!("{id:0width$}", width = self.value_bytes)));
        v.update(ctx, (count + 1, text));
        Ok(())
    }
}

/// Builds about `state_bytes` of keyed state, checkpoints it, updates 1 % of the keys and
/// checkpoints again, fails the job and measures how long it takes to process again
/// (restore of the second checkpoint included). Parallelism 1.
pub fn checkpoint_state(state_bytes: u64, opts: &BenchOptions) -> Result<StateBenchResult> {
    use std::sync::atomic::Ordering;
    const VALUE: usize = 104;
    // Per key in a checkpoint: key (12) + namespace (16) + length (4) + value (1 + 8 + 8 + VALUE).
    let keys = (state_bytes / (VALUE as u64 + 49)).max(1);
    // After every key has state, updates go to the first 1 % of them only.
    let hot = (keys / 100).max(1);
    let scratch = tempdir_for("state-bench")?;
    let mut config = ExecutionConfig::default();
    config.checkpoint.dir = Some(
        opts.checkpoint_dir
            .clone()
            .unwrap_or_else(|| scratch.display().to_string()),
    );
    config.restart = crate::checkpoint::RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::ZERO,
    };
    config.state_backend = opts.state_backend.clone();
    let env = StreamExecutionEnvironment::with_config(config);
    let gen_ = crate::connectors::DataGen::new(schema(&[("id", DataType::Int64, false)]))?.field(
        "id",
        crate::connectors::FieldGen::Sequence {
            start: 0,
            end: None,
        },
    )?;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_at = Arc::new(std::sync::Mutex::new(None));
    let f = BigState {
        value: None,
        value_bytes: VALUE,
        fail: fail.clone(),
        failed_at: failed_at.clone(),
    };
    env.from_source(gen_, None)
        .with_column(Field::new("key", DataType::Int64, false), move |b| {
            let ids = int_column(b, "id")?;
            let k: Int64Array = ids
                .iter()
                .map(|&i| if i < keys as i64 { i } else { i % hot as i64 })
                .collect();
            Ok(Arc::new(k))
        })
        .key_by("key")
        .process(schema(&[("id", DataType::Int64, false)]), f)
        .sink(BlackholeSink::default());
    let job = env.execute_async()?;
    // Wait until every key has state.
    loop {
        let processed: u64 = job
            .task_metrics()
            .iter()
            .filter(|(n, _, _)| n.contains("Process"))
            .map(|(_, i, _)| *i)
            .sum();
        if processed >= keys {
            break;
        }
        if job.is_finished() {
            return Err(Error::User("the state benchmark job ended early".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    job.trigger_checkpoint()?;
    let cp = job
        .checkpoint_stats()
        .latest
        .ok_or_else(|| Error::Checkpoint("no checkpoint completed".into()))?;
    // Long enough for every hot key to be updated (the source runs at millions a second).
    std::thread::sleep(Duration::from_secs(1));
    job.trigger_checkpoint()?;
    let second = job
        .checkpoint_stats()
        .latest
        .filter(|c| c.id > cp.id)
        .ok_or_else(|| Error::Checkpoint("no second checkpoint completed".into()))?;
    std::thread::sleep(opts.fail_after);
    fail.store(true, Ordering::SeqCst);
    let (failed, recovery) = loop {
        if let Ok(f) = failed_at.lock() {
            if let Some((failed, Some(back))) = *f {
                break (failed, back.duration_since(failed));
            }
        }
        if job.is_finished() {
            return Err(Error::User(
                "the state benchmark job ended before recovering".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let give_up = Instant::now() + Duration::from_secs(120);
    while crate::state::restore_progress::active() > 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    let restored = crate::state::restore_progress::last_finished()
        .filter(|t| *t > failed)
        .map_or(recovery, |t| t.duration_since(failed));
    job.cancel();
    job.wait()?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(StateBenchResult {
        workload: "checkpoint-state".into(),
        keys,
        checkpoint_bytes: cp.state_size,
        checkpoint_seconds: cp.duration.as_secs_f64(),
        checkpoint_sync_seconds: cp.sync_duration.as_secs_f64(),
        keys_changed: hot,
        second_checkpoint_bytes: second.state_size,
        second_checkpoint_full_bytes: second.full_size,
        second_checkpoint_seconds: second.duration.as_secs_f64(),
        second_checkpoint_sync_seconds: second.sync_duration.as_secs_f64(),
        recovery_seconds: recovery.as_secs_f64(),
        state_restored_seconds: restored.as_secs_f64(),
        fail_after_seconds: opts.fail_after.as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        state_backend: opts.state_backend.kind.name().to_string(),
        incremental: opts.state_backend.incremental,
    })
}

/// Peak resident set size of another process, 0 where unknown.
fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A child process killed when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a Nexmark SQL query on a standalone cluster started for the run: one jobmanager and
/// `taskmanagers` taskmanagers (processes of this binary on 127.0.0.1) with enough slots
/// for `parallelism`. Measures from submission to the job reported finished over REST.
/// `peak_rss_bytes` is the sum over the cluster's processes. `opts.settings` (`--set`) go
/// to every process's configuration, e.g. the `security.ssl.internal.*` keys.
pub fn run_nexmark_cluster(
    name: &str,
    parallelism: usize,
    events: u64,
    taskmanagers: usize,
    opts: &BenchOptions,
) -> Result<BenchResult> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let script = sql_workload(name, events)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find own binary", "", e))?;
    let tms = taskmanagers.max(1);
    let slots = parallelism.div_ceil(tms).max(1);
    let spawn = |args: &[String]| -> Result<ChildGuard> {
        Command::new(&exe)
            .args(args)
            .env("FLINK_RS_EXIT_WITH_PARENT", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map(ChildGuard)
            .map_err(|e| Error::io("start cluster process", exe.clone(), e))
    };
    let process_sets: Vec<String> = opts
        .settings
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect();
    let s = |v: &[&str]| {
        v.iter()
            .map(|x| x.to_string())
            .chain(process_sets.iter().cloned())
            .collect::<Vec<_>>()
    };
    let mut jm_args = vec!["jobmanager"];
    jm_args.extend(crate::cluster::JOBMANAGER_LOOPBACK_ARGS);
    let mut jm = spawn(&s(&jm_args))?;
    let mut line = String::new();
    if let Some(out) = jm.0.stdout.take() {
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| Error::io("read jobmanager address", "", e))?;
    }
    let (rpc, rest) = crate::cluster::started_addresses(&line)
        .ok_or_else(|| Error::Network(format!("jobmanager printed `{line}`")))?;
    let mut procs = vec![jm];
    for _ in 0..tms {
        let slots = format!("taskmanager.numberOfTaskSlots={slots}");
        let mut tm_args = vec!["taskmanager", "--jobmanager", &rpc, "--set", &slots];
        tm_args.extend(crate::cluster::TASKMANAGER_LOOPBACK_ARGS);
        procs.push(spawn(&s(&tm_args))?);
    }
    let client = crate::cluster::client::RestClient::new(&format!("http://{rest}"))?;
    let until = Instant::now() + Duration::from_secs(30);
    while client
        .get("/overview")
        .ok()
        .and_then(|v| v["slots-available"].as_u64())
        < Some((slots * tms) as u64)
    {
        if Instant::now() > until {
            return Err(Error::Network("taskmanagers did not register".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let mut settings = opts.state_backend.settings();
    settings.push(("parallelism.default".into(), parallelism.to_string()));
    let scratch = tempdir_for("bench-checkpoints")?;
    if let Some(interval) = opts.checkpoint_interval {
        let dir = opts
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| scratch.display().to_string());
        settings.push((
            "execution.checkpointing.interval".into(),
            format!("{}ms", interval.as_millis()),
        ));
        settings.push(("state.checkpoints.dir".into(), dir));
    }
    let id = client.submit(&script, &settings)?;
    loop {
        let v = client.get(&format!("/jobs/{id}"))?;
        match v["state"].as_str() {
            Some("FINISHED") => break,
            Some("FAILED") | Some("CANCELED") => {
                return Err(Error::Network(format!("benchmark job ended: {v}")));
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let completed = client.get(&format!("/jobs/{id}/checkpoints"))?["counts"]["completed"]
        .as_u64()
        .unwrap_or(0);
    let peak: u64 = procs.iter().map(|p| peak_rss_of(p.0.id())).sum();
    let jm_peak = procs.first().map(|p| peak_rss_of(p.0.id()));
    drop(procs);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut r = BenchResult::new(
        name,
        parallelism,
        events,
        seconds,
        0,
        &BenchOptions {
            state_backend: opts.state_backend.clone(),
            checkpoint_interval: opts.checkpoint_interval,
            ..BenchOptions::default()
        },
        completed,
    );
    r.output_rows = None;
    r.peak_rss_bytes = peak;
    r.jobmanager_peak_rss_bytes = jm_peak;
    let tls = opts
        .settings
        .iter()
        .any(|(k, v)| k == crate::cluster::tls::INTERNAL_ENABLED && v == "true");
    r.mode = Some(format!(
        "cluster: 1 jobmanager + {tms} taskmanagers x {slots} slots{}",
        if tls { ", internal TLS" } else { "" }
    ));
    Ok(r)
}
