//! Streaming inner joins: regular, interval and window joins, one keyed two-input operator.
//!
//! Both inputs are keyed by the equi-join keys; each side keeps its rows in keyed list state
//! and every arriving row is matched against the other side's rows of the same key. What
//! makes a join an interval or window join is only how long rows are kept: when the join
//! condition bounds the two sides' event times against each other (`L.t BETWEEN R.t - a AND
//! R.t + b`, or equal window ends of two window TVFs or window aggregates), a row is removed
//! once the watermark shows that no row it could still match will come. Without such a bound
//! rows are kept for the job's life, as Flink's regular joins do without a state TTL (with
//! `table.exec.state.ttl`, each row is dropped that long after it was stored). The rest
//! of the join condition is evaluated on the joined rows by the planner (a filter after this
//! operator), so the result is the same whatever the bounds.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Cast, Expr, ExprSchemable, Join, JoinType, LogicalPlan, Operator,
};

use super::interval_join::{IntervalJoinOperator, IntervalJoinSpec};
use super::plan::{
    Planned, Planner, arrow_schema, cast_output, df_error, filter_stream, is_updating, physical,
    project, rows_schema,
};
use super::script::{SqlError, Statement};
use super::window_tvf::WindowTvf;
use flink_rs_core::api::DataStream;
use flink_rs_core::element::Timestamp;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::key::KeySelector;
use flink_rs_core::operator::OperatorContext;
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, Value};
use flink_rs_core::state::{ListState, StateRegistry, TimeDomain};

/// Bounds on `left time - right time`, in milliseconds (`None`: open on that end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeBounds {
    pub lower: Option<i64>,
    pub upper: Option<i64>,
}

impl TimeBounds {
    /// Narrows the bounds with `left - right >= v`.
    pub fn at_least(&mut self, v: i64) {
        self.lower = Some(self.lower.map_or(v, |l| l.max(v)));
    }

    /// Narrows the bounds with `left - right <= v`.
    pub fn at_most(&mut self, v: i64) {
        self.upper = Some(self.upper.map_or(v, |u| u.min(v)));
    }

    /// Whether rows of either side are ever removed.
    pub fn bounded(&self) -> bool {
        self.lower.is_some() || self.upper.is_some()
    }
}

/// The event-time columns (indexes into each side's row) the bounds relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeColumns {
    pub left: usize,
    pub right: usize,
}

/// One side of a simple comparison in the join condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Left(usize),
    Right(usize),
    Literal(Value),
}

/// A comparison of two values of the same type (`a.num >= b.maxn`), checked on each candidate
/// pair before the joined row is built; the full condition is still applied after the join.
#[derive(Debug, Clone, PartialEq)]
pub struct PairPredicate {
    pub a: Operand,
    pub op: std::cmp::Ordering,
    /// `op` or equal (`>=`, `<=`); `!=` is `op: Equal, negated`.
    pub or_equal: bool,
    pub negated: bool,
    pub b: Operand,
}

impl PairPredicate {
    fn holds(&self, l: &[Value], r: &[Value]) -> bool {
        self.holds_by(|side, i| if side == 0 { l } else { r }.get(i).cloned())
    }

    /// Whether the comparison holds, reading column `i` of side `side` (0 left, 1 right)
    /// through `value`.
    pub(super) fn holds_by(&self, value: impl Fn(usize, usize) -> Option<Value>) -> bool {
        let get = |o: &Operand| -> Option<Value> {
            match o {
                Operand::Left(i) => value(0, *i),
                Operand::Right(i) => value(1, *i),
                Operand::Literal(v) => Some(v.clone()),
            }
        };
        let (Some(a), Some(b)) = (get(&self.a), get(&self.b)) else {
            return true;
        };
        if a == Value::Null || b == Value::Null {
            return false; // SQL: a comparison with NULL is not true
        }
        let Some(ord) = a.partial_cmp(&b) else {
            return true; // leave it to the filter after the join
        };
        let hit = ord == self.op || (self.or_equal && ord == std::cmp::Ordering::Equal);
        hit != self.negated
    }
}

/// A stored row: the watermark from which it is useless, whether it has matched (outer
/// joins emit the unmatched ones, padded with NULLs, when they go), and its values.
type Stored = (i64, bool, Row);

