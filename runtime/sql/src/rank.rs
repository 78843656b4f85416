//! `ROW_NUMBER()`, `RANK()` and `DENSE_RANK()` `OVER (PARTITION BY … ORDER BY …)`: Top-N and
//! deduplication (`WHERE rn <= N`, `rn = 1`).
//!
//! A partition's rows are numbered once the partition is complete: per window when the
//! PARTITION BY includes a window's end (Flink's window Top-N, emitted when the watermark
//! passes the window), or at the end of a bounded input. With a `rn <= N` filter above a
//! ROW_NUMBER, a partition keeps only its N best rows in state. Anything else would be an
//! updating result, which is refused.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{Cast, Expr, ExprSchemable, LogicalPlan, Operator, Window};

use super::join::{TimeAttr, strip};
use super::plan::{
    Planned, Planner, arrow_schema, builder_type, cast_output, df_error, is_updating, project,
    rows_schema, with_op,
};
use super::script::{SqlError, Statement};
use super::window_tvf::WindowTvf;
use flink_rs_core::checkpoint::{CheckpointId, OperatorSnapshot, RestoredState};
use flink_rs_core::element::{MAX_WATERMARK, Timestamp};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::key::{Key, KeyGroup, KeySelector};
use flink_rs_core::operator::{Operator as StreamOperator, OperatorContext, Output};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, RowBatchBuilder, Value, array_value, row_at};
use flink_rs_core::state::{FastMap, ListState, StateRegistry, TimeDomain};

/// Which number a window function gives a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    RowNumber,
    Rank,
    DenseRank,
}

/// One ORDER BY column: its index in the row, direction, and where NULLs go.
#[derive(Debug, Clone, Copy)]
pub struct OrderKey {
    pub index: usize,
    pub asc: bool,
    pub nulls_first: bool,
}

