//! Event-time progress: watermark strategies applied at the source per split, and the
//! combination of per-split and per-channel watermarks as a minimum that ignores idle inputs.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::max;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};

use crate::element::{MIN_WATERMARK, Timestamp};
use crate::error::{Error, Result};
use crate::key::column_index;

/// How a source derives watermarks from the timestamps it reads.
#[derive(Debug, Clone, PartialEq)]
pub enum WatermarkKind {
    /// Watermark = max timestamp seen − delay − 1 ms (Flink's `forBoundedOutOfOrderness`).
    BoundedOutOfOrderness(Duration),
    /// Timestamps never decrease: watermark = max timestamp − 1 ms (`forMonotonousTimestamps`).
    Monotonous,
}

/// A watermark strategy: which column holds event time, how watermarks follow it and after how
/// long without data a split stops holding them back.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkStrategy {
    /// Name of the event-time column (Int64 or Timestamp(ms), epoch milliseconds).
    pub timestamp_column: String,
    /// How the watermark trails the timestamps.
    pub kind: WatermarkKind,
    /// A split without records for this long is idle (`withIdleness`).
    pub idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// `forBoundedOutOfOrderness(delay)` on `column`.
    pub fn bounded_out_of_orderness(column: impl Into<String>, delay: Duration) -> Self {
        WatermarkStrategy {
            timestamp_column: column.into(),
            kind: WatermarkKind::BoundedOutOfOrderness(delay),
            idle_timeout: None,
        }
    }

    /// `forMonotonousTimestamps()` on `column`.
    pub fn monotonous(column: impl Into<String>) -> Self {
        WatermarkStrategy {
            timestamp_column: column.into(),
            kind: WatermarkKind::Monotonous,
            idle_timeout: None,
        }
    }

    /// Marks a split idle after `timeout` without records.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    fn delay_ms(&self) -> i64 {
        match self.kind {
            WatermarkKind::BoundedOutOfOrderness(d) => d.as_millis() as i64,
            WatermarkKind::Monotonous => 0,
        }
    }
}

/// The largest timestamp in a batch's event-time column (`None` for an empty or all-null one).
pub fn max_timestamp(batch: &RecordBatch, column: &str) -> Result<Option<Timestamp>> {
    let idx = column_index(&batch.schema(), column)?;
    let a = batch.column(idx);
    Ok(match a.data_type() {
        DataType::Int64 => max(a.as_primitive::<Int64Type>()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            max(a.as_primitive::<TimestampMillisecondType>())
        }
        other => {
            return Err(Error::ColumnType {
                name: column.to_string(),
                expected: "Int64 or Timestamp(Millisecond) event time".into(),
                actual: other.to_string(),
            });
        }
    })
}

/// Event-time values of a column as `i64` milliseconds (borrowed, no copy).
pub fn timestamps<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a [i64]> {
    let idx = column_index(&batch.schema(), column)?;
    let a = batch.column(idx);
    if a.null_count() > 0 {
        return Err(Error::User(format!(
            "event-time column `{column}` contains nulls"
        )));
    }
    Ok(match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().values(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            a.as_primitive::<TimestampMillisecondType>().values()
        }
        other => {
            return Err(Error::ColumnType {
                name: column.to_string(),
                expected: "Int64 or Timestamp(Millisecond) event time".into(),
                actual: other.to_string(),
            });
        }
    })
}

#[derive(Debug, Clone)]
struct SplitState {
    max_ts: Option<Timestamp>,
    last_activity: Instant,
    finished: bool,
}

/// Tracks the watermark of one source reader over its splits: the minimum of the per-split
/// watermarks, skipping finished splits and (with an idle timeout) idle ones.
#[derive(Debug)]
pub struct SplitWatermarks {
    strategy: WatermarkStrategy,
    splits: Vec<SplitState>,
    emitted: Timestamp,
    idle: bool,
}

/// What the tracker asks its task to emit.
#[derive(Debug, PartialEq, Eq)]
pub enum WatermarkUpdate {
    Nothing,
    Watermark(Timestamp),
    Idle(bool),
}

