//! Planning inner joins: the equi-join keys, the bounds the condition puts on the two sides'
//! event times (interval and window joins), and the choice of operator: rows in keyed list
//! state ([`StreamJoin`]) or columnar segments by expiry ([`IntervalJoinOperator`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Cast, Expr, ExprSchemable, Join, JoinType, LogicalPlan, Operator,
};

use crate::operators::join_condition::{Operand, PairPredicate, TimeBounds, TimeColumns};
use crate::operators::keyed_list_join::StreamJoin;
use crate::operators::segment_join::{IntervalJoinOperator, IntervalJoinSpec};
use crate::plan::{Planned, Planner};
use crate::plan::{
    arrow_schema, cast_output, df_error, filter_stream, is_updating, physical, project, rows_schema,
};
use crate::script::{SqlError, Statement};
use crate::window_tvf::WindowTvf;
use flink_rs_core::api::DataStream;
use flink_rs_core::error::Result;
use flink_rs_core::key::KeySelector;
use flink_rs_core::operator::OperatorContext;
use flink_rs_core::rows::Value;

/// What makes a column an event-time attribute a join can bound rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeAttr {
    /// A table's watermarked column (rows later than the watermark are late).
    Rowtime,
    /// `window_end` of a window TVF, or of a window aggregate grouped by it.
    WindowEnd,
    /// `window_time` (the window's last millisecond), likewise.
    WindowTime,
}

/// The expression under any aliases.
pub(crate) fn strip(e: &Expr) -> &Expr {
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
pub(crate) fn key_type(l: &DataType, r: &DataType) -> DataType {
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

/// A join side's stream: its columns, then the join keys (`__jk0`, …) cast to one type per
/// key (a constant key when there are none); returns the keys' column names.
pub(crate) fn with_join_keys<'e>(
    stream: &DataStream,
    schema: &DFSchema,
    keys: impl Iterator<Item = &'e Expr>,
    key_types: &[DataType],
) -> Result<(DataStream, Vec<String>), DataFusionError> {
    let mut exprs: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let mut fields: Vec<Field> = arrow_schema(schema)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut names = Vec::new();
    for (i, (k, t)) in keys.zip(key_types).enumerate() {
        exprs.push(Expr::Cast(Cast::new(Box::new(k.clone()), t.clone())));
        names.push(format!("__jk{i}"));
        fields.push(Field::new(format!("__jk{i}"), t.clone(), true));
    }
    if names.is_empty() {
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
}

impl Planner<'_> {
    /// Whether column `idx` of `plan`'s output is an event-time attribute, traced through
    /// projections, filters, aliases, unions and window aggregates to its origin.
    pub(crate) fn time_attr(&self, plan: &LogicalPlan, idx: usize) -> Option<TimeAttr> {
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
    pub(crate) fn window_end_group(&self, agg: &Aggregate) -> Option<usize> {
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
    pub(crate) fn join(
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
        .find_map(|w| crate::script::find_word(&st.text[base..], w))
        .map_or(base, |a| a + base);
        let outer = match j.join_type {
            JoinType::LeftSemi | JoinType::RightSemi | JoinType::LeftAnti | JoinType::RightAnti => {
                return self.semi_join(st, base, tvfs, j, join_word);
            }
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
            let at = crate::script::find_word(&st.text[base..], "JOIN").map_or(base, |a| a + base);
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
        let (left, lk) =
            with_join_keys(&left, &ls, j.on.iter().map(|(l, _)| l), &key_types).map_err(dferr)?;
        let (right, rk) =
            with_join_keys(&right, &rs, j.on.iter().map(|(_, r)| r), &key_types).map_err(dferr)?;

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
        // Inner joins keep their rows in columnar, time-ordered state (see `segment_join`);
        // outer joins, regular joins with a state TTL, and every join on a backend that
        // spills to disk (whose memory budget the columnar state would escape), in keyed
        // list state.
        let columnar = !left.backend_spills();
        let joined = match outer {
            [false, false] if columnar && (f.time.is_some() || f.idle_ttl.is_none()) => {
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
                connected
                    .transform(
                        &name,
                        schema,
                        Arc::new(move |ctx: &OperatorContext| {
                            Ok(Box::new(IntervalJoinOperator::new(spec.clone(), ctx))
                                as Box<dyn flink_rs_core::operator::Operator>)
                        }),
                    )
                    .state_layout(crate::operators::segment_join::STATE_LAYOUT)
            }
            _ => {
                // The inner join the heap backend runs columnar: on a backend that spills it
                // takes the columnar join's state over from a savepoint.
                let heap_columnar = outer == [false, false]
                    && !columnar
                    && (f.time.is_some() || f.idle_ttl.is_none());
                let keyed = connected.process(rows_schema, f).name(&name);
                if heap_columnar {
                    keyed.reads_state_layout(crate::operators::segment_join::STATE_LAYOUT)
                } else {
                    keyed
                }
            }
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
