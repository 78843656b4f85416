//! The keyed process operator (Flink's `KeyedProcessFunction` and, with two inputs,
//! `KeyedCoProcessFunction`): a user function called per row with the row's key scoped state
//! and timers, and called back when its timers fire.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::element::{MIN_WATERMARK, Timestamp};
use crate::error::Result;
use crate::key::{Key, KeyGroup, KeySelector};
use crate::operator::{Operator, OperatorContext, Output, now_millis};
use crate::rows::{Row, RowBatchBuilder, row_at};
use crate::state::{
    KeyedContext, KeyedStore, Namespace, StateBackend, StateRegistry, TimeDomain, TimerService,
};
use crate::watermark::timestamps;

/// Collects the rows a function emits into batches of the operator's output schema.
pub struct RowCollector {
    builder: RowBatchBuilder,
}

impl RowCollector {
    /// Emits one row (values in the output schema's column order).
    pub fn collect(&mut self, row: Row) -> Result<()> {
        self.builder.push(&row)
    }
}

/// Rows of timer output emitted as one batch while timers fire.
const FIRED_BATCH_ROWS: usize = 8192;

/// Alias kept close to Flink's naming: the per-call context of a process function.
pub type ProcessContext<'a> = KeyedContext<'a>;

/// A function over a keyed stream (or two connected keyed streams) with state and timers.
pub trait ProcessFunction: Clone + Send + Sync + 'static {
    /// Registers state; called once per parallel instance before any element.
    fn open(&mut self, _states: &mut StateRegistry<'_>) -> Result<()> {
        Ok(())
    }

    /// Handles one row of input `input` (0, or 1 for the second of two connected streams).
    fn process_element(
        &mut self,
        input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()>;

    /// One key group of another operator's snapshot, in `layout`, as the rows that operator
    /// held per input: what a function that can take over that state
    /// ([`crate::graph::Node::reads_layouts`]) decodes at a restore; `None`: a layout it does
    /// not read.
    fn foreign_rows(
        &self,
        _layout: &str,
        _kg: KeyGroup,
        _blob: &[u8],
    ) -> Result<Option<ForeignRows>> {
        Ok(None)
    }

    /// Takes in one row of [`foreign_rows`](Self::foreign_rows) as state, for the current
    /// key, as if it had arrived: stored (with its timers), not processed again (no output).
    fn restore_element(
        &mut self,
        _input: usize,
        _row: &Row,
        _ctx: &mut ProcessContext<'_>,
    ) -> Result<()> {
        Err(crate::error::Error::User(
            "this function takes in no other operator's state".into(),
        ))
    }

    /// A timer registered for the current key fired.
    fn on_timer(
        &mut self,
        _timestamp: Timestamp,
        _domain: TimeDomain,
        _ctx: &mut ProcessContext<'_>,
        _out: &mut RowCollector,
    ) -> Result<()> {
        Ok(())
    }
}

/// Another operator's state as rows, for [`ProcessFunction::restore_element`].
pub enum ForeignRows {
    /// Rows as they arrived, per input: keyed and timestamped as that input's rows are.
    Batches(Vec<(usize, RecordBatch)>),
    /// Rows with their keys, per input, in the order they are to be taken in.
    Keyed(Vec<(usize, Key, Row)>),
}

/// One parallel instance of a process function.
pub struct ProcessOperator<F: ProcessFunction> {
    f: F,
    /// Key selector and event-time column per input (`None` key: one shared key).
    inputs: Vec<(Option<KeySelector>, Option<String>)>,
    store: Box<dyn KeyedStore>,
    timers: TimerService,
    watermark: Timestamp,
    max_parallelism: u16,
    out: RowCollector,
}

impl<F: ProcessFunction> ProcessOperator<F> {
    /// Creates an instance and opens the function.
    pub fn new(
        mut f: F,
        inputs: Vec<(Option<KeySelector>, Option<String>)>,
        output_schema: SchemaRef,
        backend: &dyn StateBackend,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        let mut store = backend.create_store(ctx.key_groups(), ctx.max_parallelism)?;
        let timers = store.timer_service()?;
        f.open(&mut StateRegistry {
            store: store.as_mut(),
        })?;
        Ok(ProcessOperator {
            f,
            inputs,
            store,
            timers,
            watermark: MIN_WATERMARK,
            max_parallelism: ctx.max_parallelism,
            out: RowCollector {
                builder: RowBatchBuilder::new(output_schema)?,
            },
        })
    }

    fn flush(&mut self, out: &mut dyn Output) -> Result<()> {
        self.store.check()?;
        self.timers.check()?;
        if !self.out.builder.is_empty() {
            out.emit(self.out.builder.finish()?)?;
        }
        Ok(())
    }

