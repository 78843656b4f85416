//! Inner joins over columnar state: each side's rows kept as the batches they arrived in, filed
//! into segments by expiry (interval and window joins drop whole segments as the watermark
//! passes; regular inner joins without a state TTL keep them for the job's life).
//!
//! An inner join whose condition bounds `left time - right time` on both ends can forget a
//! stored row as soon as the watermark passes the last time a row of the other side could
//! still match it (its *expiry*). [`StreamJoin`](super::keyed_list_join::StreamJoin) keeps rows in keyed
//! list state and removes them one by one with a timer per row; this operator instead keeps
//! each side's rows as the Arrow batches they arrived in, filed into *segments* by expiry
//! (each segment covers a fixed slice of expiry time), with a per-segment hash index from
//! key to rows. A row costs one index insert; a probe looks up its key in the few segments
//! of the other side whose expiries it can match; and the watermark drops whole segments,
//! batches and index together, once every row in them has expired. A row that has expired
//! but waits in a segment not yet dropped is skipped at probe time, so the output is exactly
//! [`StreamJoin`]'s: the pairs whose keys are equal (none NULL), whose times satisfy the
//! bounds and whose simple comparisons hold, the probing row matching the other side's rows
//! that are stored and not expired when it arrives.
//!
//! Bounds open on one end keep the side that never expires in one segment; a regular join
//! (no time bounds) keeps each side in one segment for the job's life.
//!
//! Checkpoints hold each key group's live rows per side as an Arrow IPC stream, so the state
//! moves between parallel instances by key group like every other keyed state.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, interleave, interleave_record_batch, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::operators::join_condition::PairPredicate;
use flink_rs_core::checkpoint::{Barrier, OperatorSnapshot, RestoredState};
use flink_rs_core::element::{MIN_WATERMARK, Timestamp};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::key::{Key, KeyColumns, KeyGroup, KeySelector};
use flink_rs_core::operator::{Operator, OperatorContext, Output};
use flink_rs_core::rows::array_value;
use flink_rs_core::state::FastMap;

/// First byte of a key group's checkpointed state (the format's version).
const STATE_VERSION: u8 = 1;

/// The operator's state layout, as checkpoints record it.
pub const STATE_LAYOUT: &str = "columnar-join";

/// The join, as planned: shared by its parallel instances.
#[derive(Debug, Clone)]
pub struct IntervalJoinSpec {
    /// Number of data columns of the left and right inputs (each input's key columns follow
    /// its data columns).
    pub widths: [usize; 2],
    /// The event-time column of each side (index among its data columns); `None` for a
    /// regular join, whose rows are kept for the job's life.
    pub time: Option<[usize; 2]>,
    /// `left time - right time` lies in `lower ..= upper` (milliseconds; `None`: open on
    /// that end, and the rows of the side it would expire are kept for the job's life).
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    /// Comparisons checked on each pair of rows with equal keys.
    pub predicates: Vec<PairPredicate>,
    /// The key columns of each side.
    pub keys: [KeySelector; 2],
    /// Left data columns, then right data columns, with the inputs' types.
    pub output: SchemaRef,
}

impl IntervalJoinSpec {
    /// The watermark from which a row of `side` at time `t` can match nothing more: a left
    /// row matches right rows up to `t - lower`, a right row left rows up to `t + upper`.
    fn expiry(&self, side: usize, t: i64) -> i64 {
        let e = if side == 0 {
            self.lower.map(|l| t.saturating_sub(l))
        } else {
            self.upper.map(|u| t.saturating_add(u))
        };
        e.unwrap_or(i64::MAX)
    }

    /// Whether a left row at `tl` and a right row at `tr` satisfy the bounds.
    fn within(&self, tl: i64, tr: i64) -> bool {
        let d = tl.saturating_sub(tr);
        self.lower.is_none_or(|l| d >= l) && self.upper.is_none_or(|u| d <= u)
    }

