//! `bench/run latency`: event-to-sink latency at fixed input rates.
//!
//! A paced source makes row `i` of each subtask due at `i / rate` after the subtask's start
//! and stamps it with that moment (epoch nanoseconds), whenever it actually gets out; it
//! hands out every due row at each poll, as a source reading a live log would. Latency is
//! measured at the sink against that stamp, so time a row spends waiting in the source
//! counts too. Two jobs:
//!
//! - **windowless**: source → `keyBy` (a hash exchange, where the buffer timeout applies) →
//!   map → sink; one sample per row, `now − due`.
//! - **windowed**: source with event time = due time (watermarks with no delay) → `keyBy` →
//!   100 ms tumbling COUNT over 1,000 keys → sink; one sample per window result,
//!   `now − window end` (the moment the window could close at the earliest).
//!
//! Each job runs at each rate for a fixed time; a rate the job cannot keep up with shows as
//! latency that grows with the run (and `events_per_sec` below the rate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use hdrhistogram::Histogram;

use super::peak_rss_bytes;
use crate::api::StreamExecutionEnvironment;
use crate::error::{Error, Result};
use crate::graph::ExecutionConfig;
use crate::key::column_index;
use crate::operator::{Operator, Output};
use crate::source::{Sink, SinkWriter, Source, SourcePoll, SourceReader};
use crate::watermark::{WatermarkStrategy, timestamps};
use crate::window::{Count, Windows};

/// Keys of both jobs.
const KEYS: i64 = 1_000;
/// The windowed job's tumbling window.
const WINDOW: Duration = Duration::from_millis(100);
/// Most rows the source hands out in one batch (more when more are due, in several).
const MAX_BATCH: usize = 8192;

/// The two jobs measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyJob {
    Windowless,
    Windowed,
}

impl LatencyJob {
    pub const ALL: [LatencyJob; 2] = [LatencyJob::Windowless, LatencyJob::Windowed];

    pub fn name(&self) -> &'static str {
        match self {
            LatencyJob::Windowless => "windowless",
            LatencyJob::Windowed => "windowed",
        }
    }
}

/// What `bench/run latency` runs.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Input rates, events per second over all source subtasks.
    pub rates: Vec<u64>,
    /// How long each job runs at each rate.
    pub run_for: Duration,
    pub parallelism: usize,
    pub jobs: Vec<LatencyJob>,
    /// The job configuration (Flink keys applied: `execution.buffer-timeout.*` and others).
    pub config: ExecutionConfig,
}

/// Latency of one job at one rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyRun {
    pub job: &'static str,
    /// The rate asked for.
    pub rate: u64,
    pub events: u64,
    /// Events over the run's wall time (below `rate` when the job fell behind).
    pub events_per_sec: f64,
    /// Latencies measured: one per row (windowless) or per window result (windowed).
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The JSON line `bench/run latency` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyResult {
    pub workload: &'static str,
    pub parallelism: usize,
    /// `execution.buffer-timeout.interval` in milliseconds; null when disabled (buffers are
    /// sent only when full).
    pub buffer_timeout_ms: Option<f64>,
    pub seconds_per_run: f64,
    pub runs: Vec<LatencyRun>,
    pub peak_rss_bytes: u64,
}