    /// Fires the timers due at `time`, emitting full batches as they fill (a watermark may
    /// fire a timer for every key).
    fn fire(&mut self, domain: TimeDomain, time: Timestamp, out: &mut dyn Output) -> Result<()> {
        let now = now_millis();
        while let Some((t, key, ns)) = self.timers.pop_due(domain, time) {
            let kg = key.key_group(self.max_parallelism);
            let mut ctx = KeyedContext {
                store: self.store.as_mut(),
                timers: &mut self.timers,
                key: &key,
                kg,
                ns,
                now,
                watermark: self.watermark,
                timestamp: Some(t),
            };
            self.f.on_timer(t, domain, &mut ctx, &mut self.out)?;
            if self.out.builder.len() >= FIRED_BATCH_ROWS {
                self.flush(out)?;
            }
        }
        Ok(())
    }
}

impl<F: ProcessFunction> ProcessOperator<F> {
    /// Restores another operator's snapshot (`layout`): the rows it held, taken in by the
    /// function one by one under their keys ([`ProcessFunction::restore_element`]).
    fn restore_foreign(
        &mut self,
        layout: &str,
        state: &crate::checkpoint::RestoredState,
    ) -> Result<()> {
        for (kg, blob) in &state.keyed {
            match self.f.foreign_rows(layout, *kg, blob)? {
                Some(ForeignRows::Keyed(rows)) => {
                    for (input, key, row) in rows {
                        self.restore_row(input, &key, &row, None)?;
                    }
                }
                Some(ForeignRows::Batches(parts)) => {
                    for (input, batch) in parts {
                        let (selector, time_column) =
                            self.inputs.get(input).cloned().unwrap_or((None, None));
                        let keys = selector.as_ref().map(|k| k.extract(&batch)).transpose()?;
                        let times = time_column
                            .as_deref()
                            .map(|c| timestamps(&batch, c))
                            .transpose()?;
                        for r in 0..batch.num_rows() {
                            let key = keys.as_ref().map_or(Key::Null, |k| k.key(r));
                            let row = row_at(&batch, r);
                            self.restore_row(input, &key, &row, times.map(|t| t[r]))?;
                        }
                    }
                }
                None => {
                    return Err(crate::error::Error::SnapshotIncompatible(format!(
                        "the state is in the layout `{layout}`, which this operator does not read"
                    )));
                }
            }
        }
        Ok(())
    }

    /// One row of another operator's state, taken in under `key`.
    fn restore_row(
        &mut self,
        input: usize,
        key: &Key,
        row: &Row,
        timestamp: Option<Timestamp>,
    ) -> Result<()> {
        let mut ctx = KeyedContext {
            store: self.store.as_mut(),
            timers: &mut self.timers,
            key,
            kg: key.key_group(self.max_parallelism),
            ns: Namespace::VOID,
            now: now_millis(),
            watermark: self.watermark,
            timestamp,
        };
        self.f.restore_element(input, row, &mut ctx)
    }
}

impl<F: ProcessFunction> Operator for ProcessOperator<F> {
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let (selector, time_column) = self.inputs.get(input).cloned().unwrap_or((None, None));
        let keys = selector.as_ref().map(|k| k.extract(&batch)).transpose()?;
        let times = time_column
            .as_deref()
            .map(|c| timestamps(&batch, c))
            .transpose()?;
        let now = now_millis();
        let null_key = Key::Null;
        for r in 0..batch.num_rows() {
            let key = keys.as_ref().map_or_else(|| null_key.clone(), |k| k.key(r));
            let kg: KeyGroup = key.key_group(self.max_parallelism);
            let row = row_at(&batch, r);
            let mut ctx = KeyedContext {
                store: self.store.as_mut(),
                timers: &mut self.timers,
                key: &key,
                kg,
                ns: Namespace::VOID,
                now,
                watermark: self.watermark,
                timestamp: times.map(|t| t[r]),
            };
            self.f
                .process_element(input, &row, &mut ctx, &mut self.out)?;
        }
        self.flush(out)
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        self.watermark = watermark;
        self.fire(TimeDomain::EventTime, watermark, out)?;
        self.flush(out)?;
        out.emit_watermark(watermark)
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut dyn Output) -> Result<()> {
        self.fire(TimeDomain::ProcessingTime, now, out)?;
        self.flush(out)
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
        match state.layout.as_deref() {
            Some(layout) if layout != crate::graph::DEFAULT_STATE_LAYOUT => {
                self.restore_foreign(layout, &state)
            }
            _ => crate::state::restore_keyed(self.store.as_mut(), &mut self.timers, &state.keyed),
        }
    }

    fn finish(&mut self, out: &mut dyn Output) -> Result<()> {
        self.flush(out)
    }
}
