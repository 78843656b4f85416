//! A task: one thread running a chain of operators for one parallel subtask, fed either by a
//! source reader or by its input channels.
//!
//! Threading model: one OS thread per task, as Flink runs one thread per task slot. Operator
//! work is CPU-bound and per batch, so a thread that blocks on a full channel is exactly the
//! backpressure we want; nothing here needs an async runtime.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::checkpoint::writer::StateHandles;
use crate::checkpoint::{
    Barrier, CheckpointId, CheckpointingMode, FINAL_CHECKPOINT, OperatorSnapshot,
};
use crate::element::{MAX_WATERMARK, StreamElement, Timestamp};
use crate::error::{Error, Result};
use crate::exchange::{Emitter, Envelope, TaskMetrics};
use crate::graph::NodeId;
use crate::operator::{Operator, Output, now_millis};
use crate::source::{SourcePoll, SourceReader};
use crate::watermark::{ChannelWatermarks, SplitWatermarks, WatermarkUpdate};

/// How often a task fires processing-time timers and flushes lingering buffers (more often
/// when the buffer timeout is shorter).
const TICK: Duration = Duration::from_millis(5);

/// The shortest tick: a buffer timeout under a millisecond is kept to the millisecond.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Operators of one chain plus the exchange at its end.
pub struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
    /// The graph node of each operator in `ops`.
    pub node_ids: Vec<NodeId>,
    pub emitter: Emitter,
}

/// What the job master tells a task.
#[derive(Debug, Clone)]
pub enum TaskControl {
    /// Sources only: snapshot the position and send this barrier.
    Trigger(Barrier),
    /// Where the state files of snapshot `id` go: directory `dir` of the storage at URL
    /// `storage`. Sent, before the trigger, to the tasks that write their own snapshots
    /// (those on taskmanagers); the tasks of the embedded executor ignore it.
    Target {
        id: CheckpointId,
        storage: Arc<str>,
        dir: Arc<str>,
    },
    /// A checkpoint completed: commit what was pre-committed for it.
    Complete(CheckpointId),
    /// Stop-with-savepoint completed: end the task.
    Stop,
}

/// The state of a task's operators, by graph node.
pub type TaskStates = Vec<(NodeId, OperatorSnapshot)>;

/// A task's snapshot as it reaches the job master.
pub enum SnapshotData {
    /// The operators' states, for the master to write (tasks of the embedded executor).
    States(TaskStates),
    /// Written to checkpoint storage where the task runs (a taskmanager): handles only.
    Written(StateHandles),
}

/// What a task tells the job master.
pub enum TaskEvent {
    /// The task took its snapshot for checkpoint `id` (the barrier has passed it).
    Snapshot {
        task: usize,
        id: CheckpointId,
        states: SnapshotData,
        /// How long taking it held the task (the synchronous part).
        sync: Duration,
    },
    /// The task could not take part in checkpoint `id`.
    Declined {
        task: usize,
        id: CheckpointId,
        reason: String,
        /// The task had already finished: the checkpoint is abandoned, not failed (the
        /// job's final checkpoint will cover the end).
        finished: bool,
    },
    /// Every input ended and the task emitted everything; its final state.
    Finished { task: usize, states: TaskStates },
    /// The task's thread ended; `error` when it failed. A failed task hands over its chain
    /// (operators and their state) so the master can free it after the restart instead of
    /// before: freeing a large state takes seconds.
    Exited {
        task: usize,
        error: Option<Error>,
        leftovers: Option<Box<Chain>>,
    },
}

/// A task's connection to the job master.
pub struct TaskLink {
    pub index: usize,
    pub control: Receiver<TaskControl>,
    pub events: Sender<TaskEvent>,
    pub cancel: Arc<AtomicBool>,
    pub mode: CheckpointingMode,
}

impl TaskLink {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn send(&self, e: TaskEvent) {
        // The master outlives every task; a closed channel means the job is being torn down.
        let _ = self.events.send(e);
    }