impl SplitWatermarks {
    /// A tracker over `splits` splits, all active as of now.
    pub fn new(strategy: WatermarkStrategy, splits: usize) -> Self {
        let now = Instant::now();
        SplitWatermarks {
            strategy,
            splits: vec![
                SplitState {
                    max_ts: None,
                    last_activity: now,
                    finished: false,
                };
                splits.max(1)
            ],
            emitted: MIN_WATERMARK,
            idle: false,
        }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> &WatermarkStrategy {
        &self.strategy
    }

    /// Records a batch read from `split`. Returns `Idle(false)` first when the reader was idle.
    pub fn on_batch(&mut self, split: usize, batch: &RecordBatch, now: Instant) -> Result<bool> {
        let ts = max_timestamp(batch, &self.strategy.timestamp_column)?;
        // A reader can gain splits as it runs (Kafka partitions discovered): they start active.
        while self.splits.len() <= split {
            self.splits.push(SplitState {
                max_ts: None,
                last_activity: now,
                finished: false,
            });
        }
        if let Some(s) = self.splits.get_mut(split) {
            if let Some(t) = ts {
                s.max_ts = Some(s.max_ts.map_or(t, |m| m.max(t)));
            }
            s.last_activity = now;
        }
        let was_idle = self.idle;
        self.idle = false;
        Ok(was_idle)
    }

    /// Marks a split as done: it no longer holds the watermark back.
    pub fn on_split_finished(&mut self, split: usize) {
        if let Some(s) = self.splits.get_mut(split) {
            s.finished = true;
        }
    }

    /// The update to emit now, if any.
    pub fn poll(&mut self, now: Instant) -> WatermarkUpdate {
        let delay = self.strategy.delay_ms();
        let mut min: Option<Timestamp> = None;
        let mut any_active = false;
        for s in &self.splits {
            if s.finished {
                continue;
            }
            let idle = self
                .strategy
                .idle_timeout
                .is_some_and(|t| now.duration_since(s.last_activity) >= t);
            if idle {
                continue;
            }
            any_active = true;
            let wm = s
                .max_ts
                .map_or(MIN_WATERMARK, |m| m.saturating_sub(delay).saturating_sub(1));
            min = Some(min.map_or(wm, |x| x.min(wm)));
        }
        // Every split idle, or every split finished while the reader goes on (a Kafka subtask
        // that owns no partition): the reader holds no watermark back.
        if !any_active {
            if !self.idle {
                // As Flink's watermark valve does when its last input goes idle: the highest
                // watermark a split reached goes out first (splits that went quiet together
                // never had the minimum of the others to wait for).
                let max = self
                    .splits
                    .iter()
                    .filter_map(|s| s.max_ts)
                    .map(|m| m.saturating_sub(delay).saturating_sub(1))
                    .max();
                if let Some(wm) = max.filter(|wm| *wm > self.emitted) {
                    self.emitted = wm;
                    return WatermarkUpdate::Watermark(wm);
                }
                self.idle = true;
                return WatermarkUpdate::Idle(true);
            }
            return WatermarkUpdate::Nothing;
        }
        match min {
            Some(wm) if wm > self.emitted => {
                self.emitted = wm;
                WatermarkUpdate::Watermark(wm)
            }
            _ => WatermarkUpdate::Nothing,
        }
    }
}

/// Combines the watermarks of a task's input channels: the minimum over channels that are
/// neither idle nor finished; a task whose live channels are all idle is idle itself.
#[derive(Debug)]
pub struct ChannelWatermarks {
    wms: Vec<Timestamp>,
    idle: Vec<bool>,
    finished: Vec<bool>,
    emitted: Timestamp,
    idle_out: bool,
}

impl ChannelWatermarks {
    /// A combiner for `channels` input channels.
    pub fn new(channels: usize) -> Self {
        ChannelWatermarks {
            wms: vec![MIN_WATERMARK; channels],
            idle: vec![false; channels],
            finished: vec![false; channels],
            emitted: MIN_WATERMARK,
            idle_out: false,
        }
    }

    /// Records a watermark on a channel.
    pub fn on_watermark(&mut self, ch: usize, wm: Timestamp) {
        if let Some(w) = self.wms.get_mut(ch) {
            *w = (*w).max(wm);
        }
    }

    /// Records a channel's idleness.
    pub fn on_idle(&mut self, ch: usize, idle: bool) {
        if let Some(i) = self.idle.get_mut(ch) {
            *i = idle;
        }
    }

    /// Records the end of a channel; returns true when every channel has ended.
    pub fn on_end(&mut self, ch: usize) -> bool {
        if let Some(f) = self.finished.get_mut(ch) {
            *f = true;
        }
        self.finished.iter().all(|f| *f)
    }

