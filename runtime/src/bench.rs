//! The end-to-end benchmark workloads behind `bench/run` (`flink-rs bench`): the same
//! deterministic bid stream the Apache Flink anchor runs, through the same three jobs.
//!
//! Output is one JSON line: `workload`, `parallelism`, `events`, `seconds` (from just before
//! the first record is generated to the job's end), `events_per_sec`, `peak_rss_bytes`.

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
use crate::state::{StateRegistry, TimeDomain, ValueState};
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
    /// Rows that reached the sink (a sanity check that the job did its work).
    pub output_rows: u64,
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

/// Builds and runs one workload; returns its measurements.
pub fn run(workload: Workload, parallelism: usize, events: u64) -> Result<BenchResult> {
    let env = StreamExecutionEnvironment::with_config(ExecutionConfig {
        parallelism,
        ..ExecutionConfig::default()
    });
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
    let start = Instant::now();
    env.execute()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(BenchResult {
        workload: workload.name().to_string(),
        parallelism,
        events,
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
        output_rows: sink.rows(),
    })
}
