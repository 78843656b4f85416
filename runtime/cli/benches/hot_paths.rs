//! Criterion micro-benchmarks of the per-record hot paths: splitting a batch by key group
//! (every hash exchange) and the window-aggregate update (every windowed record).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flink_rs::connectors::BidGenerator;
use flink_rs::key::{KeySelector, operator_index_for_key_group};
use flink_rs::operator::{Operator, OperatorContext, Output};
use flink_rs::state::MemoryStateBackend;
use flink_rs::window::{
    AggregateLogic, Count, WindowLogic, WindowOperator, WindowSpec, Windows, window_output_schema,
};

const ROWS: usize = 8192;

fn batch() -> RecordBatch {
    BidGenerator::generate(0, ROWS as u64).expect("generated batch")
}

fn partition(c: &mut Criterion) {
    let b = batch();
    let key = KeySelector::column("auction");
    let mut g = c.benchmark_group("partition_by_key_group");
    g.throughput(Throughput::Elements(ROWS as u64));
    for p in [2usize, 8] {
        g.bench_function(format!("parallelism_{p}"), |bench| {
            let mut kgs = Vec::new();
            bench.iter(|| {
                let cols = key.extract(&b).expect("key column");
                cols.key_groups(128, &mut kgs);
                let mut idx: Vec<Vec<u32>> = vec![Vec::new(); p];
                for (row, kg) in kgs.iter().enumerate() {
                    idx[operator_index_for_key_group(*kg, 128, p)].push(row as u32);
                }
                idx.into_iter()
                    .map(|i| {
                        take_record_batch(&b, &UInt32Array::from(i))
                            .expect("take")
                            .num_rows()
                    })
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

struct Discard;

impl Output for Discard {
    fn emit(&mut self, _: RecordBatch) -> flink_rs::Result<()> {
        Ok(())
    }
    fn emit_side(&mut self, _: &str, _: RecordBatch) -> flink_rs::Result<()> {
        Ok(())
    }
    fn emit_watermark(&mut self, _: i64) -> flink_rs::Result<()> {
        Ok(())
    }
    fn emit_idle(&mut self, _: bool) -> flink_rs::Result<()> {
        Ok(())
    }
}

fn window_update(c: &mut Criterion) {
    let b = batch();
    let mut g = c.benchmark_group("window_aggregate_update");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, windows) in [
        ("tumbling_10s", Windows::tumbling(Duration::from_secs(10))),
        (
            "sliding_10s_2s",
            Windows::sliding(Duration::from_secs(10), Duration::from_secs(2)),
        ),
    ] {
        g.bench_function(name, |bench| {
            let mut logic = AggregateLogic(Count);
            let fields = logic.bind(&b.schema()).expect("bind");
            let key = KeySelector::column("auction");
            let out_schema = window_output_schema(key.key_field(&b.schema()).expect("key"), fields);
            let ctx = OperatorContext {
                name: "w".into(),
                subtask: 0,
                parallelism: 1,
                max_parallelism: 128,
                uid: "w".into(),
                attempt: 0,
            };
            let spec = WindowSpec {
                windows,
                key,
                time_column: Some("ts".into()),
                allowed_lateness: 0,
                late_tag: None,
                backend: Arc::new(MemoryStateBackend::default()),
            };
            let mut op = WindowOperator::new(logic, spec, out_schema, &ctx).expect("operator");
            bench.iter(|| {
                op.process_batch(0, b.clone(), &mut Discard)
                    .expect("update")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, partition, window_update);
criterion_main!(benches);
