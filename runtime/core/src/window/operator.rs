//! The window operator: assigns each row of a keyed stream to windows, keeps one accumulator
//! per (key, window) in keyed state, and emits results when the watermark passes a window's
//! end (event time) or the clock does (processing time).
//!
//! Lateness follows Flink's `WindowOperator`: a window is late once
//! `window.max_timestamp() + allowed_lateness <= watermark` and takes no more records; a
//! record whose windows are all late and whose `timestamp + allowed_lateness <= watermark`
//! goes to the late side output. Records for a window that has fired but is not yet late
//! update it and fire it again (late firing).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use smallvec::SmallVec;

use super::{RowRef, Window, WindowLogic, Windows};
use crate::element::{MIN_WATERMARK, Timestamp};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup, KeySelector};
use crate::operator::{Operator, OperatorContext, Output, now_millis};
use crate::rows::{RowBatchBuilder, Value};
use crate::state::{KeyedStore, Namespace, StateBackend, StateId, TimeDomain, TimerService};
use crate::watermark::timestamps;

mod from_slices;

/// Everything that configures a window operator besides its function.
#[derive(Clone)]
pub struct WindowSpec {
    pub windows: Windows,
    pub key: KeySelector,
    /// Event-time column (required for event-time windows).
    pub time_column: Option<String>,
    pub allowed_lateness: i64,
    /// Side output tag for records too late for any window.
    pub late_tag: Option<String>,
    pub backend: Arc<dyn StateBackend>,
}

/// The open windows of one key with their accumulators: inline for the one window of a
/// tumbling window assigner (one memory access fewer on the per-record path than a `Vec`),
/// and encoded in checkpoints exactly as a `Vec` (a length, then the pairs).
type WindowList<A> = SmallVec<[(Window, A); 1]>;

/// The schema of a window operator's output: key, window bounds, then the function's fields.
pub fn window_output_schema(key: Field, fields: Vec<Field>) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut all = vec![
        key,
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("window_time", ts(), false),
    ];
    all.extend(fields);
    Arc::new(Schema::new(all))
}

/// One parallel instance of a window operator.
pub struct WindowOperator<L: WindowLogic> {
    logic: L,
    spec: WindowSpec,
    max_parallelism: u16,
    store: Box<dyn KeyedStore>,
    acc_state: StateId,
    timers: TimerService,
    watermark: Timestamp,
    assigned: Vec<Window>,
    created: Vec<Window>,
    late_rows: Vec<u32>,
    kgs: Vec<KeyGroup>,
    results: Vec<Vec<Value>>,
    /// The output row being built (reused).
    row: Vec<Value>,
    builder: RowBatchBuilder,
}

impl<L: WindowLogic> WindowOperator<L> {
    /// Creates an instance; `logic` must already be bound to the input schema and
    /// `output_schema` built with [`window_output_schema`].
    pub fn new(
        logic: L,
        spec: WindowSpec,
        output_schema: SchemaRef,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        spec.windows
            .validate()
            .map_err(|m| Error::config("window", m))?;
        if spec.windows.domain == TimeDomain::EventTime && spec.time_column.is_none() {
            return Err(Error::config(
                "window",
                "event-time windows need a stream with a watermark strategy (an event-time column)",
            ));
        }
        let mut store = spec
            .backend
            .create_store(ctx.key_groups(), ctx.max_parallelism)?;
        let timers = store.timer_service()?;
        let acc_state = store.register(
            "window-contents",
            crate::state::codec::<WindowList<L::Acc>>(),
        );
        Ok(WindowOperator {
            logic,
            spec,
            max_parallelism: ctx.max_parallelism,
            store,
            acc_state,
            timers,
            watermark: MIN_WATERMARK,
            assigned: Vec::new(),
            created: Vec::new(),
            late_rows: Vec::new(),
            kgs: Vec::new(),
            results: Vec::new(),
            row: Vec::new(),
            builder: RowBatchBuilder::new(output_schema)?,
        })
    }

