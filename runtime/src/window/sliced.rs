//! Window aggregation over slices (Flink SQL's slicing window aggregate), for tumbling,
//! sliding (hopping) and cumulative event-time windows without allowed lateness.
//!
//! Time is cut into *slices* that every window covers whole (a tumbling window is one slice;
//! a sliding window of size 10 s every 2 s is five slices of 2 s; a cumulative window is its
//! steps). A row is added to one accumulator, its key's in its slice, instead of one per
//! window; when the watermark passes a window's end, the window's result per key is the merge
//! of the key's accumulators in the window's slices, and a slice is dropped once no window
//! still to fire covers it. Keys are not timers: firing walks the slices' tables.
//!
//! The results are those of [`WindowOperator`](super::WindowOperator) with the same windows
//! and no allowed lateness: a row counts in each of its windows that has not fired yet (whose
//! last millisecond is after the watermark), and a row all of whose windows have fired is
//! late and dropped.
//!
//! Checkpoints hold, per key group, the watermark the instance had and every slice's
//! accumulators of the group's keys: after a restore (at any parallelism), a key group does
//! not fire again a window it fired before the checkpoint, and takes no row such a window
//! would have taken.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::assigner::window_start;
use super::{AggregateFunction, RowRef, Window, WindowKind, Windows};
use crate::checkpoint::{CheckpointId, OperatorSnapshot, RestoredState};
use crate::element::{MIN_WATERMARK, Timestamp};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup, KeySelector};
use crate::operator::{Operator, OperatorContext, Output};
use crate::rows::{RowBatchBuilder, Value};
use crate::state::{FastMap, TimeDomain};
use crate::watermark::timestamps;

/// First byte of a key group's checkpointed state (the format's version).
const STATE_VERSION: u8 = 1;

/// The slice width and alignment of `windows`, when they can be sliced (event-time
/// tumbling, sliding and cumulative windows).
pub fn slicing(windows: &Windows) -> Option<(i64, i64)> {
    if windows.domain != TimeDomain::EventTime {
        return None;
    }
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    match windows.kind {
        WindowKind::Tumbling { size, offset } if size > 0 => Some((size, offset)),
        WindowKind::Sliding {
            size,
            slide,
            offset,
        } if size > 0 && slide > 0 => Some((gcd(size, slide), offset)),
        WindowKind::Cumulative { step, offset, .. } if step > 0 => Some((step, offset)),
        _ => None,
    }
}

/// The watermark up to which the windows of `key` have fired: the instance's, or after a
/// restore the later one of its key group's checkpoint.
fn fired_up_to(
    restored: &Option<Vec<Timestamp>>,
    watermark: Timestamp,
    kg_start: KeyGroup,
    max_parallelism: u16,
    key: &Key,
) -> Timestamp {
    match restored {
        None => watermark,
        Some(r) => {
            let kg = key.key_group(max_parallelism);
            let i = usize::from(kg.saturating_sub(kg_start));
            r.get(i).map_or(watermark, |w| watermark.max(*w))
        }
    }
}

/// One slice: its keys' accumulators, and the last millisecond of its last window.
struct Slice<A> {
    accs: FastMap<Key, A>,
    last_max_ts: Timestamp,
}

/// What a key group's checkpointed state decodes to.
type GroupState<A> = (u8, Timestamp, Vec<(Timestamp, Vec<(Key, A)>)>);

/// One parallel instance of a sliced window aggregation.
pub struct SlicedWindowOperator<A: AggregateFunction> {
    f: A,
    windows: Windows,
    key: KeySelector,
    time_column: String,
    width: i64,
    offset: i64,
    max_parallelism: u16,
    key_groups: Range<KeyGroup>,
    /// Slices by start.
    slices: BTreeMap<Timestamp, Slice<A::Acc>>,
    /// Windows still to fire, as (end, start).
    pending: BTreeSet<(Timestamp, Timestamp)>,
    watermark: Timestamp,
    /// After a restore, per owned key group: the watermark of the instance whose checkpoint
    /// it came from (its windows up to there have fired). `None` once the watermark passed
    /// all of them.
    restored: Option<Vec<Timestamp>>,
    assigned: Vec<Window>,
    row: Vec<Value>,
    builder: RowBatchBuilder,
}

