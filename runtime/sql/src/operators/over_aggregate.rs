//! `SUM/COUNT/AVG/MIN/MAX(…) OVER (PARTITION BY … ORDER BY rowtime ROWS|RANGE BETWEEN …
//! PRECEDING AND CURRENT ROW)`: Flink's event-time OVER aggregates.
//!
//! Each input row gives one output row: the row and the aggregates over its frame, the rows of
//! its partition up to it in event-time order. A row waits in keyed state until the watermark
//! passes its timestamp (an event-time timer per key and timestamp, the waiting rows kept per
//! timestamp), so rows are aggregated in timestamp order whatever order they arrive in; a row already behind the watermark is late and dropped, as
//! in Flink. Frames: `ROWS BETWEEN n PRECEDING` (the row and the n before it, equal timestamps
//! in arrival order), `RANGE BETWEEN INTERVAL … PRECEDING` (rows whose timestamp is at most
//! that much earlier, rows of equal timestamp seeing each other) and `UNBOUNDED PRECEDING`
//! of either (running accumulators, constant state). Bounded frames keep the rows they may
//! still need.

use std::cmp::Ordering;

use flink_rs_core::element::Timestamp;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, Value};
use flink_rs_core::state::{ListState, Namespace, StateRegistry, TimeDomain};

/// The aggregate functions an OVER window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverAggKind {
    /// `COUNT(*)`.
    CountRows,
    Count,
    Sum,
    /// Of integers an integer, the fraction dropped (Flink's AVG type).
    Avg,
    Min,
    Max,
}

/// Which rows before the current one an aggregate sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (`None`: UNBOUNDED PRECEDING).
    Rows(Option<u64>),
    /// `RANGE BETWEEN <ms> PRECEDING AND CURRENT ROW` (`None`: UNBOUNDED PRECEDING).
    Range(Option<i64>),
}

/// One aggregate: its function and the row index of its argument (none for `COUNT(*)`).
#[derive(Debug, Clone, Copy)]
pub struct OverAgg {
    pub kind: OverAggKind,
    pub arg: Option<usize>,
}

/// Running state of one aggregate: non-NULL values seen, their sum, least and greatest.
#[derive(Debug, Clone, PartialEq)]
struct Acc {
    rows: i64,
    count: i64,
    sum: Value,
    min: Value,
    max: Value,
}

impl Acc {
    fn new() -> Self {
        Acc {
            rows: 0,
            count: 0,
            sum: Value::Null,
            min: Value::Null,
            max: Value::Null,
        }
    }

    fn add(&mut self, v: &Value) {
        self.rows += 1;
        if *v == Value::Null {
            return;
        }
        self.count += 1;
        self.sum = match (&self.sum, v) {
            (Value::Null, v) => v.clone(),
            (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(*b)),
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => Value::Float(a + b),
                _ => Value::Null,
            },
        };
        let less = |a: &Value, b: &Value| a.partial_cmp(b) == Some(Ordering::Less);
        if self.min == Value::Null || less(v, &self.min) {
            self.min = v.clone();
        }
        if self.max == Value::Null || less(&self.max, v) {
            self.max = v.clone();
        }
    }

    fn result(&self, kind: OverAggKind) -> Value {
        match kind {
            OverAggKind::CountRows => Value::Int(self.rows),
            OverAggKind::Count => Value::Int(self.count),
            OverAggKind::Sum => self.sum.clone(),
            OverAggKind::Avg => match &self.sum {
                _ if self.count == 0 => Value::Null,
                Value::Int(s) => Value::Int(s / self.count),
                s => s
                    .as_f64()
                    .map_or(Value::Null, |s| Value::Float(s / self.count as f64)),
            },
            OverAggKind::Min => self.min.clone(),
            OverAggKind::Max => self.max.clone(),
        }
    }

    /// As a state row: `[rows, count, sum, min, max]`.
    fn to_row(&self, out: &mut Row) {
        out.extend([
            Value::Int(self.rows),
            Value::Int(self.count),
            self.sum.clone(),
            self.min.clone(),
            self.max.clone(),
        ]);
    }

    fn from_row(r: &[Value]) -> Self {
        let get = |i: usize| r.get(i).cloned().unwrap_or(Value::Null);
        Acc {
            rows: get(0).as_i64().unwrap_or(0),
            count: get(1).as_i64().unwrap_or(0),
            sum: get(2),
            min: get(3),
            max: get(4),
        }
    }
}

/// The OVER aggregate of one partition key, as a keyed process function. Input rows: the
/// `width` columns passed through (the event time at `time`), then the aggregates'
/// arguments; output rows: the `width` columns and one value per aggregate.
#[derive(Clone)]
pub struct OverAggregateFunction {
    width: usize,
    time: usize,
    aggs: Vec<OverAgg>,
    frame: OverFrame,
    /// Rows waiting for the watermark to pass their timestamp.
    pending: Option<ListState<Row>>,
    /// Bounded frames: the rows emitted that later rows' frames may still hold.
    frame_rows: Option<ListState<Row>>,
    /// Unbounded frames: one row of accumulators (`Acc::to_row` per aggregate).
    running: Option<ListState<Row>>,
}

impl OverAggregateFunction {
    pub fn new(width: usize, time: usize, aggs: Vec<OverAgg>, frame: OverFrame) -> Self {
        OverAggregateFunction {
            width,
            time,
            aggs,
            frame,
            pending: None,
            frame_rows: None,
            running: None,
        }
    }

    fn ts(&self, r: &Row) -> Timestamp {
        r.get(self.time).and_then(Value::as_i64).unwrap_or(i64::MIN)
    }