/// The join's process function. Input rows are `[data columns…, key columns…]`; output rows
/// are the left data columns followed by the right ones.
#[derive(Clone)]
pub struct StreamJoin {
    /// Number of data columns of the left and right rows.
    pub widths: [usize; 2],
    pub time: Option<TimeColumns>,
    pub bounds: TimeBounds,
    pub predicates: Vec<PairPredicate>,
    /// Per side: whether its rows without a match are emitted (LEFT, RIGHT, FULL joins).
    pub outer: [bool; 2],
    /// A regular join's state TTL (`table.exec.state.ttl`, milliseconds of processing
    /// time): a row is dropped that long after it was stored, as Flink's join state with a
    /// TTL. Time-bounded joins drop rows by the watermark instead.
    pub idle_ttl: Option<i64>,
    sides: Option<[ListState<Stored>; 2]>,
}

impl StreamJoin {
    pub fn new(widths: [usize; 2], time: Option<TimeColumns>, bounds: TimeBounds) -> Self {
        StreamJoin {
            widths,
            time: time.filter(|_| bounds.bounded()),
            bounds,
            predicates: Vec::new(),
            outer: [false, false],
            idle_ttl: None,
            sides: None,
        }
    }

    /// The row's event time on `side`, when the join has time bounds.
    fn time_of(&self, side: usize, row: &[Value]) -> Option<i64> {
        let t = self.time?;
        let i = if side == 0 { t.left } else { t.right };
        row.get(i).and_then(Value::as_i64)
    }

    /// From which watermark a row of `side` at time `t` can match nothing more: a left row
    /// at `tl` matches right rows up to `tl - lower`, a right row at `tr` left rows up to
    /// `tr + upper`; rows still to come are later than the watermark.
    fn expiry(&self, side: usize, t: Option<i64>) -> i64 {
        let b = self.bounds;
        let Some(t) = t else {
            // A NULL time satisfies no time bound: such a row can match nothing.
            return if self.time.is_some() {
                i64::MIN
            } else {
                i64::MAX
            };
        };
        let e = if side == 0 {
            b.lower.map(|l| t.saturating_sub(l))
        } else {
            b.upper.map(|u| t.saturating_add(u))
        };
        e.unwrap_or(i64::MAX)
    }

    /// A row of `side` without a match: its values and NULLs for the other side's.
    fn padded(&self, side: usize, data: &[Value]) -> Row {
        let nulls = vec![Value::Null; self.widths[1 - side]];
        if side == 0 {
            [data, &nulls].concat()
        } else {
            [&nulls, data].concat()
        }
    }

    /// Whether rows `l` and `r` join: time bounds and the simple comparisons.
    fn matches(&self, l: &[Value], r: &[Value]) -> bool {
        self.within(self.time_of(0, l), self.time_of(1, r))
            && self.predicates.iter().all(|p| p.holds(l, r))
    }

    /// Whether rows at `tl` and `tr` can satisfy the bounds.
    fn within(&self, tl: Option<i64>, tr: Option<i64>) -> bool {
        if self.time.is_none() {
            return true;
        }
        let (Some(tl), Some(tr)) = (tl, tr) else {
            return false; // a comparison with NULL is not true
        };
        let d = tl.saturating_sub(tr);
        self.bounds.lower.is_none_or(|l| d >= l) && self.bounds.upper.is_none_or(|u| d <= u)
    }
}