    /// What to emit downstream after a change: an idleness change and/or a new watermark.
    pub fn poll(&mut self) -> (Option<bool>, Option<Timestamp>) {
        let mut min: Option<Timestamp> = None;
        let mut live = 0;
        for i in 0..self.wms.len() {
            if self.finished[i] {
                continue;
            }
            live += 1;
            if self.idle[i] {
                continue;
            }
            min = Some(min.map_or(self.wms[i], |m| m.min(self.wms[i])));
        }
        let all_idle = live > 0 && min.is_none();
        let idle_change = (all_idle != self.idle_out).then(|| {
            self.idle_out = all_idle;
            all_idle
        });
        // The end of event time (a bounded input's last watermark) is reached only when
        // every live channel has reached it: an idle channel has merely stopped sending
        // watermarks for now, and its upstream may still send rows (an aggregate of a bounded
        // input emits its result at the end, after its own input went idle).
        let idle_behind = (0..self.wms.len()).any(|i| {
            !self.finished[i] && self.idle[i] && self.wms[i] < crate::element::MAX_WATERMARK
        });
        let combined = if live == 0 {
            Some(crate::element::MAX_WATERMARK)
        } else if min == Some(crate::element::MAX_WATERMARK) && idle_behind {
            None
        } else {
            min
        };
        let wm = match combined {
            Some(w) if w > self.emitted => {
                self.emitted = w;
                Some(w)
            }
            _ => None,
        };
        (idle_change, wm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ts.to_vec()))])
            .expect("valid batch")
    }

    #[test]
    fn split_minimum_and_idleness() -> Result<()> {
        let strat = WatermarkStrategy::bounded_out_of_orderness("ts", Duration::from_millis(10))
            .with_idleness(Duration::from_millis(100));
        let mut t = SplitWatermarks::new(strat, 2);
        let t0 = Instant::now();
        t.on_batch(0, &batch(&[1000, 1200]), t0)?;
        // split 1 has seen nothing yet: watermark held at MIN.
        assert_eq!(t.poll(t0), WatermarkUpdate::Nothing);
        t.on_batch(1, &batch(&[500]), t0)?;
        assert_eq!(t.poll(t0), WatermarkUpdate::Watermark(489));
        // split 1 goes quiet; after the timeout only split 0 counts.
        let later = t0 + Duration::from_millis(150);
        t.on_batch(0, &batch(&[2000]), later)?;
        assert_eq!(t.poll(later), WatermarkUpdate::Watermark(1989));
        // both quiet: the reader is idle.
        let much_later = later + Duration::from_millis(150);
        assert_eq!(t.poll(much_later), WatermarkUpdate::Idle(true));
        Ok(())
    }

    #[test]
    fn splits_going_quiet_together_let_the_highest_watermark_out_first() -> Result<()> {
        let strat = WatermarkStrategy::monotonous("ts").with_idleness(Duration::from_millis(100));
        let mut t = SplitWatermarks::new(strat, 2);
        let t0 = Instant::now();
        t.on_batch(0, &batch(&[1000, 1200]), t0)?;
        // split 1 never read anything: the watermark waits for it...
        assert_eq!(t.poll(t0), WatermarkUpdate::Nothing);
        // ...until both are quiet: then split 0's watermark, then idleness.
        let later = t0 + Duration::from_millis(150);
        assert_eq!(t.poll(later), WatermarkUpdate::Watermark(1199));
        assert_eq!(t.poll(later), WatermarkUpdate::Idle(true));
        assert_eq!(t.poll(later), WatermarkUpdate::Nothing);
        Ok(())
    }

    #[test]
    fn a_reader_whose_splits_all_finished_is_idle_until_a_new_split_brings_rows() -> Result<()> {
        let mut t = SplitWatermarks::new(WatermarkStrategy::monotonous("ts"), 1);
        let t0 = Instant::now();
        t.on_split_finished(0);
        assert_eq!(t.poll(t0), WatermarkUpdate::Idle(true));
        assert_eq!(t.poll(t0), WatermarkUpdate::Nothing);
        // A split it did not have at the start: active again, with that split's watermark.
        assert!(t.on_batch(2, &batch(&[700]), t0)?, "was idle");
        assert_eq!(
            t.poll(t0),
            WatermarkUpdate::Nothing,
            "split 1 has read nothing yet"
        );
        t.on_split_finished(1);
        assert_eq!(t.poll(t0), WatermarkUpdate::Watermark(699));
        Ok(())
    }

    #[test]
    fn channels_combine_as_minimum_ignoring_idle() {
        let mut c = ChannelWatermarks::new(2);
        c.on_watermark(0, 100);
        assert_eq!(c.poll(), (None, None));
        c.on_watermark(1, 50);
        assert_eq!(c.poll(), (None, Some(50)));
        c.on_idle(1, true);
        assert_eq!(c.poll(), (None, Some(100)));
        c.on_idle(0, true);
        assert_eq!(c.poll(), (Some(true), None));
        c.on_idle(0, false);
        c.on_watermark(0, 120);
        assert_eq!(c.poll(), (Some(false), Some(120)));
        assert!(!c.on_end(0));
        assert!(c.on_end(1));
        assert_eq!(c.poll().1, Some(i64::MAX));
    }

    /// An idle channel does not hold event time back, but it does hold back its end: the
    /// subtask behind it may still send rows (an aggregate over a bounded input sends its
    /// result when its own input ends, after its input went idle), and rows that came after
    /// the end of event time would never be emitted by the timers it fires.
    #[test]
    fn the_end_of_event_time_waits_for_idle_channels() {
        let mut c = ChannelWatermarks::new(3);
        c.on_idle(0, true);
        c.on_watermark(1, 100);
        c.on_watermark(2, 200);
        assert_eq!(c.poll(), (None, Some(100)));
        c.on_watermark(1, i64::MAX);
        assert_eq!(c.poll(), (None, Some(200)));
        c.on_watermark(2, i64::MAX);
        assert_eq!(c.poll(), (None, None), "channel 0 is idle, not ended");
        assert!(!c.on_end(1));
        assert!(!c.on_end(2));
        assert_eq!(c.poll(), (Some(true), None));
        c.on_watermark(0, i64::MAX);
        assert_eq!(
            c.poll().1,
            None,
            "an idle channel's watermark does not count"
        );
        assert!(c.on_end(0));
        assert_eq!(c.poll().1, Some(i64::MAX));
    }
}
