//! Planning OVER aggregates: `SUM/COUNT/AVG/MIN/MAX(…) OVER (PARTITION BY … ORDER BY
//! rowtime [ROWS|RANGE BETWEEN … PRECEDING AND CURRENT ROW])`, as Flink runs them in
//! streaming mode: ordered by the event-time attribute, ascending, the frame ending at the
//! current row, one window for every aggregate of the SELECT.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    Cast, Expr, ExprSchemable, Window, WindowFrameBound, WindowFrameUnits,
};

use crate::operators::over_aggregate::{OverAgg, OverAggKind, OverAggregateFunction, OverFrame};
use crate::plan::join::strip;
use crate::plan::{Planned, Planner};
use crate::plan::{
    arrow_schema, builder_type, cast_output, df_error, is_updating, project, rows_schema,
};
use crate::script::{SqlError, Statement};
use crate::window_tvf::WindowTvf;
use flink_rs_core::key::KeySelector;

/// Whether `name` is an aggregate an OVER window computes here.
pub(crate) fn is_over_aggregate(name: &str) -> bool {
    matches!(name, "sum" | "count" | "avg" | "min" | "max")
}

/// The length of a RANGE frame's `INTERVAL … PRECEDING`, in milliseconds.
fn range_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds))
        }
        ScalarValue::Utf8(Some(s)) => {
            crate::parse_duration(&s.replace('\'', "")).map(|d| d.as_millis() as i64)
        }
        other => other.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(v) => v,
            _ => None,
        }),
    }
}

