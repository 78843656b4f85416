//! What a Kafka source or sink is told: the typed form of Flink's connector options (the SQL
//! planner maps `WITH (…)` onto these; the DataStream API builds them directly).

use std::time::Duration;

use arrow::datatypes::SchemaRef;

use super::format::RecordFormat;

/// Which topics a source reads.
#[derive(Debug, Clone)]
pub enum Topics {
    /// `topic`: one or more names.
    Names(Vec<String>),
    /// `topic-pattern`: every topic whose whole name matches.
    Pattern(regex::Regex),
}

impl Topics {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Topics::Names(n) => n.iter().any(|t| t == topic),
            Topics::Pattern(re) => re.is_match(topic),
        }
    }
}

/// `scan.startup.mode`: where reading starts when the job does not resume from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMode {
    EarliestOffset,
    LatestOffset,
    /// The group's committed offsets; a partition without one follows `reset` (Flink's
    /// `properties.auto.offset.reset`), or is an error when it is `None`.
    GroupOffsets {
        reset: Option<Reset>,
    },
    /// The first offset whose record timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
    /// `scan.startup.specific-offsets`: `(partition, offset)`; other partitions start from the
    /// group's committed offset, else the earliest.
    SpecificOffsets(Vec<(i32, i64)>),
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    Earliest,
    Latest,
}

/// `scan.bounded.mode`: where a bounded source stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedMode {
    Unbounded,
    /// The partitions' ends when the job starts.
    LatestOffset,
    /// The group's committed offsets when the job starts.
    GroupOffsets,
    /// The first offset whose timestamp is after this.
    Timestamp(i64),
    /// `scan.bounded.specific-offsets`: `(partition, offset)` (exclusive).
    SpecificOffsets(Vec<(i32, i64)>),
}

/// A metadata column's key (`METADATA FROM 'key'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKey {
    Topic,
    Partition,
    Offset,
    /// The record's timestamp (TIMESTAMP_LTZ(3)); writable in a sink.
    Timestamp,
    /// `CreateTime` or `LogAppendTime`.
    TimestampType,
}

impl MetadataKey {
    /// The key as Flink names it, and whether a sink can write it.
    pub fn parse(key: &str) -> Option<(MetadataKey, bool)> {
        Some(match key {
            "topic" => (MetadataKey::Topic, false),
            "partition" => (MetadataKey::Partition, false),
            "offset" => (MetadataKey::Offset, false),
            "timestamp" => (MetadataKey::Timestamp, true),
            "timestamp-type" => (MetadataKey::TimestampType, false),
            _ => return None,
        })
    }

    /// The keys there are (for errors).
    pub const ALL: &'static str = "topic, partition, offset, timestamp, timestamp-type";
}

/// A Kafka source: connection, topics, where to start and stop, and how messages map to rows.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// `properties.bootstrap.servers`.
    pub bootstrap_servers: String,
    pub topics: Topics,
    /// `properties.group.id`: offsets are committed to it on checkpoint completion.
    pub group_id: Option<String>,
    /// Every other `properties.*`, passed to the client.
    pub properties: Vec<(String, String)>,
    pub startup: StartupMode,
    pub bounded: BoundedMode,
    /// The rows the source produces: value fields, key fields and metadata columns, in the
    /// table's order.
    pub schema: SchemaRef,
    /// `format` / `value.format`.
    pub value_format: RecordFormat,
    /// `key.format`, with `key.fields` (columns of `schema`).
    pub key_format: Option<RecordFormat>,
    pub key_fields: Vec<String>,
    /// `value.fields-include` = `ALL` (default) or `EXCEPT_KEY`.
    pub value_includes_key: bool,
    /// Metadata columns: (column of `schema`, key).
    pub metadata: Vec<(String, MetadataKey)>,
    /// `scan.topic-partition-discovery.interval` (unbounded sources; `None`: off).
    pub discovery_interval: Option<Duration>,
    /// Most rows in one batch.
    pub batch_size: usize,
}

/// `sink.delivery-guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// `sink.partitioner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// Kafka's: by key hash when there is a key, else the client's sticky partitioning.
    Default,
    /// Each subtask writes to one partition (`subtask % partitions`).
    Fixed,
    /// Rows go round-robin over the partitions.
    RoundRobin,
}

/// A Kafka sink.
#[derive(Debug, Clone)]
pub struct KafkaSinkOptions {
    pub bootstrap_servers: String,
    pub topic: String,
    pub properties: Vec<(String, String)>,
    /// The columns written (a table's, less VIRTUAL metadata columns); the sink's input
    /// fills them by position (a changelog's row kind `__op` comes last).
    pub schema: SchemaRef,
    pub value_format: RecordFormat,
    pub key_format: Option<RecordFormat>,
    pub key_fields: Vec<String>,
    pub value_includes_key: bool,
    /// A writable metadata column (`timestamp`) sets the message timestamp.
    pub timestamp_column: Option<String>,
    pub guarantee: DeliveryGuarantee,
    /// `sink.transactional-id-prefix` (exactly-once).
    pub transactional_id_prefix: Option<String>,
    pub partitioner: Partitioner,
    /// `upsert-kafka`: the input is a changelog (`__op`); deletions become tombstones and
    /// update-befores are dropped.
    pub upsert: bool,
}
