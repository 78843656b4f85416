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
    Array, ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, StringBuilder, TimestampMillisecondArray, make_array,
};
use arrow::buffer::NullBuffer;
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
    /// `start + i` for row i (integers, floats, dates as days since 1970-01-01, timestamps as
    /// milliseconds, strings as the number's digits). With an `end` the source ends after the
    /// value `end`, as Flink's sequence generator does; without one it goes on (an extension
    /// of flink-rs: Flink requires `end`).
    Sequence { start: i64, end: Option<i64> },
    /// Uniform in `[min, max]` (integers, floats, dates, timestamps in milliseconds, or
    /// string length for strings).
    Random { min: i64, max: i64 },
    /// The processing time when the row is generated (timestamps; today for dates).
    Now,
    /// The processing time minus a uniform random delay of at most `max_past_ms` (Flink's
    /// `fields.#.max-past` for timestamps; whole days for dates).
    Past { max_past_ms: i64 },
}

/// The column types [`DataGen`] generates, as named in errors.
pub const DATAGEN_TYPES: &str =
    "BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, STRING, DATE or TIMESTAMP(3)";

/// Whether [`DataGen`] can generate a column of type `t`.
pub fn datagen_supports(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Millisecond, None)
    )
}

/// Generates rows of any schema of [`DATAGEN_TYPES`] columns.
#[derive(Debug, Clone)]
pub struct DataGen {
    schema: SchemaRef,
    fields: HashMap<String, FieldGen>,
    null_rates: HashMap<String, f64>,
    rows: Option<u64>,
    rate: Option<f64>,
    seed: u64,
    batch_size: usize,
}

const MS_PER_DAY: i64 = 86_400_000;

