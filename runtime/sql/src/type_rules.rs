//! Flink's typing where DataFusion's differs: an analyzer rule that runs before DataFusion's
//! type coercion, and the decimal division it plans.
//!
//! - An integer literal is an `INT` when it fits, a `BIGINT` otherwise (Calcite types `3` as
//!   `INTEGER`); DataFusion makes every integer literal a `BIGINT`. The difference shows in
//!   the types of `CASE`/`COALESCE` over literals, of `SUM(CASE … THEN 1 …)`, of `%` and of
//!   decimal division.
//! - `a % b` of integers has the type of `b` (Calcite's `MOD` return type): `price % 7` is an
//!   `INT` for a `BIGINT` price. The remainder always fits `b`'s type, so a cast of
//!   DataFusion's result is exact. (`MOD(a, b)` is `crate::functions`'.)
//! - Decimal division is typed as Flink's `LogicalTypeMerging.findDivisionDecimalType`
//!   (scale `max(6, s1 + p2 + 1)`, precision `p1 - s1 + s2 + scale`, both bounded to 38) and
//!   rounds half up at that scale; a quotient too large for the type is NULL, as in Flink.
//!   DataFusion's rule keeps fewer digits (`amount / 3` has 13 in Flink, 6 in DataFusion).
//! - `EXTRACT(… FROM …)` is a `BIGINT` (DataFusion: `INT`); `FLOOR`/`CEIL` of a
//!   `DECIMAL(p, s)` a `DECIMAL(p, 0)`.
//! - `CAST(x AS STRING)` of a timestamp writes `2024-01-01 00:00:05.980` (the precision's
//!   digits, a space before the time), of a boolean `TRUE`/`FALSE`; DataFusion writes
//!   `2024-01-01T00:00:05.980` and `true`.
//! - Flink has no unsigned types: a query's result shows `ROW_NUMBER()` (DataFusion's
//!   `UInt64`) as a `BIGINT` ([`without_unsigned`]).
//!
//! - A decimal literal is a `DECIMAL` (DataFusion's option `sql_parser.parse_float_as_decimal`,
//!   set where the session is made), its precision counted as Calcite counts it, the leading
//!   zero included (`0.908` is a `DECIMAL(4, 3)`); in decimal arithmetic a `BIGINT` is a
//!   `DECIMAL(19, 0)`, so `price * 0.908` is a `DECIMAL(24, 3)` and `price + 1.5` a
//!   `DECIMAL(21, 1)`, as in Flink.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder};
use arrow::datatypes::{DataType, Decimal128Type, TimeUnit, i256};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DataFusionError, Result, ScalarValue, plan_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::{Case, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder,
    Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::prelude::{SessionContext, lit};

/// The analyzer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct FlinkTypeRules;

impl AnalyzerRule for FlinkTypeRules {
    fn name(&self) -> &str {
        "flink_type_rules"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Output names a grouping set's rewritten expressions had before (their parents
        // refer to them by name).
        let mut renamed: HashMap<String, String> = HashMap::new();
        Ok(plan
            .transform_up_with_subqueries(|p| rewrite_node(p, &mut renamed))?
            .data)
    }
}

fn rewrite_node(
    plan: LogicalPlan,
    renamed: &mut HashMap<String, String>,
) -> Result<Transformed<LogicalPlan>> {
    // LIMIT/OFFSET take BIGINT literals as they are; a VALUES list keeps the schema the
    // SQL planner gave it (its rows are checked against it when they are built).
    if matches!(plan, LogicalPlan::Limit(_) | LogicalPlan::Values(_)) {
        return Ok(Transformed::no(plan));
    }
    let mut schema = merge_schema(&plan.inputs());
    if let LogicalPlan::TableScan(scan) = &plan {
        schema.merge(&DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
    }
    let names = NamePreserver::new(&plan);
    let rewritten = plan.map_expressions(|expr| {
        // Columns that name what a grouping set below produced under its old name.
        let expr = if renamed.is_empty() {
            Transformed::no(expr)
        } else {
            expr.transform_up(|e| match e {
                Expr::Column(c) if c.relation.is_none() && renamed.contains_key(&c.name) => {
                    let name = renamed.get(&c.name).cloned().unwrap_or_default();
                    Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                        name,
                    ))))
                }
                e => Ok(Transformed::no(e)),
            })?
        };
        let was_renamed = expr.transformed;
        let expr = expr.data;
        if let Expr::GroupingSet(_) = &expr {
            // An alias cannot stand inside a grouping set: its expressions take their new
            // names, and the parents follow them through `renamed`.
            let before: Vec<String> = grouping_set_names(&expr);
            let t = expr.transform_up(|e| rewrite_expr(e, &schema))?;
            for (old, new) in before.into_iter().zip(grouping_set_names(&t.data)) {
                if old != new {
                    renamed.insert(old, new);
                }
            }
            return Ok(t);
        }
        let name = names.save(&expr);
        let t = expr.transform_up(|e| rewrite_expr(e, &schema))?;
        let transformed = t.transformed || was_renamed;
        Ok(Transformed::new_transformed(
            name.restore(t.data),
            transformed,
        ))
    })?;
    if rewritten.transformed {
        rewritten.map_data(|p| p.recompute_schema())
    } else {
        Ok(rewritten)
    }
}

