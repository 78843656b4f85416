//! Semi and anti joins (`WHERE k IN (SELECT …)`, `EXISTS`, `NOT EXISTS`) on equality keys,
//! over append-only inputs, in keyed state.
//!
//! A semi join emits a row of the kept side once its key has a row on the other side: at
//! once when the key has one already, else when the first one comes (the waiting rows are
//! kept until then). Its output only ever inserts, as Flink's semi join over append-only
//! inputs. An anti join emits the rows whose key never met the other side, so it is final
//! only at the end of a bounded input, when the waiting rows of unmatched keys come out (over
//! unbounded input it would be an updating result, which the planner refuses).

use flink_rs_core::error::{Error, Result};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, Value};
use flink_rs_core::state::{ListState, StateRegistry, StateTtlConfig, TimeDomain, ValueState};

/// A semi or anti join, as a two-input keyed process function. Input rows: their columns,
/// then the join keys (`widths`: each side's columns); input `kept` is the side whose rows
/// come out.
#[derive(Clone)]
pub struct SemiJoin {
    kept: usize,
    widths: [usize; 2],
    anti: bool,
    /// `table.exec.state.ttl` (ms): a key's waiting rows and match flag are dropped that long
    /// (processing time) after they were last written, as Flink's state retention.
    pub ttl: Option<i64>,
    /// Rows of the kept side whose key has not met the other side yet.
    waiting: Option<ListState<Row>>,
    /// Whether the key has met a row of the other side.
    matched: Option<ValueState<bool>>,
}

impl SemiJoin {
    /// `kept`: the input (0 or 1) whose rows are emitted; `anti`: emit those never matched.
    pub fn new(kept: usize, widths: [usize; 2], anti: bool) -> Self {
        SemiJoin {
            kept,
            widths,
            anti,
            ttl: None,
            waiting: None,
            matched: None,
        }
    }
}

impl ProcessFunction for SemiJoin {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        let waiting = states.list("semi-join-waiting");
        let matched = states.value("semi-join-matched");
        let ttl = self
            .ttl
            .map(|ms| StateTtlConfig::new(std::time::Duration::from_millis(ms.max(0) as u64)));
        (self.waiting, self.matched) = match ttl {
            Some(t) => (Some(waiting.with_ttl(t)), Some(matched.with_ttl(t))),
            None => (Some(waiting), Some(matched)),
        };
        Ok(())
    }

    fn process_element(
        &mut self,
        input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(waiting), Some(matched)) = (&self.waiting, &self.matched) else {
            return Err(Error::User("semi join not opened".into()));
        };
        let side = input.min(1);
        let kept = side == self.kept;
        let width = self.widths[side];
        // SQL: a NULL key equals nothing. An anti join keeps such a row (NOT EXISTS).
        let null_key = row[width.min(row.len())..].contains(&Value::Null);
        if null_key && !kept {
            return Ok(());
        }
        let data = &row[..width.min(row.len())];
        if kept {
            if null_key && !self.anti {
                return Ok(());
            }
            // (A NULL key never matches: no row of the other side is stored under it.)
            if matched.get(ctx).unwrap_or(false) {
                if !self.anti {
                    out.collect(data.to_vec())?;
                }
                return Ok(());
            }
            let first = waiting.modify(ctx, |rows| {
                rows.push(data.to_vec());
                rows.len() == 1
            });
            if first && self.anti {
                ctx.register_event_time_timer(i64::MAX);
            }
            return Ok(());
        }
        if matched.get(ctx).unwrap_or(false) {
            return Ok(());
        }
        matched.update(ctx, true);
        let rows = waiting.get(ctx);
        waiting.clear(ctx);
        if !self.anti {
            for r in rows {
                out.collect(r)?;
            }
        }
        Ok(())
    }

    /// End of input (anti joins): the rows of keys that never met the other side.
    fn on_timer(
        &mut self,
        _ts: i64,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(waiting) = &self.waiting else {
            return Ok(());
        };
        let rows = waiting.get(ctx);
        waiting.clear(ctx);
        for r in rows {
            out.collect(r)?;
        }
        Ok(())
    }
}
