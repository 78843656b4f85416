//! Flink's result types for `SUM` and `AVG`, which DataFusion widens.
//!
//! Flink types an aggregate by its argument (`LogicalTypeMerging.findSumAggType` and
//! `findAvgAggType`): `SUM` and `AVG` of an `INT` are an `INT` (`AVG` drops the fraction, as
//! integer division does), of a `FLOAT` a `FLOAT`, and of a `DECIMAL(p, s)` a
//! `DECIMAL(38, s)` for `SUM` and a `DECIMAL(38, max(6, s))` for `AVG`. DataFusion makes
//! every integer `SUM` a `BIGINT` and every integer `AVG` a `DOUBLE`. [`FlinkTyped`] wraps
//! DataFusion's function: it keeps the argument's type through coercion, feeds DataFusion's
//! accumulator the widened values and casts its result to Flink's type. Registered under the
//! same names, it replaces DataFusion's `sum` and `avg` in planning and in the tests' batch
//! oracle alike; the streaming operators compute as before and cast their output to the
//! planned type.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature};

/// Which aggregate [`FlinkTyped`] wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Sum,
    Avg,
}

/// DataFusion's `sum` or `avg`, typed as Flink types it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FlinkTyped {
    kind: Kind,
    inner: Arc<AggregateUDF>,
    /// User-defined: [`FlinkTyped::coerce_types`] applies DataFusion's signature itself.
    signature: Signature,
}

impl FlinkTyped {
    pub fn new(kind: Kind) -> Self {
        let inner = match kind {
            Kind::Sum => datafusion::functions_aggregate::sum::sum_udaf(),
            Kind::Avg => datafusion::functions_aggregate::average::avg_udaf(),
        };
        let signature = Signature::user_defined(inner.signature().volatility);
        FlinkTyped {
            kind,
            inner,
            signature,
        }
    }

    /// The types DataFusion's own signature coerces `arg_types` to (an error for what it
    /// does not accept).
    fn widened_all(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| Arc::new(Field::new("arg", t.clone(), true)))
            .collect();
        Ok(fields_with_udf(&fields, self.inner.as_ref())?
            .iter()
            .map(|f| f.data_type().clone())
            .collect())
    }

    /// What DataFusion's accumulator sees for argument fields `fields` (the first is `arg`)
    /// and result field `ret`: the widened input type, the fields with that type, and its
    /// own result field.
    fn inner_view(
        &self,
        arg: &FieldRef,
        fields: &[FieldRef],
        ret: &FieldRef,
    ) -> Result<(DataType, Vec<FieldRef>, FieldRef)> {
        let t = arg.data_type();
        let input = self
            .widened_all(std::slice::from_ref(t))?
            .into_iter()
            .next()
            .unwrap_or_else(|| t.clone());
        let inner_fields = fields
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_data_type(input.clone())))
            .collect();
        let inner_return = self.inner.return_type(std::slice::from_ref(&input))?;
        let return_field = Arc::new(Field::new(ret.name(), inner_return, ret.is_nullable()));
        Ok((input, inner_fields, return_field))
    }
}

/// Flink's result type of `kind` over an argument of type `arg`.
pub fn flink_result_type(kind: Kind, arg: &DataType) -> DataType {
    match (kind, arg) {
        (Kind::Sum, DataType::Decimal128(_, s)) => DataType::Decimal128(38, *s),
        (Kind::Avg, DataType::Decimal128(_, s)) => DataType::Decimal128(38, (*s).max(6)),
        (_, other) => other.clone(),
    }
}

/// Casts `values` to `to` unless they have that type already.
fn cast_all(values: &[ArrayRef], to: &DataType) -> Result<Vec<ArrayRef>> {
    values
        .iter()
        .map(|v| {
            if v.data_type() == to {
                Ok(v.clone())
            } else {
                Ok(cast(v, to)?)
            }
        })
        .collect()
}

impl FlinkTyped {
    /// The accumulator `make` creates from the inner function, between Flink's types.
    fn typed(
        &self,
        args: AccumulatorArgs,
        make: impl FnOnce(&AggregateUDF, AccumulatorArgs) -> Result<Box<dyn Accumulator>>,
    ) -> Result<Box<dyn Accumulator>> {
        let Some(arg) = args.expr_fields.first() else {
            return make(&self.inner, args);
        };
        let (input, inner_fields, return_field) =
            self.inner_view(arg, args.expr_fields, &args.return_field)?;
        let inner_args = AccumulatorArgs {
            return_field,
            expr_fields: &inner_fields,
            ..args
        };
        Ok(Box::new(Typed {
            inner: make(&self.inner, inner_args)?,
            input,
            output: args.return_field.data_type().clone(),
        }))
    }
}

impl AggregateUDFImpl for FlinkTyped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Keeps the argument's own type (DataFusion's would widen it): the result's type is
    /// derived from it.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // DataFusion's coercion decides what is accepted (a string is refused, say); the
        // argument keeps its type when it is one Flink types the result by.
        let widened = self.widened_all(arg_types)?;
        Ok(arg_types
            .iter()
            .zip(widened)
            .map(|(t, w)| {
                if t.is_numeric() && !matches!(t, DataType::Float16) {
                    t.clone()
                } else {
                    w
                }
            })
            .collect())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.first() {
            Some(t) => flink_result_type(self.kind, t),
            None => self.inner.return_type(arg_types)?,
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.typed(args, |inner, a| inner.accumulator(a))
    }

    /// For bounded OVER frames (`ROWS BETWEEN n PRECEDING`): DataFusion's retracting one.
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.typed(args, |inner, a| inner.create_sliding_accumulator(a))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(arg) = args.input_fields.first() else {
            return self.inner.state_fields(args);
        };
        let (_, inner_fields, return_field) =
            self.inner_view(arg, args.input_fields, &args.return_field)?;
        self.inner.state_fields(StateFieldsArgs {
            input_fields: &inner_fields,
            return_field,
            ..args
        })
    }
}