fn grouping_set_names(e: &Expr) -> Vec<String> {
    match e {
        Expr::GroupingSet(g) => g
            .distinct_expr()
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

fn rewrite_expr(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    Ok(match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), meta) => match i32::try_from(v) {
            Ok(v) => Transformed::yes(Expr::Literal(ScalarValue::Int32(Some(v)), meta)),
            Err(_) => Transformed::no(Expr::Literal(ScalarValue::Int64(Some(v)), meta)),
        },
        // Calcite counts a decimal literal's leading zero: `0.908` is a DECIMAL(4, 3).
        Expr::Literal(ScalarValue::Decimal128(Some(v), p, s), meta)
            if s > 0 && p <= s as u8 && s < 38 =>
        {
            Transformed::yes(Expr::Literal(
                ScalarValue::Decimal128(Some(v), s as u8 + 1, s),
                meta,
            ))
        }
        // In decimal arithmetic a BIGINT is a DECIMAL(19, 0) (DataFusion: 20 digits).
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) =>
        {
            let types = (left.get_type(schema), right.get_type(schema));
            let bigint_decimal = DataType::Decimal128(19, 0);
            let widen = |e: Box<Expr>| Box::new(Expr::Cast(Cast::new(e, bigint_decimal.clone())));
            match types {
                (Ok(DataType::Int64), Ok(DataType::Decimal128(..))) => {
                    Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(widen(left), op, right)))
                }
                (Ok(DataType::Decimal128(..)), Ok(DataType::Int64)) => {
                    Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(left, op, widen(right))))
                }
                _ => Transformed::no(Expr::BinaryExpr(BinaryExpr::new(left, op, right))),
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Modulo | Operator::Divide) =>
        {
            let (l, r) = match (left.get_type(schema), right.get_type(schema)) {
                (Ok(l), Ok(r)) => (l, r),
                _ => {
                    return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr::new(
                        left, op, right,
                    ))));
                }
            };
            if op == Operator::Modulo && l.is_integer() && r.is_integer() && l != r {
                let e = Expr::BinaryExpr(BinaryExpr::new(left, op, right));
                Transformed::yes(Expr::Cast(Cast::new(Box::new(e), r)))
            } else if op == Operator::Divide
                && decimal_of(&l).is_some()
                && decimal_of(&r).is_some()
                && (matches!(l, DataType::Decimal128(..)) || matches!(r, DataType::Decimal128(..)))
            {
                Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::new_from_impl(DecimalDivide::new())),
                    vec![*left, *right],
                )))
            } else {
                Transformed::no(Expr::BinaryExpr(BinaryExpr::new(left, op, right)))
            }
        }
        // FLOOR and CEIL of a DECIMAL(p, s) are a DECIMAL(p, 0) (DataFusion keeps the scale).
        Expr::ScalarFunction(f)
            if matches!(f.func.name(), "floor" | "ceil") && f.args.len() == 1 =>
        {
            let e = Expr::ScalarFunction(f);
            match e.get_type(schema) {
                Ok(DataType::Decimal128(p, s)) if s > 0 => Transformed::yes(Expr::Cast(Cast::new(
                    Box::new(e),
                    DataType::Decimal128(p, 0),
                ))),
                _ => Transformed::no(e),
            }
        }
        Expr::ScalarFunction(f) if f.func.name() == "date_part" => {
            let e = Expr::ScalarFunction(f);
            match e.get_type(schema) {
                Ok(t) if t != DataType::Int64 => {
                    Transformed::yes(Expr::Cast(Cast::new(Box::new(e), DataType::Int64)))
                }
                _ => Transformed::no(e),
            }
        }
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Utf8 | DataType::Utf8View) => {
            match c.expr.get_type(schema) {
                Ok(DataType::Timestamp(unit, _)) => {
                    let format = match unit {
                        TimeUnit::Second => "%Y-%m-%d %H:%M:%S",
                        TimeUnit::Millisecond => "%Y-%m-%d %H:%M:%S%.3f",
                        TimeUnit::Microsecond => "%Y-%m-%d %H:%M:%S%.6f",
                        TimeUnit::Nanosecond => "%Y-%m-%d %H:%M:%S%.9f",
                    };
                    let text =
                        datafusion::functions::datetime::expr_fn::to_char(*c.expr, lit(format));
                    Transformed::yes(Expr::Cast(Cast::new(
                        Box::new(text),
                        c.field.data_type().clone(),
                    )))
                }
                Ok(DataType::Boolean) => {
                    let b = *c.expr;
                    let text = Expr::Case(Case::new(
                        None,
                        vec![
                            (Box::new(b.clone()), Box::new(lit("TRUE"))),
                            (Box::new(Expr::Not(Box::new(b))), Box::new(lit("FALSE"))),
                        ],
                        None,
                    ));
                    Transformed::yes(Expr::Cast(Cast::new(
                        Box::new(text),
                        c.field.data_type().clone(),
                    )))
                }
                _ => Transformed::no(Expr::Cast(c)),
            }
        }
        e => Transformed::no(e),
    })
}