impl Planner<'_> {
    /// A window node whose functions are all aggregates.
    pub(crate) fn over_aggregate(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        w: &Window,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let at = crate::script::find_word(&st.text[base..], "OVER").map_or(base, |a| a + base);
        let fail = |m: String| st.error_at_offset(at, m);
        let in_schema = w.input.schema().clone();
        let width = in_schema.fields().len();
        let mut window = None;
        let mut calls = Vec::new();
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = strip(e) else {
                return Err(fail(format!("unsupported window expression `{e}`")));
            };
            let name = f.fun.name().to_ascii_lowercase();
            if f.params.distinct || f.params.filter.is_some() {
                return Err(fail(format!(
                    "{}(DISTINCT …) and FILTER are not supported in an OVER aggregate",
                    name.to_uppercase()
                )));
            }
            let spec = (
                f.params.partition_by.clone(),
                f.params.order_by.clone(),
                f.params.window_frame.clone(),
            );
            if window.as_ref().is_some_and(|w| *w != spec) {
                return Err(fail(
                    "the OVER aggregates of one SELECT must share one window (PARTITION BY, ORDER BY and frame), as in Flink".into(),
                ));
            }
            window = Some(spec);
            calls.push((name, f.params.args.clone()));
        }
        let Some((partition, order, frame)) = window else {
            return Err(fail("a window node without functions".into()));
        };
        // ORDER BY the event-time attribute, ascending.
        let time = match order.as_slice() {
            [s] if s.asc => match strip(&s.expr) {
                Expr::Column(c) => in_schema.index_of_column(c).ok(),
                _ => None,
            },
            _ => None,
        };
        let input = self.translate(st, base, tvfs, &w.input)?.stream;
        let time_name = time.map(|i| in_schema.field(i).name().clone());
        let Some(time) =
            time.filter(|_| time_name.is_some() && input.time_column() == time_name.as_deref())
        else {
            return Err(fail(
                "an OVER aggregate must ORDER BY the input's event-time attribute (a column with a WATERMARK), ascending, as in Flink".into(),
            ));
        };
        if is_updating(&input) {
            return Err(fail(
                "an OVER aggregate of an updating result (a GROUP BY without a window) is not supported".into(),
            ));
        }
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(fail(
                "an OVER window must end at CURRENT ROW (Flink's streaming OVER aggregates do)"
                    .into(),
            ));
        }
        let frame = match (&frame.units, &frame.start_bound) {
            (WindowFrameUnits::Rows, b) if b.is_unbounded() => OverFrame::Rows(None),
            (WindowFrameUnits::Range, b) if b.is_unbounded() => OverFrame::Range(None),
            (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(Some(0)),
            (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range(Some(0)),
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
                match v.cast_to(&DataType::UInt64) {
                    Ok(ScalarValue::UInt64(Some(n))) => OverFrame::Rows(Some(n)),
                    _ => {
                        return Err(fail(format!(
                            "ROWS BETWEEN {v} PRECEDING: expected a row count"
                        )));
                    }
                }
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => match range_ms(v) {
                Some(ms) if ms >= 0 => OverFrame::Range(Some(ms)),
                _ => {
                    return Err(fail(format!(
                        "RANGE BETWEEN {v} PRECEDING: expected an interval such as INTERVAL '10' SECOND"
                    )));
                }
            },
            _ => {
                return Err(fail(
                    "supported OVER frames: ROWS or RANGE BETWEEN … PRECEDING AND CURRENT ROW"
                        .into(),
                ));
            }
        };
        // [input columns…, partition keys…, aggregate arguments…]
        let mut exprs: Vec<Expr> = in_schema.columns().into_iter().map(Expr::Column).collect();
        let mut fields: Vec<Field> = arrow_schema(&in_schema)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut add = |e: &Expr, name: String| -> Result<usize, DataFusionError> {
            let dt = builder_type(&e.get_type(&in_schema)?);
            exprs.push(Expr::Cast(Cast::new(Box::new(e.clone()), dt.clone())));
            fields.push(Field::new(name, dt, true));
            Ok(exprs.len() - 1)
        };
        let mut keys = Vec::new();
        for (i, p) in partition.iter().enumerate() {
            add(p, format!("__p{i}")).map_err(dferr)?;
            keys.push(format!("__p{i}"));
        }
        let mut aggs = Vec::new();
        for (i, (name, args)) in calls.iter().enumerate() {
            let star =
                args.is_empty() || matches!(args.as_slice(), [Expr::Literal(v, _)] if !v.is_null());
            let kind = match name.as_str() {
                "count" if star => OverAggKind::CountRows,
                "count" => OverAggKind::Count,
                "sum" => OverAggKind::Sum,
                "avg" => OverAggKind::Avg,
                "min" => OverAggKind::Min,
                "max" => OverAggKind::Max,
                other => {
                    return Err(fail(format!(
                        "{}() OVER is not supported; SUM, COUNT, AVG, MIN and MAX are",
                        other.to_uppercase()
                    )));
                }
            };
            let arg = match (kind, args.as_slice()) {
                (OverAggKind::CountRows, _) => None,
                (_, [a]) => Some(add(a, format!("__a{i}")).map_err(dferr)?),
                _ => {
                    return Err(fail(format!(
                        "{}() OVER takes one argument",
                        name.to_uppercase()
                    )));
                }
            };
            aggs.push(OverAgg { kind, arg });
        }
        if partition.is_empty() {
            // One partition: every row on one key.
            exprs.push(Expr::Literal(ScalarValue::Int64(Some(0)), None));
            fields.push(Field::new("__p0", DataType::Int64, false));
            keys.push("__p0".into());
        }
        let pre = project(
            &input,
            &exprs,
            &in_schema,
            Arc::new(Schema::new(fields)),
            "Calc[over arguments]",
        )
        .map_err(dferr)?;
        let target = arrow_schema(&w.schema);
        let f = OverAggregateFunction::new(width, time, aggs, frame);
        let name = match frame {
            OverFrame::Rows(None) | OverFrame::Range(None) => "OverAggregate[unbounded]".into(),
            OverFrame::Rows(Some(n)) => format!("OverAggregate[{n} rows]"),
            OverFrame::Range(Some(ms)) => format!("OverAggregate[{ms} ms]"),
        };
        let aggregated = pre
            .key_by(KeySelector::columns(keys))
            .process(rows_schema(&target), f)
            .name(&name);
        let out = cast_output(&aggregated, target, "Calc[over output]");
        // The rows keep their event time.
        let out = match input.time_column() {
            Some(t) if out.time_column().is_none() => out
                .with_time_column(t)
                .map_err(|e| st.error_at_offset(at, e.to_string()))?,
            _ => out,
        };
        Ok(Planned { stream: out })
    }
}
