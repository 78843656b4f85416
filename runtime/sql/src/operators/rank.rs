//! `ROW_NUMBER()`, `RANK()` and `DENSE_RANK()` `OVER (PARTITION BY … ORDER BY …)`: Top-N and
//! deduplication (`WHERE rn <= N`, `rn = 1`).
//!
//! A partition's rows are numbered once the partition is complete: per window when the
//! PARTITION BY includes a window's end (Flink's window Top-N, emitted when the watermark
//! passes the window), or at the end of a bounded input. With a `rn <= N` filter above a
//! ROW_NUMBER, a partition keeps only its N best rows in state. Anything else would be an
//! updating result, which is refused.

use std::cmp::Ordering;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use flink_rs_core::checkpoint::{Barrier, OperatorSnapshot, RestoredState};
use flink_rs_core::element::{MAX_WATERMARK, Timestamp};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::key::{Key, KeyGroup, KeySelector};
use flink_rs_core::operator::{Operator as StreamOperator, OperatorContext, Output};
use flink_rs_core::operators::{ProcessContext, ProcessFunction, RowCollector};
use flink_rs_core::rows::{Row, RowBatchBuilder, Value, array_value, row_at};
use flink_rs_core::state::{FastMap, ListState, StateRegistry, TimeDomain};

/// Which number a window function gives a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    RowNumber,
    Rank,
    DenseRank,
}

/// One ORDER BY column: its index in the row, direction, and where NULLs go.
#[derive(Debug, Clone, Copy)]
pub struct OrderKey {
    pub index: usize,
    pub asc: bool,
    pub nulls_first: bool,
}

