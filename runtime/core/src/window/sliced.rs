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
use serde::de::DeserializeOwned;

use super::assigner::window_start;
use super::{AggregateFunction, RowRef, Window, WindowKind, Windows};
use crate::checkpoint::{Barrier, OperatorSnapshot, RestoredState};
use crate::element::{MIN_WATERMARK, Timestamp};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup, KeySelector};
use crate::operator::{Operator, OperatorContext, Output};
use crate::rows::{RowBatchBuilder, Value};
use crate::state::{FastMap, TimeDomain};
use crate::watermark::timestamps;

/// First byte of a key group's checkpointed state (the format's version).
const STATE_VERSION: u8 = 1;

/// The operator's state layout, as checkpoints record it (see
/// [`DataStream::state_layout`](crate::api::DataStream::state_layout)).
pub const SLICED_STATE_LAYOUT: &str = "sliced-window-aggregate";

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

/// After a restore, the watermark up to which the instance that checkpointed `key`'s key
/// group had fired its windows (`MIN_WATERMARK` without a restore).
fn restored_fired(
    restored: &Option<Vec<Timestamp>>,
    kg_start: KeyGroup,
    max_parallelism: u16,
    key: &Key,
) -> Timestamp {
    let Some(r) = restored else {
        return MIN_WATERMARK;
    };
    let kg = key.key_group(max_parallelism);
    r.get(usize::from(kg.saturating_sub(kg_start)))
        .copied()
        .unwrap_or(MIN_WATERMARK)
}

/// One slice: its keys' accumulators, and the last millisecond of its last window.
struct Slice<A> {
    accs: FastMap<Key, A>,
    last_max_ts: Timestamp,
}

/// A key group's slices: each slice's start and the group's keys' accumulators in it.
pub(super) type GroupSlices<A> = Vec<(Timestamp, Vec<(Key, A)>)>;

/// What a key group's checkpointed state decodes to: the format version, the watermark its
/// windows fired up to, its slices.
type GroupState<A> = (u8, Timestamp, GroupSlices<A>);

