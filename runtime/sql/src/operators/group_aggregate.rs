//! Group aggregation over the rows of window TVFs (keyed by the group columns, which include
//! `window_start` and `window_end`): accumulators in keyed state, one event-time timer per
//! group at `window_end - 1`, emitted when the watermark passes it and then cleared. Rows
//! for windows the watermark has already passed are dropped, as Flink's window aggregation
//! does. Without window columns (bounded inputs only) the timer is at the end of input.

use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};

use flink_rs_core::element::Timestamp;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, Value};
use flink_rs_core::state::{FastHasher, StateRegistry, StateTtlConfig, TimeDomain, ValueState};

/// An aggregate over one input column (`COUNT(*)` counts a constant column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
}

/// The running state of one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    /// Distinct values (the values of one column share a type).
    Distinct(DistinctSet),
    Value(Option<Value>),
    Avg(f64, i64),
}

/// The members of a `COUNT(DISTINCT …)`.
pub type DistinctSet = std::collections::HashSet<DistinctKey, BuildHasherDefault<FastHasher>>;

/// A non-null value as a member of a distinct set: hashable, with SQL's equality (0.0 and
/// -0.0 are one value, and so are all NaNs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DistinctKey {
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
}

impl DistinctKey {
    fn of(v: Value) -> Option<DistinctKey> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => DistinctKey::Bool(b),
            Value::Int(i) => DistinctKey::Int(i),
            Value::Float(0.0) => DistinctKey::Float(0f64.to_bits()), // and -0.0
            Value::Float(f) if f.is_nan() => DistinctKey::Float(f64::NAN.to_bits()),
            Value::Float(f) => DistinctKey::Float(f.to_bits()),
            Value::Str(s) => DistinctKey::Str(s),
        })
    }
}

impl Acc {
    /// A fresh accumulator for `kind`.
    pub fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::CountDistinct => Acc::Distinct(Default::default()),
            AggKind::Avg => Acc::Avg(0.0, 0),
            _ => Acc::Value(None),
        }
    }

    /// Folds one input value in (nulls are skipped, as SQL aggregates do).
    pub fn add(&mut self, kind: AggKind, v: Value) {
        let null = v == Value::Null;
        match (kind, self) {
            (AggKind::Count, Acc::Count(n)) if !null => *n += 1,
            (AggKind::CountDistinct, Acc::Distinct(set)) => {
                if let Some(k) = DistinctKey::of(v) {
                    set.insert(k);
                }
            }
            (AggKind::Avg, Acc::Avg(sum, n)) if !null => {
                *sum += v.as_f64().unwrap_or(0.0);
                *n += 1;
            }
            (AggKind::Sum, Acc::Value(a)) if !null => {
                *a = Some(match a.take() {
                    Some(x) => add(x, v),
                    None => v,
                })
            }
            (AggKind::Min, Acc::Value(a)) if !null && a.as_ref().is_none_or(|x| v < *x) => {
                *a = Some(v)
            }
            (AggKind::Max, Acc::Value(a)) if !null && a.as_ref().is_none_or(|x| v > *x) => {
                *a = Some(v)
            }
            _ => {}
        }
    }

    /// Merges another accumulator of the same aggregate in.
    pub fn merge(&mut self, kind: AggKind, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b),
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (me @ Acc::Value(_), Acc::Value(Some(v))) => me.add(kind, v),
            _ => {}
        }
    }

    /// The aggregate's result.
    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
            Acc::Value(v) => v.clone().unwrap_or(Value::Null),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Float(sum / *n as f64),
        }
    }
}

/// Accumulators and the group's values (for the output row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    group: Row,
    accs: Vec<Acc>,
}

/// The keyed process function computing the aggregates.
#[derive(Clone)]
pub struct GroupAggregate {
    /// Number of group columns (the first columns of the input).
    pub groups: usize,
    /// Aggregates over input columns `groups + i`.
    pub aggs: Vec<AggKind>,
    /// Index of `window_end` among the group columns (None: fire at end of input).
    pub window_end: Option<usize>,
    /// Without a window: emit each change of a group's result as it happens (`+I` the first
    /// result, then `-U` old / `+U` new; a row kind column ends each row) instead of the
    /// final result at end of input.
    pub updating: bool,
    /// An updating aggregate's state TTL (`table.exec.state.ttl`, milliseconds of processing
    /// time): a group not updated for that long is forgotten, and its next row starts it
    /// again with a `+I`, as in Flink.
    pub ttl: Option<i64>,
    state: Option<ValueState<GroupState>>,
}

impl GroupAggregate {
    pub fn new(groups: usize, aggs: Vec<AggKind>, window_end: Option<usize>) -> Self {
        GroupAggregate {
            groups,
            aggs,
            window_end,
            updating: false,
            ttl: None,
            state: None,
        }
    }

    /// An updating (changelog) aggregate; see [`GroupAggregate::updating`].
    pub fn updating(mut self) -> Self {
        self.updating = self.window_end.is_none();
        self
    }

    fn result_row(&self, s: &GroupState) -> Row {
        let mut row = s.group.clone();
        row.extend(s.accs.iter().map(Acc::result));
        row
    }
}