/// Runs every job at every rate.
pub fn run_latency(opts: &LatencyOptions) -> Result<LatencyResult> {
    if let Some(r) = opts.rates.iter().find(|r| **r == 0) {
        return Err(Error::config(
            "rates",
            format!("{r} events/s; every rate must be above 0"),
        ));
    }
    let mut runs = Vec::new();
    for job in &opts.jobs {
        for rate in &opts.rates {
            runs.push(run_one(*job, *rate, opts)?);
        }
    }
    Ok(LatencyResult {
        workload: "latency",
        parallelism: opts.parallelism,
        buffer_timeout_ms: opts
            .config
            .buffer_timeout()
            .map(|d| d.as_secs_f64() * 1000.0),
        seconds_per_run: opts.run_for.as_secs_f64(),
        runs,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// A table of the runs, for people (the JSON line is for scripts).
pub fn table(r: &LatencyResult) -> String {
    let mut s = format!(
        "{:<11} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}\n",
        "job", "rate (ev/s)", "achieved", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    for run in &r.runs {
        s.push_str(&format!(
            "{:<11} {:>12} {:>14.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2}\n",
            run.job, run.rate, run.events_per_sec, run.p50_ms, run.p99_ms, run.p999_ms, run.max_ms
        ));
    }
    s
}

fn run_one(job: LatencyJob, rate: u64, opts: &LatencyOptions) -> Result<LatencyRun> {
    let config = ExecutionConfig {
        parallelism: opts.parallelism.max(1),
        ..opts.config.clone()
    };
    let env = StreamExecutionEnvironment::with_config(config);
    let source = PacedSource::new(rate as f64, opts.run_for);
    let events = source.events(opts.parallelism.max(1));
    let sink = LatencySink::default();
    match job {
        LatencyJob::Windowless => {
            let rows = env.from_source(source, None);
            let schema = rows.schema().clone();
            rows.key_by("k")
                .transform(
                    "Map",
                    schema,
                    Arc::new(|_| Ok(Box::new(Forward) as Box<dyn Operator>)),
                )
                .sink(sink.clone())
                .name("LatencySink");
        }
        LatencyJob::Windowed => {
            env.from_source(
                source,
                Some(WatermarkStrategy::bounded_out_of_orderness(
                    "ts",
                    Duration::ZERO,
                )),
            )
            .key_by("k")
            .window(Windows::tumbling(WINDOW))
            .aggregate(Count)?
            .sink(sink.clone())
            .name("LatencySink");
        }
    }
    let start = Instant::now();
    env.execute()?;
    let seconds = start.elapsed().as_secs_f64();
    let h = sink
        .histogram
        .lock()
        .map_err(|_| Error::User("latency histogram lock poisoned".into()))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(LatencyRun {
        job: job.name(),
        rate,
        events,
        events_per_sec: events as f64 / seconds.max(1e-9),
        samples: h.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    })
}

/// Nanoseconds since the Unix epoch (the clock both ends of a job read).
fn epoch_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Passes batches on unchanged (the windowless job's map).
struct Forward;

impl Operator for Forward {
    fn process_batch(&mut self, _: usize, batch: RecordBatch, out: &mut dyn Output) -> Result<()> {
        out.emit(batch)
    }
}

/// Rows `seq`, `k`, `due_ns` (when the row was due, epoch ns), `ts` (the same in ms: event
/// time), paced at `rate` per second over all subtasks, for `run_for`.
struct PacedSource {
    rate: f64,
    run_for: Duration,
    schema: SchemaRef,
}

impl PacedSource {
    fn new(rate: f64, run_for: Duration) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new("k", DataType::Int64, false),
            Field::new("due_ns", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        PacedSource {
            rate,
            run_for,
            schema,
        }
    }

    /// Rows of one subtask at parallelism `p`.
    fn rows_per_subtask(&self, p: usize) -> u64 {
        (self.rate / p as f64 * self.run_for.as_secs_f64()).round() as u64
    }

    /// Rows of all subtasks at parallelism `p`.
    fn events(&self, p: usize) -> u64 {
        self.rows_per_subtask(p) * p as u64
    }
}

impl Source for PacedSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        let p = parallelism.max(1);
        Ok(Box::new(PacedReader {
            schema: self.schema.clone(),
            rate: self.rate / p as f64,
            total: self.rows_per_subtask(p),
            emitted: 0,
            start: None,
            subtask: subtask as i64,
            parallelism: p as i64,
        }))
    }
}

struct PacedReader {
    schema: SchemaRef,
    /// Rows per second of this subtask.
    rate: f64,
    total: u64,
    emitted: u64,
    /// The first poll, on both clocks: pacing reads the monotonic one, stamps the epoch one.
    start: Option<(Instant, i64)>,
    subtask: i64,
    parallelism: i64,
}

impl SourceReader for PacedReader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.emitted >= self.total {
            return Ok(SourcePoll::Finished);
        }
        let (start, epoch0) = *self
            .start
            .get_or_insert_with(|| (Instant::now(), epoch_nanos()));
        // Row i is due i / rate after the start: row 0 at once.
        let due = ((start.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.total);
        let n = due.saturating_sub(self.emitted).min(MAX_BATCH as u64);
        if n == 0 {
            return Ok(SourcePoll::Pending);
        }
        let rows = self.emitted..self.emitted + n;
        self.emitted += n;
        let ns_per_row = 1e9 / self.rate;
        let due_ns: Int64Array = rows
            .clone()
            .map(|i| epoch0 + (i as f64 * ns_per_row) as i64)
            .collect();
        let ts = TimestampMillisecondArray::from_iter_values(
            due_ns.values().iter().map(|n| n / 1_000_000),
        );
        let seq: Int64Array = rows
            .map(|i| i as i64 * self.parallelism + self.subtask)
            .collect();
        let k: Int64Array = seq.values().iter().map(|s| s % KEYS).collect();
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![Arc::new(seq), Arc::new(k), Arc::new(due_ns), Arc::new(ts)],
        )?;
        Ok(SourcePoll::Batch { split: 0, batch })
    }
}

/// Records `now − due` per row (a `due_ns` column) or `now − window end` per window result
/// (a `window_end` column), in microseconds, into one histogram for all subtasks.
#[derive(Clone)]
struct LatencySink {
    histogram: Arc<Mutex<Histogram<u64>>>,
}

impl Default for LatencySink {
    fn default() -> Self {
        LatencySink {
            // 1 µs to an hour (longer is recorded as an hour), 3 significant digits: exact to
            // 0.1 % at any latency.
            histogram: Arc::new(Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("bounds 1 µs .. 1 h at 3 digits are valid for hdrhistogram"),
            )),
        }
    }
}