    fn event_time(&self) -> bool {
        self.spec.windows.domain == TimeDomain::EventTime
    }

    fn register_timers(&mut self, key: &Key, w: Window) {
        let domain = self.spec.windows.domain;
        self.timers
            .register(domain, w.max_timestamp(), key.clone(), w.into());
        if self.event_time() && self.spec.allowed_lateness > 0 {
            self.timers.register(
                domain,
                w.max_timestamp() + self.spec.allowed_lateness,
                key.clone(),
                w.into(),
            );
        }
    }

    fn delete_timers(&mut self, key: &Key, w: Window) {
        let domain = self.spec.windows.domain;
        self.timers
            .delete(domain, w.max_timestamp(), key.clone(), w.into());
        self.timers.delete(
            domain,
            w.max_timestamp() + self.spec.allowed_lateness,
            key.clone(),
            w.into(),
        );
    }

    /// Adds row `row` to its assigned, non-late windows (`self.assigned`). Returns whether any
    /// window took it; pushes windows that must fire at once (late firings) to `fire_now`.
    fn add_to_windows(
        &mut self,
        key: &Key,
        kg: KeyGroup,
        row: RowRef<'_>,
        fire_now: &mut Vec<(Key, KeyGroup, Window)>,
    ) -> Result<bool> {
        let mut created = std::mem::take(&mut self.created);
        created.clear();
        let mut accepted = false;
        {
            let windows = key_windows::<L::Acc>(self.store.as_mut(), self.acc_state, key, kg)?;
            for w in &self.assigned {
                if self.spec.windows.domain == TimeDomain::EventTime
                    && w.max_timestamp().saturating_add(self.spec.allowed_lateness)
                        <= self.watermark
                {
                    continue;
                }
                accepted = true;
                match windows.iter_mut().find(|(x, _)| x == w) {
                    Some((_, acc)) => self.logic.add(acc, row)?,
                    None => {
                        let mut acc = self.logic.create();
                        self.logic.add(&mut acc, row)?;
                        windows.push((*w, acc));
                        created.push(*w);
                    }
                }
                if self.spec.windows.domain == TimeDomain::EventTime
                    && w.max_timestamp() <= self.watermark
                {
                    fire_now.push((key.clone(), kg, *w));
                }
            }
        }
        for w in &created {
            self.register_timers(key, *w);
        }
        self.created = created;
        Ok(accepted)
    }

    /// Session windows: merges the proto-window with the key's overlapping sessions.
    fn add_to_session(
        &mut self,
        key: &Key,
        kg: KeyGroup,
        proto: Window,
        row: RowRef<'_>,
        fire_now: &mut Vec<(Key, KeyGroup, Window)>,
    ) -> Result<bool> {
        let logic = self.logic.clone();
        let lateness = self.spec.allowed_lateness;
        let watermark = self.watermark;
        let event_time = self.event_time();
        let sessions = key_windows::<L::Acc>(self.store.as_mut(), self.acc_state, key, kg)?;
        // Merging is transitive: grow the window until no session touches it.
        let mut merged = proto;
        loop {
            let grown = sessions
                .iter()
                .filter(|(s, _)| s.intersects(&merged))
                .fold(merged, |m, (s, _)| m.cover(s));
            if grown == merged {
                break;
            }
            merged = grown;
        }
        if event_time && merged.max_timestamp().saturating_add(lateness) <= watermark {
            return Ok(false);
        }
        let mut acc = logic.create();
        logic.add(&mut acc, row)?;
        let mut absorbed = Vec::new();
        let mut i = 0;
        while i < sessions.len() {
            if sessions[i].0.intersects(&merged) {
                let (w, other) = sessions.swap_remove(i);
                logic.merge(&mut acc, other);
                absorbed.push(w);
            } else {
                i += 1;
            }
        }
        sessions.push((merged, acc));
        for w in absorbed {
            self.delete_timers(key, w);
        }
        self.register_timers(key, merged);
        if event_time && merged.max_timestamp() <= watermark {
            fire_now.push((key.clone(), kg, merged));
        }
        Ok(true)
    }

