//! Flink's textual forms of temporal values in its `csv` and `json` formats, so that files
//! and messages move between the two engines.
//!
//! Flink writes a `TIMESTAMP` as `2024-01-01 00:00:05.98`: a space between date and time,
//! seconds always, and the fraction of a second with its trailing zeros dropped (none at all
//! on a whole second); a `TIMESTAMP_LTZ` the same with a `Z` after it; a `TIME` as
//! `00:00:05.98`. The `json` format's `json.timestamp-format.standard = 'ISO-8601'` puts a
//! `T` between date and time instead. Arrow's writers print fixed-width fractions
//! (`2024-01-01T00:00:05.980`), which Flink's parsers refuse, so these columns are turned into
//! text here before a batch is written. Dates (`2024-01-01`) and decimals (plain digits with
//! their scale) already print as Flink prints them; Arrow's readers parse every form written
//! here.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{
    DataType, Field, Schema, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};

use flink_rs_core::error::Result;

/// How date and time are joined in a timestamp (`json.timestamp-format.standard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampStandard {
    /// `2024-01-01 00:00:05.98` (Flink's default, and the only form of its `csv` format).
    #[default]
    Sql,
    /// `2024-01-01T00:00:05.98`.
    Iso8601,
}

impl TimestampStandard {
    /// Reads Flink's option value (`SQL` or `ISO-8601`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "SQL" => Some(TimestampStandard::Sql),
            "ISO-8601" => Some(TimestampStandard::Iso8601),
            _ => None,
        }
    }
}

