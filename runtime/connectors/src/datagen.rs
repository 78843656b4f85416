//! `datagen`: generated input, bounded (a row count) or unbounded, optionally rate limited,
//! and deterministic: row `i` is a pure function of `i` (and the seed), whatever the
//! parallelism, so runs can be compared record for record.
//!
//! [`BidGenerator`] is the benchmark bid stream shared with the Apache Flink anchor
//! (`auction`, `bidder`, `price`, `ts`); [`DataGen`] generates any schema field by field.
//!
//! Rows are produced in batches of consecutive indices; batch `b` belongs to subtask
//! `b % parallelism`, so each subtask's timestamps never decrease.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use bytes::Bytes;

use super::ranges::Ranges;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::key::mix64;
use flink_rs_core::operator::now_millis;
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

/// Rows per generated batch unless configured.
const DEFAULT_BATCH: usize = 8192;

/// Event time of row 0 of the bid stream: 2020-01-01T00:00:00Z.
pub const BID_BASE_TS: i64 = 1_577_836_800_000;

/// Schema of the bid stream.
pub fn bid_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// The benchmark bid stream; row `i`: `auction = 1000 + (i·2654435761) mod 100000`,
/// `bidder = 1000 + (i·40503) mod 100000`, `price = 100 + (i·16807) mod 10000`,
/// `ts = 2020-01-01T00:00:00Z + i/1000 ms` (1 M events per event-time second).
#[derive(Debug, Clone)]
pub struct BidGenerator {
    rows: Option<u64>,
    batch_size: usize,
    rate: Option<f64>,
}

impl BidGenerator {
    /// `rows` bids, then end.
    pub fn bounded(rows: u64) -> Self {
        BidGenerator {
            rows: Some(rows),
            batch_size: DEFAULT_BATCH,
            rate: None,
        }
    }

    /// Bids forever.
    pub fn unbounded() -> Self {
        BidGenerator {
            rows: None,
            batch_size: DEFAULT_BATCH,
            rate: None,
        }
    }

    /// Rows per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// At most `per_second` rows per second over all subtasks.
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Generates rows `[start, end)` (vectorized: no per-row allocation).
    pub fn generate(start: u64, end: u64) -> Result<RecordBatch> {
        let idx = start..end;
        let auction: Int64Array = idx
            .clone()
            .map(|i| 1000 + (i.wrapping_mul(2_654_435_761) % 100_000) as i64)
            .collect();
        let bidder: Int64Array = idx
            .clone()
            .map(|i| 1000 + (i.wrapping_mul(40_503) % 100_000) as i64)
            .collect();
        let price: Int64Array = idx
            .clone()
            .map(|i| 100 + (i.wrapping_mul(16_807) % 10_000) as i64)
            .collect();
        let ts = TimestampMillisecondArray::from(
            idx.map(|i| BID_BASE_TS + (i / 1000) as i64)
                .collect::<Vec<i64>>(),
        );
        Ok(RecordBatch::try_new(
            bid_schema(),
            vec![
                Arc::new(auction),
                Arc::new(bidder),
                Arc::new(price),
                Arc::new(ts),
            ],
        )?)
    }
}

struct BidReader {
    ranges: Ranges,
}

impl SourceReader for BidReader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.ranges.next() {
            None => SourcePoll::Pending,
            Some(None) => SourcePoll::Finished,
            Some(Some((s, e))) => SourcePoll::Batch {
                split: 0,
                batch: BidGenerator::generate(s, e)?,
            },
        })
    }

    fn snapshot(
        &mut self,
        _checkpoint: flink_rs_core::checkpoint::CheckpointId,
    ) -> Result<Vec<u8>> {
        self.ranges.snapshot()
    }
}

impl Source for BidGenerator {
    fn schema(&self) -> SchemaRef {
        bid_schema()
    }

    fn is_bounded(&self) -> bool {
        self.rows.is_some()
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(BidReader {
            ranges: Ranges::new(self.rows, self.batch_size, self.rate, subtask, parallelism),
        }))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(BidReader {
            ranges: Ranges::restore(
                self.rows,
                self.batch_size,
                self.rate,
                subtask,
                parallelism,
                states,
            )?,
        }))
    }
}

/// How [`DataGen`] fills one field (Flink datagen's `fields.#.kind`).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldGen {
    /// `start + i` for row i (integers).
    Sequence { start: i64 },
    /// Uniform in `[min, max]` (integers, floats, or string length for strings).
    Random { min: i64, max: i64 },
    /// The processing time when the row is generated (timestamps).
    Now,
}

/// Generates rows of any schema (Int64, Float64, Utf8, Timestamp(ms) columns).
#[derive(Debug, Clone)]
pub struct DataGen {
    schema: SchemaRef,
    fields: HashMap<String, FieldGen>,
    rows: Option<u64>,
    rate: Option<f64>,
    seed: u64,
    batch_size: usize,
}