impl ProcessFunction for StreamJoin {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.sides = Some([states.list("join-left"), states.list("join-right")]);
        Ok(())
    }

    fn process_element(
        &mut self,
        input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(sides) = &self.sides else {
            return Err(Error::User("join not opened".into()));
        };
        let side = input.min(1);
        let width = self.widths[side];
        // SQL: a NULL key equals nothing.
        if row[width.min(row.len())..].contains(&Value::Null) {
            if self.outer[side] {
                out.collect(self.padded(side, &row[..width.min(row.len())]))?;
            }
            return Ok(());
        }
        let data = &row[..width.min(row.len())];
        let t = self.time_of(side, data);
        // With a state TTL, a stored row's expiry is processing time; rows past it are never
        // matched, even before their timer has removed them.
        let ttl = self.idle_ttl.filter(|_| self.time.is_none());
        let now = ctx.processing_time();
        let live = |expiry: i64| ttl.is_none() || expiry > now;
        let mut result = Ok(());
        let mut matched = false;
        let mut visit = |other: &[Value]| -> bool {
            let (l, r) = if side == 0 {
                (data, other)
            } else {
                (other, data)
            };
            if !self.matches(l, r) {
                return false;
            }
            matched = true;
            if result.is_ok() {
                let mut joined = Vec::with_capacity(l.len() + r.len());
                joined.extend_from_slice(l);
                joined.extend_from_slice(r);
                result = out.collect(joined);
            }
            true
        };
        if self.outer[1 - side] {
            // The other side's rows remember that they matched.
            sides[1 - side].modify(ctx, |others| {
                for (e, m, other) in others.iter_mut() {
                    if live(*e) && visit(other) {
                        *m = true;
                    }
                }
            });
        } else {
            sides[1 - side].with_values(ctx, |others| {
                for (e, _, other) in others {
                    if live(*e) {
                        visit(other);
                    }
                }
            });
        }
        result?;
        if let Some(ttl) = ttl {
            let expiry = now.saturating_add(ttl);
            ctx.register_processing_time_timer(expiry);
            sides[side].add(ctx, (expiry, matched, data.to_vec()));
            return Ok(());
        }
        let expiry = self.expiry(side, t);
        if expiry <= ctx.current_watermark() {
            // Late: nothing that comes later can match it.
            if self.outer[side] && !matched {
                out.collect(self.padded(side, data))?;
            }
            return Ok(());
        }
        if expiry != i64::MAX {
            ctx.register_event_time_timer(expiry);
        }
        sides[side].add(ctx, (expiry, matched, data.to_vec()));
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: Timestamp,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(sides) = &self.sides else {
            return Ok(());
        };
        for (side, s) in sides.iter().enumerate() {
            if !self.outer[side] {
                s.retain(ctx, |(expiry, _, _)| *expiry > ts);
                continue;
            }
            let mut unmatched = Vec::new();
            s.retain(ctx, |(expiry, matched, row)| {
                let keep = *expiry > ts;
                if !keep && !matched {
                    unmatched.push(row.clone());
                }
                keep
            });
            for row in unmatched {
                out.collect(self.padded(side, &row))?;
            }
        }
        Ok(())
    }
}

/// What makes a column an event-time attribute a join can bound rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeAttr {
    /// A table's watermarked column (rows later than the watermark are late).
    Rowtime,
    /// `window_end` of a window TVF, or of a window aggregate grouped by it.
    WindowEnd,
    /// `window_time` (the window's last millisecond), likewise.
    WindowTime,
}

/// The expression under any aliases.
pub(super) fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip(&a.expr),
        other => other,
    }
}

/// Milliseconds of an interval literal (`INTERVAL '10' SECOND`), when it has no months.
fn interval_ms(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = strip(e) else {
        return None;
    };
    match v {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationSecond(Some(v)) => Some(v.saturating_mul(1000)),
        _ => None,
    }
}

/// The key type both sides' join keys are cast to (the engine keys by integers and strings).
fn key_type(l: &DataType, r: &DataType) -> DataType {
    let int_like = |t: &DataType| t.is_integer() || matches!(t, DataType::Timestamp(..));
    if int_like(l) && int_like(r) {
        DataType::Int64
    } else {
        DataType::Utf8
    }
}