    /// Emits window `w` of `key`; with `purge`, also drops its accumulator (one state
    /// lookup for both, the common case of no allowed lateness).
    fn fire(&mut self, key: &Key, kg: KeyGroup, w: Window, purge: bool) -> Result<()> {
        let Some(ws) = self
            .store
            .get_mut(self.acc_state, kg, key, Namespace::VOID)
            .and_then(|c| c.downcast_mut::<WindowList<L::Acc>>())
        else {
            return Ok(());
        };
        let Some(i) = ws.iter().position(|(x, _)| *x == w) else {
            return Ok(());
        };
        self.results.clear();
        let emitted = self.logic.emit(key, w, &ws[i].1, &mut self.results);
        let empty = if purge {
            ws.remove(i);
            ws.is_empty()
        } else {
            false
        };
        if empty {
            self.store.remove(self.acc_state, kg, key, Namespace::VOID);
        }
        emitted?;
        // One row buffer for all firings (no allocation per output row).
        let mut row = std::mem::take(&mut self.row);
        let mut pushed = Ok(());
        for r in self.results.drain(..) {
            row.clear();
            row.push(key.to_value());
            row.push(Value::Int(w.start));
            row.push(Value::Int(w.end));
            row.push(Value::Int(w.max_timestamp()));
            row.extend(r);
            pushed = pushed.and_then(|()| self.builder.push(&row));
        }
        self.row = row;
        pushed
    }

    fn purge(&mut self, key: &Key, kg: KeyGroup, w: Window) {
        let empty = match self
            .store
            .get_mut(self.acc_state, kg, key, Namespace::VOID)
            .and_then(|c| c.downcast_mut::<WindowList<L::Acc>>())
        {
            Some(ws) => {
                ws.retain(|(x, _)| *x != w);
                ws.is_empty()
            }
            None => false,
        };
        if empty {
            self.store.remove(self.acc_state, kg, key, Namespace::VOID);
        }
    }