    /// The width of expiry time one segment covers: a probe looks into the segments of the
    /// other side that cover `span + 1` ms of expiries, about five of them; a window join
    /// (span 0) files each window end in its own segment. Open on one end, the rows that
    /// expire are filed by the second (the others never expire: one segment).
    fn segment_ms(&self) -> i64 {
        self.span().map_or(1_000, |span| (span / 4).max(1))
    }

    /// The event times of a batch of `side` (all 0 without time columns).
    fn times(&self, side: usize, batch: &RecordBatch) -> Result<Int64Array> {
        match self.time {
            Some(t) => times_of(batch.column(t[side])),
            None => Ok(Int64Array::from(vec![0; batch.num_rows()])),
        }
    }

    /// `upper - lower`, when both are bounded.
    fn span(&self) -> Option<i64> {
        Some(self.upper?.saturating_sub(self.lower?))
    }
}

/// Rows of one side whose expiries fall into one segment's slice of time.
#[derive(Default)]
struct Segment {
    batches: Vec<RecordBatch>,
    /// Per stored row: its batch and row in that batch, its event time, and the previous
    /// row (index + 1, 0 for none) with the same key.
    loc: Vec<(u32, u32)>,
    times: Vec<i64>,
    prev: Vec<u32>,
    /// The last row (index + 1) of each key.
    heads: FastMap<Key, u32>,
    max_expiry: i64,
    /// The insert call that pushed the last batch (a batch is pushed once per call).
    tag: u64,
}

/// The stored rows of one side, by segment (segment number = expiry / segment width).
#[derive(Default)]
struct Side {
    segments: BTreeMap<i64, Segment>,
}

/// A row to store: its segment, row in the batch, time and key.
type ToStore = (i64, u32, i64, Key);

/// One parallel instance of the join.
pub struct IntervalJoinOperator {
    spec: Arc<IntervalJoinSpec>,
    sides: [Side; 2],
    watermark: Timestamp,
    max_parallelism: u16,
    key_groups: Range<KeyGroup>,
    segment_ms: i64,
    inserts: u64,
}

/// Whether any part of a key is NULL (SQL: a NULL key equals nothing).
fn has_null(k: &Key) -> bool {
    match k {
        Key::Null => true,
        Key::Composite(parts) => parts.iter().any(has_null),
        _ => false,
    }
}

/// A side's event times as milliseconds (NULL where the time is NULL, or where the column
/// is not a millisecond timestamp or an integer: such a time satisfies no bound).
fn times_of(a: &ArrayRef) -> Result<Int64Array> {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _)
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Ok(cast(a, &DataType::Int64)?.as_primitive().clone()),
        _ => Ok(Int64Array::new_null(a.len())),
    }
}

impl IntervalJoinOperator {
    pub fn new(spec: Arc<IntervalJoinSpec>, ctx: &OperatorContext) -> Self {
        let segment_ms = spec.segment_ms();
        IntervalJoinOperator {
            spec,
            sides: [Side::default(), Side::default()],
            watermark: MIN_WATERMARK,
            max_parallelism: ctx.max_parallelism,
            key_groups: ctx.key_groups(),
            segment_ms,
            inserts: 0,
        }
    }

    fn segment_of(&self, expiry: i64) -> i64 {
        expiry.div_euclid(self.segment_ms)
    }

    /// Number of rows held (expired rows in segments not yet dropped included).
    #[cfg(test)]
    fn stored_rows(&self) -> usize {
        self.sides
            .iter()
            .flat_map(|s| s.segments.values())
            .map(|s| s.loc.len())
            .sum()
    }