    fn arg<'r>(&self, r: &'r Row, a: &OverAgg) -> &'r Value {
        a.arg.and_then(|i| r.get(i)).unwrap_or(&Value::Null)
    }

    fn output(&self, r: &Row, accs: &[Acc]) -> Row {
        let mut o: Row = r[..self.width.min(r.len())].to_vec();
        o.extend(
            self.aggs
                .iter()
                .zip(accs)
                .map(|(a, acc)| acc.result(a.kind)),
        );
        o
    }

    /// Adds row `r` to the accumulators.
    fn add(&self, accs: &mut [Acc], r: &Row) {
        for (a, acc) in self.aggs.iter().zip(accs) {
            acc.add(self.arg(r, a));
        }
    }

    /// The accumulators over `rows`.
    fn over<'a>(&self, rows: impl Iterator<Item = &'a Row>) -> Vec<Acc> {
        let mut accs = vec![Acc::new(); self.aggs.len()];
        for r in rows {
            self.add(&mut accs, r);
        }
        accs
    }
}

/// The namespace of the rows waiting with timestamp `ts`.
fn at(ts: Timestamp) -> Namespace {
    Namespace { start: ts, end: ts }
}

impl ProcessFunction for OverAggregateFunction {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.pending = Some(states.list("over-pending"));
        self.frame_rows = Some(states.list("over-frame"));
        self.running = Some(states.list("over-running"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _out: &mut RowCollector,
    ) -> Result<()> {
        let Some(pending) = &self.pending else {
            return Err(Error::User("OVER aggregate not opened".into()));
        };
        let ts = self.ts(row);
        if ts <= ctx.current_watermark() {
            return Ok(()); // late: rows up to the watermark were aggregated already
        }
        // Waiting rows are kept per timestamp (a namespace each), so that a key with many
        // waiting rows never loads them all to add one; one timer per key and timestamp.
        let first = ctx.with_namespace(at(ts), |k| {
            pending.modify(k, |rows| {
                rows.push(row.clone());
                rows.len() == 1
            })
        });
        if first {
            ctx.register_event_time_timer(ts);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: Timestamp,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(pending), Some(frame_rows), Some(running)) =
            (&self.pending, &self.frame_rows, &self.running)
        else {
            return Ok(());
        };
        // The rows of this timestamp, in arrival order (timers fire in timestamp order).
        let due = ctx.with_namespace(at(ts), |k| {
            let rows = pending.get(k);
            pending.clear(k);
            rows
        });
        if due.is_empty() {
            return Ok(());
        }
        match self.frame {
            OverFrame::Rows(None) | OverFrame::Range(None) => {
                let state = running.get(ctx);
                let mut accs: Vec<Acc> = match state.first() {
                    Some(r) => r.chunks(5).map(Acc::from_row).collect(),
                    None => vec![Acc::new(); self.aggs.len()],
                };
                if matches!(self.frame, OverFrame::Range(_)) {
                    // The due rows (one timestamp) are each other's peers: all in each frame.
                    for r in &due {
                        self.add(&mut accs, r);
                    }
                    for r in &due {
                        out.collect(self.output(r, &accs))?;
                    }
                } else {
                    for r in &due {
                        self.add(&mut accs, r);
                        out.collect(self.output(r, &accs))?;
                    }
                }
                let mut row = Vec::with_capacity(accs.len() * 5);
                for acc in &accs {
                    acc.to_row(&mut row);
                }
                running.update(ctx, vec![row]);
            }
            OverFrame::Rows(Some(n)) => {
                let mut kept = frame_rows.get(ctx);
                for r in due {
                    kept.push(r);
                    let excess = kept.len().saturating_sub(n as usize + 1);
                    kept.drain(..excess);
                    let accs = self.over(kept.iter());
                    if let Some(r) = kept.last() {
                        out.collect(self.output(r, &accs))?;
                    }
                }
                frame_rows.update(ctx, kept);
            }
            OverFrame::Range(Some(ms)) => {
                // The due rows (one timestamp) share a frame, which none of them leaves.
                let mut kept = frame_rows.get(ctx);
                let new = due.len();
                kept.extend(due);
                let from = ts.saturating_sub(ms);
                kept.retain(|r| self.ts(r) >= from);
                let accs = self.over(kept.iter());
                for r in &kept[kept.len().saturating_sub(new)..] {
                    out.collect(self.output(r, &accs))?;
                }
                frame_rows.update(ctx, kept);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(values: &[Value]) -> (Value, Value, Value, Value) {
        let mut acc = Acc::new();
        for v in values {
            acc.add(v);
        }
        let mut row = Vec::new();
        acc.to_row(&mut row);
        assert_eq!(Acc::from_row(&row), acc, "state rows round-trip");
        (
            acc.result(OverAggKind::Sum),
            acc.result(OverAggKind::Avg),
            acc.result(OverAggKind::Min),
            acc.result(OverAggKind::Count),
        )
    }

    #[test]
    fn accumulators_follow_flinks_types_and_skip_nulls() {
        assert_eq!(
            sums(&[Value::Int(3), Value::Null, Value::Int(4)]),
            (Value::Int(7), Value::Int(3), Value::Int(3), Value::Int(2))
        );
        assert_eq!(
            sums(&[Value::Float(1.5), Value::Float(2.0)]),
            (
                Value::Float(3.5),
                Value::Float(1.75),
                Value::Float(1.5),
                Value::Int(2)
            )
        );
        assert_eq!(
            sums(&[Value::Null]),
            (Value::Null, Value::Null, Value::Null, Value::Int(0))
        );
        let mut rows = Acc::new();
        rows.add(&Value::Null);
        assert_eq!(rows.result(OverAggKind::CountRows), Value::Int(1));
    }
}
