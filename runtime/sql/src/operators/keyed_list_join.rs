//! A join keeping each side's rows in keyed list state, row by row, each with its own expiry
//! timer: what the planner uses for outer joins (LEFT, RIGHT, FULL: a row's padding is due
//! when it expires unmatched), for regular joins with a state TTL, and for every join on a
//! state backend that spills to disk (its lists live in the backend's stores). Inner joins
//! otherwise go to the segment join ([`super::segment_join`]).
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

use crate::operators::join_condition::{PairPredicate, TimeBounds, TimeColumns};
use flink_rs_core::element::Timestamp;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, Value};
use flink_rs_core::state::{ListState, StateRegistry, TimeDomain};

/// A stored row: the watermark from which it is useless, whether it has matched (outer
/// joins emit the unmatched ones, padded with NULLs, when they go), and its values.
type Stored = (i64, bool, Row);

/// When a stored row goes: a state TTL's processing time, or the watermark that shows it
/// can match nothing more.
#[derive(Clone, Copy)]
enum Expiry {
    Processing(i64),
    Event(i64),
}

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

    /// Stores a row of `side` until `expiry`, with the timer that removes it then (none for
    /// a row that never expires).
    fn store(
        &self,
        side: usize,
        data: &[Value],
        matched: bool,
        expiry: Expiry,
        ctx: &mut ProcessContext<'_>,
    ) {
        let Some(sides) = &self.sides else { return };
        let at = match expiry {
            Expiry::Processing(t) => {
                ctx.register_processing_time_timer(t);
                t
            }
            Expiry::Event(t) => {
                if t != i64::MAX {
                    ctx.register_event_time_timer(t);
                }
                t
            }
        };
        sides[side].add(ctx, (at, matched, data.to_vec()));
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
            self.store(
                side,
                data,
                matched,
                Expiry::Processing(now.saturating_add(ttl)),
                ctx,
            );
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
        self.store(side, data, matched, Expiry::Event(expiry), ctx);
        Ok(())
    }

    fn foreign_rows(
        &self,
        layout: &str,
        kg: flink_rs_core::key::KeyGroup,
        blob: &[u8],
    ) -> Result<Option<flink_rs_core::operators::ForeignRows>> {
        if layout != super::segment_join::STATE_LAYOUT {
            return Ok(None);
        }
        super::segment_join::decode_key_group(kg, blob)
            .map(|b| Some(flink_rs_core::operators::ForeignRows::Batches(b)))
    }

    /// A row the columnar join held (an inner join's, which has matched what it could):
    /// stored with its expiry and timer as [`Self::process_element`] stores a new row.
    fn restore_element(
        &mut self,
        input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
    ) -> Result<()> {
        if self.sides.is_none() {
            return Err(Error::User("join not opened".into()));
        }
        let side = input.min(1);
        let width = self.widths[side].min(row.len());
        if row[width..].contains(&Value::Null) {
            return Ok(());
        }
        let data = &row[..width];
        let expiry = match self.idle_ttl.filter(|_| self.time.is_none()) {
            Some(ttl) => Expiry::Processing(ctx.processing_time().saturating_add(ttl)),
            None => Expiry::Event(self.expiry(side, self.time_of(side, data))),
        };
        self.store(side, data, false, expiry, ctx);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::join_condition::Operand;
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;
    use arrow::datatypes::{DataType, Field, Schema};
    use flink_rs_core::key::KeySelector;
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
        let snap = op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
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
