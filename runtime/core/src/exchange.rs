//! The end of a task's operator chain: sends batches and control elements to the downstream
//! tasks of every outgoing edge, splitting batches by key group for hash edges.
//!
//! Hash edges split each batch into one piece per downstream subtask; pieces are buffered per
//! target until they reach `batch_size` rows or have waited `linger` (Flink's buffer timeout),
//! so that high parallelism does not turn into tiny batches. Every buffer is flushed before a
//! control element is sent, which keeps data and watermarks in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::UInt32Array;
use arrow::compute::{concat_batches, take_record_batch};
use arrow::record_batch::RecordBatch;
use crossbeam_channel::Sender;

use crate::element::{StreamElement, Timestamp};
use crate::error::{Error, Result};
use crate::key::{KeyGroup, KeySelector, operator_index_for_key_group};

/// A stream element tagged with the input channel it arrives on at the receiving task.
#[derive(Debug)]
pub struct Envelope {
    pub channel: u32,
    pub elem: StreamElement,
}

/// One downstream subtask as seen from a sender.
#[derive(Clone)]
pub struct Target {
    pub tx: Sender<Envelope>,
    pub channel: u32,
    /// The sending task's counters (time blocked on a full channel goes there).
    pub metrics: Option<Arc<TaskMetrics>>,
}

impl Target {
    pub fn new(tx: Sender<Envelope>, channel: u32) -> Self {
        Target {
            tx,
            channel,
            metrics: None,
        }
    }

    fn send(&self, elem: StreamElement) -> Result<()> {
        let env = Envelope {
            channel: self.channel,
            elem,
        };
        // The receiver is gone only when its task stopped: the job is being torn down.
        match self.tx.try_send(env) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(Error::Cancelled),
            Err(crossbeam_channel::TrySendError::Full(env)) => {
                // Backpressure: the downstream task is behind; count the time waited.
                let t = Instant::now();
                if let Some(m) = &self.metrics {
                    m.blocked_since_ms
                        .store(crate::operator::now_millis().max(1), Ordering::Relaxed);
                }
                let r = self.tx.send(env).map_err(|_| Error::Cancelled);
                if let Some(m) = &self.metrics {
                    m.blocked_since_ms.store(0, Ordering::Relaxed);
                    m.backpressured_ns
                        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                r
            }
        }
    }
}

pub enum Route {
    Forward,
    Hash {
        key: KeySelector,
        /// Downstream subtask of each key group.
        owner: Vec<u32>,
    },
    Rebalance {
        next: usize,
    },
    Broadcast,
}

#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    since: Option<Instant>,
}

/// The senders of one outgoing edge.
pub struct EdgeOutput {
    pub side_output: Option<String>,
    pub route: Route,
    pub targets: Vec<Target>,
    pending: Vec<Pending>,
}

impl EdgeOutput {
    pub fn new(side_output: Option<String>, route: Route, targets: Vec<Target>) -> Self {
        let pending = (0..targets.len()).map(|_| Pending::default()).collect();
        EdgeOutput {
            side_output,
            route,
            targets,
            pending,
        }
    }
}

/// Counts shared with whoever watches the job (records out of a chain).
#[derive(Debug)]
pub struct TaskMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Time the task waited on full output channels (backpressure), in nanoseconds, not
    /// counting a wait in progress.
    pub backpressured_ns: AtomicU64,
    /// When the wait in progress began (epoch ms), 0 when the task is not waiting.
    pub blocked_since_ms: AtomicI64,
    /// The last watermark the task emitted (`i64::MIN` before any).
    pub watermark: AtomicI64,
    /// The watermark of the task's input, the minimum over its channels (`i64::MIN` before
    /// any; sources have none).
    pub input_watermark: AtomicI64,
    /// Time the task waited for input with nothing to do, in nanoseconds (Flink's idle time).
    pub idle_ns: AtomicU64,
    /// Bytes of the batches into and out of the task: their Arrow buffers' size in memory
    /// (Flink counts serialized bytes; for Arrow columns the two are close).
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            blocked_since_ms: AtomicI64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            input_watermark: AtomicI64::new(i64::MIN),
            idle_ns: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

impl TaskMetrics {
    /// Time waited on full output channels so far, a wait in progress included.
    pub fn backpressured(&self) -> Duration {
        let done = Duration::from_nanos(self.backpressured_ns.load(Ordering::Relaxed));
        let since = self.blocked_since_ms.load(Ordering::Relaxed);
        if since > 0 {
            let now = crate::operator::now_millis();
            done + Duration::from_millis(now.saturating_sub(since).max(0) as u64)
        } else {
            done
        }
    }
}