    /// Snapshots the chain (plus a source reader's position) and reports it.
    fn checkpoint(
        &self,
        chain: &mut Chain,
        barrier: Barrier,
        source: SourceState<'_>,
    ) -> Result<()> {
        // Barrier first, so downstream can start aligning; the state below is taken before
        // this thread touches another element, so it is exactly the state at the barrier.
        chain.emitter.barrier(barrier)?;
        let t0 = Instant::now();
        let snap = chain.snapshot(&barrier, source);
        let sync = t0.elapsed();
        tracing::debug!(
            ms = sync.as_millis() as u64,
            checkpoint = barrier.id,
            "snapshot taken"
        );
        match snap {
            Ok(states) => self.send(TaskEvent::Snapshot {
                task: self.index,
                id: barrier.id,
                states: SnapshotData::States(states),
                sync,
            }),
            Err(e) => self.send(TaskEvent::Declined {
                task: self.index,
                id: barrier.id,
                reason: e.to_string(),
                finished: false,
            }),
        }
        Ok(())
    }

    /// Handles pending control messages; returns true when the task must stop. A source
    /// task passes its reader, which checkpoint triggers snapshot and completions notify;
    /// `stopped` is set when a trigger asks to stop with a savepoint.
    fn poll_control(
        &self,
        chain: &mut Chain,
        mut source: Option<(NodeId, &mut (dyn SourceReader + 'static))>,
        stopped: &mut bool,
    ) -> Result<bool> {
        loop {
            match self.control.try_recv() {
                Ok(TaskControl::Trigger(b)) => {
                    if let Some((node, reader)) = source.as_mut() {
                        *stopped |= b.stop;
                        self.checkpoint(chain, b, Some((*node, &mut **reader, true)))?;
                    }
                }
                Ok(TaskControl::Complete(id)) => {
                    chain.notify_complete(id)?;
                    if let Some((_, reader)) = source.as_mut() {
                        reader.notify_checkpoint_complete(id)?;
                    }
                }
                Ok(TaskControl::Stop) => return Ok(true),
                Ok(TaskControl::Target { .. }) => {}
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Ok(true),
            }
        }
    }

    /// After the input ended: report the final state and wait until the master says the
    /// job's final checkpoint is complete (then commit) or stops the job.
    fn finish(&self, chain: &mut Chain, mut source: SourceState<'_>) -> Result<()> {
        let states = chain.snapshot(
            &Barrier::checkpoint(FINAL_CHECKPOINT),
            source.as_mut().map(|(n, r, req)| (*n, &mut **r, *req)),
        )?;
        self.send(TaskEvent::Finished {
            task: self.index,
            states,
        });
        loop {
            match self.control.recv_timeout(Duration::from_millis(20)) {
                Ok(TaskControl::Trigger(b)) => self.send(TaskEvent::Declined {
                    task: self.index,
                    id: b.id,
                    reason: "the task has finished".into(),
                    finished: true,
                }),
                Ok(TaskControl::Complete(id)) => {
                    chain.notify_complete(id)?;
                    if let Some((_, reader, _)) = source.as_mut() {
                        reader.notify_checkpoint_complete(id)?;
                    }
                    if id == FINAL_CHECKPOINT {
                        return Ok(());
                    }
                }
                Ok(TaskControl::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(TaskControl::Target { .. }) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.cancelled() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A source task's reader (its position is part of the snapshot), or none.
type SourceState<'a> = Option<(NodeId, &'a mut (dyn SourceReader + 'static), bool)>;

/// The [`Output`] of operator i of a chain: operator i+1, or the emitter after the last.
struct ChainOutput<'a> {
    rest: &'a mut [Box<dyn Operator>],
    emitter: &'a mut Emitter,
}

impl Output for ChainOutput<'_> {
    fn emit(&mut self, batch: RecordBatch) -> Result<()> {
        match self.rest.split_first_mut() {
            Some((op, rest)) => op.process_batch(
                0,
                batch,
                &mut ChainOutput {
                    rest,
                    emitter: self.emitter,
                },
            ),
            None => self.emitter.emit(None, batch),
        }
    }

    fn emit_side(&mut self, tag: &str, batch: RecordBatch) -> Result<()> {
        // Only a chain's last operator can have side-output consumers (see the chaining rule).
        if self.rest.is_empty() {
            self.emitter.emit(Some(tag), batch)
        } else {
            Ok(())
        }
    }

    fn emit_watermark(&mut self, watermark: Timestamp) -> Result<()> {
        match self.rest.split_first_mut() {
            Some((op, rest)) => op.process_watermark(
                watermark,
                &mut ChainOutput {
                    rest,
                    emitter: self.emitter,
                },
            ),
            None => self.emitter.watermark(watermark),
        }
    }

    fn emit_idle(&mut self, idle: bool) -> Result<()> {
        self.emitter.idle(idle)
    }
}

impl Chain {
    fn output(&mut self) -> ChainOutput<'_> {
        ChainOutput {
            rest: &mut self.ops,
            emitter: &mut self.emitter,
        }
    }

    fn push(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        match self.ops.split_first_mut() {
            Some((op, rest)) => op.process_batch(
                input,
                batch,
                &mut ChainOutput {
                    rest,
                    emitter: &mut self.emitter,
                },
            ),
            None => self.emitter.emit(None, batch),
        }
    }

    fn watermark(&mut self, wm: Timestamp) -> Result<()> {
        self.output().emit_watermark(wm)
    }

    /// How often [`Chain::tick`] runs.
    fn tick_interval(&self) -> Duration {
        self.emitter
            .flush_interval()
            .map_or(TICK, |l| l.clamp(MIN_TICK, TICK))
    }

    fn tick(&mut self) -> Result<()> {
        let now = now_millis();
        for i in 0..self.ops.len() {
            let (head, rest) = self.ops[i..].split_at_mut(1);
            head[0].on_processing_time(
                now,
                &mut ChainOutput {
                    rest,
                    emitter: &mut self.emitter,
                },
            )?;
        }
        self.emitter.flush_expired(Instant::now())
    }

    /// The state of every operator (and of the source reader, first) for checkpoint `id`.
    fn snapshot(&mut self, barrier: &Barrier, source: SourceState<'_>) -> Result<TaskStates> {
        let mut states = Vec::with_capacity(self.ops.len() + 1);
        if let Some((node, reader, required)) = source {
            match reader.snapshot(barrier.id) {
                Ok(pos) => states.push((
                    node,
                    OperatorSnapshot {
                        keyed: Vec::new(),
                        operator: Some(pos),
                        deferred: None,
                        ..Default::default()
                    },
                )),
                Err(e) if required => return Err(e),
                Err(_) => {}
            }
        }
        for (op, node) in self.ops.iter_mut().zip(&self.node_ids) {
            states.push((*node, op.snapshot_state(barrier)?));
        }
        Ok(states)
    }

    fn notify_complete(&mut self, id: CheckpointId) -> Result<()> {
        for op in &mut self.ops {
            op.notify_checkpoint_complete(id)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for i in 0..self.ops.len() {
            let (head, rest) = self.ops[i..].split_at_mut(1);
            head[0].finish(&mut ChainOutput {
                rest,
                emitter: &mut self.emitter,
            })?;
        }
        self.emitter.end_of_input()
    }
}

/// Runs a source subtask until its reader is exhausted (then waits for the job's final
/// checkpoint), the job is cancelled, or a stop-with-savepoint completes.
pub fn run_source(
    chain: &mut Chain,
    mut reader: Box<dyn SourceReader>,
    source_node: NodeId,
    mut watermarks: Option<SplitWatermarks>,
    metrics: Arc<TaskMetrics>,
    link: TaskLink,
) -> Result<()> {
    let mut last_tick = Instant::now();
    let tick = chain.tick_interval();
    let mut stopped = false;
    loop {
        if link.cancelled() {
            return Ok(());
        }
        let stop = link.poll_control(chain, Some((source_node, reader.as_mut())), &mut stopped)?;
        if stop {
            return Ok(());
        }
        if stopped {
            // Stop-with-savepoint: nothing more is read; wait for the master.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let now = Instant::now();
        match reader.poll_next()? {
            SourcePoll::Batch { split, batch } => {
                if let Some(w) = watermarks.as_mut() {
                    if w.on_batch(split, &batch, now)? {
                        chain.output().emit_idle(false)?;
                    }
                }
                metrics
                    .records_in
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                metrics
                    .bytes_in
                    .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
                chain.push(0, batch)?;
            }
            SourcePoll::Pending => {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                metrics
                    .idle_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            SourcePoll::SplitFinished(split) => {
                if let Some(w) = watermarks.as_mut() {
                    w.on_split_finished(split);
                }
            }
            SourcePoll::Finished => break,
        }
        if let Some(w) = watermarks.as_mut() {
            match w.poll(now) {
                WatermarkUpdate::Watermark(t) => chain.watermark(t)?,
                WatermarkUpdate::Idle(idle) => chain.output().emit_idle(idle)?,
                WatermarkUpdate::Nothing => {}
            }
        }
        if last_tick.elapsed() >= tick {
            chain.tick()?;
            last_tick = Instant::now();
        }
    }
    // A bounded input closes event time, as Flink's sources do.
    chain.watermark(MAX_WATERMARK)?;
    chain.finish()?;
    link.finish(chain, Some((source_node, reader.as_mut(), false)))
}

/// Barrier alignment of one task over its input channels.
struct Alignment {
    barrier: Option<Barrier>,
    arrived: Vec<bool>,
    /// Exactly-once: channels whose barrier arrived hold their later elements back.
    blocked: Vec<bool>,
    held: Vec<VecDeque<StreamElement>>,
    held_count: usize,
    live: Vec<bool>,
    exactly_once: bool,
}

impl Alignment {
    fn new(n: usize, mode: CheckpointingMode) -> Self {
        Alignment {
            barrier: None,
            arrived: vec![false; n],
            blocked: vec![false; n],
            held: (0..n).map(|_| VecDeque::new()).collect(),
            held_count: 0,
            live: vec![true; n],
            exactly_once: mode == CheckpointingMode::ExactlyOnce,
        }
    }

    /// An element that may be processed now: held ones of unblocked channels first.
    fn pop_ready(&mut self) -> Option<(usize, StreamElement)> {
        if self.held_count == 0 {
            return None;
        }
        for c in 0..self.held.len() {
            if !self.blocked[c] {
                if let Some(e) = self.held[c].pop_front() {
                    self.held_count -= 1;
                    return Some((c, e));
                }
            }
        }
        None
    }

    /// Whether an element just received on `c` must wait (its channel is blocked, or older
    /// elements of it are still held).
    fn hold(&mut self, c: usize, e: StreamElement) -> Option<StreamElement> {
        if self.blocked[c] || !self.held[c].is_empty() {
            self.held[c].push_back(e);
            self.held_count += 1;
            None
        } else {
            Some(e)
        }
    }

    fn unblock(&mut self) {
        self.barrier = None;
        self.arrived.iter_mut().for_each(|a| *a = false);
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// A barrier arrived on `c`.
    fn on_barrier(&mut self, c: usize, b: Barrier) {
        match self.barrier {
            Some(cur) if b.id < cur.id => return, // stale: that checkpoint was abandoned
            Some(cur) if b.id > cur.id => self.unblock(), // a newer one supersedes it
            _ => {}
        }
        self.barrier = Some(b);
        self.arrived[c] = true;
        if self.exactly_once {
            self.blocked[c] = true;
        }
    }

    /// The barrier every live channel has delivered, if alignment just completed.
    fn complete(&mut self) -> Option<Barrier> {
        let b = self.barrier?;
        if (0..self.arrived.len()).all(|c| self.arrived[c] || !self.live[c]) {
            self.unblock();
            Some(b)
        } else {
            None
        }
    }
}

/// Runs a subtask fed by input channels until they all end (then waits for the job's final
/// checkpoint), the job is cancelled, or a stop-with-savepoint completes.
pub fn run_input(
    chain: &mut Chain,
    rx: Receiver<Envelope>,
    channel_inputs: Vec<usize>,
    metrics: Arc<TaskMetrics>,
    link: TaskLink,
) -> Result<()> {
    let n = channel_inputs.len();
    let mut combined = ChannelWatermarks::new(n);
    let mut align = Alignment::new(n, link.mode);
    let mut last_tick = Instant::now();
    let tick = chain.tick_interval();
    loop {
        let next = match align.pop_ready() {
            Some(x) => Some(x),
            None => match recv_counting_idle(&rx, &metrics, tick) {
                Ok(Envelope { channel, elem }) => {
                    let c = channel as usize;
                    align.hold(c, elem).map(|e| (c, e))
                }
                Err(RecvTimeoutError::Timeout) => None,
                // Every upstream task is gone without ending its input: the job is being
                // stopped (after a stop-with-savepoint, whose commit message is already
                // queued: handle it first) or torn down (the failing task has reported why).
                Err(RecvTimeoutError::Disconnected) => {
                    if !link.cancelled() {
                        link.poll_control(chain, None, &mut false)?;
                    }
                    return Err(Error::Cancelled);
                }
            },
        };
        if let Some((ch, elem)) = next {
            match elem {
                StreamElement::Batch(b) => {
                    metrics
                        .records_in
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    metrics
                        .bytes_in
                        .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                    chain.push(channel_inputs[ch], b)?;
                }
                StreamElement::Watermark(t) => {
                    combined.on_watermark(ch, t);
                    apply(chain, combined.poll(), &metrics)?;
                }
                StreamElement::Idle(idle) => {
                    combined.on_idle(ch, idle);
                    apply(chain, combined.poll(), &metrics)?;
                }
                StreamElement::Barrier(b) => {
                    align.on_barrier(ch, b);
                    if let Some(b) = align.complete() {
                        link.checkpoint(chain, b, None)?;
                    }
                }
                StreamElement::EndOfInput => {
                    align.live[ch] = false;
                    let all = combined.on_end(ch);
                    apply(chain, combined.poll(), &metrics)?;
                    if let Some(b) = align.complete() {
                        link.checkpoint(chain, b, None)?;
                    }
                    if all {
                        chain.finish()?;
                        return link.finish(chain, None);
                    }
                }
            }
        }
        if link.cancelled() {
            return Ok(());
        }
        if link.poll_control(chain, None, &mut false)? {
            return Ok(());
        }
        if last_tick.elapsed() >= tick {
            chain.tick()?;
            last_tick = Instant::now();
        }
    }
}

/// The next element from the input channels; time spent waiting for one counts as idle.
/// An element already queued costs no clock reading.
fn recv_counting_idle(
    rx: &Receiver<Envelope>,
    metrics: &TaskMetrics,
    timeout: Duration,
) -> std::result::Result<Envelope, RecvTimeoutError> {
    match rx.try_recv() {
        Ok(e) => Ok(e),
        Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
        Err(TryRecvError::Empty) => {
            let t = Instant::now();
            let r = rx.recv_timeout(timeout);
            metrics
                .idle_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            r
        }
    }
}

fn apply(
    chain: &mut Chain,
    (idle, wm): (Option<bool>, Option<Timestamp>),
    metrics: &TaskMetrics,
) -> Result<()> {
    if idle == Some(false) {
        chain.output().emit_idle(false)?;
    }
    if let Some(t) = wm {
        metrics.input_watermark.store(t, Ordering::Relaxed);
        chain.watermark(t)?;
    }
    if idle == Some(true) {
        chain.output().emit_idle(true)?;
    }
    Ok(())
}
