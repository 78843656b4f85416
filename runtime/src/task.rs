//! A task: one thread running a chain of operators for one parallel subtask, fed either by a
//! source reader or by its input channels.
//!
//! Threading model: one OS thread per task, as Flink runs one thread per task slot. Operator
//! work is CPU-bound and per batch, so a thread that blocks on a full channel is exactly the
//! backpressure we want; nothing here needs an async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::element::{MAX_WATERMARK, StreamElement, Timestamp};
use crate::error::Result;
use crate::exchange::{Emitter, Envelope, TaskMetrics};
use crate::operator::{Operator, Output, now_millis};
use crate::source::{SourcePoll, SourceReader};
use crate::watermark::{ChannelWatermarks, SplitWatermarks, WatermarkUpdate};

/// How often a task fires processing-time timers and flushes lingering buffers.
const TICK: Duration = Duration::from_millis(5);

/// Operators of one chain plus the exchange at its end.
pub(crate) struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
    pub emitter: Emitter,
}

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

/// Runs a source subtask until its reader is exhausted or the job is cancelled.
pub(crate) fn run_source(
    mut chain: Chain,
    mut reader: Box<dyn SourceReader>,
    mut watermarks: Option<SplitWatermarks>,
    metrics: Arc<TaskMetrics>,
    cancel: Arc<AtomicBool>,
) -> Result<()> {
    let mut last_tick = Instant::now();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
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
                chain.push(0, batch)?;
            }
            SourcePoll::Pending => std::thread::sleep(Duration::from_millis(1)),
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
        if last_tick.elapsed() >= TICK {
            chain.tick()?;
            last_tick = Instant::now();
        }
    }
    // A bounded input closes event time, as Flink's sources do.
    chain.watermark(MAX_WATERMARK)?;
    chain.finish()
}

/// Runs a subtask fed by input channels until they all end or the job is cancelled.
pub(crate) fn run_input(
    mut chain: Chain,
    rx: Receiver<Envelope>,
    channel_inputs: Vec<usize>,
    metrics: Arc<TaskMetrics>,
    cancel: Arc<AtomicBool>,
) -> Result<()> {
    let mut combined = ChannelWatermarks::new(channel_inputs.len());
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Envelope { channel, elem }) => {
                let ch = channel as usize;
                match elem {
                    StreamElement::Batch(b) => {
                        metrics
                            .records_in
                            .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        chain.push(channel_inputs[ch], b)?;
                    }
                    StreamElement::Watermark(t) => {
                        combined.on_watermark(ch, t);
                        apply(&mut chain, combined.poll())?;
                    }
                    StreamElement::Idle(idle) => {
                        combined.on_idle(ch, idle);
                        apply(&mut chain, combined.poll())?;
                    }
                    StreamElement::EndOfInput => {
                        let all = combined.on_end(ch);
                        apply(&mut chain, combined.poll())?;
                        if all {
                            return chain.finish();
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every upstream task is gone without ending its input: the job is being torn
            // down (the failing task has recorded why).
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        if last_tick.elapsed() >= TICK {
            chain.tick()?;
            last_tick = Instant::now();
        }
    }
}

fn apply(chain: &mut Chain, (idle, wm): (Option<bool>, Option<Timestamp>)) -> Result<()> {
    if idle == Some(false) {
        chain.output().emit_idle(false)?;
    }
    if let Some(t) = wm {
        chain.watermark(t)?;
    }
    if idle == Some(true) {
        chain.output().emit_idle(true)?;
    }
    Ok(())
}