/// Sends what a chain produces to the tasks downstream.
pub struct Emitter {
    edges: Vec<EdgeOutput>,
    batch_size: usize,
    /// The buffer timeout: `None` sends only full batches (and flushes before control
    /// elements); zero sends every piece at once.
    linger: Option<Duration>,
    max_parallelism: u16,
    key_groups: Vec<KeyGroup>,
    indices: Vec<Vec<u32>>,
    metrics: Arc<TaskMetrics>,
    cancel: Arc<AtomicBool>,
}

impl Emitter {
    pub fn new(
        mut edges: Vec<EdgeOutput>,
        batch_size: usize,
        linger: Option<Duration>,
        max_parallelism: u16,
        metrics: Arc<TaskMetrics>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        for t in edges.iter_mut().flat_map(|e| e.targets.iter_mut()) {
            t.metrics = Some(metrics.clone());
        }
        Emitter {
            edges,
            batch_size,
            linger,
            max_parallelism,
            key_groups: Vec::new(),
            indices: Vec::new(),
            metrics,
            cancel,
        }
    }

    /// Emits on the main output (`side = None`) or a side output.
    pub fn emit(&mut self, side: Option<&str>, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        self.metrics
            .records_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.metrics
            .bytes_out
            .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
        let n = self.edges.len();
        for i in 0..n {
            if self.edges[i].side_output.as_deref() != side {
                continue;
            }
            self.emit_on_edge(i, batch.clone())?;
        }
        Ok(())
    }