fn with_kind(mut row: Row, kind: &str) -> Row {
    row.push(Value::Str(kind.to_string()));
    row
}

fn add(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(y)),
        (x, y) => Value::Float(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
    }
}

impl ProcessFunction for GroupAggregate {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        let state = states.value("group-aggregate");
        self.state = Some(match self.ttl.filter(|_| self.updating) {
            Some(ms) => state.with_ttl(StateTtlConfig::new(std::time::Duration::from_millis(
                ms.max(0) as u64,
            ))),
            None => state,
        });
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.state else {
            return Err(Error::User("aggregate not opened".into()));
        };
        let fresh = || GroupState {
            group: row[..self.groups].to_vec(),
            accs: self.aggs.iter().map(|k| Acc::new(*k)).collect(),
        };
        // Accumulators change in place: a copy per row would make COUNT(DISTINCT) over a
        // large group quadratic.
        let add_row = |s: &mut GroupState| {
            for (i, (kind, acc)) in self.aggs.iter().zip(s.accs.iter_mut()).enumerate() {
                acc.add(
                    *kind,
                    row.get(self.groups + i).cloned().unwrap_or(Value::Null),
                );
            }
        };
        let not_opened = || Error::User("aggregate state holds another type".into());
        if self.updating {
            let created = std::cell::Cell::new(false);
            let (prev, new) = state
                .modify(
                    ctx,
                    || {
                        created.set(true);
                        fresh()
                    },
                    |s| {
                        let prev = (!created.get()).then(|| self.result_row(s));
                        add_row(s);
                        (prev, self.result_row(s))
                    },
                )
                .ok_or_else(not_opened)?;
            if let (Some(ttl), true) = (self.ttl, created.get()) {
                // Checks then whether the group has been idle for the TTL (and removes it).
                let at = ctx.processing_time().saturating_add(ttl);
                ctx.register_processing_time_timer(at);
            }
            match prev {
                None => out.collect(with_kind(new, "+I"))?,
                Some(prev) if prev != new => {
                    out.collect(with_kind(prev, "-U"))?;
                    out.collect(with_kind(new, "+U"))?;
                }
                Some(_) => {} // the result did not change: nothing to retract
            }
            return Ok(());
        }
        let fire_at = match self.window_end {
            Some(i) => {
                let end = row.get(i).and_then(Value::as_i64).unwrap_or(i64::MAX);
                let t = end.saturating_sub(1);
                if t <= ctx.current_watermark() {
                    return Ok(()); // late: its window has fired
                }
                t
            }
            None => i64::MAX,
        };
        if !state.contains(ctx) {
            ctx.register_event_time_timer(fire_at);
        }
        state.modify(ctx, fresh, add_row).ok_or_else(not_opened)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: Timestamp,
        domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if domain == TimeDomain::ProcessingTime {
            // A TTL check: an expired group is removed by looking at it; a live one is
            // looked at again one TTL later.
            if let Some(ttl) = self.ttl {
                if state.contains(ctx) {
                    let at = ctx.processing_time().saturating_add(ttl);
                    ctx.register_processing_time_timer(at);
                }
            }
            return Ok(());
        }
        if let Some(s) = state.get(ctx) {
            let mut row = s.group;
            row.extend(s.accs.iter().map(Acc::result));
            out.collect(row)?;
        }
        state.clear(ctx);
        Ok(())
    }
}

/// SQL aggregates as a window function of the engine's window operator (one state lookup per
/// row, however many windows it belongs to). The accumulator carries the group's column
/// values, taken from its first row, for the output.
#[derive(Clone)]
pub struct WindowAggregate {
    /// Group columns (besides the window) and aggregate arguments (`None`: count rows).
    pub groups: Vec<String>,
    pub aggs: Vec<(AggKind, Option<String>)>,
    group_idx: Vec<usize>,
    arg_idx: Vec<Option<usize>>,
}

impl WindowAggregate {
    pub fn new(groups: Vec<String>, aggs: Vec<(AggKind, Option<String>)>) -> Self {
        WindowAggregate {
            groups,
            aggs,
            group_idx: Vec::new(),
            arg_idx: Vec::new(),
        }
    }
}

impl flink_rs_core::window::AggregateFunction for WindowAggregate {
    type Acc = (Option<Row>, Vec<Acc>);

    fn bind(&mut self, input: &arrow::datatypes::Schema) -> Result<Vec<arrow::datatypes::Field>> {
        use arrow::datatypes::{DataType, Field};
        let mut fields = Vec::new();
        self.group_idx.clear();
        for g in &self.groups {
            let i = flink_rs_core::key::column_index(input, g)?;
            self.group_idx.push(i);
            fields.push(Field::new(
                g,
                crate::plan::builder_type(input.field(i).data_type()),
                true,
            ));
        }
        self.arg_idx.clear();
        for (n, (kind, arg)) in self.aggs.iter().enumerate() {
            let i = arg
                .as_ref()
                .map(|a| flink_rs_core::key::column_index(input, a))
                .transpose()?;
            self.arg_idx.push(i);
            let dt = match (kind, i) {
                (AggKind::Count | AggKind::CountDistinct, _) => DataType::Int64,
                (AggKind::Avg, _) => DataType::Float64,
                (_, Some(i)) => crate::plan::builder_type(input.field(i).data_type()),
                (_, None) => DataType::Int64,
            };
            fields.push(Field::new(format!("r{n}"), dt, true));
        }
        Ok(fields)
    }

