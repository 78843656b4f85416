//! What a window computes: incremental [`AggregateFunction`]s (with built-ins `Count`, `Sum`,
//! `Min`, `Max`, `Avg` and a row [`Reduce`]) and full-window [`ProcessWindowFunction`]s that
//! see every row of the window when it fires.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

use super::Window;
use crate::error::{Error, Result};
use crate::key::{Key, column_index};
use crate::rows::{Row, Value, row_at, value_at};

/// One row of a batch, read in place.
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    pub batch: &'a RecordBatch,
    pub row: usize,
}

impl RowRef<'_> {
    /// Column `col` as an integer (Int64 columns; `None` when null or another type).
    #[inline]
    pub fn i64(&self, col: usize) -> Option<i64> {
        let a = self.batch.column(col);
        let p = a.as_primitive_opt::<Int64Type>()?;
        (!p.is_null(self.row)).then(|| p.value(self.row))
    }

    /// Column `col` as a float (Float64 and Int64 columns).
    #[inline]
    pub fn f64(&self, col: usize) -> Option<f64> {
        let a = self.batch.column(col);
        if a.is_null(self.row) {
            return None;
        }
        match a.data_type() {
            DataType::Float64 => Some(a.as_primitive::<Float64Type>().value(self.row)),
            _ => value_at(self.batch, col, self.row).as_f64(),
        }
    }

    /// Column `col` as a value of any type.
    pub fn value(&self, col: usize) -> Value {
        value_at(self.batch, col, self.row)
    }

    /// The whole row.
    pub fn to_row(&self) -> Row {
        row_at(self.batch, self.row)
    }
}

/// An incremental aggregation (Flink's `AggregateFunction`): one accumulator per key and
/// window, updated as records arrive, so a window holds O(1) state whatever its size.
pub trait AggregateFunction: Clone + Send + Sync + 'static {
    type Acc: crate::state::StateValue;
    /// Resolves columns against the input schema; returns the fields of the result.
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>>;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds one row in.
    fn add(&self, acc: &mut Self::Acc, row: RowRef<'_>) -> Result<()>;
    /// Merges two accumulators (session windows merge).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// Merges an accumulator that stays in use (sliced windows merge their slices' into
    /// each window's); override to avoid the clone.
    fn merge_ref(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        self.merge(acc, other.clone())
    }
    /// The result: one value per field returned by `bind`.
    fn result(&self, acc: &Self::Acc) -> Row;
}

/// A full-window function (Flink's `ProcessWindowFunction`): sees every row of the window.
pub trait ProcessWindowFunction: Clone + Send + Sync + 'static {
    /// Checks the input schema; returns the fields of the rows `process` emits.
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>>;
    /// Emits zero or more rows for one key and window.
    fn process(&self, key: &Key, window: Window, rows: &[Row], out: &mut Vec<Row>) -> Result<()>;
}

/// What the window operator needs of a window function (implemented for both kinds).
pub trait WindowLogic: Clone + Send + Sync + 'static {
    type Acc: crate::state::StateValue;
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>>;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, row: RowRef<'_>) -> Result<()>;
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    fn emit(&self, key: &Key, window: Window, acc: &Self::Acc, out: &mut Vec<Row>) -> Result<()>;
}

/// Adapter: an aggregate function as window logic.
#[derive(Clone)]
pub struct AggregateLogic<A>(pub A);

impl<A: AggregateFunction> WindowLogic for AggregateLogic<A> {
    type Acc = A::Acc;
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
        self.0.bind(input)
    }
    fn create(&self) -> A::Acc {
        self.0.create_accumulator()
    }
    #[inline]
    fn add(&self, acc: &mut A::Acc, row: RowRef<'_>) -> Result<()> {
        self.0.add(acc, row)
    }
    fn merge(&self, acc: &mut A::Acc, other: A::Acc) {
        self.0.merge(acc, other)
    }
    fn emit(&self, _key: &Key, _window: Window, acc: &A::Acc, out: &mut Vec<Row>) -> Result<()> {
        out.push(self.0.result(acc));
        Ok(())
    }
}

/// Adapter: a full-window function as window logic (the accumulator buffers rows).
#[derive(Clone)]
pub struct ProcessLogic<F>(pub F);

impl<F: ProcessWindowFunction> WindowLogic for ProcessLogic<F> {
    type Acc = Vec<Row>;
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
        self.0.bind(input)
    }
    fn create(&self) -> Vec<Row> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<Row>, row: RowRef<'_>) -> Result<()> {
        acc.push(row.to_row());
        Ok(())
    }
    fn merge(&self, acc: &mut Vec<Row>, other: Vec<Row>) {
        acc.extend(other);
    }
    fn emit(&self, key: &Key, window: Window, acc: &Vec<Row>, out: &mut Vec<Row>) -> Result<()> {
        self.0.process(key, window, acc, out)
    }
}

/// `COUNT(*)` as field `count`.
#[derive(Clone, Debug, Default)]
pub struct Count;

impl AggregateFunction for Count {
    type Acc = i64;
    fn bind(&mut self, _input: &Schema) -> Result<Vec<Field>> {
        Ok(vec![Field::new("count", DataType::Int64, false)])
    }
    fn create_accumulator(&self) -> i64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut i64, _row: RowRef<'_>) -> Result<()> {
        *acc += 1;
        Ok(())
    }
    fn merge(&self, acc: &mut i64, other: i64) {
        *acc += other;
    }
    fn result(&self, acc: &i64) -> Row {
        vec![Value::Int(*acc)]
    }
}

/// A numeric column bound to its index; integer columns stay exact.
#[derive(Clone, Debug)]
struct NumColumn {
    name: String,
    index: usize,
    float: bool,
}

