//! Planning `ROW_NUMBER()`, `RANK()` and `DENSE_RANK()` over partitions: Top-N (with the
//! `rn <= N` limit it keeps), deduplication, and window Top-N.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{Cast, Expr, ExprSchemable, LogicalPlan, Operator, Window};

use crate::operators::rank::{OrderKey, RankFunction, RankKind, TopNAtEndOperator};
use crate::plan::join::{TimeAttr, strip};
use crate::plan::{Planned, Planner};
use crate::plan::{
    arrow_schema, builder_type, cast_output, df_error, is_updating, project, rows_schema, with_op,
};
use crate::script::{SqlError, Statement};
use crate::window_tvf::WindowTvf;
use flink_rs_core::error::Result;
use flink_rs_core::key::KeySelector;
use flink_rs_core::operator::{Operator as StreamOperator, OperatorContext};

/// `col <= N`, `col < N` or `col = 1` where `col` is output `index` of a window node.
pub(crate) fn limit_of(pred: &Expr, window: &Window) -> Option<usize> {
    let Expr::BinaryExpr(b) = pred else {
        return None;
    };
    let (Expr::Column(c), Expr::Literal(v, _)) = (b.left.as_ref(), b.right.as_ref()) else {
        return None;
    };
    let i = window.schema.index_of_column(c).ok()?;
    let n_in = window.input.schema().fields().len();
    let e = window.window_expr.get(i.checked_sub(n_in)?)?;
    let Expr::WindowFunction(f) = strip(e) else {
        return None;
    };
    if f.fun.name() != "row_number" {
        return None;
    }
    let n = match v {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
        ScalarValue::Int32(Some(n)) => i64::from(*n),
        _ => return None,
    };
    let limit = match b.op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(limit.max(0)).ok()
}