impl Sink for LatencySink {
    fn create_writer(
        &self,
        _subtask: usize,
        _parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let (column, unit_ns) = if schema.index_of("due_ns").is_ok() {
            ("due_ns", 1)
        } else {
            column_index(schema, "window_end")?;
            ("window_end", 1_000_000)
        };
        Ok(Box::new(LatencyWriter {
            sink: self.clone(),
            column,
            unit_ns,
        }))
    }
}

struct LatencyWriter {
    sink: LatencySink,
    /// The stamp column: Int64 or Timestamp(Millisecond), as event time is.
    column: &'static str,
    /// Nanoseconds per unit of the stamp column.
    unit_ns: i64,
}

impl SinkWriter for LatencyWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let now = epoch_nanos();
        let stamps = timestamps(batch, self.column)?;
        let mut h = self
            .sink
            .histogram
            .lock()
            .map_err(|_| Error::User("latency histogram lock poisoned".into()))?;
        for s in stamps {
            let latency = now - s * self.unit_ns;
            // A window result ahead of its end was closed by the end of input, not by time:
            // it says nothing about latency.
            if latency < 0 && self.unit_ns > 1 {
                continue;
            }
            h.saturating_record((latency.max(0) / 1000) as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rate: u64, seconds: f64, p: usize, config: &[(&str, &str)]) -> LatencyOptions {
        let mut cfg = ExecutionConfig::default();
        for (k, v) in config {
            crate::sql::apply_setting(&mut cfg, k, v).expect("a valid setting");
        }
        LatencyOptions {
            rates: vec![rate],
            run_for: Duration::from_secs_f64(seconds),
            parallelism: p,
            jobs: vec![LatencyJob::Windowless],
            config: cfg,
        }
    }

    #[test]
    fn every_row_and_every_window_result_is_measured() -> Result<()> {
        let mut opts = options(20_000, 1.0, 2, &[]);
        opts.jobs = LatencyJob::ALL.to_vec();
        let r = run_latency(&opts)?;
        assert_eq!(r.runs.len(), 2);
        let windowless = &r.runs[0];
        assert_eq!(windowless.events, 20_000);
        assert_eq!(windowless.samples, 20_000, "one sample per row");
        let windowed = &r.runs[1];
        // 1,000 keys all seen in each full 100 ms window: about 10 windows of results.
        assert!(
            (8_000..=12_000).contains(&windowed.samples),
            "window results: {}",
            windowed.samples
        );
        for run in &r.runs {
            assert!(
                run.p50_ms <= run.p99_ms && run.p99_ms <= run.p999_ms && run.p999_ms <= run.max_ms,
                "{run:?}"
            );
        }
        assert!(table(&r).contains("windowed"));
        Ok(())
    }

    /// Flink's three buffer-timeout modes, seen as latency through a hash exchange that no
    /// watermark flushes (2,000 rows/s never fill an 8,192-row batch).
    #[test]
    fn the_buffer_timeout_bounds_how_long_rows_wait_in_an_exchange() -> Result<()> {
        let p50 = |config: &[(&str, &str)]| -> Result<f64> {
            let r = run_latency(&options(2_000, 1.5, 2, config))?;
            assert_eq!(r.runs[0].samples, 3_000);
            Ok(r.runs[0].p50_ms)
        };
        // Sent at once: well under the timeouts below, even on a loaded machine.
        let at_once = p50(&[("execution.buffer-timeout.interval", "0 ms")])?;
        assert!(
            at_once < 100.0,
            "p50 {at_once} ms with a zero buffer timeout"
        );
        // A row waits for the timeout of the piece it joined: on average half of it.
        let timed = p50(&[("execution.buffer-timeout.interval", "400 ms")])?;
        assert!(
            timed >= 120.0,
            "p50 {timed} ms with a 400 ms buffer timeout"
        );
        // Only when full (never here) or at the end of input: most rows wait for the end.
        let full_only = p50(&[("execution.buffer-timeout.enabled", "false")])?;
        assert!(
            full_only >= 500.0,
            "p50 {full_only} ms with the buffer timeout off"
        );
        Ok(())
    }
}
