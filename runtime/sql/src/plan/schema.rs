//! Schemas in planning: DataFusion's as Arrow's, the changelog column of updating streams,
//! and casts of a stream to the schema its consumer declares.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use datafusion::common::DFSchema;

use flink_rs_core::api::DataStream;

/// The column that makes a stream a changelog (Flink's row kinds `+I`, `-U`, `+U`, `-D`):
/// last in the schema of an updating stream.
pub(crate) const OP_COLUMN: &str = "__op";

/// `schema`, with the row kind column when `updating`.
pub(crate) fn with_op(schema: SchemaRef, updating: bool) -> SchemaRef {
    if !updating {
        return schema;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Whether a stream carries updates (a plain GROUP BY on unbounded input) rather than
/// inserts only.
pub(crate) fn is_updating(stream: &DataStream) -> bool {
    stream
        .schema()
        .fields()
        .last()
        .is_some_and(|f| f.name() == OP_COLUMN)
}

/// Unique, unqualified field names for a plan's schema (qualified duplicates get `_n`).
pub(crate) fn arrow_schema(df: &DFSchema) -> SchemaRef {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let fields: Vec<Field> = df
        .fields()
        .iter()
        .map(|f| {
            let n = seen.entry(f.name().clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 {
                f.name().clone()
            } else {
                format!("{}_{}", f.name(), *n - 1)
            };
            Field::new(name, f.data_type().clone(), true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Columns `cols` as a batch of `target`, each cast to its type where it differs.
pub(crate) fn cast_to(
    cols: impl Iterator<Item = ArrayRef>,
    target: &SchemaRef,
) -> flink_rs_core::error::Result<RecordBatch> {
    let cols: Vec<ArrayRef> = cols
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else if let Some(narrow) = wrapping_narrow(&c, f.data_type()) {
                Ok(narrow)
            } else {
                Ok(cast(&c, f.data_type())?)
            }
        })
        .collect::<flink_rs_core::error::Result<_>>()?;
    Ok(RecordBatch::try_new(target.clone(), cols)?)
}

/// A `BIGINT` column (how the operators build integers) as a narrower integer type,
/// wrapping around on overflow as Flink's (Java's) integer arithmetic does: `SUM` of an
/// `INT` column past 2^31 is negative in Flink, not NULL.
pub(crate) fn wrapping_narrow(c: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    let wide = c.as_primitive_opt::<Int64Type>()?;
    Some(match to {
        DataType::Int32 => Arc::new(wide.unary::<_, Int32Type>(|v| v as i32)),
        DataType::Int16 => Arc::new(wide.unary::<_, Int16Type>(|v| v as i16)),
        DataType::Int8 => Arc::new(wide.unary::<_, Int8Type>(|v| v as i8)),
        _ => return None,
    })
}

/// The schema a row-at-a-time function builds for `target`: each column as its row type
/// (`builder_type`), nullable.
pub(crate) fn rows_schema(target: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        target
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), builder_type(f.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

/// Casts a stream's columns, in order, to the types of `target` (what DataFusion planned).
pub(crate) fn cast_output(stream: &DataStream, target: SchemaRef, name: &str) -> DataStream {
    let t2 = target.clone();
    stream
        .map_batches(target, move |b| cast_to(b.columns().iter().cloned(), &t2))
        .name(name)
}

pub(crate) fn builder_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Boolean => DataType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            DataType::Float64
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        _ => DataType::Int64,
    }
}
