//! What travels on a channel between tasks: data batches and, in order with them, control
//! elements (watermarks, idleness, checkpoint barriers, end of input).
//!
//! Keeping control elements in the same ordered channel as the data is what makes watermarks
//! and barriers meaningful: everything before a `Watermark(t)` on a channel has been sent.

use arrow::record_batch::RecordBatch;

use crate::checkpoint::Barrier;

/// Event or processing time in epoch milliseconds, as in Flink.
pub type Timestamp = i64;

/// The watermark that closes every window: a bounded input ends with it, as in Flink.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// The watermark before any has been seen.
pub const MIN_WATERMARK: Timestamp = i64::MIN;

/// One element of a stream.
#[derive(Debug, Clone)]
pub enum StreamElement {
    /// A batch of records, all with the stream's schema.
    Batch(RecordBatch),
    /// No record with a timestamp at or below this will follow on this channel.
    Watermark(Timestamp),
    /// The channel became idle (`true`) or active again (`false`); an idle channel does not
    /// hold back the combined watermark downstream.
    Idle(bool),
    /// Everything before this on the channel belongs to checkpoint `barrier.id`.
    Barrier(Barrier),
    /// The channel will carry nothing more.
    EndOfInput,
}