impl DataGen {
    /// Unbounded random rows of `schema` (integers in `[0, 1000]`, strings of 10 letters,
    /// floats in `[0, 1)`, timestamps = now).
    pub fn new(schema: SchemaRef) -> Result<Self> {
        for f in schema.fields() {
            match f.data_type() {
                DataType::Int64
                | DataType::Float64
                | DataType::Utf8
                | DataType::Timestamp(TimeUnit::Millisecond, None) => {}
                other => {
                    return Err(Error::ColumnType {
                        name: f.name().clone(),
                        expected: "BIGINT, DOUBLE, STRING or TIMESTAMP(3) for datagen".into(),
                        actual: other.to_string(),
                    });
                }
            }
        }
        Ok(DataGen {
            schema,
            fields: HashMap::new(),
            rows: None,
            rate: None,
            seed: 0,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// How to fill `field`.
    pub fn field(mut self, field: &str, gen_kind: FieldGen) -> Result<Self> {
        let f = flink_rs_core::key::column_index(&self.schema, field)?;
        if let FieldGen::Random { min, max } = gen_kind {
            if min > max {
                return Err(Error::config(
                    format!("fields.{field}.min"),
                    format!("min {min} is greater than max {max}"),
                ));
            }
        }
        let _ = f;
        self.fields.insert(field.to_string(), gen_kind);
        Ok(self)
    }

    /// Stop after `n` rows (`number-of-rows`).
    pub fn rows(mut self, n: u64) -> Self {
        self.rows = Some(n);
        self
    }

    /// At most `per_second` rows per second (`rows-per-second`).
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// The random seed (same seed, same rows).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Rows per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    fn column(&self, fi: usize, field: &Field, start: u64, end: u64) -> ArrayRef {
        let default = match field.data_type() {
            DataType::Timestamp(..) => FieldGen::Now,
            DataType::Utf8 => FieldGen::Random { min: 10, max: 10 },
            _ => FieldGen::Random { min: 0, max: 1000 },
        };
        let g = self.fields.get(field.name()).unwrap_or(&default);
        let rnd = |i: u64| mix64(self.seed ^ mix64((fi as u64) << 40 ^ i));
        let int = |i: u64| match g {
            FieldGen::Sequence { start } => start.wrapping_add(i as i64),
            FieldGen::Random { min, max } => {
                let span = (*max as i128 - *min as i128 + 1) as u128;
                (*min as i128 + (u128::from(rnd(i)) % span) as i128) as i64
            }
            FieldGen::Now => now_millis(),
        };
        match field.data_type() {
            DataType::Float64 => Arc::new(
                (start..end)
                    .map(|i| match g {
                        FieldGen::Random { min, max } if (min, max) != (&0, &1000) => {
                            *min as f64
                                + (rnd(i) >> 11) as f64 / (1u64 << 53) as f64 * (*max - *min) as f64
                        }
                        FieldGen::Sequence { .. } | FieldGen::Now => int(i) as f64,
                        _ => (rnd(i) >> 11) as f64 / (1u64 << 53) as f64,
                    })
                    .collect::<Float64Array>(),
            ),
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                for i in start..end {
                    let len = match g {
                        FieldGen::Random { min, max } => {
                            (*min + (rnd(i) % ((*max - *min + 1) as u64)) as i64) as usize
                        }
                        _ => 10,
                    };
                    let s: String = (0..len)
                        .map(|k| (b'a' + (mix64(rnd(i) ^ k as u64) % 26) as u8) as char)
                        .collect();
                    b.append_value(s);
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(..) => Arc::new(TimestampMillisecondArray::from(
                (start..end).map(int).collect::<Vec<i64>>(),
            )),
            _ => Arc::new((start..end).map(int).collect::<Int64Array>()),
        }
    }
}

struct DataGenReader {
    gen_: DataGen,
    ranges: Ranges,
}

impl SourceReader for DataGenReader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.ranges.next() {
            None => SourcePoll::Pending,
            Some(None) => SourcePoll::Finished,
            Some(Some((s, e))) => {
                let cols = self
                    .gen_
                    .schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(fi, f)| self.gen_.column(fi, f, s, e))
                    .collect();
                SourcePoll::Batch {
                    split: 0,
                    batch: RecordBatch::try_new(self.gen_.schema.clone(), cols)?,
                }
            }
        })
    }

    fn snapshot(
        &mut self,
        _checkpoint: flink_rs_core::checkpoint::CheckpointId,
    ) -> Result<Vec<u8>> {
        self.ranges.snapshot()
    }
}

impl Source for DataGen {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.rows.is_some()
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(DataGenReader {
            gen_: self.clone(),
            ranges: Ranges::new(self.rows, self.batch_size, self.rate, subtask, parallelism),
        }))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(DataGenReader {
            gen_: self.clone(),
            ranges: Ranges::restore(
                self.rows,
                self.batch_size,
                self.rate,
                subtask,
                parallelism,
                states,
            )?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    #[test]
    fn bid_rows_follow_the_formula() -> Result<()> {
        let b = BidGenerator::generate(999, 1001)?;
        let auction = b.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            auction.value(0),
            1000 + ((999u64 * 2_654_435_761) % 100_000) as i64
        );
        let ts = b
            .column(3)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ts.value(0), BID_BASE_TS);
        assert_eq!(ts.value(1), BID_BASE_TS + 1);
        Ok(())
    }

    #[test]
    fn every_row_generated_once_at_any_parallelism() -> Result<()> {
        for p in 1..=3 {
            let g = BidGenerator::bounded(10_000).batch_size(1000);
            let mut total = 0;
            for s in 0..p {
                let mut r = g.create_reader(s, p)?;
                while let SourcePoll::Batch { batch, .. } = r.poll_next()? {
                    total += batch.num_rows();
                }
            }
            assert_eq!(total, 10_000);
        }
        Ok(())
    }
}