    /// Files rows `rows` of `batch` (of `side`) into their segments.
    fn insert(&mut self, side: usize, batch: &RecordBatch, rows: Vec<ToStore>) {
        self.inserts += 1;
        let tag = self.inserts;
        let spec = &self.spec;
        let segments = &mut self.sides[side].segments;
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            let seg = segments.entry(run[0].0).or_insert_with(|| Segment {
                max_expiry: i64::MIN,
                ..Segment::default()
            });
            // (A new segment's tag is 0; insert calls count from 1.)
            if seg.tag != tag {
                seg.batches.push(batch.clone());
                seg.tag = tag;
            }
            let b = (seg.batches.len() - 1) as u32;
            for (_, r, t, key) in run {
                let idx = seg.loc.len() as u32 + 1;
                seg.loc.push((b, *r));
                seg.times.push(*t);
                seg.max_expiry = seg.max_expiry.max(spec.expiry(side, *t));
                let prev = seg.heads.insert(key.clone(), idx).unwrap_or(0);
                seg.prev.push(prev);
            }
        }
    }

    /// Stores every row of `batch` that can still match (restoring a checkpoint).
    fn store_all(&mut self, side: usize, batch: &RecordBatch) -> Result<()> {
        let keys = self.spec.keys[side].extract(batch)?;
        let times = self.spec.times(side, batch)?;
        let mut rows = Vec::new();
        for r in 0..batch.num_rows() {
            if let Some((t, key)) = self.joinable(&keys, &times, r) {
                let e = self.spec.expiry(side, t);
                if e > self.watermark {
                    rows.push((self.segment_of(e), r as u32, t, key));
                }
            }
        }
        self.insert(side, batch, rows);
        Ok(())
    }

    /// A row's time and key, unless either is NULL (then it joins nothing).
    fn joinable(&self, keys: &KeyColumns, times: &Int64Array, r: usize) -> Option<(i64, Key)> {
        if times.is_null(r) {
            return None;
        }
        let key = keys.key(r);
        (!has_null(&key)).then(|| (times.value(r), key))
    }

    /// The output rows for matched pairs: `own[i]` of `batch` (of `side`) with row
    /// `other[i]` (a source batch and a row in it) of the other side.
    fn joined(
        &self,
        side: usize,
        batch: &RecordBatch,
        own: Vec<u32>,
        sources: &[RecordBatch],
        other: &[(usize, usize)],
    ) -> Result<RecordBatch> {
        let own = UInt32Array::from(own);
        let mut cols: [Vec<ArrayRef>; 2] = [Vec::new(), Vec::new()];
        for c in 0..self.spec.widths[side] {
            cols[side].push(take(batch.column(c), &own, None)?);
        }
        for c in 0..self.spec.widths[1 - side] {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            cols[1 - side].push(interleave(&arrays, other)?);
        }
        let [mut left, right] = cols;
        left.extend(right);
        Ok(RecordBatch::try_new(self.spec.output.clone(), left)?)
    }
}