impl<A: AggregateFunction> SlicedWindowOperator<A> {
    /// An instance; `f` must be bound to the input schema, `output` built with
    /// [`window_output_schema`](super::window_output_schema), and `windows` sliceable.
    pub fn new(
        f: A,
        windows: Windows,
        key: KeySelector,
        time_column: String,
        output: SchemaRef,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        let (width, offset) = slicing(&windows)
            .ok_or_else(|| Error::config("window", "these windows cannot be sliced"))?;
        Ok(SlicedWindowOperator {
            f,
            windows,
            key,
            time_column,
            width,
            offset,
            max_parallelism: ctx.max_parallelism,
            key_groups: ctx.key_groups(),
            slices: BTreeMap::new(),
            pending: BTreeSet::new(),
            watermark: MIN_WATERMARK,
            restored: None,
            assigned: Vec::new(),
            row: Vec::new(),
            builder: RowBatchBuilder::new(output)?,
        })
    }

    /// The watermark up to which `key`'s windows have fired.
    fn fired_up_to(&self, key: &Key) -> Timestamp {
        fired_up_to(&self.restored, self.watermark, self.key_groups.start, self.max_parallelism, key)
    }

    /// The slice starting at `start`, created (with its windows to fire) unless every window
    /// covering it has fired; `None` then.
    fn slice(&mut self, start: Timestamp) -> Option<&mut Slice<A::Acc>> {
        if !self.slices.contains_key(&start) {
            self.assigned.clear();
            self.windows.assign(start, &mut self.assigned);
            let last_max_ts = self
                .assigned
                .iter()
                .map(Window::max_timestamp)
                .max()
                .unwrap_or(MIN_WATERMARK);
            if last_max_ts <= self.watermark {
                return None;
            }
            for w in &self.assigned {
                if w.max_timestamp() > self.watermark {
                    self.pending.insert((w.end, w.start));
                }
            }
            self.slices.insert(
                start,
                Slice {
                    accs: FastMap::default(),
                    last_max_ts,
                },
            );
        }
        self.slices.get_mut(&start)
    }

    /// Fires every window whose last millisecond the watermark has passed, then drops the
    /// slices no window still to fire covers.
    fn fire(&mut self) -> Result<()> {
        while let Some(&(end, start)) = self.pending.first() {
            if end - 1 > self.watermark {
                break;
            }
            self.pending.pop_first();
            self.emit(Window { start, end })?;
        }
        let keep_from = self.pending.iter().map(|(_, s)| *s).min();
        while let Some(first) = self.slices.first_entry() {
            if keep_from.is_some_and(|s| *first.key() + self.width > s) {
                break;
            }
            first.remove();
        }
        Ok(())
    }