/// `ctx` with [`FlinkTypeRules`] before DataFusion's type coercion.
pub fn with_flink_type_rules(ctx: SessionContext) -> SessionContext {
    let state = ctx.state();
    let mut rules = state.analyzer().rules.clone();
    let at = rules
        .iter()
        .position(|r| r.name() == TypeCoercion::new().name())
        .unwrap_or(0);
    rules.insert(at, Arc::new(FlinkTypeRules));
    let state = SessionStateBuilder::new_from_existing(state)
        .with_analyzer_rules(rules)
        .build();
    SessionContext::new_with_state(state)
}

/// `plan` with its unsigned result columns (`ROW_NUMBER()`) as Flink's signed types.
pub fn without_unsigned(plan: LogicalPlan) -> Result<LogicalPlan> {
    let signed = |t: &DataType| match t {
        DataType::UInt8 => Some(DataType::Int16),
        DataType::UInt16 => Some(DataType::Int32),
        DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
        _ => None,
    };
    if !plan
        .schema()
        .fields()
        .iter()
        .any(|f| signed(f.data_type()).is_some())
    {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(Column::from((q, f.as_ref())));
            match signed(f.data_type()) {
                Some(t) => {
                    Expr::Cast(Cast::new(Box::new(c), t)).alias_qualified(q.cloned(), f.name())
                }
                None => c,
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

/// The decimal an exact numeric type is divided as: its own, or an integer's (`BIGINT` is
/// `DECIMAL(19, 0)`, `INT` `DECIMAL(10, 0)`, as in Flink).
fn decimal_of(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal128(p, s) => Some((*p, *s)),
        DataType::Int8 | DataType::UInt8 => Some((3, 0)),
        DataType::Int16 | DataType::UInt16 => Some((5, 0)),
        DataType::Int32 | DataType::UInt32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        DataType::UInt64 => Some((20, 0)),
        _ => None,
    }
}

/// Flink's type of a decimal quotient.
fn quotient_type((p1, s1): (u8, i8), (p2, s2): (u8, i8)) -> (u8, i8) {
    let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
    let mut scale = 6.max(s1 + p2 + 1);
    let mut precision = p1 - s1 + s2 + scale;
    if precision > 38 {
        scale = 6.max(38 - (precision - scale));
        precision = 38;
    }
    (precision.clamp(1, 38) as u8, scale.clamp(0, 38) as i8)
}

/// `a / b` for exact numerics, one of them a decimal, as Flink divides them.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DecimalDivide {
    signature: Signature,
}

impl DecimalDivide {
    fn new() -> Self {
        DecimalDivide {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DecimalDivide {
    fn name(&self) -> &str {
        "flink_decimal_divide"
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [a, b] => Ok(format!("{a} / {b}")),
            _ => Ok("/".into()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        args.iter()
            .map(|t| match decimal_of(t) {
                Some((p, s)) => Ok(DataType::Decimal128(p, s)),
                None => plan_err!("a decimal division of {t}"),
            })
            .collect()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [a, b] => match (decimal_of(a), decimal_of(b)) {
                (Some(a), Some(b)) => {
                    let (p, s) = quotient_type(a, b);
                    Ok(DataType::Decimal128(p, s))
                }
                _ => plan_err!("a decimal division of {a} by {b}"),
            },
            _ => plan_err!("a division takes two operands"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let DataType::Decimal128(p, s) = *args.return_field.data_type() else {
            return plan_err!("a decimal division's type");
        };
        let [a, b] = args.args.as_slice() else {
            return plan_err!("a division takes two operands");
        };
        let (a, b) = (a.to_array(n)?, b.to_array(n)?);
        let scale_of = |x: &ArrayRef| match x.data_type() {
            DataType::Decimal128(_, s) => Ok(i32::from(*s)),
            t => plan_err!("a decimal division of {t}"),
        };
        let (s1, s2) = (scale_of(&a)?, scale_of(&b)?);
        let (a, b) = (
            a.as_primitive::<Decimal128Type>(),
            b.as_primitive::<Decimal128Type>(),
        );
        // q = a / 10^s1 / (b / 10^s2) at scale s: a · 10^(s - s1 + s2) / b.
        let shift = i32::from(s) - s1 + s2;
        let ten = i256::from_i128(10);
        let power = ten
            .checked_pow(shift.unsigned_abs())
            .ok_or_else(|| DataFusionError::Execution("a decimal division's scale".into()))?;
        let limit = ten.checked_pow(u32::from(p));
        let mut out = Decimal128Builder::with_capacity(n);
        for i in 0..n {
            if a.is_null(i) || b.is_null(i) {
                out.append_null();
                continue;
            }
            let (x, y) = (i256::from_i128(a.value(i)), i256::from_i128(b.value(i)));
            if y == i256::ZERO {
                return Err(DataFusionError::Execution("Division by zero".into()));
            }
            let (num, den) = if shift >= 0 {
                (x.checked_mul(power), Some(y))
            } else {
                (Some(x), y.checked_mul(power))
            };
            let q = num.zip(den).and_then(|(num, den)| {
                let (q, r) = (num.checked_div(den)?, num.checked_rem(den)?);
                // Half up: away from zero when the remainder is at least half the divisor.
                let twice = r.wrapping_abs().checked_mul(i256::from_i128(2))?;
                if twice >= den.wrapping_abs() {
                    let away = if (num < i256::ZERO) == (den < i256::ZERO) {
                        i256::ONE
                    } else {
                        i256::MINUS_ONE
                    };
                    q.checked_add(away)
                } else {
                    Some(q)
                }
            });
            match (q, limit) {
                (Some(q), Some(limit)) if q.wrapping_abs() < limit => {
                    out.append_value(q.as_i128());
                }
                _ => out.append_null(),
            }
        }
        let out = out.finish().with_precision_and_scale(p, s)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_quotients_are_typed_as_flink_types_them() {
        // DECIMAL(10, 2) / INT, BIGINT / DECIMAL(2, 1): Flink's DECIMAL(21, 13), (26, 6).
        assert_eq!(quotient_type((10, 2), (10, 0)), (21, 13));
        assert_eq!(quotient_type((19, 0), (2, 1)), (26, 6));
        // Beyond 38 digits the integer part is kept and the scale shrinks, to at least 6.
        assert_eq!(quotient_type((38, 10), (38, 10)), (38, 6));
        assert_eq!(quotient_type((20, 2), (20, 2)), (38, 18));
    }

    fn one(sql: &str) -> (DataType, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ctx = with_flink_type_rules(SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .set_bool("datafusion.sql_parser.parse_float_as_decimal", true),
        ));
        crate::register_flink_functions(&ctx);
        let batches = rt
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .expect("runs");
        let c = batches[0].column(0);
        let text = arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
            .expect("formats")
            .value(0)
            .to_string();
        (c.data_type().clone(), text)
    }

    /// A zero divisor fails the query rather than giving a number.
    #[test]
    fn decimal_division_by_zero_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ctx = with_flink_type_rules(SessionContext::new());
        let r = rt.block_on(async {
            ctx.sql("SELECT CAST(a AS DECIMAL(10, 2)) / b FROM (VALUES (1, 0)) AS t(a, b)")
                .await?
                .collect()
                .await
        });
        let e = r.expect_err("a zero divisor");
        assert!(e.to_string().contains("Division by zero"), "{e}");
    }

    #[test]
    fn literals_remainders_divisions_extracts_and_casts_follow_flink() {
        let cases: &[(&str, DataType, &str)] = &[
            ("SELECT 3", DataType::Int32, "3"),
            ("SELECT 3000000000", DataType::Int64, "3000000000"),
            ("SELECT 0.908", DataType::Decimal128(4, 3), "0.908"),
            ("SELECT 12.5", DataType::Decimal128(3, 1), "12.5"),
            (
                "SELECT CAST(421 AS BIGINT) + 1.5",
                DataType::Decimal128(21, 1),
                "422.5",
            ),
            (
                "SELECT CAST(1000 AS BIGINT) * 0.908",
                DataType::Decimal128(24, 3),
                "908.000",
            ),
            ("SELECT CAST(17 AS BIGINT) % 5", DataType::Int32, "2"),
            ("SELECT MOD(CAST(-17 AS BIGINT), 5)", DataType::Int32, "-2"),
            (
                "SELECT CAST(125.29 AS DECIMAL(10, 2)) / 3",
                DataType::Decimal128(21, 13),
                "41.7633333333333",
            ),
            // Half up at the last digit, away from zero for negative quotients.
            (
                "SELECT CAST(2 AS DECIMAL(10, 2)) / 3",
                DataType::Decimal128(21, 13),
                "0.6666666666667",
            ),
            (
                "SELECT CAST(-2 AS DECIMAL(10, 2)) / 3",
                DataType::Decimal128(21, 13),
                "-0.6666666666667",
            ),
            (
                "SELECT CAST(421 AS BIGINT) / 2.0",
                DataType::Decimal128(26, 6),
                "210.500000",
            ),
            ("SELECT 7 / 2", DataType::Int32, "3"),
            (
                "SELECT FLOOR(CAST(-2.5 AS DECIMAL(10, 2)))",
                DataType::Decimal128(10, 0),
                "-3",
            ),
            (
                "SELECT EXTRACT(MINUTE FROM TIMESTAMP '2024-01-01 00:07:00')",
                DataType::Int64,
                "7",
            ),
            (
                "SELECT CAST(CAST('2024-01-01 00:07:00.5' AS TIMESTAMP(3)) AS STRING)",
                DataType::Utf8View,
                "2024-01-01 00:07:00.500",
            ),
            ("SELECT CAST(1 < 2 AS STRING)", DataType::Utf8View, "TRUE"),
        ];
        for (sql, t, text) in cases {
            assert_eq!(one(sql), (t.clone(), text.to_string()), "{sql}");
        }
    }
}