/// A key group's checkpointed state: the watermark its windows fired up to, and its slices
/// (start, and the group's keys' accumulators). Also read by the window operator, which
/// restores this layout when a job moves to a backend that spills
/// (`window/operator/from_slices.rs`).
pub(super) fn decode_group<A: DeserializeOwned>(
    kg: KeyGroup,
    blob: &[u8],
) -> Result<(Timestamp, GroupSlices<A>)> {
    let (version, watermark, slices): GroupState<A> = bincode::deserialize(blob)
        .map_err(|e| Error::state("window-slices", format!("key group {kg}: {e}")))?;
    if version != STATE_VERSION {
        return Err(Error::state(
            "window-slices",
            format!("key group {kg}: state format {version}, expected {STATE_VERSION}"),
        ));
    }
    Ok((watermark, slices))
}

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
        let restored = &self.restored;
        let (kg_start, mp) = (self.key_groups.start, self.max_parallelism);
        // Fired for `k` before the checkpoint this instance was restored from.
        let fired = |k: &Key| {
            restored.is_some() && restored_fired(restored, kg_start, mp, k) >= w.max_timestamp()
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
            // (After a restore, a row of a window its key group fired before the checkpoint
            // is kept here but not emitted: `emit` skips such keys.)
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
            let r = RowRef { batch: &batch, row };
            let key = keys.key(row);
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

    fn snapshot_state(&mut self, _barrier: &Barrier) -> Result<OperatorSnapshot> {
        let mp = self.max_parallelism;
        let mut groups: BTreeMap<KeyGroup, GroupSlices<A::Acc>> =
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
            deferred: None,
            ..Default::default()
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<()> {
        let mut fired = vec![MIN_WATERMARK; self.key_groups.len()];
        for (kg, blob) in &state.keyed {
            if !self.key_groups.contains(kg) {
                continue;
            }
            let (watermark, slices) = decode_group::<A::Acc>(*kg, blob)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::rows::Row;
    use crate::state::MemoryStateBackend;
    use crate::testing::{CollectRows as Rows, Lcg};
    use crate::window::{AggregateLogic, WindowOperator, WindowSpec, window_output_schema};

    /// Count and sum of `v`.
    #[derive(Clone)]
    struct CountSum;

    impl AggregateFunction for CountSum {
        type Acc = (i64, i64);
        fn bind(&mut self, _input: &Schema) -> Result<Vec<Field>> {
            Ok(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Int64, true),
            ])
        }
        fn create_accumulator(&self) -> (i64, i64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (i64, i64), row: RowRef<'_>) -> Result<()> {
            acc.0 += 1;
            acc.1 += row.i64(2).unwrap_or(0);
            Ok(())
        }
        fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
            acc.0 += other.0;
            acc.1 += other.1;
        }
        fn result(&self, acc: &(i64, i64)) -> Row {
            vec![Value::Int(acc.0), Value::Int(acc.1)]
        }
    }

    fn batch(rows: &[(i64, i64, i64)]) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let col = |i: usize| rows.iter().map(move |r| [r.0, r.1, r.2][i]);
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(col(0))),
                Arc::new(Int64Array::from_iter_values(col(1))),
                Arc::new(Int64Array::from_iter_values(col(2))),
            ],
        )?)
    }

    fn output() -> SchemaRef {
        window_output_schema(
            Field::new("k", DataType::Int64, true),
            CountSum.bind(&Schema::empty()).unwrap_or_default(),
        )
    }

    fn ctx(subtask: usize, parallelism: usize) -> OperatorContext {
        OperatorContext {
            subtask,
            parallelism,
            ..OperatorContext::single("window")
        }
    }

    fn sliced(w: Windows, c: &OperatorContext) -> Result<SlicedWindowOperator<CountSum>> {
        SlicedWindowOperator::new(
            CountSum,
            w,
            KeySelector::column("k"),
            "t".into(),
            output(),
            c,
        )
    }

    enum Step {
        Rows(Vec<(i64, i64, i64)>),
        Watermark(i64),
        /// Checkpoint and go on with `n` new instances restored from it.
        Restore(usize),
    }

    /// Out-of-order rows (some late), watermarks, and restores at other parallelisms.
    fn script(seed: u64) -> Vec<Step> {
        let mut g = Lcg(seed);
        let (mut clock, mut wm) = (0i64, -1_000i64);
        let mut steps = Vec::new();
        for _ in 0..80 {
            match g.next(12) {
                0..=7 => {
                    let rows = (0..g.next(30))
                        .map(|_| {
                            (
                                clock + g.next(160) as i64 - 100,
                                g.next(8) as i64,
                                g.next(100) as i64,
                            )
                        })
                        .collect();
                    clock += 15;
                    steps.push(Step::Rows(rows));
                }
                8..=10 => {
                    wm = wm.max(clock - 120 + g.next(60) as i64);
                    steps.push(Step::Watermark(wm));
                }
                _ => steps.push(Step::Restore(1 + g.next(3) as usize)),
            }
        }
        steps.push(Step::Watermark(i64::MAX));
        steps
    }

    /// The sliced operator's output against the window operator's over the same script.
    fn compare(w: Windows, seed: u64) -> Result<(Vec<String>, Vec<String>)> {
        let spec = WindowSpec {
            windows: w,
            key: KeySelector::column("k"),
            time_column: Some("t".into()),
            allowed_lateness: 0,
            late_tag: None,
            backend: Arc::new(MemoryStateBackend::default()),
        };
        let one = ctx(0, 1);
        let mut reference = WindowOperator::new(AggregateLogic(CountSum), spec, output(), &one)?;
        let mut ops = vec![sliced(w, &one)?];
        let (mut want, mut got) = (Rows::default(), Rows::default());
        for step in script(seed) {
            match step {
                Step::Rows(rows) => {
                    reference.process_batch(0, batch(&rows)?, &mut want)?;
                    // Each row to the instance owning its key group.
                    let n = ops.len();
                    for (i, op) in ops.iter_mut().enumerate() {
                        let mine: Vec<_> = rows
                            .iter()
                            .filter(|r| {
                                let kg = Key::Int(r.1).key_group(128);
                                crate::key::operator_index_for_key_group(kg, 128, n) == i
                            })
                            .copied()
                            .collect();
                        op.process_batch(0, batch(&mine)?, &mut got)?;
                    }
                }
                Step::Watermark(t) => {
                    reference.process_watermark(t, &mut want)?;
                    for op in &mut ops {
                        op.process_watermark(t, &mut got)?;
                    }
                }
                Step::Restore(n) => {
                    let mut keyed = Vec::new();
                    for op in &mut ops {
                        keyed.extend(
                            op.snapshot_state(&crate::checkpoint::Barrier::checkpoint(1))?
                                .keyed,
                        );
                    }
                    ops = (0..n)
                        .map(|i| {
                            let c = ctx(i, n);
                            let mut op = sliced(w, &c)?;
                            op.restore_state(RestoredState {
                                keyed: keyed
                                    .iter()
                                    .filter(|(kg, _)| c.key_groups().contains(kg))
                                    .map(|(kg, b)| (*kg, b.clone().into()))
                                    .collect(),
                                ..RestoredState::default()
                            })?;
                            // The watermark comes again after a restore, later: the
                            // key groups' checkpointed watermarks hold until then.
                            Ok(op)
                        })
                        .collect::<Result<_>>()?;
                }
            }
        }
        want.0.sort();
        got.0.sort();
        Ok((want.0, got.0))
    }

    #[test]
    fn equals_the_window_operator_across_restores_at_other_parallelisms() -> Result<()> {
        let ms = Duration::from_millis;
        let cases = [
            Windows::tumbling(ms(100)),
            Windows::tumbling(ms(100)).with_offset(ms(30)),
            Windows::sliding(ms(100), ms(20)),
            Windows::sliding(ms(100), ms(30)),
            Windows::sliding(ms(50), ms(20)).with_offset(ms(7)),
            Windows::cumulative(ms(25), ms(100)),
        ];
        let mut rows = 0;
        for (c, w) in cases.into_iter().enumerate() {
            for seed in 0..20 {
                let (want, got) = compare(w, seed * 13 + c as u64)?;
                assert_eq!(got, want, "windows {w:?}, seed {seed}");
                rows += want.len();
            }
        }
        assert!(rows > 5_000, "the scripts must fire windows: {rows}");
        Ok(())
    }

    /// A savepoint of the heap backend's sliced operators, restored (at another
    /// parallelism) into window operators on the disk backend, as `state.backend.type:
    /// disk` plans the job: the results equal an uninterrupted window operator's.
    fn compare_moved_to_disk(w: Windows, seed: u64) -> Result<(Vec<String>, Vec<String>)> {
        let dir = tempfile::tempdir().map_err(|e| Error::state("test", e))?;
        let disk: Arc<dyn crate::state::StateBackend> = Arc::new(
            crate::state::DiskStateBackend::new(crate::state::DiskOptions {
                managed_memory: 4 << 20,
                local_dir: Some(dir.path().to_path_buf()),
                incremental: false,
                ..Default::default()
            }),
        );
        let spec = |backend: Arc<dyn crate::state::StateBackend>| WindowSpec {
            windows: w,
            key: KeySelector::column("k"),
            time_column: Some("t".into()),
            allowed_lateness: 0,
            late_tag: None,
            backend,
        };
        let one = ctx(0, 1);
        let memory = Arc::new(MemoryStateBackend::default());
        let mut reference =
            WindowOperator::new(AggregateLogic(CountSum), spec(memory), output(), &one)?;
        let mut sliced_ops = vec![sliced(w, &one)?];
        let mut moved: Vec<WindowOperator<AggregateLogic<CountSum>>> = Vec::new();
        let (mut want, mut got) = (Rows::default(), Rows::default());
        let route = |rows: &[(i64, i64, i64)], i: usize, n: usize| -> Vec<(i64, i64, i64)> {
            rows.iter()
                .filter(|r| {
                    let kg = Key::Int(r.1).key_group(128);
                    crate::key::operator_index_for_key_group(kg, 128, n) == i
                })
                .copied()
                .collect()
        };
        let mut conversions = 0;
        for step in script(seed) {
            match step {
                Step::Rows(rows) => {
                    reference.process_batch(0, batch(&rows)?, &mut want)?;
                    let n = sliced_ops.len().max(moved.len());
                    for (i, op) in sliced_ops.iter_mut().enumerate() {
                        op.process_batch(0, batch(&route(&rows, i, n))?, &mut got)?;
                    }
                    for (i, op) in moved.iter_mut().enumerate() {
                        op.process_batch(0, batch(&route(&rows, i, n))?, &mut got)?;
                    }
                }
                Step::Watermark(t) => {
                    reference.process_watermark(t, &mut want)?;
                    for op in &mut sliced_ops {
                        op.process_watermark(t, &mut got)?;
                    }
                    for op in &mut moved {
                        op.process_watermark(t, &mut got)?;
                    }
                }
                // The first restore moves the job to the disk backend; it stays there.
                Step::Restore(n) if moved.is_empty() => {
                    conversions += 1;
                    let mut keyed = Vec::new();
                    for op in &mut sliced_ops {
                        keyed.extend(
                            op.snapshot_state(&crate::checkpoint::Barrier::checkpoint(1))?
                                .keyed,
                        );
                    }
                    sliced_ops.clear();
                    for i in 0..n {
                        let c = ctx(i, n);
                        let mut op = WindowOperator::new(
                            AggregateLogic(CountSum),
                            spec(disk.clone()),
                            output(),
                            &c,
                        )?;
                        op.restore_state(RestoredState {
                            keyed: keyed
                                .iter()
                                .filter(|(kg, _)| c.key_groups().contains(kg))
                                .map(|(kg, b)| (*kg, b.clone().into()))
                                .collect(),
                            layout: Some(SLICED_STATE_LAYOUT.into()),
                            ..RestoredState::default()
                        })?;
                        moved.push(op);
                    }
                }
                Step::Restore(_) => {}
            }
        }
        assert!(conversions > 0 || moved.is_empty());
        want.0.sort();
        got.0.sort();
        Ok((want.0, got.0))
    }

    #[test]
    fn slices_restore_into_the_window_operator_of_a_backend_that_spills() -> Result<()> {
        let ms = Duration::from_millis;
        let cases = [
            Windows::tumbling(ms(100)),
            Windows::sliding(ms(100), ms(30)),
            Windows::sliding(ms(50), ms(20)).with_offset(ms(7)),
            Windows::cumulative(ms(25), ms(100)),
        ];
        let mut rows = 0;
        for (c, w) in cases.into_iter().enumerate() {
            for seed in 0..10 {
                let (want, got) = compare_moved_to_disk(w, seed * 17 + c as u64)?;
                assert_eq!(got, want, "windows {w:?}, seed {seed}");
                rows += want.len();
            }
        }
        assert!(rows > 2_000, "the scripts must fire windows: {rows}");
        Ok(())
    }

    #[test]
    fn slices_are_dropped_once_no_window_to_fire_covers_them() -> Result<()> {
        let w = Windows::sliding(Duration::from_millis(100), Duration::from_millis(20));
        let mut op = sliced(w, &ctx(0, 1))?;
        let rows: Vec<_> = (0..1_000).map(|t| (t, t % 7, 1)).collect();
        op.process_batch(0, batch(&rows)?, &mut Rows::default())?;
        assert_eq!(op.slices.len(), 50);
        // Windows ending at 20..=500 fired: slices from 420 on are still covered.
        op.process_watermark(499, &mut Rows::default())?;
        assert_eq!(op.slices.keys().next(), Some(&420));
        op.process_watermark(i64::MAX, &mut Rows::default())?;
        assert!(op.slices.is_empty() && op.pending.is_empty());
        Ok(())
    }
}