impl NumColumn {
    fn new(name: String) -> Self {
        NumColumn {
            name,
            index: 0,
            float: false,
        }
    }

    fn bind(&mut self, input: &Schema) -> Result<DataType> {
        self.index = column_index(input, &self.name)?;
        let dt = input.field(self.index).data_type();
        self.float = match dt {
            DataType::Float32 | DataType::Float64 => true,
            d if d.is_integer() => false,
            other => {
                return Err(Error::ColumnType {
                    name: self.name.clone(),
                    expected: "a numeric column".into(),
                    actual: other.to_string(),
                });
            }
        };
        Ok(if self.float {
            DataType::Float64
        } else {
            DataType::Int64
        })
    }

    #[inline]
    fn read(&self, row: RowRef<'_>) -> Option<Value> {
        if self.float {
            row.f64(self.index).map(Value::Float)
        } else {
            row.i64(self.index)
                .or_else(|| row.value(self.index).as_i64())
                .map(Value::Int)
        }
    }
}

macro_rules! numeric_agg {
    ($name:ident, $doc:literal, $prefix:literal, $combine:expr) => {
        #[doc = $doc]
        #[derive(Clone, Debug)]
        pub struct $name(NumColumn);

        impl $name {
            /// Over the named numeric column.
            pub fn new(column: impl Into<String>) -> Self {
                $name(NumColumn::new(column.into()))
            }
        }

        impl AggregateFunction for $name {
            type Acc = Option<Value>;
            fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
                let dt = self.0.bind(input)?;
                Ok(vec![Field::new(
                    format!("{}_{}", $prefix, self.0.name),
                    dt,
                    true,
                )])
            }
            fn create_accumulator(&self) -> Option<Value> {
                None
            }
            #[inline]
            fn add(&self, acc: &mut Option<Value>, row: RowRef<'_>) -> Result<()> {
                if let Some(v) = self.0.read(row) {
                    let f: fn(Value, Value) -> Value = $combine;
                    *acc = Some(match acc.take() {
                        Some(a) => f(a, v),
                        None => v,
                    });
                }
                Ok(())
            }
            fn merge(&self, acc: &mut Option<Value>, other: Option<Value>) {
                let f: fn(Value, Value) -> Value = $combine;
                *acc = match (acc.take(), other) {
                    (Some(a), Some(b)) => Some(f(a, b)),
                    (a, b) => a.or(b),
                };
            }
            fn result(&self, acc: &Option<Value>) -> Row {
                vec![acc.clone().unwrap_or(Value::Null)]
            }
        }
    };
}

fn add_values(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(y)),
        (x, y) => Value::Float(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
    }
}

numeric_agg!(
    Sum,
    "`SUM(column)` as field `sum_<column>`.",
    "sum",
    add_values
);
numeric_agg!(
    Min,
    "`MIN(column)` as field `min_<column>`.",
    "min",
    |a, b| if b < a { b } else { a }
);
numeric_agg!(
    Max,
    "`MAX(column)` as field `max_<column>`.",
    "max",
    |a, b| if b > a { b } else { a }
);

/// `AVG(column)` as a Float64 field `avg_<column>`.
#[derive(Clone, Debug)]
pub struct Avg(NumColumn);

impl Avg {
    /// Over the named numeric column.
    pub fn new(column: impl Into<String>) -> Self {
        Avg(NumColumn::new(column.into()))
    }
}

impl AggregateFunction for Avg {
    type Acc = (f64, i64);
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
        self.0.bind(input)?;
        Ok(vec![Field::new(
            format!("avg_{}", self.0.name),
            DataType::Float64,
            true,
        )])
    }
    fn create_accumulator(&self) -> (f64, i64) {
        (0.0, 0)
    }
    fn add(&self, acc: &mut (f64, i64), row: RowRef<'_>) -> Result<()> {
        if let Some(v) = self.0.read(row).and_then(|v| v.as_f64()) {
            acc.0 += v;
            acc.1 += 1;
        }
        Ok(())
    }
    fn merge(&self, acc: &mut (f64, i64), other: (f64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(f64, i64)) -> Row {
        vec![if acc.1 == 0 {
            Value::Null
        } else {
            Value::Float(acc.0 / acc.1 as f64)
        }]
    }
}

type ReduceRowsFn = Arc<dyn Fn(Row, &Row) -> Row + Send + Sync>;

/// Reduces the rows of a window to one row of the input's schema (Flink's `reduce`).
#[derive(Clone)]
pub struct Reduce {
    f: ReduceRowsFn,
}

impl Reduce {
    /// `f(accumulated, next)` returns the new accumulated row.
    pub fn new(f: impl Fn(Row, &Row) -> Row + Send + Sync + 'static) -> Self {
        Reduce { f: Arc::new(f) }
    }
}

impl AggregateFunction for Reduce {
    type Acc = Option<Row>;
    fn bind(&mut self, input: &Schema) -> Result<Vec<Field>> {
        Ok(input
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect())
    }
    fn create_accumulator(&self) -> Option<Row> {
        None
    }
    fn add(&self, acc: &mut Option<Row>, row: RowRef<'_>) -> Result<()> {
        let r = row.to_row();
        *acc = Some(match acc.take() {
            Some(a) => (self.f)(a, &r),
            None => r,
        });
        Ok(())
    }
    fn merge(&self, acc: &mut Option<Row>, other: Option<Row>) {
        *acc = match (acc.take(), other) {
            (Some(a), Some(b)) => Some((self.f)(a, &b)),
            (a, b) => a.or(b),
        };
    }
    fn result(&self, acc: &Option<Row>) -> Row {
        acc.clone().unwrap_or_default()
    }
}
