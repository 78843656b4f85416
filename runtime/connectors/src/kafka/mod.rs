//! `kafka` and `upsert-kafka`: Flink's Kafka connectors, on librdkafka (through `rdkafka`).
//!
//! The source ([`KafkaSource`]) gives each subtask the partitions Flink's enumerator would
//! give it, reads them from the offsets its startup mode resolves (once, when the job starts:
//! a checkpoint holds concrete offsets), tracks event time per partition (each partition is a
//! split), and after a restore, at any parallelism, reads each partition from the offset
//! checkpointed for it. On checkpoint completion it commits those offsets to its consumer
//! group, for monitoring only.
//!
//! The sink ([`KafkaSink`]) writes one message per row (`upsert-kafka`: keyed by the primary
//! key, a deletion as a tombstone). Its delivery guarantees: `none`, `at-least-once` (every
//! message acknowledged before a checkpoint completes) and `exactly-once` (see
//! [`sink`](self::sink) for the two-phase protocol).

mod format;
mod options;
mod partitions;
mod sink;
mod source;
mod write_ahead;

pub use format::RecordFormat;
pub use options::{
    BoundedMode, DeliveryGuarantee, KafkaSinkOptions, KafkaSourceOptions, MetadataKey, Partitioner,
    Reset, StartupMode, Topics,
};
pub use partitions::owner;
pub use sink::KafkaSink;
pub use source::KafkaSource;