/// `a op b` over columns of the two sides and literals of one type, as a [`PairPredicate`].
fn pair_predicate(e: &Expr, ls: &DFSchema, rs: &DFSchema) -> Option<PairPredicate> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let Expr::BinaryExpr(b) = e else {
        return None;
    };
    let (op, or_equal, negated) = match b.op {
        Operator::Eq => (Equal, false, false),
        Operator::NotEq => (Equal, false, true),
        Operator::Lt => (Less, false, false),
        Operator::LtEq => (Less, true, false),
        Operator::Gt => (Greater, false, false),
        Operator::GtEq => (Greater, true, false),
        _ => return None,
    };
    // Types whose row values (`rows::array_value`) order as SQL orders them.
    let typed = |dt: &DataType| match dt {
        t if t.is_integer() => Some(DataType::Int64),
        DataType::Float32 | DataType::Float64 => Some(DataType::Float64),
        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8),
        DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => Some(dt.clone()),
        _ => None,
    };
    let operand = |e: &Expr| -> Option<(Operand, DataType)> {
        match strip(e) {
            Expr::Column(c) => {
                if let Ok(i) = ls.index_of_column(c) {
                    Some((Operand::Left(i), typed(ls.field(i).data_type())?))
                } else {
                    let i = rs.index_of_column(c).ok()?;
                    Some((Operand::Right(i), typed(rs.field(i).data_type())?))
                }
            }
            Expr::Literal(v, _) => {
                let (value, dt) = match v {
                    ScalarValue::Int64(Some(x)) => (Value::Int(*x), DataType::Int64),
                    ScalarValue::Int32(Some(x)) => (Value::Int(i64::from(*x)), DataType::Int64),
                    ScalarValue::Float64(Some(x)) => (Value::Float(*x), DataType::Float64),
                    ScalarValue::Utf8(Some(x)) => (Value::Str(x.clone()), DataType::Utf8),
                    _ => return None,
                };
                Some((Operand::Literal(value), dt))
            }
            _ => None,
        }
    };
    let (a, ta) = operand(&b.left)?;
    let (b2, tb) = operand(&b.right)?;
    // Values compare by variant first: only same-typed operands are safe to compare here.
    (ta == tb).then_some(PairPredicate {
        a,
        op,
        or_equal,
        negated,
        b: b2,
    })
}

