//! A keyed tumbling-window aggregation over generated events, printed as it fires.
//!
//! ```text
//! cargo run --release --example window_aggregation -- [EVENTS]
//! ```
//!
//! One million bids (1 M events per event-time second, see `BidGenerator`) are keyed by
//! `auction % 10`, and per 100 ms event-time window we print the bid count, the highest and
//! the average price. Watermarks trail the bid timestamps by 50 ms.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use flink_rs::prelude::*;

/// Count, max and average price in one accumulator.
#[derive(Clone, Default)]
struct PriceStats {
    price: usize,
}

impl AggregateFunction for PriceStats {
    type Acc = (i64, i64, i64);

    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
        self.price = input.index_of("price")?;
        Ok(vec![
            Field::new("bids", DataType::Int64, false),
            Field::new("max_price", DataType::Int64, false),
            Field::new("avg_price", DataType::Float64, false),
        ])
    }

    fn create_accumulator(&self) -> (i64, i64, i64) {
        (0, i64::MIN, 0)
    }

    fn add(&self, acc: &mut (i64, i64, i64), row: RowRef<'_>) -> Result<()> {
        let p = row.i64(self.price).unwrap_or(0);
        *acc = (acc.0 + 1, acc.1.max(p), acc.2 + p);
        Ok(())
    }

    fn merge(&self, acc: &mut (i64, i64, i64), o: (i64, i64, i64)) {
        *acc = (acc.0 + o.0, acc.1.max(o.1), acc.2 + o.2);
    }

    fn result(&self, acc: &(i64, i64, i64)) -> Row {
        vec![
            Value::Int(acc.0),
            Value::Int(acc.1),
            Value::Float(acc.2 as f64 / acc.0.max(1) as f64),
        ]
    }
}

fn main() -> anyhow::Result<()> {
    let events: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .with_context(|| format!("EVENTS must be a number, got `{s}`"))?,
        None => 1_000_000,
    };
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let bids = env.from_source(
        BidGenerator::bounded(events),
        Some(WatermarkStrategy::bounded_out_of_orderness(
            "ts",
            Duration::from_millis(50),
        )),
    );
    bids.with_column(
        Field::new("bucket", DataType::Int64, false),
        |b: &RecordBatch| {
            let auction = b.column(0).as_primitive::<Int64Type>();
            let bucket: Int64Array = auction.values().iter().map(|a| a % 10).collect();
            Ok(Arc::new(bucket))
        },
    )
    .key_by("bucket")
    .window(Windows::tumbling(Duration::from_millis(100)))
    .aggregate(PriceStats::default())?
    .print();
    env.execute().context("window aggregation job")?;
    Ok(())
}