impl Operator for IntervalJoinOperator {
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let side = input.min(1);
        let other = 1 - side;
        let spec = self.spec.clone();
        let keys = spec.keys[side].extract(&batch)?;
        let times = spec.times(side, &batch)?;
        let span = spec.span();
        let mut own = Vec::new();
        let mut hits: Vec<(i64, u32)> = Vec::new();
        let mut store = Vec::new();
        for r in 0..batch.num_rows() {
            let Some((t, key)) = self.joinable(&keys, &times, r) else {
                continue;
            };
            // The other side's rows this one can match expire in `t ..= t + span` (after
            // `t`, when the bounds are open on one end; none when they are empty).
            let first = self.segment_of(t);
            let last = match span {
                Some(s) if s < 0 => None,
                Some(s) => Some(self.segment_of(t.saturating_add(s))),
                None => Some(i64::MAX),
            };
            let segments = last.map(|last| self.sides[other].segments.range(first..=last));
            for (n, seg) in segments.into_iter().flatten() {
                let mut i = seg.heads.get(&key).copied().unwrap_or(0);
                while i != 0 {
                    let idx = (i - 1) as usize;
                    i = seg.prev[idx];
                    let to = seg.times[idx];
                    let (tl, tr) = if side == 0 { (t, to) } else { (to, t) };
                    if spec.expiry(other, to) <= self.watermark || !spec.within(tl, tr) {
                        continue;
                    }
                    if !spec.predicates.is_empty() {
                        let (b, row) = seg.loc[idx];
                        let stored = &seg.batches[b as usize];
                        let value = |s: usize, c: usize| {
                            let (a, row) = if s == side {
                                (&batch, r)
                            } else {
                                (stored, row as usize)
                            };
                            (c < a.num_columns()).then(|| array_value(a.column(c), row))
                        };
                        if !spec.predicates.iter().all(|p| p.holds_by(value)) {
                            continue;
                        }
                    }
                    own.push(r as u32);
                    hits.push((*n, idx as u32));
                }
            }
            let e = spec.expiry(side, t);
            if e > self.watermark {
                store.push((self.segment_of(e), r as u32, t, key));
            }
        }
        if !own.is_empty() {
            // The matched rows' batches, each once.
            let mut sources: Vec<RecordBatch> = Vec::new();
            let mut source_of: FastMap<(i64, u32), usize> = FastMap::default();
            let mut refs = Vec::with_capacity(hits.len());
            for (n, idx) in hits {
                let seg = &self.sides[other].segments[&n];
                let (b, row) = seg.loc[idx as usize];
                let s = *source_of.entry((n, b)).or_insert_with(|| {
                    sources.push(seg.batches[b as usize].clone());
                    sources.len() - 1
                });
                refs.push((s, row as usize));
            }
            out.emit(self.joined(side, &batch, own, &sources, &refs)?)?;
        }
        self.insert(side, &batch, store);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        self.watermark = watermark;
        for side in &mut self.sides {
            while let Some(first) = side.segments.first_entry() {
                if first.get().max_expiry > watermark {
                    break;
                }
                first.remove();
            }
        }
        out.emit_watermark(watermark)
    }

    fn snapshot_state(&mut self, _barrier: &Barrier) -> Result<OperatorSnapshot> {
        let mp = self.max_parallelism;
        let mut groups: BTreeMap<KeyGroup, [Vec<u8>; 2]> = BTreeMap::new();
        for side in 0..2 {
            // Every live row, by key group, as (source batch, row).
            let mut sources: Vec<&RecordBatch> = Vec::new();
            let mut rows: BTreeMap<KeyGroup, Vec<(usize, usize)>> = BTreeMap::new();
            let mut kgs = Vec::new();
            for seg in self.sides[side].segments.values() {
                let mut batch_kgs = Vec::with_capacity(seg.batches.len());
                for b in &seg.batches {
                    self.spec.keys[side].extract(b)?.key_groups(mp, &mut kgs);
                    batch_kgs.push(std::mem::take(&mut kgs));
                }
                for (i, &(b, r)) in seg.loc.iter().enumerate() {
                    if self.spec.expiry(side, seg.times[i]) <= self.watermark {
                        continue;
                    }
                    let kg = batch_kgs[b as usize][r as usize];
                    rows.entry(kg)
                        .or_default()
                        .push((sources.len() + b as usize, r as usize));
                }
                sources.extend(seg.batches.iter());
            }
            for (kg, idx) in rows {
                let batch = interleave_record_batch(&sources, &idx)?;
                let mut w = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
                w.write(&batch)?;
                w.finish()?;
                groups.entry(kg).or_default()[side] = w.into_inner()?;
            }
        }
        let keyed = groups
            .into_iter()
            .map(|(kg, [l, r])| {
                let mut blob = Vec::with_capacity(17 + l.len() + r.len());
                blob.push(STATE_VERSION);
                for part in [l, r] {
                    blob.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    blob.extend_from_slice(&part);
                }
                (kg, blob)
            })
            .collect();
        Ok(OperatorSnapshot {
            keyed,
            operator: None,
            deferred: None,
            ..Default::default()
        })
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<()> {
        for (kg, blob) in &state.keyed {
            if !self.key_groups.contains(kg) {
                continue;
            }
            for (side, batch) in decode_key_group(*kg, blob)? {
                self.store_all(side, &batch)?;
            }
        }
        Ok(())
    }
}