    fn emit_on_edge(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
        let edge = &mut self.edges[i];
        match &mut edge.route {
            Route::Forward => edge.targets[0].send(StreamElement::Batch(batch)),
            Route::Broadcast => {
                for t in &edge.targets {
                    t.send(StreamElement::Batch(batch.clone()))?;
                }
                Ok(())
            }
            Route::Rebalance { next } => {
                let t = *next % edge.targets.len();
                *next = next.wrapping_add(1);
                edge.targets[t].send(StreamElement::Batch(batch))
            }
            Route::Hash { key, owner } => {
                if edge.targets.len() == 1 {
                    return edge.targets[0].send(StreamElement::Batch(batch));
                }
                let cols = key.extract(&batch)?;
                cols.key_groups(self.max_parallelism, &mut self.key_groups);
                self.indices.resize_with(edge.targets.len(), Vec::new);
                for v in &mut self.indices {
                    v.clear();
                }
                for (row, kg) in self.key_groups.iter().enumerate() {
                    self.indices[owner[usize::from(*kg)] as usize].push(row as u32);
                }
                let now = Instant::now();
                for t in 0..edge.targets.len() {
                    if self.indices[t].is_empty() {
                        continue;
                    }
                    let idx = UInt32Array::from(std::mem::take(&mut self.indices[t]));
                    let piece = take_record_batch(&batch, &idx)?;
                    let p = &mut edge.pending[t];
                    p.rows += piece.num_rows();
                    p.batches.push(piece);
                    p.since.get_or_insert(now);
                    if p.rows >= self.batch_size || self.linger == Some(Duration::ZERO) {
                        flush_target(&edge.targets[t], p)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// How often [`Emitter::flush_expired`] must run for the buffer timeout to hold.
    pub fn flush_interval(&self) -> Option<Duration> {
        self.linger.filter(|l| !l.is_zero())
    }

    /// Sends buffered pieces that have waited longer than the buffer timeout.
    pub fn flush_expired(&mut self, now: Instant) -> Result<()> {
        let Some(linger) = self.linger else {
            return Ok(());
        };
        for edge in &mut self.edges {
            for (t, p) in edge.pending.iter_mut().enumerate() {
                if p.since.is_some_and(|s| now.duration_since(s) >= linger) {
                    flush_target(&edge.targets[t], p)?;
                }
            }
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<()> {
        for edge in &mut self.edges {
            for (t, p) in edge.pending.iter_mut().enumerate() {
                flush_target(&edge.targets[t], p)?;
            }
        }
        Ok(())
    }

    /// Broadcasts a control element on every edge, after flushing buffered data.
    fn broadcast(&mut self, elem: StreamElement) -> Result<()> {
        self.flush_all()?;
        for edge in &self.edges {
            for t in &edge.targets {
                t.send(elem.clone())?;
            }
        }
        Ok(())
    }

    pub fn watermark(&mut self, wm: Timestamp) -> Result<()> {
        self.metrics.watermark.store(wm, Ordering::Relaxed);
        self.broadcast(StreamElement::Watermark(wm))
    }

    pub fn idle(&mut self, idle: bool) -> Result<()> {
        self.broadcast(StreamElement::Idle(idle))
    }

    pub fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<()> {
        self.broadcast(StreamElement::Barrier(barrier))
    }

    pub fn end_of_input(&mut self) -> Result<()> {
        self.broadcast(StreamElement::EndOfInput)
    }
}

fn flush_target(target: &Target, p: &mut Pending) -> Result<()> {
    if p.batches.is_empty() {
        return Ok(());
    }
    let batch = if p.batches.len() == 1 {
        p.batches.pop().ok_or(Error::Cancelled)?
    } else {
        let schema = p.batches[0].schema();
        let b = concat_batches(&schema, &p.batches)?;
        p.batches.clear();
        b
    };
    p.rows = 0;
    p.since = None;
    target.send(StreamElement::Batch(batch))
}

/// The owning subtask of every key group for a downstream parallelism.
pub fn key_group_owners(max_parallelism: u16, parallelism: usize) -> Vec<u32> {
    (0..max_parallelism)
        .map(|kg| operator_index_for_key_group(kg, max_parallelism, parallelism) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use crossbeam_channel::{Receiver, unbounded};

    use crate::key::KeySelector;

    /// An emitter with one hash edge to two receivers, and those receivers.
    fn hash_emitter(linger: Option<Duration>) -> (Emitter, Vec<Receiver<Envelope>>) {
        let (mut targets, mut rxs) = (Vec::new(), Vec::new());
        for c in 0..2 {
            let (tx, rx) = unbounded();
            targets.push(Target::new(tx, c));
            rxs.push(rx);
        }
        let max_parallelism = 128;
        let route = Route::Hash {
            key: KeySelector::column("k"),
            owner: (0..max_parallelism).map(|kg| u32::from(kg % 2)).collect(),
        };
        let emitter = Emitter::new(
            vec![EdgeOutput::new(None, route, targets)],
            8192,
            linger,
            max_parallelism,
            Arc::new(TaskMetrics::default()),
            Arc::new(AtomicBool::new(false)),
        );
        (emitter, rxs)
    }

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .expect("a batch of one Int64 column")
    }

    /// Rows received so far, and whether a watermark came after them.
    fn received(rxs: &[Receiver<Envelope>]) -> (usize, bool) {
        let (mut rows, mut watermark) = (0, false);
        for rx in rxs {
            while let Ok(e) = rx.try_recv() {
                match e.elem {
                    StreamElement::Batch(b) => rows += b.num_rows(),
                    StreamElement::Watermark(_) => watermark = true,
                    _ => {}
                }
            }
        }
        (rows, watermark)
    }

    #[test]
    fn a_zero_buffer_timeout_sends_every_piece_at_once() -> Result<()> {
        let (mut e, rxs) = hash_emitter(Some(Duration::ZERO));
        e.emit(None, batch(100))?;
        assert_eq!(received(&rxs), (100, false));
        assert_eq!(
            e.flush_interval(),
            None,
            "nothing is left to flush on a tick"
        );
        Ok(())
    }

    #[test]
    fn a_partly_filled_batch_waits_for_the_buffer_timeout() -> Result<()> {
        let (mut e, rxs) = hash_emitter(Some(Duration::from_millis(40)));
        let start = Instant::now();
        e.emit(None, batch(100))?;
        e.flush_expired(start + Duration::from_millis(20))?;
        assert_eq!(received(&rxs), (0, false), "sent before the timeout");
        e.flush_expired(Instant::now() + Duration::from_millis(40))?;
        assert_eq!(received(&rxs), (100, false));
        assert_eq!(e.flush_interval(), Some(Duration::from_millis(40)));
        Ok(())
    }

    #[test]
    fn without_a_buffer_timeout_only_full_batches_and_control_elements_send() -> Result<()> {
        let (mut e, rxs) = hash_emitter(None);
        e.emit(None, batch(100))?;
        e.flush_expired(Instant::now() + Duration::from_secs(3600))?;
        assert_eq!(
            received(&rxs),
            (0, false),
            "a timeout flushed with the timeout off"
        );
        // Both targets fill up: an 8192-row share each is sent without waiting.
        e.emit(None, batch(20_000))?;
        let (rows, _) = received(&rxs);
        assert!(
            rows >= 2 * 8192,
            "full batches were held back: {rows} rows sent"
        );
        // A watermark sends what is left ahead of itself.
        e.watermark(5)?;
        assert_eq!(received(&rxs), (20_100 - rows, true));
        Ok(())
    }
}