impl Planner<'_> {
    /// `… OVER (PARTITION BY … ORDER BY …)` of ROW_NUMBER, RANK or DENSE_RANK.
    pub(crate) fn over_window(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        w: &Window,
        limit: Option<usize>,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let aggregates = w.window_expr.iter().all(|e| {
            matches!(strip(e), Expr::WindowFunction(f) if crate::plan::over::is_over_aggregate(&f.fun.name().to_ascii_lowercase()))
        });
        if aggregates {
            return self.over_aggregate(st, base, tvfs, w);
        }
        let at = crate::script::find_word(&st.text[base..], "OVER").map_or(base, |a| a + base);
        let mut kinds = Vec::new();
        let mut spec: Option<(Vec<Expr>, Vec<datafusion::logical_expr::SortExpr>)> = None;
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = strip(e) else {
                return Err(st.error_at_offset(at, format!("unsupported window expression `{e}`")));
            };
            let kind = match f.fun.name() {
                "row_number" => RankKind::RowNumber,
                "rank" => RankKind::Rank,
                "dense_rank" => RankKind::DenseRank,
                other => {
                    return Err(st.error_at_offset(
                        at,
                        format!(
                            "{}() OVER is not supported in streaming SQL; ROW_NUMBER, RANK and DENSE_RANK are (Top-N and deduplication), and SUM, COUNT, AVG, MIN and MAX as OVER aggregates",
                            other.to_uppercase()
                        ),
                    ));
                }
            };
            let p = (f.params.partition_by.clone(), f.params.order_by.clone());
            if spec.as_ref().is_some_and(|s| *s != p) {
                return Err(st.error_at_offset(
                    at,
                    "the window functions of one SELECT must share their PARTITION BY and ORDER BY",
                ));
            }
            if p.1.is_empty() {
                return Err(st.error_at_offset(
                    at,
                    "ROW_NUMBER() OVER needs an ORDER BY (what ranks first)",
                ));
            }
            spec = Some(p);
            kinds.push(kind);
        }
        let Some((partition, order)) = spec else {
            return Err(st.error_at_offset(at, "a window node without functions"));
        };
        let in_schema = w.input.schema().clone();
        // The partition is complete at its window's end, or at the end of a bounded input.
        let mut window_end = None;
        for (i, p) in partition.iter().enumerate() {
            if let Expr::Column(c) = strip(p) {
                if let Ok(j) = in_schema.index_of_column(c) {
                    if self.time_attr(&w.input, j) == Some(TimeAttr::WindowEnd) {
                        window_end = Some(i);
                    }
                }
            }
        }
        // Over unbounded input (or in STREAMING mode) without a window, the ranking is a
        // changelog: Flink's Top-N, which needs ROW_NUMBER and a `rn <= N` filter.
        let updating =
            window_end.is_none() && (self.streaming_mode || !self.bounded_input(&w.input));
        let all_row_numbers = kinds.iter().all(|k| *k == RankKind::RowNumber);
        if updating && (limit.is_none() || !all_row_numbers || kinds.len() != 1) {
            return Err(st.error_at_offset(
                at,
                "a ranking over an unbounded input without window_start and window_end in its PARTITION BY is an updating Top-N: it needs ROW_NUMBER() and a filter `rn <= N` on it; or rank per window (PARTITION BY window_start, window_end, …)",
            ));
        }
        let input = self.translate(st, base, tvfs, &w.input)?.stream;
        if is_updating(&input) {
            return Err(st.error_at_offset(
                at,
                "ranking an updating result (a GROUP BY without a window) is not supported yet; rank per window over a window aggregate",
            ));
        }
        // [input columns…, partition keys…, order keys…]
        let width = in_schema.fields().len();
        let mut exprs: Vec<Expr> = in_schema.columns().into_iter().map(Expr::Column).collect();
        let mut fields: Vec<Field> = arrow_schema(&in_schema)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut keys = Vec::new();
        let helper = |e: &Expr, name: String, exprs: &mut Vec<Expr>, fields: &mut Vec<Field>| {
            let dt = builder_type(&e.get_type(&in_schema)?);
            exprs.push(Expr::Cast(Cast::new(Box::new(e.clone()), dt.clone())));
            fields.push(Field::new(name, dt, true));
            Ok::<_, DataFusionError>(())
        };
        for (i, p) in partition.iter().enumerate() {
            helper(p, format!("__p{i}"), &mut exprs, &mut fields).map_err(dferr)?;
            keys.push(format!("__p{i}"));
        }
        if partition.is_empty() {
            exprs.push(Expr::Literal(ScalarValue::Int64(Some(0)), None));
            fields.push(Field::new("__p0", DataType::Int64, false));
            keys.push("__p0".into());
        }
        let n_keys = keys.len();
        let mut order_keys = Vec::new();
        for (i, s) in order.iter().enumerate() {
            helper(&s.expr, format!("__o{i}"), &mut exprs, &mut fields).map_err(dferr)?;
            order_keys.push(OrderKey {
                index: width + n_keys + i,
                asc: s.asc,
                nulls_first: s.nulls_first,
            });
        }
        let pre = project(
            &input,
            &exprs,
            &in_schema,
            Arc::new(Schema::new(fields)),
            "Calc[rank keys]",
        )
        .map_err(dferr)?;
        let target = with_op(arrow_schema(&w.schema), updating);
        let rows_schema = rows_schema(&target);
        let limit = limit.filter(|_| all_row_numbers);
        let mut f = RankFunction::new(
            width,
            order_keys,
            kinds,
            window_end.map(|i| width + i),
            limit,
        );
        f.updating = updating;
        let name = match (window_end, limit) {
            (None, Some(n)) if updating => format!("TopN[{n}, updating]"),
            (Some(_), Some(n)) => format!("WindowTopN[{n}]"),
            (Some(_), None) => "WindowRank".to_string(),
            (None, Some(n)) => format!("TopN[{n}, at end of input]"),
            (None, None) => "Rank[at end of input]".to_string(),
        };
        let keyed = pre.key_by(KeySelector::columns(keys.clone()));
        let ranked = match (window_end, limit) {
            // Top-N at the end of a bounded input: rows that cannot enter the top N are never
            // materialized. Its rows live on the heap, so a backend that spills gets the rank
            // function below, which keeps them in keyed state.
            (None, Some(n)) if !updating && !pre.backend_spills() => {
                let schema = rows_schema.clone();
                keyed
                    .transform(
                        &name,
                        rows_schema,
                        Arc::new(move |ctx: &OperatorContext| {
                            Ok(Box::new(TopNAtEndOperator::new(
                                &f,
                                n,
                                KeySelector::columns(keys.clone()),
                                schema.clone(),
                                ctx,
                            )?) as Box<dyn StreamOperator>)
                        }),
                    )
                    .state_layout(crate::operators::rank::TOP_N_AT_END_STATE_LAYOUT)
            }
            _ => {
                // The Top-N the heap backend runs at the end of a bounded input: on a backend
                // that spills it takes that operator's rows over from a savepoint.
                let heap_at_end = window_end.is_none() && limit.is_some() && !updating;
                let ranked = keyed.process(rows_schema, f).name(&name);
                if heap_at_end {
                    ranked.reads_state_layout(crate::operators::rank::TOP_N_AT_END_STATE_LAYOUT)
                } else {
                    ranked
                }
            }
        };
        let out = cast_output(&ranked, target, "Calc[rank output]");
        Ok(Planned { stream: out })
    }

    /// The window node under a filter (directly or below a projection) and its row limit,
    /// if the filter is `rn <= N` on a ROW_NUMBER.
    pub(crate) fn window_under_filter<'p>(
        pred: &Expr,
        input: &'p LogicalPlan,
    ) -> Option<(&'p Window, usize)> {
        match input {
            LogicalPlan::Window(w) => limit_of(pred, w).map(|n| (w, n)),
            // Through projections that pass the number's column on.
            LogicalPlan::Projection(p) => {
                let (Expr::BinaryExpr(b), LogicalPlan::Window(w)) = (pred, p.input.as_ref()) else {
                    return None;
                };
                let Expr::Column(c) = b.left.as_ref() else {
                    return None;
                };
                p.expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(x) if x == c))
                    .then(|| limit_of(pred, w).map(|n| (w, n)))?
            }
            _ => None,
        }
    }
}
