//! Helpers shared by the crate's unit tests.

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
