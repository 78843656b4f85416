//! Helpers for tests of operators and of the engine, here and in the crates that build on
//! it (SQL operators, connectors): an output that keeps rows, a deterministic random
//! generator, a checkpointable sequence source that can fail once.

use arrow::array::RecordBatch;

use crate::element::Timestamp;
use crate::error::Result;
use crate::operator::Output;
use crate::rows::rows_of;

/// An [`Output`] that keeps every emitted row, as text (sort before comparing: operators
/// emit keys in no particular order).
#[derive(Default)]
pub struct CollectRows(pub Vec<String>);

impl Output for CollectRows {
    fn emit(&mut self, b: RecordBatch) -> Result<()> {
        self.0.extend(rows_of(&b).iter().map(|r| format!("{r:?}")));
        Ok(())
    }
    fn emit_side(&mut self, _: &str, _: RecordBatch) -> Result<()> {
        Ok(())
    }
    fn emit_watermark(&mut self, _: Timestamp) -> Result<()> {
        Ok(())
    }
    fn emit_idle(&mut self, _: bool) -> Result<()> {
        Ok(())
    }
}

/// A small deterministic generator for randomized tests (a linear congruential one).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A bounded, checkpointable source for tests of the engine: the values `0..n` in a column
/// `v` (Int64), `batch` rows per batch and `pause` between batches, one split per subtask
/// (subtask `s` of `p` reads the values `≡ s (mod p)`). With `fail_at`, the first reader to
/// reach that value fails once (a task failure), so restarts can be tested.
#[derive(Clone)]
pub struct SequenceSource {
    pub n: i64,
    pub batch: usize,
    pub pause: std::time::Duration,
    pub fail_at: Option<(i64, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
}

impl SequenceSource {
    pub fn new(n: i64, batch: usize) -> Self {
        SequenceSource {
            n,
            batch,
            pause: std::time::Duration::ZERO,
            fail_at: None,
        }
    }

    /// The column it produces.
    pub fn schema() -> arrow::datatypes::SchemaRef {
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]))
    }
}

struct SequenceReader {
    src: SequenceSource,
    next: i64,
    step: i64,
}

impl crate::source::Source for SequenceSource {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        SequenceSource::schema()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Box<dyn crate::source::SourceReader>> {
        Ok(Box::new(SequenceReader {
            src: self.clone(),
            next: subtask as i64,
            step: parallelism as i64,
        }))
    }
    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, bytes::Bytes)],
    ) -> Result<Box<dyn crate::source::SourceReader>> {
        let (_, state) = states
            .iter()
            .find(|(old, _)| *old == subtask)
            .ok_or_else(|| {
                crate::error::Error::Checkpoint(format!("no state of subtask {subtask}"))
            })?;
        let bytes: [u8; 8] = state[..]
            .try_into()
            .map_err(|_| crate::error::Error::Checkpoint("bad sequence state".into()))?;
        Ok(Box::new(SequenceReader {
            src: self.clone(),
            next: i64::from_le_bytes(bytes),
            step: parallelism as i64,
        }))
    }
}

impl crate::source::SourceReader for SequenceReader {
    fn splits(&self) -> usize {
        1
    }
    fn poll_next(&mut self) -> Result<crate::source::SourcePoll> {
        if self.next >= self.src.n {
            return Ok(crate::source::SourcePoll::Finished);
        }
        if let Some((at, failed)) = &self.src.fail_at
            && self.next >= *at
            && !failed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(crate::error::Error::User(format!(
                "injected failure at {}",
                self.next
            )));
        }
        if !self.src.pause.is_zero() {
            std::thread::sleep(self.src.pause);
        }
        let values: Vec<i64> = (0..self.src.batch as i64)
            .map(|i| self.next + i * self.step)
            .take_while(|v| *v < self.src.n)
            .collect();
        self.next += values.len() as i64 * self.step;
        let batch = RecordBatch::try_new(
            SequenceSource::schema(),
            vec![std::sync::Arc::new(arrow::array::Int64Array::from(values))],
        )?;
        Ok(crate::source::SourcePoll::Batch { split: 0, batch })
    }
    fn snapshot(&mut self, _checkpoint: crate::checkpoint::CheckpointId) -> Result<Vec<u8>> {
        Ok(self.next.to_le_bytes().to_vec())
    }
}