/// DataFusion's accumulator between two casts.
#[derive(Debug)]
struct Typed {
    inner: Box<dyn Accumulator>,
    input: DataType,
    output: DataType,
}

impl Accumulator for Typed {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(&cast_all(values, &self.input)?)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Float to integer truncates toward zero, as Flink's integer AVG (a long division);
        // a wide integer wraps into a narrower one, as Flink's integer SUM overflows.
        match (self.inner.evaluate()?, &self.output) {
            (ScalarValue::Int64(Some(v)), DataType::Int32) => {
                Ok(ScalarValue::Int32(Some(v as i32)))
            }
            (ScalarValue::Int64(Some(v)), DataType::Int16) => {
                Ok(ScalarValue::Int16(Some(v as i16)))
            }
            (ScalarValue::Int64(Some(v)), DataType::Int8) => Ok(ScalarValue::Int8(Some(v as i8))),
            (v, to) => v.cast_to(to),
        }
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(&cast_all(values, &self.input)?)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// The two functions, for a context's registry.
pub fn flink_typed_aggregates() -> [AggregateUDF; 2] {
    [
        AggregateUDF::new_from_impl(FlinkTyped::new(Kind::Sum)),
        AggregateUDF::new_from_impl(FlinkTyped::new(Kind::Avg)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int32Array, Int64Array, RecordBatch};
    use arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// The type and value of `sql` (one row, one column) over a table `t` holding `batch`.
    fn one(batch: RecordBatch, sql: &str) -> (DataType, String) {
        let ctx = SessionContext::new();
        crate::functions::register_flink_functions(&ctx);
        let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("a table");
        ctx.register_table("t", Arc::new(t)).expect("registered");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let out = rt
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .expect("the query runs");
        let col = out[0].column(0);
        let shown = arrow::util::display::ArrayFormatter::try_new(
            col.as_ref(),
            &arrow::util::display::FormatOptions::default().with_null("NULL"),
        )
        .expect("a formatter")
        .value(0)
        .to_string();
        (col.data_type().clone(), shown)
    }

    fn table(col: ArrayRef) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "x",
            col.data_type().clone(),
            true,
        )]));
        RecordBatch::try_new(schema, vec![col]).expect("a batch")
    }

    /// Each rule pinned to the type Flink documents for it.
    #[test]
    fn sum_and_avg_have_flinks_types() {
        let ints = table(Arc::new(Int32Array::from(vec![1, 2, 2, -8])));
        assert_eq!(
            one(ints.clone(), "SELECT AVG(x) FROM t"),
            (DataType::Int32, "0".into())
        );
        assert_eq!(
            one(ints.clone(), "SELECT SUM(x) FROM t"),
            (DataType::Int32, "-3".into())
        );
        // Truncated toward zero, as a long division: 7 / 2 = 3, -7 / 2 = -3.
        let odd = table(Arc::new(Int64Array::from(vec![3, 4])));
        assert_eq!(
            one(odd, "SELECT AVG(x) FROM t"),
            (DataType::Int64, "3".into())
        );
        let negative = table(Arc::new(Int64Array::from(vec![-3, -4])));
        assert_eq!(
            one(negative, "SELECT AVG(x) FROM t"),
            (DataType::Int64, "-3".into())
        );
        let floats = table(Arc::new(Float32Array::from(vec![1.0, 2.0])));
        assert_eq!(
            one(floats.clone(), "SELECT AVG(x) FROM t"),
            (DataType::Float32, "1.5".into())
        );
        assert_eq!(one(floats, "SELECT SUM(x) FROM t").0, DataType::Float32);
        // DECIMAL(10, 2): SUM is DECIMAL(38, 2), AVG DECIMAL(38, 6).
        let dec = table(Arc::new(
            arrow::array::Decimal128Array::from(vec![100, 251])
                .with_precision_and_scale(10, 2)
                .expect("a decimal"),
        ));
        assert_eq!(
            one(dec.clone(), "SELECT SUM(x) FROM t"),
            (DataType::Decimal128(38, 2), "3.51".into())
        );
        assert_eq!(
            one(dec, "SELECT AVG(x) FROM t"),
            (DataType::Decimal128(38, 6), "1.755000".into())
        );
        // An empty input: NULL of the same types.
        let empty = table(Arc::new(Int32Array::from(Vec::<i32>::new())));
        assert_eq!(
            one(empty.clone(), "SELECT AVG(x) FROM t"),
            (DataType::Int32, "NULL".into())
        );
        assert_eq!(
            one(empty, "SELECT SUM(x) FROM t"),
            (DataType::Int32, "NULL".into())
        );
        // Grouped, distinct and the `mean` alias go through the same rules.
        let groups = table(Arc::new(Int32Array::from(vec![5, 5, 6])));
        assert_eq!(
            one(groups.clone(), "SELECT AVG(DISTINCT x) FROM t"),
            (DataType::Int32, "5".into())
        );
        assert_eq!(
            one(
                groups,
                "SELECT MEAN(x) FROM t GROUP BY x % 2 ORDER BY 1 LIMIT 1"
            ),
            (DataType::Int32, "5".into())
        );
    }

    /// What DataFusion refuses (a string argument) is still refused.
    #[test]
    fn a_string_argument_is_still_an_error() {
        let ctx = SessionContext::new();
        crate::functions::register_flink_functions(&ctx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let r = rt.block_on(async { ctx.sql("SELECT AVG('a')").await?.collect().await });
        assert!(r.is_err());
    }
}