/// One key group of a checkpoint: each side's live rows, as they arrived (the input's
/// schema). Also read by the keyed-list join, which takes this state over when a job moves
/// to a backend that spills (`keyed_list_join.rs`).
pub fn decode_key_group(kg: KeyGroup, blob: &[u8]) -> Result<Vec<(usize, RecordBatch)>> {
    let bad = |what: &str| Error::State {
        state: "interval-join".into(),
        message: format!("key group {kg}: {what}"),
    };
    let Some((&STATE_VERSION, mut rest)) = blob.split_first() else {
        return Err(bad(
            "not the state of an interval or window join of this version",
        ));
    };
    let mut out = Vec::new();
    for side in 0..2 {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("truncated"))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|l| *l <= tail.len())
            .ok_or_else(|| bad("truncated"))?;
        let (part, tail) = tail.split_at(len);
        rest = tail;
        if part.is_empty() {
            continue;
        }
        for batch in StreamReader::try_new(Cursor::new(part), None)? {
            out.push((side, batch?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::join_condition::{TimeBounds, TimeColumns};
    use crate::operators::keyed_list_join::StreamJoin;
    use arrow::datatypes::{Field, Schema};
    use flink_rs_core::operator::OperatorContext;
    use flink_rs_core::operators::ProcessOperator;
    use flink_rs_core::rows::Value;
    use flink_rs_core::state::MemoryStateBackend;
    use flink_rs_core::testing::{CollectRows as Rows, Lcg};

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("v", DataType::Int64, true),
            Field::new("__jk0", DataType::Int64, true),
        ]))
    }

    /// Rows `(t, v, key)`; `None` is NULL.
    fn batch(rows: &[(Option<i64>, i64, Option<i64>)]) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(arrow::array::TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )?)
    }

    fn spec(
        lower: Option<i64>,
        upper: Option<i64>,
        predicates: Vec<PairPredicate>,
    ) -> Arc<IntervalJoinSpec> {
        let f = |n: &str, t: DataType| Field::new(n, t, true);
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(IntervalJoinSpec {
            widths: [2, 2],
            time: (lower.is_some() || upper.is_some()).then_some([0, 0]),
            lower,
            upper,
            predicates,
            keys: [KeySelector::column("__jk0"), KeySelector::column("__jk0")],
            output: Arc::new(Schema::new(vec![
                f("lt", ts.clone()),
                f("lv", DataType::Int64),
                f("rt", ts),
                f("rv", DataType::Int64),
            ])),
        })
    }

    /// The row-at-a-time join with the same bounds, the reference.
    fn reference(s: &IntervalJoinSpec) -> Result<Box<dyn Operator>> {
        row_join(s, &MemoryStateBackend::default())
    }

    /// The row-at-a-time join with the same bounds on `backend`.
    fn row_join(
        s: &IntervalJoinSpec,
        backend: &dyn flink_rs_core::state::StateBackend,
    ) -> Result<Box<dyn Operator>> {
        let mut f = StreamJoin::new(
            [2, 2],
            s.time.map(|_| TimeColumns { left: 0, right: 0 }),
            TimeBounds {
                lower: s.lower,
                upper: s.upper,
            },
        );
        f.predicates = s.predicates.clone();
        let k = |_| Some(KeySelector::column("__jk0"));
        Ok(Box::new(ProcessOperator::new(
            f,
            vec![(k(0), None), (k(1), None)],
            s.output.clone(),
            backend,
            &OperatorContext::single("join"),
        )?))
    }

    enum Step {
        Batch(usize, RecordBatch),
        Watermark(i64),
        /// Checkpoint the columnar join and continue with a new instance restored from it.
        Restore,
    }

    /// Random interleavings of both inputs (out of order, late rows, NULL keys and times,
    /// duplicate keys) and watermarks.
    fn script(seed: u64) -> Result<Vec<Step>> {
        let mut g = Lcg(seed);
        let mut steps = Vec::new();
        let mut wm = -1_000;
        let mut clock = 0i64;
        for _ in 0..60 {
            match g.next(10) {
                0..=6 => {
                    let side = g.next(2) as usize;
                    let rows: Vec<_> = (0..g.next(20))
                        .map(|i| {
                            let t = (clock + g.next(400) as i64 - 250).max(0);
                            let t = (g.next(30) != 0).then_some(t);
                            let k = (g.next(25) != 0).then(|| g.next(6) as i64);
                            (t, i as i64 + 100 * side as i64, k)
                        })
                        .collect();
                    clock += 40;
                    steps.push(Step::Batch(side, batch(&rows)?));
                }
                7 | 8 => {
                    wm = wm.max(clock - 300 + g.next(100) as i64);
                    steps.push(Step::Watermark(wm));
                }
                _ => steps.push(Step::Restore),
            }
        }
        Ok(steps)
    }

    fn run_both(s: Arc<IntervalJoinSpec>, seed: u64) -> Result<(Vec<String>, Vec<String>)> {
        let ctx = OperatorContext::single("join");
        let mut reference = reference(&s)?;
        let mut columnar = IntervalJoinOperator::new(s.clone(), &ctx);
        let (mut want, mut got) = (Rows::default(), Rows::default());
        let mut wm = MIN_WATERMARK;
        for step in script(seed)? {
            match step {
                Step::Batch(side, b) => {
                    reference.process_batch(side, b.clone(), &mut want)?;
                    columnar.process_batch(side, b, &mut got)?;
                }
                Step::Watermark(w) => {
                    wm = w;
                    reference.process_watermark(w, &mut want)?;
                    columnar.process_watermark(w, &mut got)?;
                }
                Step::Restore => {
                    let snap = columnar
                        .snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
                    columnar = IntervalJoinOperator::new(s.clone(), &ctx);
                    columnar.restore_state(RestoredState {
                        checkpoint_id: 1,
                        keyed: snap
                            .keyed
                            .into_iter()
                            .map(|(kg, b)| (kg, b.into()))
                            .collect(),
                        operator: Vec::new(),
                        old_parallelism: 1,
                        layout: None,
                    })?;
                    // The watermark is not part of a checkpoint; the inputs send it again.
                    if wm != MIN_WATERMARK {
                        columnar.process_watermark(wm, &mut got)?;
                    }
                }
            }
        }
        want.0.sort();
        got.0.sort();
        Ok((want.0, got.0))
    }

    /// The columnar join until the script's first restore, then its snapshot taken over by
    /// the row-at-a-time join on the disk backend (what `state.backend.type: disk` plans),
    /// against the reference run without any restore.
    fn run_moved_to_disk(
        s: Arc<IntervalJoinSpec>,
        seed: u64,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
        let disk = flink_rs_core::state::DiskStateBackend::new(flink_rs_core::state::DiskOptions {
            managed_memory: 4 << 20,
            local_dir: Some(dir.path().to_path_buf()),
            incremental: false,
            ..Default::default()
        });
        let ctx = OperatorContext::single("join");
        let mut reference = reference(&s)?;
        let mut op: Box<dyn Operator> = Box::new(IntervalJoinOperator::new(s.clone(), &ctx));
        let (mut want, mut got) = (Rows::default(), Rows::default());
        let (mut wm, mut moved) = (MIN_WATERMARK, false);
        for step in script(seed)? {
            match step {
                Step::Batch(side, b) => {
                    reference.process_batch(side, b.clone(), &mut want)?;
                    op.process_batch(side, b, &mut got)?;
                }
                Step::Watermark(w) => {
                    wm = w;
                    reference.process_watermark(w, &mut want)?;
                    op.process_watermark(w, &mut got)?;
                }
                Step::Restore if !moved => {
                    moved = true;
                    let snap =
                        op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
                    op = row_join(&s, &disk)?;
                    op.restore_state(RestoredState {
                        keyed: snap
                            .keyed
                            .into_iter()
                            .map(|(kg, b)| (kg, b.into()))
                            .collect(),
                        layout: Some(STATE_LAYOUT.into()),
                        ..RestoredState::default()
                    })?;
                    if wm != MIN_WATERMARK {
                        op.process_watermark(wm, &mut got)?;
                    }
                }
                Step::Restore => {}
            }
        }
        want.0.sort();
        got.0.sort();
        Ok((want.0, got.0))
    }

    #[test]
    fn a_backend_that_spills_takes_the_columnar_state_over() -> Result<()> {
        let cases = [
            spec(Some(-100), Some(0), vec![]),
            spec(Some(20), Some(300), vec![]),
            spec(None, Some(0), vec![]),
            spec(None, None, vec![]),
        ];
        let mut total = 0;
        for (c, s) in cases.into_iter().enumerate() {
            for seed in 0..20 {
                let (want, got) = run_moved_to_disk(s.clone(), seed * 11 + c as u64)?;
                assert_eq!(got, want, "case {c}, seed {seed}");
                total += want.len();
            }
        }
        assert!(total > 500, "the inputs must produce matches: {total}");
        Ok(())
    }

    #[test]
    fn equals_the_row_at_a_time_join_on_random_inputs() -> Result<()> {
        use crate::operators::join_condition::Operand;
        let greater = PairPredicate {
            a: Operand::Left(1),
            op: std::cmp::Ordering::Greater,
            or_equal: false,
            negated: false,
            b: Operand::Literal(Value::Int(5)),
        };
        let cases = [
            spec(Some(-100), Some(0), vec![]),
            spec(Some(-10), Some(50), vec![]),
            spec(Some(0), Some(0), vec![]),
            spec(Some(20), Some(300), vec![greater]),
            spec(None, Some(0), vec![]),
            spec(Some(-50), None, vec![]),
            spec(Some(10), Some(-10), vec![]),
            // A regular join: no time bounds, nothing expires.
            spec(None, None, vec![]),
        ];
        let mut total = 0;
        for (c, s) in cases.into_iter().enumerate() {
            for seed in 0..25 {
                let (want, got) = run_both(s.clone(), seed * 7 + c as u64)?;
                assert_eq!(got, want, "case {c}, seed {seed}");
                total += want.len();
            }
        }
        assert!(total > 1000, "the inputs must produce matches: {total}");
        Ok(())
    }

    #[test]
    fn expired_segments_are_dropped_and_a_checkpoint_moves_rows_by_key_group() -> Result<()> {
        let s = spec(Some(-1_000), Some(0), vec![]);
        let mut op = IntervalJoinOperator::new(s.clone(), &OperatorContext::single("join"));
        let rows: Vec<_> = (0..1_000)
            .map(|i| (Some(i * 10), i, Some(i % 50)))
            .collect();
        op.process_batch(0, batch(&rows)?, &mut Rows::default())?;
        assert_eq!(op.stored_rows(), 1_000);
        // Left rows at t expire at t + 1000.
        op.process_watermark(5_000, &mut Rows::default())?;
        let left = op.stored_rows();
        assert!((600..=700).contains(&left), "{left} rows left");
        op.process_watermark(11_000, &mut Rows::default())?;
        assert_eq!(op.stored_rows(), 0);

        // Split a checkpoint between two instances: each takes its key groups, and together
        // they hold every row.
        let mut op = IntervalJoinOperator::new(s.clone(), &OperatorContext::single("join"));
        op.process_batch(0, batch(&rows)?, &mut Rows::default())?;
        let snap = op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
        let mut held = 0;
        for subtask in 0..2 {
            let ctx = OperatorContext {
                subtask,
                parallelism: 2,
                ..OperatorContext::single("join")
            };
            let mut op = IntervalJoinOperator::new(s.clone(), &ctx);
            let keyed = snap
                .keyed
                .iter()
                .filter(|(kg, _)| ctx.key_groups().contains(kg))
                .map(|(kg, b)| (*kg, b.clone().into()))
                .collect();
            op.restore_state(RestoredState {
                keyed,
                ..RestoredState::default()
            })?;
            held += op.stored_rows();
        }
        assert_eq!(held, 1_000);

        let mut op = IntervalJoinOperator::new(s, &OperatorContext::single("join"));
        let err = op.restore_state(RestoredState {
            keyed: vec![(3, vec![9u8, 1, 2].into())],
            ..RestoredState::default()
        });
        assert!(err.is_err_and(|e| e.to_string().contains("key group 3")));
        Ok(())
    }
}