fn compare(a: &Row, b: &Row, keys: &[OrderKey]) -> Ordering {
    for k in keys {
        let (x, y) = (&a[k.index], &b[k.index]);
        let o = match (x == &Value::Null, y == &Value::Null) {
            (true, true) => Ordering::Equal,
            (true, false) if k.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if k.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let o = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                if k.asc { o } else { o.reverse() }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The keyed process function: rows of a partition (the key) wait in state until the
/// partition is complete, then are sorted, numbered and emitted.
#[derive(Clone)]
pub struct RankFunction {
    /// Columns of the input passed through (helper columns follow them).
    pub width: usize,
    pub order: Vec<OrderKey>,
    pub kinds: Vec<RankKind>,
    /// Index of the window-end column among the row's values (None: bounded input, numbered
    /// at its end).
    pub window_end: Option<usize>,
    /// Keep only this many rows per partition (a `ROW_NUMBER() … <= N` filter follows).
    pub limit: Option<usize>,
    /// Unbounded Top-N: emit each change of the top `limit` rows as it happens (`+I`, and
    /// `-U`/`+U` for every position whose row changed, a row kind column last) instead of
    /// numbering a complete partition.
    pub updating: bool,
    rows: Option<ListState<Row>>,
}

impl RankFunction {
    pub fn new(
        width: usize,
        order: Vec<OrderKey>,
        kinds: Vec<RankKind>,
        window_end: Option<usize>,
        limit: Option<usize>,
    ) -> Self {
        RankFunction {
            width,
            order,
            kinds,
            window_end,
            limit,
            updating: false,
            rows: None,
        }
    }
}

impl ProcessFunction for RankFunction {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.rows = Some(states.list("rank-rows"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(rows) = &self.rows else {
            return Err(Error::User("rank not opened".into()));
        };
        if self.updating {
            let n = self.limit.unwrap_or(0);
            let order = &self.order;
            let width = self.width;
            let changes = rows.modify(ctx, |kept| {
                let at = kept.partition_point(|r| compare(r, row, order) != Ordering::Greater);
                if at >= n {
                    return Vec::new();
                }
                let old: Vec<Row> = kept[at..].to_vec();
                if kept.len() >= n {
                    kept.pop();
                }
                kept.insert(at, row.clone());
                // Every position from `at` on holds another row now.
                let numbered = |r: &Row, i: usize, kind: &str| {
                    let mut o: Row = r[..width.min(r.len())].to_vec();
                    o.push(Value::Int(i as i64 + 1));
                    o.push(Value::Str(kind.to_string()));
                    o
                };
                let mut changes = Vec::new();
                for (k, new) in kept[at..].iter().enumerate() {
                    match old.get(k) {
                        Some(prev) => {
                            changes.push(numbered(prev, at + k, "-U"));
                            changes.push(numbered(new, at + k, "+U"));
                        }
                        None => changes.push(numbered(new, at + k, "+I")),
                    }
                }
                changes
            });
            for c in changes {
                out.collect(c)?;
            }
            return Ok(());
        }
        let fire_at = match self.window_end {
            Some(i) => {
                let t = row
                    .get(i)
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(1);
                if t <= ctx.current_watermark() {
                    return Ok(()); // late: its window was numbered already
                }
                t
            }
            None => i64::MAX,
        };
        // At the end of input every key fires once: its timer is registered with its first
        // row (a timer lookup per row is most of the cost with millions of keys).
        let first = match self.limit {
            Some(n) => {
                // Keep the N best rows, in order (the new row goes after its equals).
                let order = &self.order;
                rows.modify(ctx, |kept| {
                    let first = kept.is_empty();
                    let at = kept.partition_point(|r| compare(r, row, order) != Ordering::Greater);
                    if at < n {
                        if kept.len() >= n {
                            kept.pop();
                        }
                        kept.insert(at, row.clone());
                    }
                    first
                })
            }
            None => rows.modify(ctx, |kept| {
                kept.push(row.clone());
                kept.len() == 1
            }),
        };
        if first || fire_at != i64::MAX {
            ctx.register_event_time_timer(fire_at);
        }
        Ok(())
    }

    /// The Top-N of a bounded input run by [`TopNAtEndOperator`] on the heap backend: its
    /// kept rows, each key's in order.
    fn foreign_rows(
        &self,
        layout: &str,
        kg: KeyGroup,
        blob: &[u8],
    ) -> Result<Option<flink_rs_core::operators::ForeignRows>> {
        if layout != TOP_N_AT_END_STATE_LAYOUT {
            return Ok(None);
        }
        let entries = TopNAtEndOperator::decode_key_group(kg, blob)?;
        Ok(Some(flink_rs_core::operators::ForeignRows::Keyed(
            entries
                .into_iter()
                .flat_map(|(key, rows)| rows.into_iter().map(move |r| (0, key.clone(), r)))
                .collect(),
        )))
    }

    /// A kept row of [`TopNAtEndOperator`], in its key's order: kept as the N best are here,
    /// with the key's timer at the end of input.
    fn restore_element(
        &mut self,
        _input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
    ) -> Result<()> {
        let (Some(rows), None, false) = (&self.rows, self.window_end, self.updating) else {
            return Err(Error::User(
                "only the Top-N of a bounded input takes over another operator's rows".into(),
            ));
        };
        let first = rows.modify(ctx, |kept| {
            kept.push(row.clone());
            kept.len() == 1
        });
        if first {
            ctx.register_event_time_timer(i64::MAX);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _ts: Timestamp,
        _domain: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let Some(state) = &self.rows else {
            return Ok(());
        };
        let mut rows = state.get(ctx);
        state.clear(ctx);
        rows.sort_by(|a, b| compare(a, b, &self.order));
        let (mut rank, mut dense) = (0i64, 0i64);
        for (i, r) in rows.iter().enumerate() {
            let tie = i > 0 && compare(&rows[i - 1], r, &self.order) == Ordering::Equal;
            if !tie {
                rank = i as i64 + 1;
                dense += 1;
            }
            let mut o: Row = r[..self.width.min(r.len())].to_vec();
            o.extend(self.kinds.iter().map(|k| {
                Value::Int(match k {
                    RankKind::RowNumber => i as i64 + 1,
                    RankKind::Rank => rank,
                    RankKind::DenseRank => dense,
                })
            }));
            out.collect(o)?;
        }
        Ok(())
    }
}

/// [`TopNAtEndOperator`]'s state layout, as checkpoints record it.
pub const TOP_N_AT_END_STATE_LAYOUT: &str = "top-n-at-end";

/// Top-N of a bounded input (`ROW_NUMBER() … <= N`, no window), numbered at its end: the
/// same rows as [`RankFunction`] with a limit and no window, without materializing every row.
/// A row's ORDER BY values are read first and compared with its key's kept rows; only a row
/// that enters the key's N best is materialized and stored (ties keep arrival order: a new
/// row goes after its equals). Checkpoints hold each key group's kept rows.
pub struct TopNAtEndOperator {
    width: usize,
    order: Vec<OrderKey>,
    numbers: usize,
    n: usize,
    key: KeySelector,
    max_parallelism: u16,
    key_groups: std::ops::Range<KeyGroup>,
    kept: FastMap<Key, Vec<Row>>,
    /// A row with only the ORDER BY columns read (the others NULL), reused.
    probe: Row,
    builder: RowBatchBuilder,
}

impl TopNAtEndOperator {
    /// `numbers` ROW_NUMBER columns follow the `width` passed-through ones in `output`.
    pub fn new(
        f: &RankFunction,
        n: usize,
        key: KeySelector,
        output: SchemaRef,
        ctx: &OperatorContext,
    ) -> Result<Self> {
        Ok(TopNAtEndOperator {
            width: f.width,
            order: f.order.clone(),
            numbers: f.kinds.len(),
            n,
            key,
            max_parallelism: ctx.max_parallelism,
            key_groups: ctx.key_groups(),
            kept: FastMap::default(),
            probe: Vec::new(),
            builder: RowBatchBuilder::new(output)?,
        })
    }
}

impl TopNAtEndOperator {
    /// One key group of a checkpoint: each key's kept rows, best first. Also read by the
    /// rank function, which takes this state over when a job moves to a backend that
    /// spills.
    pub fn decode_key_group(kg: KeyGroup, blob: &[u8]) -> Result<Vec<(Key, Vec<Row>)>> {
        bincode::deserialize(blob)
            .map_err(|e| Error::state("top-n", format!("key group {kg}: {e}")))
    }
}

impl StreamOperator for TopNAtEndOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut dyn Output,
    ) -> Result<()> {
        let keys = self.key.extract(&batch)?;
        self.probe.clear();
        self.probe.resize(batch.num_columns(), Value::Null);
        for r in 0..batch.num_rows() {
            for k in self.order.iter() {
                if let Some(c) = batch.columns().get(k.index) {
                    self.probe[k.index] = array_value(c, r);
                }
            }
            let kept = self.kept.entry(keys.key(r)).or_default();
            let at =
                kept.partition_point(|x| compare(x, &self.probe, &self.order) != Ordering::Greater);
            if at < self.n {
                if kept.len() >= self.n {
                    kept.pop();
                }
                kept.insert(at, row_at(&batch, r));
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        if watermark == MAX_WATERMARK {
            // The input has ended: number every key's rows.
            let mut o: Row = Vec::new();
            for (_, rows) in self.kept.drain() {
                for (i, r) in rows.iter().enumerate() {
                    o.clear();
                    o.extend_from_slice(&r[..self.width.min(r.len())]);
                    o.extend(std::iter::repeat_n(Value::Int(i as i64 + 1), self.numbers));
                    self.builder.push(&o)?;
                }
                if self.builder.len() >= 8192 {
                    out.emit(self.builder.finish()?)?;
                }
            }
            if !self.builder.is_empty() {
                out.emit(self.builder.finish()?)?;
            }
        }
        out.emit_watermark(watermark)
    }

    fn snapshot_state(&mut self, _barrier: &Barrier) -> Result<OperatorSnapshot> {
        let mut groups: std::collections::BTreeMap<KeyGroup, Vec<(&Key, &Vec<Row>)>> =
            Default::default();
        for (k, rows) in &self.kept {
            groups
                .entry(k.key_group(self.max_parallelism))
                .or_default()
                .push((k, rows));
        }
        let keyed = groups
            .into_iter()
            .map(|(kg, entries)| {
                bincode::serialize(&entries)
                    .map(|b| (kg, b))
                    .map_err(|e| Error::state("top-n", e))
            })
            .collect::<Result<_>>()?;
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
            self.kept.extend(Self::decode_key_group(*kg, blob)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_sql_with_nulls_placed_as_asked() {
        let rows: Vec<Row> = vec![vec![Value::Int(2)], vec![Value::Null], vec![Value::Int(1)]];
        let sorted = |asc, nulls_first| {
            let mut r = rows.clone();
            let k = [OrderKey {
                index: 0,
                asc,
                nulls_first,
            }];
            r.sort_by(|a, b| compare(a, b, &k));
            r.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
        };
        use Value::{Int, Null};
        assert_eq!(sorted(true, false), vec![Int(1), Int(2), Null]);
        assert_eq!(sorted(true, true), vec![Null, Int(1), Int(2)]);
        assert_eq!(sorted(false, true), vec![Null, Int(2), Int(1)]);
        assert_eq!(sorted(false, false), vec![Int(2), Int(1), Null]);
    }
}

#[cfg(test)]
mod top_n_tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use flink_rs_core::operators::ProcessOperator;
    use flink_rs_core::state::MemoryStateBackend;
    use flink_rs_core::testing::{CollectRows, Lcg};

    /// Rows `(v, key, order)`: `order` may be NULL; the key and the order column follow the
    /// passed-through `v`, as the planner lays them out.
    fn batch(rows: &[(i64, i64, Option<f64>)]) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("k", DataType::Int64, false),
            Field::new("o", DataType::Float64, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )?)
    }

    #[test]
    fn top_n_at_end_equals_the_rank_function_across_restores() -> Result<()> {
        let output = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("rn", DataType::Int64, true),
        ]));
        let ctx = OperatorContext::single("rank");
        let mut total = 0;
        for seed in 0..40u64 {
            let mut g = Lcg(seed);
            let (n, asc, nulls_first) = (1 + g.next(4) as usize, g.next(2) == 0, g.next(2) == 0);
            let order = vec![OrderKey {
                index: 2,
                asc,
                nulls_first,
            }];
            let f = RankFunction::new(1, order, vec![RankKind::RowNumber], None, Some(n));
            let mut reference = ProcessOperator::new(
                f.clone(),
                vec![(Some(KeySelector::column("k")), None)],
                output.clone(),
                &MemoryStateBackend::default(),
                &ctx,
            )?;
            let new = |f: &RankFunction| {
                TopNAtEndOperator::new(f, n, KeySelector::column("k"), output.clone(), &ctx)
            };
            let mut op = new(&f)?;
            let (mut want, mut got) = (CollectRows::default(), CollectRows::default());
            let mut v = 0;
            for _ in 0..30 {
                if g.next(6) == 0 {
                    let snap =
                        op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
                    op = new(&f)?;
                    op.restore_state(RestoredState {
                        keyed: snap
                            .keyed
                            .into_iter()
                            .map(|(kg, b)| (kg, b.into()))
                            .collect(),
                        ..RestoredState::default()
                    })?;
                }
                let rows: Vec<_> = (0..g.next(40))
                    .map(|_| {
                        v += 1;
                        // Few distinct values: ties and NULLs are common.
                        let o = (g.next(8) != 0).then(|| g.next(6) as f64);
                        (v, g.next(7) as i64, o)
                    })
                    .collect();
                let b = batch(&rows)?;
                reference.process_batch(0, b.clone(), &mut want)?;
                op.process_batch(0, b, &mut got)?;
            }
            reference.process_watermark(MAX_WATERMARK, &mut want)?;
            op.process_watermark(MAX_WATERMARK, &mut got)?;
            want.0.sort();
            got.0.sort();
            assert_eq!(got.0, want.0, "seed {seed}: top {n}, asc {asc}");
            total += want.0.len();
        }
        assert!(total > 500, "{total} rows numbered");
        Ok(())
    }

    /// A snapshot of the heap backend's Top-N, taken mid-input, taken over by the rank
    /// function on the disk backend (as `state.backend.type: disk` plans it): the same rows
    /// numbered the same way as an uninterrupted run.
    #[test]
    fn the_rank_function_on_disk_takes_the_top_n_at_end_over() -> Result<()> {
        let output = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("rn", DataType::Int64, true),
        ]));
        let ctx = OperatorContext::single("rank");
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
        let disk = flink_rs_core::state::DiskStateBackend::new(flink_rs_core::state::DiskOptions {
            managed_memory: 4 << 20,
            local_dir: Some(dir.path().to_path_buf()),
            incremental: false,
            ..Default::default()
        });
        let mut total = 0;
        for seed in 0..20u64 {
            let mut g = Lcg(seed + 100);
            let (n, asc) = (1 + g.next(4) as usize, g.next(2) == 0);
            let order = vec![OrderKey {
                index: 2,
                asc,
                nulls_first: g.next(2) == 0,
            }];
            let f = RankFunction::new(1, order, vec![RankKind::RowNumber], None, Some(n));
            let keyed = || vec![(Some(KeySelector::column("k")), None)];
            let mut reference = ProcessOperator::new(
                f.clone(),
                keyed(),
                output.clone(),
                &MemoryStateBackend::default(),
                &ctx,
            )?;
            let mut op: Box<dyn StreamOperator> = Box::new(TopNAtEndOperator::new(
                &f,
                n,
                KeySelector::column("k"),
                output.clone(),
                &ctx,
            )?);
            let (mut want, mut got) = (CollectRows::default(), CollectRows::default());
            let mut v = 0;
            for step in 0..30 {
                if step == 15 {
                    let snap =
                        op.snapshot_state(&flink_rs_core::checkpoint::Barrier::checkpoint(1))?;
                    op = Box::new(ProcessOperator::new(
                        f.clone(),
                        keyed(),
                        output.clone(),
                        &disk,
                        &ctx,
                    )?);
                    op.restore_state(RestoredState {
                        keyed: snap
                            .keyed
                            .into_iter()
                            .map(|(kg, b)| (kg, b.into()))
                            .collect(),
                        layout: Some(TOP_N_AT_END_STATE_LAYOUT.into()),
                        ..RestoredState::default()
                    })?;
                }
                let rows: Vec<_> = (0..g.next(40))
                    .map(|_| {
                        v += 1;
                        let o = (g.next(8) != 0).then(|| g.next(6) as f64);
                        (v, g.next(7) as i64, o)
                    })
                    .collect();
                let b = batch(&rows)?;
                reference.process_batch(0, b.clone(), &mut want)?;
                op.process_batch(0, b, &mut got)?;
            }
            reference.process_watermark(MAX_WATERMARK, &mut want)?;
            op.process_watermark(MAX_WATERMARK, &mut got)?;
            want.0.sort();
            got.0.sort();
            assert_eq!(got.0, want.0, "seed {seed}: top {n}, asc {asc}");
            total += want.0.len();
        }
        assert!(total > 200, "{total} rows numbered");
        Ok(())
    }
}