    fn create_accumulator(&self) -> Self::Acc {
        (None, self.aggs.iter().map(|(k, _)| Acc::new(*k)).collect())
    }

    fn add(&self, acc: &mut Self::Acc, row: flink_rs_core::window::RowRef<'_>) -> Result<()> {
        if acc.0.is_none() {
            acc.0 = Some(self.group_idx.iter().map(|i| row.value(*i)).collect());
        }
        for ((kind, _), (a, idx)) in self.aggs.iter().zip(acc.1.iter_mut().zip(&self.arg_idx)) {
            let v = match idx {
                Some(i) => row.value(*i),
                None => Value::Int(1),
            };
            a.add(*kind, v);
        }
        Ok(())
    }

    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        if acc.0.is_none() {
            acc.0 = other.0;
        }
        for ((kind, _), (a, b)) in self.aggs.iter().zip(acc.1.iter_mut().zip(other.1)) {
            a.merge(*kind, b);
        }
    }

    fn merge_ref(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        if acc.0.is_none() {
            acc.0.clone_from(&other.0);
        }
        for ((kind, _), (a, b)) in self.aggs.iter().zip(acc.1.iter_mut().zip(&other.1)) {
            a.merge(*kind, b.clone());
        }
    }

    fn result(&self, acc: &Self::Acc) -> Row {
        let mut row = acc
            .0
            .clone()
            .unwrap_or_else(|| vec![Value::Null; self.groups.len()]);
        row.extend(acc.1.iter().map(Acc::result));
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use flink_rs_core::operator::{Operator, OperatorContext};
    use flink_rs_core::operators::ProcessOperator;
    use flink_rs_core::state::MemoryStateBackend;
    use std::sync::Arc;

    use flink_rs_core::testing::CollectRows as Collect;

    /// An updating COUNT(*) per group with a state TTL: a group idle for the TTL is removed
    /// by its timer, and its next row starts it again (`+I`, not `-U`/`+U`).
    #[test]
    fn updating_aggregate_forgets_groups_idle_for_the_ttl() -> Result<()> {
        let ctx = OperatorContext::single("agg");
        let input = Arc::new(Schema::new(vec![
            Field::new("g0", DataType::Int64, true),
            Field::new("a0", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("g0", DataType::Int64, true),
            Field::new("r0", DataType::Int64, true),
            Field::new("__op", DataType::Utf8, false),
        ]));
        let row = || -> Result<RecordBatch> {
            Ok(RecordBatch::try_new(
                input.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![7])),
                    Arc::new(Int64Array::from(vec![1])),
                ],
            )?)
        };
        let mut f = GroupAggregate::new(1, vec![AggKind::Count], None).updating();
        f.ttl = Some(50);
        let mut op = ProcessOperator::new(
            f,
            vec![(Some(flink_rs_core::key::KeySelector::columns(["g0"])), None)],
            output,
            &MemoryStateBackend::default(),
            &ctx,
        )?;
        let mut out = Collect::default();
        op.process_batch(0, row()?, &mut out)?;
        op.process_batch(0, row()?, &mut out)?;
        assert_eq!(out.0.len(), 3, "+I, then -U and +U");
        let held = op
            .snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?
            .keyed
            .len();
        assert!(held > 0);
        std::thread::sleep(std::time::Duration::from_millis(120));
        op.on_processing_time(flink_rs_core::operator::now_millis(), &mut out)?;
        assert_eq!(
            op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(2))?
                .keyed
                .len(),
            0,
            "the idle group is gone"
        );
        op.process_batch(0, row()?, &mut out)?;
        assert_eq!(out.0.len(), 4, "the group starts again with a +I");
        Ok(())
    }

    #[test]
    fn count_distinct_uses_sql_equality_and_skips_nulls() {
        let mut acc = Acc::new(AggKind::CountDistinct);
        for v in [
            Value::Float(1.0),
            Value::Float(-0.0),
            Value::Float(0.0),
            Value::Float(f64::NAN),
            Value::Float(-f64::NAN),
            Value::Null,
            Value::Float(1.0),
        ] {
            acc.add(AggKind::CountDistinct, v);
        }
        assert_eq!(acc.result(), Value::Int(3));
        let mut other = Acc::new(AggKind::CountDistinct);
        for v in ["a", "b", "a"] {
            other.add(AggKind::CountDistinct, Value::Str(v.into()));
        }
        assert_eq!(other.result(), Value::Int(2));
        let mut more = Acc::new(AggKind::CountDistinct);
        more.add(AggKind::CountDistinct, Value::Str("c".into()));
        more.add(AggKind::CountDistinct, Value::Str("a".into()));
        other.merge(AggKind::CountDistinct, more);
        assert_eq!(other.result(), Value::Int(3));
    }
}
