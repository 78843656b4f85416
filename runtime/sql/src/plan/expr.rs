//! Expressions: DataFusion's physical expressions, planned against a stream's schema and
//! evaluated on its batches (projections and filters).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};

use flink_rs_core::api::DataStream;
use flink_rs_core::error::Error;

pub(crate) fn physical(
    e: &Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>, DataFusionError> {
    create_physical_expr(
        e,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
}

/// Evaluates one expression over a batch, cast to `dt` when it differs.
pub(crate) fn eval_column(
    e: &Arc<dyn PhysicalExpr>,
    b: &RecordBatch,
    dt: &DataType,
) -> flink_rs_core::error::Result<ArrayRef> {
    let a = e
        .evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(|e| Error::User(e.to_string()))?;
    Ok(if a.data_type() == dt {
        a
    } else {
        cast(&a, dt)?
    })
}

pub(crate) fn eval_all(
    exprs: &[Arc<dyn PhysicalExpr>],
    schema: &SchemaRef,
    b: &RecordBatch,
) -> flink_rs_core::error::Result<RecordBatch> {
    let cols: Vec<ArrayRef> = exprs
        .iter()
        .zip(schema.fields())
        .map(|(e, f)| eval_column(e, b, f.data_type()))
        .collect::<flink_rs_core::error::Result<_>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
    )?)
}

/// Keeps the rows where the boolean expression `pred` holds (SQL's WHERE).
pub(crate) fn filter_stream(stream: &DataStream, pred: Arc<dyn PhysicalExpr>) -> DataStream {
    stream
        .filter(move |b| {
            let v = eval_column(&pred, b, &DataType::Boolean)?;
            v.as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .cloned()
                .ok_or_else(|| Error::User("a WHERE condition must be boolean".into()))
        })
        .name("Filter")
}

/// A projection stage: evaluates `exprs` over batches of `input` into `out`.
pub(crate) fn project(
    stream: &DataStream,
    exprs: &[Expr],
    input: &DFSchema,
    out: SchemaRef,
    name: &str,
) -> Result<DataStream, DataFusionError> {
    let phys: Vec<_> = exprs
        .iter()
        .map(|e| physical(e, input))
        .collect::<Result<_, _>>()?;
    let out2 = out.clone();
    let projected = stream
        .map_batches(out.clone(), move |b| eval_all(&phys, &out2, &b))
        .name(name);
    // The event-time column under a new name (`window_time AS rowtime`) stays event time:
    // a window TVF over the result (cascaded windows) reads it.
    if projected.time_column().is_none() {
        if let Some(time) = stream.time_column() {
            let is_time = |e: &Expr| match e {
                Expr::Column(c) => c.name == time,
                Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(c) if c.name == time),
                _ => false,
            };
            let renamed = exprs.iter().zip(out.fields()).find(|(e, _)| is_time(e));
            if let Some((_, field)) = renamed {
                return projected
                    .with_time_column(field.name())
                    .map_err(|e| DataFusionError::Plan(e.to_string()));
            }
        }
    }
    Ok(projected)
}
