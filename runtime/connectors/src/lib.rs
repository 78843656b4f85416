//! Connectors: sources and sinks that plug into the engine through the [`Source`] and
//! [`Sink`] traits. Nothing in the engine depends on a particular connector.
//!
//! [`Source`]: flink_rs_core::source::Source
//! [`Sink`]: flink_rs_core::source::Sink

mod blackhole;
mod collection;
mod datagen;
mod file_format;
mod filesystem;
mod kafka;
mod nexmark;
mod ranges;
mod rate;
mod text_values;

pub use blackhole::BlackholeSink;
pub use collection::CollectionSource;
pub use datagen::{BidGenerator, DATAGEN_TYPES, DataGen, FieldGen, bid_schema, datagen_supports};
pub use file_format::{CsvFormat, FileFormat, JsonFormat};
pub use filesystem::{DEFAULT_PARTITION_NAME, FileSink, FileSource, RollingPolicy};
pub use flink_rs_core::api::{CollectSink, Collected, PrintSink};
pub use kafka::{KafkaSink, KafkaSource};
pub use nexmark::{NexmarkGenerator, STRING_FIELDS, UnreadFields, nexmark_schema};
pub use text_values::{TimestampStandard, with_flink_temporal_text};
/// Kafka connector options and formats.
pub mod kafka_options {
    pub use crate::kafka::{
        BoundedMode, DeliveryGuarantee, KafkaSinkOptions, KafkaSourceOptions, MetadataKey,
        Partitioner, RecordFormat, Reset, StartupMode, Topics, owner,
    };
}
