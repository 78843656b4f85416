//! Row-at-a-time access for user functions that are easier to write per record than per
//! batch (window results, keyed process functions, examples).
//!
//! The engine moves Arrow batches; a [`Row`] is a short-lived view materialized only where a
//! user function asks for one, and [`RowBatchBuilder`] turns rows back into a batch.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit, TimestampMillisecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::error::{Error, Result};

/// One value of a row.
#[derive(Debug, Clone, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Value {
    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a float (integers widen).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a string slice, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment (`{:>6}`), as the primitives' Display does.
        match self {
            Value::Null => f.pad("NULL"),
            Value::Bool(b) => f.pad(if *b { "true" } else { "false" }),
            Value::Int(v) => f.pad(&v.to_string()),
            Value::Float(v) => f.pad(&v.to_string()),
            Value::Str(s) => f.pad(s),
        }
    }
}

/// A materialized row: one value per column of its stream's schema.
pub type Row = Vec<Value>;

/// Reads the value at (`row`, `col`) of a batch. Unsupported types read as their display
/// string, so a row view never fails.
pub fn value_at(batch: &RecordBatch, col: usize, row: usize) -> Value {
    array_value(batch.column(col), row)
}

/// Reads one value of an array.
pub fn array_value(a: &ArrayRef, row: usize) -> Value {
    if a.is_null(row) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::Int(a.as_primitive::<$t>().value(row) as i64)
        };
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Timestamp(TimeUnit::Millisecond, _) => int!(TimestampMillisecondType),
        DataType::Float32 => Value::Float(f64::from(a.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => Value::Float(a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::Str(a.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::Str(a.as_string::<i64>().value(row).to_string()),
        // A decimal is a number (as the row functions build it: `Float64`), so that MIN, MAX
        // and comparisons order it by value, not as text ("97.78" > "608.07").
        DataType::Decimal128(_, scale) => Value::Float(
            a.as_primitive::<Decimal128Type>().value(row) as f64 / 10f64.powi(i32::from(*scale)),
        ),
        _ => Value::Str(arrow::util::display::array_value_to_string(a, row).unwrap_or_default()),
    }
}

/// Materializes row `row` of a batch.
pub fn row_at(batch: &RecordBatch, row: usize) -> Row {
    (0..batch.num_columns())
        .map(|c| value_at(batch, c, row))
        .collect()
}

/// Materializes every row of a batch.
pub fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    (0..batch.num_rows()).map(|r| row_at(batch, r)).collect()
}

/// Builds a batch of a given schema from rows.
///
/// Supported column types: Boolean, Int64, Float64, Utf8, Timestamp(ms); other integer widths
/// are built as Int64 would not match the schema, so they are rejected with a clear error.
pub struct RowBatchBuilder {
    schema: SchemaRef,
    cols: Vec<ColBuilder>,
    len: usize,
}

enum ColBuilder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Ts(TimestampMillisecondBuilder, Option<Arc<str>>),
}

impl RowBatchBuilder {
    /// A builder for `schema`; fails on column types rows cannot build.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let mut cols = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            cols.push(match f.data_type() {
                DataType::Boolean => ColBuilder::Bool(BooleanBuilder::new()),
                DataType::Int64 => ColBuilder::Int(Int64Builder::new()),
                DataType::Float64 => ColBuilder::Float(Float64Builder::new()),
                DataType::Utf8 => ColBuilder::Str(StringBuilder::new()),
                DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                    ColBuilder::Ts(TimestampMillisecondBuilder::new(), tz.clone())
                }
                other => {
                    return Err(Error::ColumnType {
                        name: f.name().clone(),
                        expected: "Boolean, Int64, Float64, Utf8 or Timestamp(ms)".into(),
                        actual: other.to_string(),
                    });
                }
            });
        }
        Ok(RowBatchBuilder {
            schema,
            cols,
            len: 0,
        })
    }

    /// The schema being built.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one row; values must match the schema's columns in number and kind.
    pub fn push(&mut self, row: &[Value]) -> Result<()> {
        if row.len() != self.cols.len() {
            return Err(Error::User(format!(
                "row has {} values but the schema has {} columns",
                row.len(),
                self.cols.len()
            )));
        }
        for (i, (b, v)) in self.cols.iter_mut().zip(row).enumerate() {
            let ok = match (b, v) {
                (ColBuilder::Bool(b), Value::Null) => {
                    b.append_null();
                    true
                }
                (ColBuilder::Int(b), Value::Null) => {
                    b.append_null();
                    true
                }
                (ColBuilder::Float(b), Value::Null) => {
                    b.append_null();
                    true
                }
                (ColBuilder::Str(b), Value::Null) => {
                    b.append_null();
                    true
                }
                (ColBuilder::Ts(b, _), Value::Null) => {
                    b.append_null();
                    true
                }
                (ColBuilder::Bool(b), Value::Bool(x)) => {
                    b.append_value(*x);
                    true
                }
                (ColBuilder::Int(b), Value::Int(x)) => {
                    b.append_value(*x);
                    true
                }
                (ColBuilder::Ts(b, _), Value::Int(x)) => {
                    b.append_value(*x);
                    true
                }
                (ColBuilder::Float(b), Value::Float(x)) => {
                    b.append_value(*x);
                    true
                }
                (ColBuilder::Float(b), Value::Int(x)) => {
                    b.append_value(*x as f64);
                    true
                }
                (ColBuilder::Str(b), Value::Str(x)) => {
                    b.append_value(x);
                    true
                }
                (ColBuilder::Str(b), other) => {
                    b.append_value(other.to_string());
                    true
                }
                _ => false,
            };
            if !ok {
                return Err(Error::ColumnType {
                    name: self.schema.field(i).name().clone(),
                    expected: self.schema.field(i).data_type().to_string(),
                    actual: format!("{v:?}"),
                });
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Takes the rows appended so far as a batch and starts over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    ColBuilder::Bool(b) => Arc::new(b.finish()),
                    ColBuilder::Int(b) => Arc::new(b.finish()),
                    ColBuilder::Float(b) => Arc::new(b.finish()),
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                    ColBuilder::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
                }
            })
            .collect();
        self.len = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn rows_round_trip() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Float64, false),
        ]));
        let mut b = RowBatchBuilder::new(schema)?;
        let rows = vec![
            vec![Value::Int(1), Value::Str("x".into()), Value::Float(0.5)],
            vec![Value::Null, Value::Null, Value::Float(2.0)],
        ];
        for r in &rows {
            b.push(r)?;
        }
        let batch = b.finish()?;
        assert_eq!(rows_of(&batch), rows);
        Ok(())
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_column() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let mut b = RowBatchBuilder::new(schema)?;
        let err = b
            .push(&[Value::Str("x".into())])
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("`a`"));
        Ok(())
    }
}