    /// Emits window `w` for every key with rows in it.
    fn emit(&mut self, w: Window) -> Result<()> {
        let (f, builder) = (&self.f, &mut self.builder);
        let slices: Vec<&Slice<A::Acc>> = self.slices.range(w.start..w.end).map(|s| s.1).collect();
        let (restored, watermark) = (&self.restored, self.watermark);
        let (kg_start, mp) = (self.key_groups.start, self.max_parallelism);
        let fired = |k: &Key| {
            restored.is_some()
                && fired_up_to(restored, watermark, kg_start, mp, k) >= w.max_timestamp()
        };
        let row = &mut self.row;
        let mut push = |key: &Key, acc: &A::Acc| {
            row.clear();
            row.push(key.to_value());
            row.push(Value::Int(w.start));
            row.push(Value::Int(w.end));
            row.push(Value::Int(w.max_timestamp()));
            row.extend(f.result(acc));
            builder.push(row)
        };
        match slices.as_slice() {
            [] => {}
            [one] => {
                for (k, acc) in &one.accs {
                    if !fired(k) {
                        push(k, acc)?;
                    }
                }
            }
            many => {
                let mut merged: FastMap<&Key, A::Acc> = FastMap::default();
                for s in many {
                    for (k, acc) in &s.accs {
                        if fired(k) {
                            continue;
                        }
                        match merged.get_mut(k) {
                            Some(m) => f.merge_ref(m, acc),
                            None => {
                                merged.insert(k, acc.clone());
                            }
                        }
                    }
                }
                for (k, acc) in &merged {
                    push(k, acc)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut dyn Output) -> Result<()> {
        if !self.builder.is_empty() {
            out.emit(self.builder.finish()?)?;
        }
        Ok(())
    }
}

impl<A: AggregateFunction> Operator for SlicedWindowOperator<A> {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let keys = self.key.extract(&batch)?;
        let times = timestamps(&batch, &self.time_column)?;
        let mut cached: Option<Timestamp> = None;
        for (row, ts) in times.iter().enumerate() {
            let start = window_start(*ts, self.offset, self.width);
            let key = keys.key(row);
            if self.restored.is_some() {
                // A key group restored from a checkpoint taken at a later watermark.
                let fired = self.fired_up_to(&key);
                let last = self.slices.get(&start).map(|s| s.last_max_ts);
                if last.is_some_and(|l| l <= fired) {
                    continue;
                }
            }
            if cached != Some(start) {
                if self.slice(start).is_none() {
                    continue; // late for every window
                }
                cached = Some(start);
            }
            let f = &self.f;
            let Some(slice) = self.slices.get_mut(&start) else {
                continue;
            };
            if slice.last_max_ts <= self.watermark {
                continue;
            }
            let r = RowRef {
                batch: &batch,
                row,
            };
            match slice.accs.get_mut(&key) {
                Some(acc) => f.add(acc, r)?,
                None => {
                    let mut acc = f.create_accumulator();
                    f.add(&mut acc, r)?;
                    slice.accs.insert(key, acc);
                }
            }
        }
        self.flush(out)
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.fire()?;
        if let Some(r) = &self.restored {
            if r.iter().all(|w| *w <= self.watermark) {
                self.restored = None;
            }
        }
        self.flush(out)?;
        out.emit_watermark(watermark)
    }

    fn snapshot_state(&mut self, _checkpoint: CheckpointId) -> Result<OperatorSnapshot> {
        let mp = self.max_parallelism;
        let mut groups: BTreeMap<KeyGroup, Vec<(Timestamp, Vec<(Key, A::Acc)>)>> =
            self.key_groups.clone().map(|kg| (kg, Vec::new())).collect();
        for (start, slice) in &self.slices {
            for (k, acc) in &slice.accs {
                let Some(g) = groups.get_mut(&k.key_group(mp)) else {
                    continue;
                };
                match g.last_mut() {
                    Some((s, entries)) if s == start => entries.push((k.clone(), acc.clone())),
                    _ => g.push((*start, vec![(k.clone(), acc.clone())])),
                }
            }
        }
        let mut keyed = Vec::with_capacity(groups.len());
        for (kg, slices) in groups {
            let i = usize::from(kg - self.key_groups.start);
            let fired = match &self.restored {
                Some(r) => r.get(i).map_or(self.watermark, |w| self.watermark.max(*w)),
                None => self.watermark,
            };
            let state: GroupState<A::Acc> = (STATE_VERSION, fired, slices);
            let blob = bincode::serialize(&state).map_err(|e| Error::state("window-slices", e))?;
            keyed.push((kg, blob));
        }
        Ok(OperatorSnapshot {
            keyed,
            operator: None,
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<()> {
        let mut fired = vec![MIN_WATERMARK; self.key_groups.len()];
        for (kg, blob) in &state.keyed {
            if !self.key_groups.contains(kg) {
                continue;
            }
            let (version, watermark, slices): GroupState<A::Acc> = bincode::deserialize(blob)
                .map_err(|e| Error::state("window-slices", format!("key group {kg}: {e}")))?;
            if version != STATE_VERSION {
                return Err(Error::state(
                    "window-slices",
                    format!("key group {kg}: state format {version}, expected {STATE_VERSION}"),
                ));
            }
            fired[usize::from(kg - self.key_groups.start)] = watermark;
            for (start, entries) in slices {
                self.assigned.clear();
                self.windows.assign(start, &mut self.assigned);
                for w in &self.assigned {
                    if w.max_timestamp() > watermark {
                        self.pending.insert((w.end, w.start));
                    }
                }
                let last_max_ts = self.assigned.iter().map(Window::max_timestamp).max();
                let slice = self.slices.entry(start).or_insert_with(|| Slice {
                    accs: FastMap::default(),
                    last_max_ts: last_max_ts.unwrap_or(MIN_WATERMARK),
                });
                slice.accs.extend(entries);
            }
        }
        if fired.iter().any(|w| *w != MIN_WATERMARK) {
            self.restored = Some(fired);
        }
        Ok(())
    }
}
