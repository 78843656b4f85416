//! Group aggregation over the rows of window TVFs (keyed by the group columns, which include
//! `window_start` and `window_end`): accumulators in keyed state, one event-time timer per
//! group at `window_end - 1`, emitted when the watermark passes it and then cleared. Rows
//! for windows the watermark has already passed are dropped, as Flink's window aggregation
//! does. Without window columns (bounded inputs only) the timer is at the end of input.

use serde::{Deserialize, Serialize};

use crate::element::Timestamp;
use crate::error::{Error, Result};
use crate::operators::{ProcessContext, ProcessFunction, RowCollector};
use crate::rows::{Row, Value};
use crate::state::{StateRegistry, TimeDomain, ValueState};

/// An aggregate over one input column (`COUNT(*)` counts a constant column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Acc {
    Count(i64),
    Value(Option<Value>),
    Avg(f64, i64),
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
    state: Option<ValueState<GroupState>>,
}

impl GroupAggregate {
    pub fn new(groups: usize, aggs: Vec<AggKind>, window_end: Option<usize>) -> Self {
        GroupAggregate {
            groups,
            aggs,
            window_end,
            state: None,
        }
    }
}

fn add(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(y)),
        (x, y) => Value::Float(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
    }
}

impl ProcessFunction for GroupAggregate {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.state = Some(states.value("group-aggregate"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.state else {
            return Err(Error::User("aggregate not opened".into()));
        };
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
        let mut s = match state.get(ctx) {
            Some(s) => s,
            None => {
                ctx.register_event_time_timer(fire_at);
                GroupState {
                    group: row[..self.groups].to_vec(),
                    accs: self
                        .aggs
                        .iter()
                        .map(|k| match k {
                            AggKind::Count => Acc::Count(0),
                            AggKind::Avg => Acc::Avg(0.0, 0),
                            _ => Acc::Value(None),
                        })
                        .collect(),
                }
            }
        };
        for (i, (kind, acc)) in self.aggs.iter().zip(s.accs.iter_mut()).enumerate() {
            let v = row.get(self.groups + i).cloned().unwrap_or(Value::Null);
            let null = v == Value::Null;
            match (kind, acc) {
                (AggKind::Count, Acc::Count(n)) if !null => *n += 1,
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
        state.update(ctx, s);
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: Timestamp,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        if let Some(s) = state.get(ctx) {
            let mut row = s.group;
            for acc in s.accs {
                row.push(match acc {
                    Acc::Count(n) => Value::Int(n),
                    Acc::Value(v) => v.unwrap_or(Value::Null),
                    Acc::Avg(_, 0) => Value::Null,
                    Acc::Avg(sum, n) => Value::Float(sum / n as f64),
                });
            }
            out.collect(row)?;
        }
        state.clear(ctx);
        Ok(())
    }
}