fn compare(a: &Row, b: &Row, keys: &[OrderKey]) -> Ordering {
    for k in keys {
        let (x, y) = (&a[k.index], &b[k.index]);
        let o = match (x == &Value::Null, y == &Value::Null) {
            (true, true) => Ordering::Equal,
            (true, false) if k.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if k.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let o = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                if k.asc { o } else { o.reverse() }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The keyed process function: rows of a partition (the key) wait in state until the
/// partition is complete, then are sorted, numbered and emitted.
#[derive(Clone)]
pub struct RankFunction {
    /// Columns of the input passed through (helper columns follow them).
    pub width: usize,
    pub order: Vec<OrderKey>,
    pub kinds: Vec<RankKind>,
    /// Index of the window-end column among the row's values (None: bounded input, numbered
    /// at its end).
    pub window_end: Option<usize>,
    /// Keep only this many rows per partition (a `ROW_NUMBER() … <= N` filter follows).
    pub limit: Option<usize>,
    /// Unbounded Top-N: emit each change of the top `limit` rows as it happens (`+I`, and
    /// `-U`/`+U` for every position whose row changed, a row kind column last) instead of
    /// numbering a complete partition.
    pub updating: bool,
    rows: Option<ListState<Row>>,
}

impl RankFunction {
    pub fn new(
        width: usize,
        order: Vec<OrderKey>,
        kinds: Vec<RankKind>,
        window_end: Option<usize>,
        limit: Option<usize>,
    ) -> Self {
        RankFunction {
            width,
            order,
            kinds,
            window_end,
            limit,
            updating: false,
            rows: None,
        }
    }
}

impl ProcessFunction for RankFunction {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.rows = Some(states.list("rank-rows"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(rows) = &self.rows else {
            return Err(Error::User("rank not opened".into()));
        };
        if self.updating {
            let n = self.limit.unwrap_or(0);
            let order = &self.order;
            let width = self.width;
            let changes = rows.modify(ctx, |kept| {
                let at = kept.partition_point(|r| compare(r, row, order) != Ordering::Greater);
                if at >= n {
                    return Vec::new();
                }
                let old: Vec<Row> = kept[at..].to_vec();
                if kept.len() >= n {
                    kept.pop();
                }
                kept.insert(at, row.clone());
                // Every position from `at` on holds another row now.
                let numbered = |r: &Row, i: usize, kind: &str| {
                    let mut o: Row = r[..width.min(r.len())].to_vec();
                    o.push(Value::Int(i as i64 + 1));
                    o.push(Value::Str(kind.to_string()));
                    o
                };
                let mut changes = Vec::new();
                for (k, new) in kept[at..].iter().enumerate() {
                    match old.get(k) {
                        Some(prev) => {
                            changes.push(numbered(prev, at + k, "-U"));
                            changes.push(numbered(new, at + k, "+U"));
                        }
                        None => changes.push(numbered(new, at + k, "+I")),
                    }
                }
                changes
            });
            for c in changes {
                out.collect(c)?;
            }
            return Ok(());
        }
        let fire_at = match self.window_end {
            Some(i) => {
                let t = row
                    .get(i)
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(1);
                if t <= ctx.current_watermark() {
                    return Ok(()); // late: its window was numbered already
                }
                t
            }
            None => i64::MAX,
        };
        // At the end of input every key fires once: its timer is registered with its first
        // row (a timer lookup per row is most of the cost with millions of keys).
        let first = match self.limit {
            Some(n) => {
                // Keep the N best rows, in order (the new row goes after its equals).
                let order = &self.order;
                rows.modify(ctx, |kept| {
                    let first = kept.is_empty();
                    let at = kept.partition_point(|r| compare(r, row, order) != Ordering::Greater);
                    if at < n {
                        if kept.len() >= n {
                            kept.pop();
                        }
                        kept.insert(at, row.clone());
                    }
                    first
                })
            }
            None => rows.modify(ctx, |kept| {
                kept.push(row.clone());
                kept.len() == 1
            }),
        };
        if first || fire_at != i64::MAX {
            ctx.register_event_time_timer(fire_at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: Timestamp,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.rows else {
            return Ok(());
        };
        let mut rows = state.get(ctx);
        state.clear(ctx);
        rows.sort_by(|a, b| compare(a, b, &self.order));
        let (mut rank, mut dense) = (0i64, 0i64);
        for (i, r) in rows.iter().enumerate() {
            let tie = i > 0 && compare(&rows[i - 1], r, &self.order) == Ordering::Equal;
            if !tie {
                rank = i as i64 + 1;
                dense += 1;
            }
            let mut o: Row = r[..self.width.min(r.len())].to_vec();
            o.extend(self.kinds.iter().map(|k| {
                Value::Int(match k {
                    RankKind::RowNumber => i as i64 + 1,
                    RankKind::Rank => rank,
                    RankKind::DenseRank => dense,
                })
            }));
            out.collect(o)?;
        }
        Ok(())
    }
}

/// Top-N of a bounded input (`ROW_NUMBER() … <= N`, no window), numbered at its end: the
/// same rows as [`RankFunction`] with a limit and no window, without materializing every row.
/// A row's ORDER BY values are read first and compared with its key's kept rows; only a row
/// that enters the key's N best is materialized and stored (ties keep arrival order: a new
/// row goes after its equals). Checkpoints hold each key group's kept rows.
pub struct TopNAtEndOperator {
    width: usize,
    order: Vec<OrderKey>,
    numbers: usize,
    n: usize,
    key: KeySelector,
    max_parallelism: u16,
    key_groups: std::ops::Range<KeyGroup>,
    kept: FastMap<Key, Vec<Row>>,
    /// A row with only the ORDER BY columns read (the others NULL), reused.
    probe: Row,
    builder: RowBatchBuilder,
}

impl TopNAtEndOperator {
    /// `numbers` ROW_NUMBER columns follow the `width` passed-through ones in `output`.
    pub fn new(
        f: &RankFunction,
        n: usize,
        key: KeySelector,
        output: SchemaRef,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        Ok(TopNAtEndOperator {
            width: f.width,
            order: f.order.clone(),
            numbers: f.kinds.len(),
            n,
            key,
            max_parallelism: ctx.max_parallelism,
            key_groups: ctx.key_groups(),
            kept: FastMap::default(),
            probe: Vec::new(),
            builder: RowBatchBuilder::new(output)?,
        })
    }
}

impl StreamOperator for TopNAtEndOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut dyn Output,
    ) -> Result<()> {
        let keys = self.key.extract(&batch)?;
        self.probe.clear();
        self.probe.resize(batch.num_columns(), Value::Null);
        for r in 0..batch.num_rows() {
            for k in self.order.iter() {
                if let Some(c) = batch.columns().get(k.index) {
                    self.probe[k.index] = array_value(c, r);
                }
            }
            let kept = self.kept.entry(keys.key(r)).or_default();
            let at =
                kept.partition_point(|x| compare(x, &self.probe, &self.order) != Ordering::Greater);
            if at < self.n {
                if kept.len() >= self.n {
                    kept.pop();
                }
                kept.insert(at, row_at(&batch, r));
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        if watermark == MAX_WATERMARK {
            // The input has ended: number every key's rows.
            let mut o: Row = Vec::new();
            for (_, rows) in self.kept.drain() {
                for (i, r) in rows.iter().enumerate() {
                    o.clear();
                    o.extend_from_slice(&r[..self.width.min(r.len())]);
                    o.extend(std::iter::repeat_n(Value::Int(i as i64 + 1), self.numbers));
                    self.builder.push(&o)?;
                }
                if self.builder.len() >= 8192 {
                    out.emit(self.builder.finish()?)?;
                }
            }
            if !self.builder.is_empty() {
                out.emit(self.builder.finish()?)?;
            }
        }
        out.emit_watermark(watermark)
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot> {
        let mut groups: std::collections::BTreeMap<KeyGroup, Vec<(&Key, &Vec<Row>)>> =
            Default::default();
        for (k, rows) in &self.kept {
            groups
                .entry(k.key_group(self.max_parallelism))
                .or_default()
                .push((k, rows));
        }
        let keyed = groups
            .into_iter()
            .map(|(kg, entries)| {
                bincode::serialize(&entries)
                    .map(|b| (kg, b))
                    .map_err(|e| Error::state("top-n", e))
            })
            .collect::<Result<_>>()?;
        Ok(OperatorSnapshot {
            keyed,
            operator: None,
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<()> {
        for (kg, blob) in &state.keyed {
            if !self.key_groups.contains(kg) {
                continue;
            }
            let entries: Vec<(Key, Vec<Row>)> = bincode::deserialize(blob)
                .map_err(|e| Error::state("top-n", format!("key group {kg}: {e}")))?;
            self.kept.extend(entries);
        }
        Ok(())
    }
}

/// `col <= N`, `col < N` or `col = 1` where `col` is output `index` of a window node.
pub(super) fn limit_of(pred: &Expr, window: &Window) -> Option<usize> {
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
    pub(super) fn over_window(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        w: &Window,
        limit: Option<usize>,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let at = super::script::find_word(&st.text[base..], "OVER").map_or(base, |a| a + base);
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
                            "{}() OVER is not supported in streaming SQL; ROW_NUMBER, RANK and DENSE_RANK are (Top-N and deduplication)",
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
            // materialized.
            (None, Some(n)) if !updating => {
                let schema = rows_schema.clone();
                keyed.transform(
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
            }
            _ => keyed.process(rows_schema, f).name(&name),
        };
        let out = cast_output(&ranked, target, "Calc[rank output]");
        Ok(Planned { stream: out })
    }

    /// The window node under a filter (directly or below a projection) and its row limit,
    /// if the filter is `rn <= N` on a ROW_NUMBER.
    pub(super) fn window_under_filter<'p>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_sql_with_nulls_placed_as_asked() {
        let rows: Vec<Row> = vec![vec![Value::Int(2)], vec![Value::Null], vec![Value::Int(1)]];
        let sorted = |asc, nulls_first| {
            let mut r = rows.clone();
            let k = [OrderKey {
                index: 0,
                asc,
                nulls_first,
            }];
            r.sort_by(|a, b| compare(a, b, &k));
            r.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
        };
        use Value::{Int, Null};
        assert_eq!(sorted(true, false), vec![Int(1), Int(2), Null]);
        assert_eq!(sorted(true, true), vec![Null, Int(1), Int(2)]);
        assert_eq!(sorted(false, true), vec![Null, Int(2), Int(1)]);
        assert_eq!(sorted(false, false), vec![Int(2), Int(1), Null]);
    }
}

#[cfg(test)]
mod top_n_tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use flink_rs_core::operators::ProcessOperator;
    use flink_rs_core::state::MemoryStateBackend;
    use flink_rs_core::testing::{CollectRows, Lcg};

    /// Rows `(v, key, order)`: `order` may be NULL; the key and the order column follow the
    /// passed-through `v`, as the planner lays them out.
    fn batch(rows: &[(i64, i64, Option<f64>)]) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("k", DataType::Int64, false),
            Field::new("o", DataType::Float64, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )?)
    }

    #[test]
    fn top_n_at_end_equals_the_rank_function_across_restores() -> Result<()> {
        let output = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("rn", DataType::Int64, true),
        ]));
        let ctx = OperatorContext::single("rank");
        let mut total = 0;
        for seed in 0..40u64 {
            let mut g = Lcg(seed);
            let (n, asc, nulls_first) = (1 + g.next(4) as usize, g.next(2) == 0, g.next(2) == 0);
            let order = vec![OrderKey {
                index: 2,
                asc,
                nulls_first,
            }];
            let f = RankFunction::new(1, order, vec![RankKind::RowNumber], None, Some(n));
            let mut reference = ProcessOperator::new(
                f.clone(),
                vec![(Some(KeySelector::column("k")), None)],
                output.clone(),
                &MemoryStateBackend::default(),
                &ctx,
            )?;
            let new = |f: &RankFunction| {
                TopNAtEndOperator::new(f, n, KeySelector::column("k"), output.clone(), &ctx)
            };
            let mut op = new(&f)?;
            let (mut want, mut got) = (CollectRows::default(), CollectRows::default());
            let mut v = 0;
            for _ in 0..30 {
                if g.next(6) == 0 {
                    let snap = op.snapshot_state(1)?;
                    op = new(&f)?;
                    op.restore_state(RestoredState {
                        keyed: snap
                            .keyed
                            .into_iter()
                            .map(|(kg, b)| (kg, b.into()))
                            .collect(),
                        ..RestoredState::default()
                    })?;
                }
                let rows: Vec<_> = (0..g.next(40))
                    .map(|_| {
                        v += 1;
                        // Few distinct values: ties and NULLs are common.
                        let o = (g.next(8) != 0).then(|| g.next(6) as f64);
                        (v, g.next(7) as i64, o)
                    })
                    .collect();
                let b = batch(&rows)?;
                reference.process_batch(0, b.clone(), &mut want)?;
                op.process_batch(0, b, &mut got)?;
            }
            reference.process_watermark(MAX_WATERMARK, &mut want)?;
            op.process_watermark(MAX_WATERMARK, &mut got)?;
            want.0.sort();
            got.0.sort();
            assert_eq!(got.0, want.0, "seed {seed}: top {n}, asc {asc}");
            total += want.0.len();
        }
        assert!(total > 500, "{total} rows numbered");
        Ok(())
    }
}