impl Planner<'_> {
    /// Whether column `idx` of `plan`'s output is an event-time attribute, traced through
    /// projections, filters, aliases, unions and window aggregates to its origin.
    pub(super) fn time_attr(&self, plan: &LogicalPlan, idx: usize) -> Option<TimeAttr> {
        match plan {
            LogicalPlan::Projection(p) => {
                let Expr::Column(c) = strip(p.expr.get(idx)?) else {
                    return None;
                };
                let j = p.input.schema().index_of_column(c).ok()?;
                self.time_attr(&p.input, j)
            }
            LogicalPlan::Filter(f) => self.time_attr(&f.input, idx),
            LogicalPlan::SubqueryAlias(a) => self.time_attr(&a.input, idx),
            LogicalPlan::Union(u) => {
                let attrs: Vec<_> = u.inputs.iter().map(|i| self.time_attr(i, idx)).collect();
                let first = *attrs.first()?;
                attrs.iter().all(|a| *a == first).then_some(first)?
            }
            LogicalPlan::Aggregate(a) => {
                let Expr::Column(c) = strip(a.group_expr.get(idx)?) else {
                    return None;
                };
                let j = a.input.schema().index_of_column(c).ok()?;
                match self.time_attr(&a.input, j)? {
                    TimeAttr::Rowtime => None,
                    attr => self.window_end_group(a).map(|_| attr),
                }
            }
            LogicalPlan::TableScan(scan) => {
                let name = scan.projected_schema.field(idx).name().as_str();
                let table = scan.table_name.table();
                if let Some(w) = self.all_tvfs.iter().find(|w| w.alias == table) {
                    return match name {
                        "window_end" => Some(TimeAttr::WindowEnd),
                        "window_time" => Some(TimeAttr::WindowTime),
                        n if n.eq_ignore_ascii_case(&w.time_column) => Some(TimeAttr::Rowtime),
                        _ => None,
                    };
                }
                let t = self.tables.get(&table.to_ascii_lowercase())?;
                let wm = match &t.def.watermark {
                    Some((c, _)) => c.clone(),
                    // Sources with their own event time (nexmark, bids).
                    None => match t.def.options.get("connector").map(String::as_str) {
                        Some("nexmark") => "dateTime".into(),
                        Some("bids") => "ts".into(),
                        _ => return None,
                    },
                };
                wm.eq_ignore_ascii_case(name).then_some(TimeAttr::Rowtime)
            }
            _ => None,
        }
    }

    /// The group column of an aggregate that is a window's end: the aggregate fires per
    /// window when the watermark passes it.
    pub(super) fn window_end_group(&self, agg: &Aggregate) -> Option<usize> {
        agg.group_expr.iter().position(|g| match strip(g) {
            Expr::Column(c) => {
                agg.input
                    .schema()
                    .index_of_column(c)
                    .ok()
                    .and_then(|j| self.time_attr(&agg.input, j))
                    == Some(TimeAttr::WindowEnd)
            }
            _ => false,
        })
    }

    /// `left JOIN right ON …`: keyed by the equi-join keys, rows kept as long as the time
    /// bounds of the condition allow, the rest of the condition filtered after.
    pub(super) fn join(
        &mut self,
        st: &Statement,
        base: usize,
        tvfs: &[WindowTvf],
        j: &Join,
    ) -> Result<Planned, SqlError> {
        let dferr = |e: DataFusionError| df_error(st, &e, base);
        let kind = j.join_type.to_string().to_ascii_uppercase();
        let join_word = [
            "LEFT", "RIGHT", "FULL", "OUTER", "SEMI", "ANTI", "IN", "EXISTS", "JOIN",
        ]
        .iter()
        .find_map(|w| super::script::find_word(&st.text[base..], w))
        .map_or(base, |a| a + base);
        let outer = match j.join_type {
            JoinType::Inner => [false, false],
            JoinType::Left => [true, false],
            JoinType::Right => [false, true],
            JoinType::Full => [true, true],
            _ => {
                return Err(st.error_at_offset(
                    join_word,
                    format!(
                        "{kind} joins (IN/EXISTS subqueries) are not supported in streaming SQL yet; inner joins are (regular, interval and window joins), and LEFT/RIGHT/FULL interval and window joins"
                    ),
                ));
            }
        };
        let (ls, rs) = (j.left.schema().clone(), j.right.schema().clone());
        let left = self.translate(st, base, tvfs, &j.left)?.stream;
        let right = self.translate(st, base, tvfs, &j.right)?.stream;
        if is_updating(&left) || is_updating(&right) {
            let at = super::script::find_word(&st.text[base..], "JOIN").map_or(base, |a| a + base);
            return Err(st.error_at_offset(
                at,
                "a join of an updating result (a GROUP BY without a window) is not supported yet; join append-only inputs or window aggregates",
            ));
        }

        // Time bounds: equal time attributes, and comparisons of them in the filter.
        let mut time: Option<TimeColumns> = None;
        let mut bounds = TimeBounds::default();
        let term = |e: &Expr| -> Option<(usize, usize, i64)> {
            let mut e = strip(e);
            let mut offset = 0i64;
            if let Expr::BinaryExpr(b) = e {
                let ms = interval_ms(&b.right)?;
                offset = match b.op {
                    Operator::Plus => ms,
                    Operator::Minus => -ms,
                    _ => return None,
                };
                e = strip(&b.left);
            }
            while let Expr::Cast(c) = e {
                e = strip(&c.expr);
            }
            let Expr::Column(c) = e else {
                return None;
            };
            if let Ok(i) = ls.index_of_column(c) {
                self.time_attr(&j.left, i).map(|_| (0, i, offset))
            } else if let Ok(i) = rs.index_of_column(c) {
                self.time_attr(&j.right, i).map(|_| (1, i, offset))
            } else {
                None
            }
        };
        // `a op b` as `left time - right time op c`, when it compares the two sides' times.
        let mut constrain = |a: &Expr, op: Operator, b: &Expr| -> bool {
            let (Some(ta), Some(tb)) = (term(a), term(b)) else {
                return false;
            };
            if ta.0 == tb.0 {
                return false;
            }
            let (l, r, c, op) = if ta.0 == 0 {
                (ta.1, tb.1, tb.2 - ta.2, op)
            } else {
                let flipped = match op {
                    Operator::Lt => Operator::Gt,
                    Operator::LtEq => Operator::GtEq,
                    Operator::Gt => Operator::Lt,
                    Operator::GtEq => Operator::LtEq,
                    o => o,
                };
                (tb.1, ta.1, ta.2 - tb.2, flipped)
            };
            let cols = TimeColumns { left: l, right: r };
            if time.is_some_and(|t| t != cols) {
                return false; // bounds relate one pair of time columns
            }
            match op {
                Operator::Eq => {
                    bounds.at_least(c);
                    bounds.at_most(c);
                }
                Operator::GtEq => bounds.at_least(c),
                Operator::Gt => bounds.at_least(c.saturating_add(1)),
                Operator::LtEq => bounds.at_most(c),
                Operator::Lt => bounds.at_most(c.saturating_sub(1)),
                _ => return false,
            }
            time = Some(cols);
            true
        };
        for (l, r) in &j.on {
            constrain(l, Operator::Eq, r);
        }
        // Conjuncts the operator checks exactly per pair (time bounds, simple comparisons):
        // an outer join can only decide "no match" on those.
        let mut all_checked = true;
        if let Some(f) = &j.filter {
            for c in split_conjunction(f) {
                let bound = match c {
                    Expr::BinaryExpr(b) => constrain(&b.left, b.op, &b.right),
                    Expr::Between(b) if !b.negated => {
                        let lo = constrain(&b.expr, Operator::GtEq, &b.low);
                        constrain(&b.expr, Operator::LtEq, &b.high) && lo
                    }
                    _ => false,
                };
                all_checked &= bound || pair_predicate(c, &ls, &rs).is_some();
            }
        }
        if outer != [false, false] {
            let ends = (outer[0] && bounds.lower.is_none()) || (outer[1] && bounds.upper.is_none());
            if time.is_none() || ends {
                return Err(st.error_at_offset(
                    join_word,
                    format!(
                        "a {kind} join needs a time bound that ends its rows' wait for a match: an interval join (e.g. a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts + INTERVAL '10' SECOND) or a window join (equal window_end); a regular outer join would be an updating result"
                    ),
                ));
            }
            if !all_checked {
                return Err(st.error_at_offset(
                    join_word,
                    format!(
                        "the ON condition of a {kind} join may hold equalities, event-time bounds and comparisons of two columns (or a column and a literal); move other conditions into a WHERE clause or a subquery"
                    ),
                ));
            }
        }

        // Each side: its columns, then the join keys cast to one type.
        let key_types: Vec<DataType> =
            j.on.iter()
                .map(|(l, r)| Ok(key_type(&l.get_type(&ls)?, &r.get_type(&rs)?)))
                .collect::<Result<_, DataFusionError>>()
                .map_err(dferr)?;
        let keyed = |stream: &DataStream,
                     schema: &DFSchema,
                     keys: Vec<&Expr>|
         -> Result<(DataStream, Vec<String>), DataFusionError> {
            let mut exprs: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
            let mut fields: Vec<Field> = arrow_schema(schema)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            let mut names = Vec::new();
            for (i, (k, t)) in keys.iter().zip(&key_types).enumerate() {
                exprs.push(Expr::Cast(Cast::new(Box::new((*k).clone()), t.clone())));
                names.push(format!("__jk{i}"));
                fields.push(Field::new(format!("__jk{i}"), t.clone(), true));
            }
            if keys.is_empty() {
                exprs.push(Expr::Literal(ScalarValue::Int64(Some(0)), None));
                names.push("__jk0".into());
                fields.push(Field::new("__jk0", DataType::Int64, false));
            }
            let s = project(
                stream,
                &exprs,
                schema,
                Arc::new(Schema::new(fields)),
                "Calc[join keys]",
            )?;
            Ok((s, names))
        };
        let (left, lk) = keyed(&left, &ls, j.on.iter().map(|(l, _)| l).collect()).map_err(dferr)?;
        let (right, rk) =
            keyed(&right, &rs, j.on.iter().map(|(_, r)| r).collect()).map_err(dferr)?;

        let target = arrow_schema(&j.schema);
        let rows_schema = rows_schema(&target);
        let mut f = StreamJoin::new([ls.fields().len(), rs.fields().len()], time, bounds);
        f.outer = outer;
        if let Some(filter) = &j.filter {
            f.predicates = split_conjunction(filter)
                .into_iter()
                .filter_map(|c| pair_predicate(c, &ls, &rs))
                .collect();
        }
        let ms = |b: Option<i64>, open: &str| b.map_or(open.to_string(), |v| format!("{v} ms"));
        let name = match (time, bounds) {
            (
                Some(_),
                TimeBounds {
                    lower: Some(0),
                    upper: Some(0),
                },
            ) => "WindowJoin".to_string(),
            (Some(_), b) if b.bounded() => format!(
                "IntervalJoin[left time - right time in {} .. {}]",
                ms(b.lower, "-inf"),
                ms(b.upper, "+inf")
            ),
            _ => match self.state_ttl {
                Some(ttl) => format!("Join[state ttl {ttl} ms]"),
                None => "Join".to_string(),
            },
        };
        if !bounds.bounded() {
            f.idle_ttl = self.state_ttl;
        }
        let name = match outer {
            [false, false] => name,
            _ => format!("{kind} {name}"),
        };
        let connected = left
            .key_by(KeySelector::columns(lk.clone()))
            .connect(&right.key_by(KeySelector::columns(rk.clone())));
        // Inner joins keep their rows in columnar, time-ordered state (see `interval_join`);
        // outer joins, and regular joins with a state TTL, in keyed list state.
        let joined = match outer {
            [false, false] if f.time.is_some() || f.idle_ttl.is_none() => {
                let fields = (left.schema().fields().iter().take(f.widths[0]))
                    .chain(right.schema().fields().iter().take(f.widths[1]))
                    .zip(rows_schema.fields())
                    .map(|(input, out)| Field::new(out.name(), input.data_type().clone(), true))
                    .collect::<Vec<_>>();
                let spec = Arc::new(IntervalJoinSpec {
                    widths: f.widths,
                    time: f.time.map(|t| [t.left, t.right]),
                    lower: f.time.and(bounds.lower),
                    upper: f.time.and(bounds.upper),
                    predicates: f.predicates,
                    keys: [KeySelector::columns(lk), KeySelector::columns(rk)],
                    output: Arc::new(Schema::new(fields)),
                });
                let schema = spec.output.clone();
                connected.transform(
                    &name,
                    schema,
                    Arc::new(move |ctx: &OperatorContext| {
                        Ok(Box::new(IntervalJoinOperator::new(spec.clone(), ctx))
                            as Box<dyn flink_rs_core::operator::Operator>)
                    }),
                )
            }
            _ => connected.process(rows_schema, f).name(&name),
        };
        let mut out = cast_output(&joined, target, "Calc[join output]");
        // What the operator could not check per pair is filtered after the join (inner joins
        // only: an outer join checked all of it, and must keep its padded rows).
        if let (Some(filter), false) = (&j.filter, all_checked) {
            let pred = physical(filter, &j.schema).map_err(dferr)?;
            out = filter_stream(&out, pred);
        }
        Ok(Planned { stream: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;
    use flink_rs_core::operator::{Operator, OperatorContext};
    use flink_rs_core::operators::ProcessOperator;
    use flink_rs_core::state::MemoryStateBackend;

    use flink_rs_core::testing::CollectRows as Collect;

    /// Rows `[t, key]` with the key also as the join key column.
    fn batch(times: &[i64], key: i64) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("__jk0", DataType::Int64, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(times.to_vec())),
                Arc::new(Int64Array::from(vec![key; times.len()])),
            ],
        )?)
    }

    fn state_bytes(op: &mut dyn Operator) -> Result<usize> {
        let snap = op.snapshot_state(1)?;
        Ok(snap.keyed.iter().map(|(_, b)| b.len()).sum())
    }

    /// An interval join (left - right in [-10, 0]) matches within the bounds and lets go of
    /// every row once the watermark has passed what it could still match; a regular join
    /// keeps its rows.
    #[test]
    fn bounded_joins_release_their_state() -> Result<()> {
        let ctx = OperatorContext::single("join");
        let out_schema = Arc::new(Schema::new(vec![
            Field::new("lt", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("rt", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let inputs = vec![
            (Some(KeySelector::columns(["__jk0"])), None),
            (Some(KeySelector::columns(["__jk0"])), None),
        ];
        let bounds = TimeBounds {
            lower: Some(-10),
            upper: Some(0),
        };
        let operator = |f: StreamJoin| {
            ProcessOperator::new(
                f,
                inputs.clone(),
                out_schema.clone(),
                &MemoryStateBackend::default(),
                &ctx,
            )
        };
        let run = |bounds: TimeBounds| -> Result<(usize, usize, usize)> {
            let f = StreamJoin::new([1, 1], Some(TimeColumns { left: 0, right: 0 }), bounds);
            let mut op = operator(f)?;
            let mut out = Collect::default();
            op.process_batch(0, batch(&[100, 105, 111], 7)?, &mut out)?;
            op.process_batch(0, batch(&[100], 8)?, &mut out)?;
            // Right 110 matches left 100 and 105 (100 - 110 = -10; 111 is after it).
            op.process_batch(1, batch(&[110], 7)?, &mut out)?;
            let matched = out.0.len();
            let held = state_bytes(&mut op)?;
            op.process_watermark(200, &mut out)?;
            Ok((matched, held, state_bytes(&mut op)?))
        };
        let (matched, held, after) = run(bounds)?;
        assert_eq!(matched, 2);
        assert!(held > 0);
        assert_eq!(
            after, 0,
            "the watermark passed every row's last possible match"
        );
        let (matched, held, after) = run(TimeBounds::default())?;
        assert_eq!(matched, 3, "without bounds, every row of the key matches");
        assert_eq!(after, held, "a regular join keeps its rows");
        // With a state TTL a regular join drops each row when its processing-time timer
        // fires.
        let mut f = StreamJoin::new(
            [1, 1],
            Some(TimeColumns { left: 0, right: 0 }),
            TimeBounds::default(),
        );
        f.idle_ttl = Some(60_000);
        let mut op = operator(f)?;
        let mut out = Collect::default();
        op.process_batch(0, batch(&[100, 105], 7)?, &mut out)?;
        op.process_batch(1, batch(&[110], 7)?, &mut out)?;
        assert_eq!(out.0.len(), 2, "within the TTL rows match");
        assert!(state_bytes(&mut op)? > 0);
        op.on_processing_time(flink_rs_core::operator::now_millis() + 1_000, &mut out)?;
        assert!(state_bytes(&mut op)? > 0, "the TTL has not passed yet");
        op.on_processing_time(flink_rs_core::operator::now_millis() + 120_000, &mut out)?;
        assert_eq!(state_bytes(&mut op)?, 0, "every row's TTL has passed");
        Ok(())
    }

    #[test]
    fn pair_predicates_compare_like_sql() {
        use std::cmp::Ordering::{Equal, Greater};
        let ge = PairPredicate {
            a: Operand::Left(0),
            op: Greater,
            or_equal: true,
            negated: false,
            b: Operand::Right(0),
        };
        assert!(ge.holds(&[Value::Int(5)], &[Value::Int(5)]));
        assert!(ge.holds(&[Value::Int(6)], &[Value::Int(5)]));
        assert!(!ge.holds(&[Value::Int(4)], &[Value::Int(5)]));
        assert!(!ge.holds(&[Value::Null], &[Value::Int(5)]));
        let ne = PairPredicate {
            a: Operand::Right(0),
            op: Equal,
            or_equal: false,
            negated: true,
            b: Operand::Literal(Value::Str("x".into())),
        };
        assert!(ne.holds(&[], &[Value::Str("y".into())]));
        assert!(!ne.holds(&[], &[Value::Str("x".into())]));
        assert!(!ne.holds(&[], &[Value::Null]));
    }

    #[test]
    fn expiry_follows_the_bounds() {
        // L.t BETWEEN R.t - 10 AND R.t: left - right in [-10, 0].
        let b = TimeBounds {
            lower: Some(-10),
            upper: Some(0),
        };
        let j = StreamJoin::new([1, 1], Some(TimeColumns { left: 0, right: 0 }), b);
        assert_eq!(j.expiry(0, Some(100)), 110);
        assert_eq!(j.expiry(1, Some(100)), 100);
        assert!(j.within(Some(95), Some(100)));
        assert!(!j.within(Some(101), Some(100)));
        assert!(!j.within(Some(89), Some(100)));
        // Open on one end: that side's rows stay.
        let open = StreamJoin::new(
            [1, 1],
            Some(TimeColumns { left: 0, right: 0 }),
            TimeBounds {
                lower: None,
                upper: Some(0),
            },
        );
        assert_eq!(open.expiry(0, Some(5)), i64::MAX);
        assert_eq!(open.expiry(1, Some(5)), 5);
        // A NULL event time meets no bound: the row is never kept, never matched.
        assert_eq!(j.expiry(0, None), i64::MIN);
        assert!(!j.within(None, Some(100)));
        let regular = StreamJoin::new([1, 1], None, TimeBounds::default());
        assert_eq!(regular.expiry(0, None), i64::MAX);
        assert!(regular.within(None, None));
    }
}