/// `batch` with every timestamp and time column turned into Flink's text; other columns
/// unchanged (the same batch when there are none).
pub fn with_flink_temporal_text(
    batch: &RecordBatch,
    standard: TimestampStandard,
) -> Result<RecordBatch> {
    let temporal = |t: &DataType| {
        matches!(
            t,
            DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_)
        )
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| temporal(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match text_column(column, standard) {
            Some(text) => {
                fields.push(Arc::new(Field::new(
                    field.name(),
                    DataType::Utf8,
                    field.is_nullable(),
                )));
                columns.push(text);
            }
            None => {
                fields.push(field.clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The column as Flink's text, or `None` when it is not a timestamp or time.
fn text_column(column: &ArrayRef, standard: TimestampStandard) -> Option<ArrayRef> {
    let (per_second, zone, values): (i64, Option<bool>, Vec<Option<i64>>) = match column.data_type()
    {
        DataType::Timestamp(unit, tz) => {
            let zoned = Some(tz.is_some());
            let values = match unit {
                TimeUnit::Second => column
                    .as_primitive::<TimestampSecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Millisecond => column
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Microsecond => column
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => column
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
            };
            (units_per_second(unit), zoned, values)
        }
        DataType::Time32(unit) => {
            let values = match unit {
                TimeUnit::Second => column
                    .as_primitive::<Time32SecondType>()
                    .iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
                _ => column
                    .as_primitive::<Time32MillisecondType>()
                    .iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            };
            (units_per_second(unit), None, values)
        }
        DataType::Time64(unit) => {
            let values = match unit {
                TimeUnit::Microsecond => column
                    .as_primitive::<Time64MicrosecondType>()
                    .iter()
                    .collect(),
                _ => column
                    .as_primitive::<Time64NanosecondType>()
                    .iter()
                    .collect(),
            };
            (units_per_second(unit), None, values)
        }
        _ => return None,
    };
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 24);
    let mut text = String::with_capacity(32);
    for v in values {
        match v {
            None => out.append_null(),
            Some(v) => {
                text.clear();
                let seconds = v.div_euclid(per_second);
                let nanos = v.rem_euclid(per_second) * (1_000_000_000 / per_second);
                match zone {
                    Some(zoned) => {
                        write_date(&mut text, seconds.div_euclid(86_400));
                        text.push(match standard {
                            TimestampStandard::Sql => ' ',
                            TimestampStandard::Iso8601 => 'T',
                        });
                        write_time(&mut text, seconds.rem_euclid(86_400), nanos);
                        if zoned {
                            text.push('Z');
                        }
                    }
                    None => write_time(&mut text, seconds.rem_euclid(86_400), nanos),
                }
                out.append_value(&text);
            }
        }
    }
    Some(Arc::new(out.finish()))
}

fn units_per_second(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// `yyyy-MM-dd` of the day `days` after 1970-01-01 (proleptic Gregorian calendar).
fn write_date(out: &mut String, days: i64) {
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(out, "{year:04}-{month:02}-{day:02}");
}

/// `HH:mm:ss` and the fraction without trailing zeros (none when it is zero).
fn write_time(out: &mut String, second_of_day: i64, nanos: i64) {
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos > 0 {
        let digits = format!("{nanos:09}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Int32Array, StringArray, Time32MillisecondArray, TimestampMillisecondArray,
    };

    fn texts(batch: &RecordBatch, i: usize) -> Vec<Option<String>> {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("a text column")
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn timestamps_print_as_flink_prints_them() {
        let ms = |s: &str| {
            arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).expect("a timestamp")
                / 1_000_000
        };
        let naive = TimestampMillisecondArray::from(vec![
            Some(ms("2024-01-01T00:00:05.980")),
            Some(ms("2024-01-01T00:00:05")),
            Some(ms("1969-12-31T23:59:59.001")),
            None,
            Some(ms("2024-02-29T23:59:59.100")),
        ]);
        let zoned = naive.clone().with_timezone("UTC");
        let time = Time32MillisecondArray::from(vec![
            Some(5_980),
            Some(0),
            Some(86_399_999),
            None,
            Some(1),
        ]);
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            ),
            ("ts", Arc::new(naive) as ArrayRef),
            ("ltz", Arc::new(zoned) as ArrayRef),
            ("t", Arc::new(time) as ArrayRef),
        ])
        .expect("batch");
        let sql = with_flink_temporal_text(&batch, TimestampStandard::Sql).expect("text");
        assert_eq!(sql.column(0).data_type(), &DataType::Int32);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            texts(&sql, 1),
            vec![
                s("2024-01-01 00:00:05.98"),
                s("2024-01-01 00:00:05"),
                s("1969-12-31 23:59:59.001"),
                None,
                s("2024-02-29 23:59:59.1"),
            ]
        );
        assert_eq!(texts(&sql, 2)[0], s("2024-01-01 00:00:05.98Z"));
        assert_eq!(
            texts(&sql, 3),
            vec![
                s("00:00:05.98"),
                s("00:00:00"),
                s("23:59:59.999"),
                None,
                s("00:00:00.001")
            ]
        );
        let iso = with_flink_temporal_text(&batch, TimestampStandard::Iso8601).expect("text");
        assert_eq!(texts(&iso, 1)[0], s("2024-01-01T00:00:05.98"));
        assert_eq!(texts(&iso, 2)[1], s("2024-01-01T00:00:05Z"));
    }

    #[test]
    fn what_is_written_reads_back_as_the_same_instant() {
        let values = vec![Some(1_704_067_205_980_i64), Some(-1), None, Some(0)];
        let batch = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampMillisecondArray::from(values.clone())) as ArrayRef,
        )])
        .expect("batch");
        let text = with_flink_temporal_text(&batch, TimestampStandard::Sql).expect("text");
        let back = arrow::compute::cast(
            text.column(0),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )
        .expect("Arrow parses Flink's form");
        let back: Vec<Option<i64>> = back
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect();
        assert_eq!(back, values);
    }

    #[test]
    fn the_standard_is_read_from_flinks_option_values() {
        assert_eq!(
            TimestampStandard::parse("SQL"),
            Some(TimestampStandard::Sql)
        );
        assert_eq!(
            TimestampStandard::parse("iso-8601"),
            Some(TimestampStandard::Iso8601)
        );
        assert_eq!(TimestampStandard::parse("ISO8601"), None);
    }
}