    /// Fires the timers due at `time`, emitting full batches as they fill (a watermark may
    /// close a window for every key).
    fn on_timers(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        out: &mut dyn Output,
    ) -> Result<()> {
        while let Some((t, key, ns)) = self.timers.pop_due(domain, time) {
            let w: Window = ns.into();
            let kg = key.key_group(self.max_parallelism);
            let cleanup = if self.event_time() {
                w.max_timestamp() + self.spec.allowed_lateness
            } else {
                w.max_timestamp()
            };
            if t == w.max_timestamp() {
                self.fire(&key, kg, w, t == cleanup)?;
            } else if t == cleanup {
                self.purge(&key, kg, w);
            }
            if self.builder.len() >= FIRED_BATCH_ROWS {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut dyn Output) -> Result<()> {
        self.store.check()?;
        self.timers.check()?;
        if !self.builder.is_empty() {
            let batch = self.builder.finish()?;
            out.emit(batch)?;
        }
        Ok(())
    }
}

/// Rows of window results emitted as one batch while timers fire.
const FIRED_BATCH_ROWS: usize = 8192;

/// The open windows of `key` with their accumulators: one state lookup per row however many
/// windows the row belongs to (sliding windows would otherwise cost a lookup each).
fn key_windows<'s, A: Send + 'static>(
    store: &'s mut dyn KeyedStore,
    state: StateId,
    key: &Key,
    kg: KeyGroup,
) -> Result<&'s mut WindowList<A>> {
    store
        .get_or_insert_with(state, kg, key, Namespace::VOID, &mut || {
            Box::new(WindowList::<A>::new())
        })
        .downcast_mut::<WindowList<A>>()
        .ok_or_else(|| Error::User("window state holds a value of another type".into()))
}

impl<L: WindowLogic> Operator for WindowOperator<L> {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let keys = self.spec.key.extract(&batch)?;
        keys.key_groups(self.max_parallelism, &mut self.kgs);
        let now = now_millis();
        let times: Option<&[i64]> = match (&self.spec.time_column, self.event_time()) {
            (Some(c), true) => Some(timestamps(&batch, c)?),
            _ => None,
        };
        let lateness = self.spec.allowed_lateness;
        let merging = self.spec.windows.is_merging();
        let mut fire_now: Vec<(Key, KeyGroup, Window)> = Vec::new();
        self.late_rows.clear();
        for row in 0..batch.num_rows() {
            let ts = times.map_or(now, |t| t[row]);
            let key = keys.key(row);
            let kg = self.kgs[row];
            let r = RowRef { batch: &batch, row };
            self.assigned.clear();
            self.spec.windows.assign(ts, &mut self.assigned);
            let accepted = if merging {
                match self.assigned.first().copied() {
                    Some(proto) => self.add_to_session(&key, kg, proto, r, &mut fire_now)?,
                    None => false,
                }
            } else {
                self.add_to_windows(&key, kg, r, &mut fire_now)?
            };
            if !accepted && self.event_time() && ts.saturating_add(lateness) <= self.watermark {
                self.late_rows.push(row as u32);
            }
        }
        for (key, kg, w) in fire_now {
            self.fire(&key, kg, w, false)?;
        }
        self.flush(out)?;
        if !self.late_rows.is_empty() {
            if let Some(tag) = &self.spec.late_tag {
                let idx = arrow::array::UInt32Array::from(std::mem::take(&mut self.late_rows));
                let late = take_record_batch(&batch, &idx)?;
                out.emit_side(tag, late)?;
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        self.watermark = watermark;
        if self.event_time() {
            self.on_timers(TimeDomain::EventTime, watermark, out)?;
        }
        self.flush(out)?;
        out.emit_watermark(watermark)
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut dyn Output) -> Result<()> {
        if !self.event_time() {
            self.on_timers(TimeDomain::ProcessingTime, now, out)?;
            self.flush(out)?;
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        barrier: &crate::checkpoint::Barrier,
    ) -> Result<crate::checkpoint::OperatorSnapshot> {
        crate::state::snapshot_keyed_state(
            self.store.as_mut(),
            &self.timers,
            self.max_parallelism,
            barrier,
        )
    }

    fn restore_state(&mut self, state: crate::checkpoint::RestoredState) -> Result<()> {
        if state.layout.as_deref() == Some(super::SLICED_STATE_LAYOUT) {
            return self.restore_from_slices(&state);
        }
        crate::state::restore_keyed(self.store.as_mut(), &mut self.timers, &state.keyed)
    }

    fn finish(&mut self, out: &mut dyn Output) -> Result<()> {
        // Processing-time windows of a bounded input fire at its end, as in Flink.
        if !self.event_time() {
            self.on_timers(TimeDomain::ProcessingTime, Timestamp::MAX, out)?;
        }
        self.flush(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Cell, codec};

    /// Checkpoints written when a key's windows were a `Vec` restore into the inline list,
    /// and the list encodes to the same bytes: the state format did not change.
    #[test]
    fn window_lists_encode_as_the_vectors_they_replaced() -> Result<()> {
        let pairs = [
            (Window { start: 0, end: 10 }, 3_i64),
            (Window { start: 5, end: 15 }, 7),
        ];
        for n in [0, 1, 2] {
            let as_vec: Vec<(Window, i64)> = pairs[..n].to_vec();
            let as_list: WindowList<i64> = pairs[..n].iter().copied().collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            codec::<Vec<(Window, i64)>>().encode(&(Box::new(as_vec) as Cell), &mut a)?;
            codec::<WindowList<i64>>().encode(&(Box::new(as_list.clone()) as Cell), &mut b)?;
            assert_eq!(a, b, "{n} windows");
            let back = codec::<WindowList<i64>>().decode(&a)?;
            assert_eq!(back.downcast_ref::<WindowList<i64>>(), Some(&as_list));
        }
        Ok(())
    }
}