impl DataGen {
    /// Unbounded random rows of `schema` (integers in `[0, 1000]`, strings of 10 letters,
    /// floats in `[0, 1)`, timestamps = now).
    pub fn new(schema: SchemaRef) -> Result<Self> {
        for f in schema.fields() {
            if !datagen_supports(f.data_type()) {
                return Err(Error::ColumnType {
                    name: f.name().clone(),
                    expected: format!("{DATAGEN_TYPES} for datagen"),
                    actual: f.data_type().to_string(),
                });
            }
        }
        Ok(DataGen {
            schema,
            fields: HashMap::new(),
            null_rates: HashMap::new(),
            rows: None,
            rate: None,
            seed: 0,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// How to fill `field`.
    pub fn field(mut self, field: &str, gen_kind: FieldGen) -> Result<Self> {
        let f = flink_rs_core::key::column_index(&self.schema, field)?;
        let data_type = self.schema.field(f).data_type();
        match gen_kind {
            FieldGen::Random { min, max } if min > max => {
                return Err(Error::config(
                    format!("fields.{field}.min"),
                    format!("min {min} is greater than max {max}"),
                ));
            }
            FieldGen::Random { min, .. } if *data_type == DataType::Utf8 && min < 0 => {
                return Err(Error::config(
                    format!("fields.{field}.length"),
                    format!("a string length cannot be negative ({min})"),
                ));
            }
            FieldGen::Sequence {
                start,
                end: Some(end),
            } if end < start => {
                return Err(Error::config(
                    format!("fields.{field}.end"),
                    format!("end {end} is less than start {start}"),
                ));
            }
            FieldGen::Past { max_past_ms } if max_past_ms < 0 => {
                return Err(Error::config(
                    format!("fields.{field}.max-past"),
                    "cannot be negative",
                ));
            }
            FieldGen::Now | FieldGen::Past { .. }
                if !matches!(data_type, DataType::Timestamp(..) | DataType::Date32) =>
            {
                return Err(Error::config(
                    format!("fields.{field}"),
                    format!(
                        "the current time fills DATE and TIMESTAMP columns only; `{field}` is {data_type}"
                    ),
                ));
            }
            _ => {}
        }
        if let (DataType::Boolean, FieldGen::Sequence { .. }) = (data_type, &gen_kind) {
            return Err(Error::config(
                format!("fields.{field}.kind"),
                format!("a BOOLEAN column such as `{field}` cannot be a sequence"),
            ));
        }
        self.fields.insert(field.to_string(), gen_kind);
        Ok(self)
    }

    /// The fraction of rows in which `field` is NULL (Flink's `fields.#.null-rate`): each row
    /// independently, decided by the seed and the row's index like every other value.
    pub fn null_rate(mut self, field: &str, rate: f64) -> Result<Self> {
        let f = flink_rs_core::key::column_index(&self.schema, field)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::config(
                format!("fields.{field}.null-rate"),
                format!("must be between 0 and 1, not {rate}"),
            ));
        }
        if rate > 0.0 && !self.schema.field(f).is_nullable() {
            return Err(Error::config(
                format!("fields.{field}.null-rate"),
                format!("column `{field}` is NOT NULL"),
            ));
        }
        self.null_rates.insert(field.to_string(), rate);
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

    /// How many rows the source produces: `number-of-rows`, or fewer when a sequence with an
    /// end runs out first (Flink's datagen ends with its first exhausted generator); `None`
    /// for an unbounded source.
    pub fn row_count(&self) -> Option<u64> {
        self.fields
            .values()
            .filter_map(|g| match g {
                FieldGen::Sequence {
                    start,
                    end: Some(end),
                } => Some((*end as i128 - *start as i128 + 1) as u64),
                _ => None,
            })
            .chain(self.rows)
            .min()
    }

    fn column(&self, fi: usize, field: &Field, start: u64, end: u64) -> ArrayRef {
        let default = match field.data_type() {
            DataType::Timestamp(..) | DataType::Date32 => FieldGen::Now,
            DataType::Utf8 => FieldGen::Random { min: 10, max: 10 },
            _ => FieldGen::Random { min: 0, max: 1000 },
        };
        let g = self.fields.get(field.name()).unwrap_or(&default);
        let rnd = |i: u64| mix64(self.seed ^ mix64((fi as u64) << 40 ^ i));
        let uniform = |i: u64, min: i64, max: i64| {
            let span = (max as i128 - min as i128 + 1) as u128;
            (min as i128 + (u128::from(rnd(i)) % span) as i128) as i64
        };
        let int = |i: u64| match g {
            FieldGen::Sequence { start, .. } => start.wrapping_add(i as i64),
            FieldGen::Random { min, max } => uniform(i, *min, *max),
            FieldGen::Now => now_millis(),
            FieldGen::Past { max_past_ms } => now_millis() - uniform(i, 0, *max_past_ms),
        };
        // A fraction in [0, 1) from the row's random bits (53 of them, a double's mantissa).
        let unit = |i: u64| (rnd(i) >> 11) as f64 / (1u64 << 53) as f64;
        let float = |i: u64| match g {
            FieldGen::Random { min, max } if (min, max) != (&0, &1000) => {
                *min as f64 + unit(i) * (*max - *min) as f64
            }
            FieldGen::Sequence { .. } | FieldGen::Now | FieldGen::Past { .. } => int(i) as f64,
            _ => unit(i),
        };
        let values: ArrayRef = match field.data_type() {
            DataType::Boolean => Arc::new(
                (start..end)
                    .map(|i| Some(rnd(i) & 1 == 1))
                    .collect::<BooleanArray>(),
            ),
            DataType::Int8 => Arc::new((start..end).map(|i| int(i) as i8).collect::<Int8Array>()),
            DataType::Int16 => {
                Arc::new((start..end).map(|i| int(i) as i16).collect::<Int16Array>())
            }
            DataType::Int32 => {
                Arc::new((start..end).map(|i| int(i) as i32).collect::<Int32Array>())
            }
            DataType::Float32 => Arc::new(
                (start..end)
                    .map(|i| float(i) as f32)
                    .collect::<Float32Array>(),
            ),
            DataType::Float64 => Arc::new((start..end).map(float).collect::<Float64Array>()),
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                for i in start..end {
                    match g {
                        FieldGen::Sequence { .. } => b.append_value(int(i).to_string()),
                        _ => {
                            let len = match g {
                                FieldGen::Random { min, max } => uniform(i, *min, *max) as usize,
                                _ => 10,
                            };
                            let s: String = (0..len)
                                .map(|k| (b'a' + (mix64(rnd(i) ^ k as u64) % 26) as u8) as char)
                                .collect();
                            b.append_value(s);
                        }
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Date32 => Arc::new(Date32Array::from(
                (start..end)
                    .map(|i| match g {
                        FieldGen::Now | FieldGen::Past { .. } => {
                            int(i).div_euclid(MS_PER_DAY) as i32
                        }
                        _ => int(i) as i32,
                    })
                    .collect::<Vec<i32>>(),
            )),
            DataType::Timestamp(..) => Arc::new(TimestampMillisecondArray::from(
                (start..end).map(int).collect::<Vec<i64>>(),
            )),
            _ => Arc::new((start..end).map(int).collect::<Int64Array>()),
        };
        match self.null_rates.get(field.name()) {
            Some(&rate) if rate > 0.0 => {
                // Independent of the value's own random bits: another stream of the seed.
                let null = |i: u64| {
                    (mix64(rnd(i) ^ 0x6e75_6c6c) >> 11) as f64 / ((1u64 << 53) as f64) < rate
                };
                let valid: NullBuffer = (start..end).map(|i| !null(i)).collect();
                let data = values.to_data().into_builder().nulls(Some(valid));
                // The same buffers with a validity bitmap: cannot fail for these types.
                match data.build() {
                    Ok(d) => make_array(d),
                    Err(_) => values,
                }
            }
            _ => values,
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
        self.row_count().is_some()
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(DataGenReader {
            gen_: self.clone(),
            ranges: Ranges::new(
                self.row_count(),
                self.batch_size,
                self.rate,
                subtask,
                parallelism,
            ),
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
                self.row_count(),
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

    fn read_all(g: &DataGen, p: usize) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for s in 0..p {
            let mut r = g.create_reader(s, p)?;
            while let SourcePoll::Batch { batch, .. } = r.poll_next()? {
                out.push(batch);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_sequence_with_an_end_bounds_the_source() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let g = DataGen::new(schema.clone())?
            .batch_size(100)
            .field(
                "id",
                FieldGen::Sequence {
                    start: -5,
                    end: Some(994),
                },
            )?
            .rows(5000);
        assert_eq!(g.row_count(), Some(1000));
        assert!(g.is_bounded());
        for p in [1, 3] {
            let mut ids: Vec<i32> = read_all(&g, p)?
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_primitive::<arrow::datatypes::Int32Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, (-5..=994).collect::<Vec<_>>());
        }
        // The row count wins when it is the smaller.
        assert_eq!(g.clone().rows(10).row_count(), Some(10));
        // Without an end the sequence goes on.
        let open = DataGen::new(schema)?.field(
            "id",
            FieldGen::Sequence {
                start: 0,
                end: None,
            },
        )?;
        assert_eq!(open.row_count(), None);
        assert!(!open.is_bounded());
        Ok(())
    }

    #[test]
    fn null_rate_empties_that_share_of_rows_the_same_way_every_run() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let g = DataGen::new(schema)?
            .null_rate("n", 0.3)?
            .null_rate("s", 0.0)?
            .rows(20_000);
        let batches = read_all(&g, 2)?;
        let nulls: usize = batches.iter().map(|b| b.column(0).null_count()).sum();
        assert!((5_400..=6_600).contains(&nulls), "{nulls} of 20000");
        assert_eq!(
            batches
                .iter()
                .map(|b| b.column(1).null_count())
                .sum::<usize>(),
            0
        );
        // Deterministic: the same rows again.
        let again: usize = read_all(&g, 2)?
            .iter()
            .map(|b| b.column(0).null_count())
            .sum();
        assert_eq!(nulls, again);
        // Out of range, or on a NOT NULL column: refused.
        let strict = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        assert!(DataGen::new(strict.clone())?.null_rate("n", 0.1).is_err());
        assert!(DataGen::new(strict.clone())?.null_rate("n", 0.0).is_ok());
        assert!(DataGen::new(strict)?.null_rate("n", 1.5).is_err());
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
