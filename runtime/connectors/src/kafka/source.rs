//! The Kafka source: partitions as splits, concrete offsets in checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, Timestamp as KafkaTimestamp};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use flink_rs_core::checkpoint::CheckpointId;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

use super::format::RowDecoder;
use super::options::{BoundedMode, KafkaSourceOptions, MetadataKey, Reset, StartupMode, Topics};
use super::partitions::owner;

/// How long a metadata or offset request may take (Kafka's `default.api.timeout.ms`).
const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(60);

/// One partition's position in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionPosition {
    topic: String,
    partition: i32,
    /// Offset of the next record to read.
    next: i64,
    /// Bounded: the offset to stop before.
    end: Option<i64>,
}

/// Reads Kafka topics (Flink's `KafkaSource`).
pub struct KafkaSource {
    options: Arc<KafkaSourceOptions>,
}

impl KafkaSource {
    pub fn new(options: KafkaSourceOptions) -> Result<Self> {
        let s = KafkaSource {
            options: Arc::new(options),
        };
        // The decoders' schemas are checked now, not in the first reader.
        s.layout()?;
        Ok(s)
    }

    fn api_timeout(&self) -> Duration {
        self.options
            .properties
            .iter()
            .find(|(k, _)| k == "default.api.timeout.ms")
            .and_then(|(_, v)| v.parse().ok())
            .map_or(DEFAULT_API_TIMEOUT, Duration::from_millis)
    }

    fn consumer(&self) -> Result<BaseConsumer> {
        let o = &self.options;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &o.bootstrap_servers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        // librdkafka requires a group for commits only; the source assigns partitions itself.
        c.set(
            "group.id",
            o.group_id.as_deref().unwrap_or("flink-rs-unnamed-source"),
        );
        for (k, v) in &o.properties {
            if k != "default.api.timeout.ms" {
                c.set(k, v);
            }
        }
        c.create().map_err(|e| {
            Error::User(format!(
                "kafka source (bootstrap servers {}): cannot create the consumer: {e}",
                o.bootstrap_servers
            ))
        })
    }

    fn client_error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::User(format!(
            "kafka source: {what} failed (bootstrap servers {}): {e}",
            self.options.bootstrap_servers
        ))
    }

    /// The topics' partitions, sorted.
    fn partitions(&self, consumer: &BaseConsumer) -> Result<Vec<(String, i32)>> {
        let md = consumer
            .fetch_metadata(None, self.api_timeout())
            .map_err(|e| self.client_error("reading the cluster's metadata", e))?;
        let mut out = Vec::new();
        for t in md.topics() {
            if !self.options.topics.matches(t.name()) {
                continue;
            }
            if let Some(e) = t.error() {
                return Err(self.client_error(
                    &format!("reading topic `{}`", t.name()),
                    rdkafka::types::RDKafkaErrorCode::from(e),
                ));
            }
            for p in t.partitions() {
                out.push((t.name().to_string(), p.id()));
            }
        }
        if let Topics::Names(names) = &self.options.topics {
            for n in names {
                if !out.iter().any(|(t, _)| t == n) {
                    return Err(Error::User(format!(
                        "kafka source: topic `{n}` does not exist (bootstrap servers {})",
                        self.options.bootstrap_servers
                    )));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolves a start or end position to a concrete offset.
    fn resolve(
        &self,
        consumer: &BaseConsumer,
        parts: &[(String, i32)],
        pick: &dyn Fn(&str, i32) -> Target,
    ) -> Result<Vec<i64>> {
        let t = self.api_timeout();
        let mut out = Vec::with_capacity(parts.len());
        let mut committed: Option<TopicPartitionList> = None;
        for (topic, p) in parts {
            let (low, high) = consumer.fetch_watermarks(topic, *p, t).map_err(|e| {
                self.client_error(&format!("reading the offsets of {topic}-{p}"), e)
            })?;
            let offset = match pick(topic, *p) {
                Target::Earliest => low,
                Target::Latest => high,
                Target::Offset(o) => o.clamp(low, high),
                Target::Committed(reset) => {
                    if committed.is_none() {
                        let mut tpl = TopicPartitionList::new();
                        for (tt, pp) in parts {
                            tpl.add_partition(tt, *pp);
                        }
                        committed = Some(consumer.committed_offsets(tpl, t).map_err(|e| {
                            self.client_error("reading the group's committed offsets", e)
                        })?);
                    }
                    let found = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(topic, *p))
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0);
                    match (found, reset) {
                        (Some(o), _) => o.clamp(low, high),
                        (None, Some(Reset::Earliest)) => low,
                        (None, Some(Reset::Latest)) => high,
                        (None, None) => {
                            return Err(Error::User(format!(
                                "kafka source: group `{}` has no committed offset for {topic}-{p}; set 'properties.auto.offset.reset' to 'earliest' or 'latest' to start such partitions",
                                self.options.group_id.as_deref().unwrap_or("")
                            )));
                        }
                    }
                }
                Target::Timestamp(ts) => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(topic, *p, Offset::Offset(ts))
                        .map_err(|e| self.client_error("looking up offsets by time", e))?;
                    let r = consumer
                        .offsets_for_times(tpl, t)
                        .map_err(|e| self.client_error("looking up offsets by time", e))?;
                    r.find_partition(topic, *p)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0)
                        .unwrap_or(high)
                }
            };
            out.push(offset);
        }
        Ok(out)
    }

    /// The order of a row's parts: the value's columns, the key's, and metadata columns.
    fn layout(&self) -> Result<Layout> {
        let o = &self.options;
        let is_meta = |n: &str| o.metadata.iter().any(|(c, _)| c == n);
        let pick = |names: &dyn Fn(&str) -> bool| -> Vec<usize> {
            o.schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| names(f.name()))
                .map(|(i, _)| i)
                .collect()
        };
        let key_cols = pick(&|n| o.key_fields.iter().any(|k| k == n));
        let value_cols = pick(&|n| {
            !is_meta(n) && (o.value_includes_key || !o.key_fields.iter().any(|k| k == n))
        });
        let project = |cols: &[usize]| -> SchemaRef {
            Arc::new(Schema::new(
                cols.iter()
                    .map(|i| o.schema.field(*i).clone())
                    .collect::<Vec<_>>(),
            ))
        };
        let value_schema = project(&value_cols);
        o.value_format.check_schema(&value_schema, "value")?;
        let key = match &o.key_format {
            Some(f) => {
                let ks = project(&key_cols);
                f.check_schema(&ks, "key")?;
                Some((RowDecoder::new(f.clone(), ks), key_cols))
            }
            None => None,
        };
        let mut meta = Vec::new();
        for (col, k) in &o.metadata {
            let i = o
                .schema
                .index_of(col)
                .map_err(|_| Error::User(format!("kafka source: no metadata column `{col}`")))?;
            let want = match k {
                MetadataKey::Topic | MetadataKey::TimestampType => DataType::Utf8,
                MetadataKey::Partition => DataType::Int32,
                MetadataKey::Offset => DataType::Int64,
                MetadataKey::Timestamp => o.schema.field(i).data_type().clone(),
            };
            let got = o.schema.field(i).data_type();
            let ok = got == &want
                && (*k != MetadataKey::Timestamp
                    || matches!(got, DataType::Timestamp(TimeUnit::Millisecond, _)));
            if !ok {
                return Err(Error::User(format!(
                    "kafka source: metadata column `{col}` is {got}; its key's type is {}",
                    match k {
                        MetadataKey::Topic | MetadataKey::TimestampType => "STRING",
                        MetadataKey::Partition => "INT",
                        MetadataKey::Offset => "BIGINT",
                        MetadataKey::Timestamp => "TIMESTAMP_LTZ(3) (or TIMESTAMP(3))",
                    }
                )));
            }
            meta.push((i, *k));
        }
        Ok(Layout {
            value: RowDecoder::new(o.value_format.clone(), value_schema),
            value_cols,
            key,
            meta,
        })
    }

    fn reader(
        &self,
        subtask: usize,
        parallelism: usize,
        positions: Vec<PartitionPosition>,
    ) -> Result<KafkaReader> {
        let consumer = self.consumer()?;
        let mut tpl = TopicPartitionList::new();
        for p in &positions {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .map_err(|e| self.client_error("assigning partitions", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| self.client_error("assigning partitions", e))?;
        let n = positions.len();
        Ok(KafkaReader {
            source: KafkaSource {
                options: self.options.clone(),
            },
            layout: self.layout()?,
            consumer,
            subtask,
            positions,
            finished: vec![false; n],
            buffers: (0..n).map(|_| VecDeque::new()).collect(),
            announced_empty: false,
            pending_commits: BTreeMap::new(),
            last_discovery: Instant::now(),
            last_split: std::cell::Cell::new(0),
            parallelism,
        })
    }

    /// Positions of this subtask's partitions for a fresh start.
    fn fresh_positions(
        &self,
        consumer: &BaseConsumer,
        mine: &[(String, i32)],
    ) -> Result<Vec<PartitionPosition>> {
        let o = &self.options;
        let start = self.resolve(consumer, mine, &|_, p| match &o.startup {
            StartupMode::EarliestOffset => Target::Earliest,
            StartupMode::LatestOffset => Target::Latest,
            StartupMode::GroupOffsets { reset } => Target::Committed(*reset),
            StartupMode::Timestamp(ts) => Target::Timestamp(*ts),
            StartupMode::SpecificOffsets(list) => list
                .iter()
                .find(|(pp, _)| *pp == p)
                .map_or(Target::Committed(Some(Reset::Earliest)), |(_, o)| {
                    Target::Offset(*o)
                }),
        })?;
        let end = self.ends(consumer, mine)?;
        Ok(mine
            .iter()
            .zip(start)
            .zip(end)
            .map(|(((topic, partition), next), end)| PartitionPosition {
                topic: topic.clone(),
                partition: *partition,
                next,
                end,
            })
            .collect())
    }

    /// Where each partition stops (bounded modes).
    fn ends(&self, consumer: &BaseConsumer, parts: &[(String, i32)]) -> Result<Vec<Option<i64>>> {
        let o = &self.options;
        if o.bounded == BoundedMode::Unbounded {
            return Ok(vec![None; parts.len()]);
        }
        let ends = self.resolve(consumer, parts, &|_, p| match &o.bounded {
            BoundedMode::Unbounded | BoundedMode::LatestOffset => Target::Latest,
            BoundedMode::GroupOffsets => Target::Committed(None),
            BoundedMode::Timestamp(ts) => Target::Timestamp(*ts),
            BoundedMode::SpecificOffsets(list) => list
                .iter()
                .find(|(pp, _)| *pp == p)
                .map_or(Target::Latest, |(_, o)| Target::Offset(*o)),
        })?;
        Ok(ends.into_iter().map(Some).collect())
    }
}

/// A position to resolve.
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Committed(Option<Reset>),
    Timestamp(i64),
}

/// How a message becomes a row.
struct Layout {
    value: RowDecoder,
    value_cols: Vec<usize>,
    key: Option<(RowDecoder, Vec<usize>)>,
    meta: Vec<(usize, MetadataKey)>,
}

/// One message, copied out of the client.
struct Record {
    offset: i64,
    timestamp: Option<i64>,
    timestamp_type: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.options.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.options.bounded != BoundedMode::Unbounded
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        let consumer = self.consumer()?;
        let mine: Vec<(String, i32)> = self
            .partitions(&consumer)?
            .into_iter()
            .filter(|(t, p)| owner(t, *p, parallelism) == subtask)
            .collect();
        let positions = self.fresh_positions(&consumer, &mine)?;
        drop(consumer);
        Ok(Box::new(self.reader(subtask, parallelism, positions)?))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        let mut restored: BTreeMap<(String, i32), PartitionPosition> = BTreeMap::new();
        for (_, bytes) in states {
            let list: Vec<PartitionPosition> =
                bincode::deserialize(bytes).map_err(|e| Error::state("kafka source offsets", e))?;
            for p in list {
                restored.insert((p.topic.clone(), p.partition), p);
            }
        }
        let consumer = self.consumer()?;
        // A topic the table no longer names (or matches) is not read any more.
        let mut positions: Vec<PartitionPosition> = restored
            .values()
            .filter(|p| self.options.topics.matches(&p.topic))
            .filter(|p| owner(&p.topic, p.partition, parallelism) == subtask)
            .cloned()
            .collect();
        // Partitions created since the checkpoint are read from their start (as Flink does
        // for partitions it discovers).
        let new: Vec<(String, i32)> = self
            .partitions(&consumer)?
            .into_iter()
            .filter(|(t, p)| {
                owner(t, *p, parallelism) == subtask && !restored.contains_key(&(t.clone(), *p))
            })
            .collect();
        let starts = self.resolve(&consumer, &new, &|_, _| Target::Earliest)?;
        let ends = self.ends(&consumer, &new)?;
        for (((topic, partition), next), end) in new.into_iter().zip(starts).zip(ends) {
            positions.push(PartitionPosition {
                topic,
                partition,
                next,
                end,
            });
        }
        drop(consumer);
        Ok(Box::new(self.reader(subtask, parallelism, positions)?))
    }
}

/// Reads one subtask's partitions.
struct KafkaReader {
    source: KafkaSource,
    layout: Layout,
    consumer: BaseConsumer,
    subtask: usize,
    parallelism: usize,
    /// One per split, in split order; `next` moves when a batch is handed out.
    positions: Vec<PartitionPosition>,
    finished: Vec<bool>,
    /// Records received and not yet handed out, per split.
    buffers: Vec<VecDeque<Record>>,
    /// A reader without partitions said so once (its one split is then finished).
    announced_empty: bool,
    /// Offsets to commit to the group when a checkpoint completes.
    pending_commits: BTreeMap<CheckpointId, Vec<PartitionPosition>>,
    last_discovery: Instant,
    /// The split of the last record received (set while a received record borrows the
    /// client).
    last_split: std::cell::Cell<usize>,
}

impl KafkaReader {
    fn split_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.positions
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
    }

    /// [`Self::split_of`] for a received record: records come in runs from one partition,
    /// so the previous record's split is tried first.
    fn split_of_record(&self, topic: &str, partition: i32) -> Option<usize> {
        let last = self.last_split.get();
        let hit = self
            .positions
            .get(last)
            .is_some_and(|p| p.partition == partition && p.topic == topic);
        if hit {
            return Some(last);
        }
        let split = self.split_of(topic, partition)?;
        self.last_split.set(split);
        Some(split)
    }

    /// Moves what the client has received into the per-split buffers.
    fn receive(&mut self) -> Result<usize> {
        let mut n = 0;
        let limit = self.source.options.batch_size.max(1) * 4;
        while n < limit {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    return Err(self.source.client_error("reading", e));
                }
                Some(Ok(m)) => {
                    let Some(split) = self.split_of_record(m.topic(), m.partition()) else {
                        continue;
                    };
                    let (timestamp, timestamp_type) = match m.timestamp() {
                        KafkaTimestamp::NotAvailable => (None, "NoTimestampType"),
                        KafkaTimestamp::CreateTime(t) => (Some(t), "CreateTime"),
                        KafkaTimestamp::LogAppendTime(t) => (Some(t), "LogAppendTime"),
                    };
                    self.buffers[split].push_back(Record {
                        offset: m.offset(),
                        timestamp,
                        timestamp_type,
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Hands out up to a batch of `split`'s buffered records as rows.
    fn take_batch(&mut self, split: usize) -> Result<Option<RecordBatch>> {
        let end = self.positions[split].end;
        let max = self.source.options.batch_size.max(1);
        let mut recs = Vec::with_capacity(max.min(self.buffers[split].len()));
        while recs.len() < max {
            let Some(r) = self.buffers[split].pop_front() else {
                break;
            };
            if r.offset < self.positions[split].next {
                continue; // already handed out (a re-fetch after a seek)
            }
            if end.is_some_and(|e| r.offset >= e) {
                self.buffers[split].clear();
                break;
            }
            recs.push(r);
        }
        let Some(last) = recs.last().map(|r| r.offset) else {
            return Ok(None);
        };
        self.positions[split].next = last + 1;
        // A message without a value (a tombstone) is no row of an append-only table.
        recs.retain(|r| r.value.is_some());
        self.rows(split, &recs).map(Some)
    }

    fn rows(&self, split: usize, recs: &[Record]) -> Result<RecordBatch> {
        let pos = &self.positions[split];
        let at = |i: usize| -> String {
            format!(
                "topic `{}`, partition {}, offset {}",
                pos.topic, pos.partition, recs[i].offset
            )
        };
        let values: Vec<&[u8]> = recs
            .iter()
            .map(|r| r.value.as_deref().unwrap_or_default())
            .collect();
        let decoded = self.layout.value.decode(&values).map_err(|e| {
            Error::User(format!(
                "kafka source: cannot read the value of the record at {}: {}",
                at(e.index),
                e.message
            ))
        })?;
        let mut kept = decoded.kept;
        let value_batch = decoded.batch;
        let mut key_batch = None;
        if let Some((dec, _)) = &self.layout.key {
            let keys: Vec<&[u8]> = kept
                .iter()
                .map(|i| recs[*i].key.as_deref().unwrap_or_default())
                .collect();
            let k = dec.decode(&keys).map_err(|e| {
                Error::User(format!(
                    "kafka source: cannot read the key of the record at {}: {}",
                    at(kept[e.index]),
                    e.message
                ))
            })?;
            if k.kept.len() != kept.len() {
                // Records whose key could not be read are skipped (ignore-parse-errors).
                let idx = arrow::array::UInt32Array::from(
                    k.kept.iter().map(|i| *i as u32).collect::<Vec<_>>(),
                );
                let vb = arrow::compute::take_record_batch(&value_batch, &idx)?;
                kept = k.kept.iter().map(|i| kept[*i]).collect();
                return self.assemble(split, recs, &kept, vb, Some(k.batch));
            }
            key_batch = Some(k.batch);
        }
        self.assemble(split, recs, &kept, value_batch, key_batch)
    }

    fn assemble(
        &self,
        split: usize,
        recs: &[Record],
        kept: &[usize],
        value: RecordBatch,
        key: Option<RecordBatch>,
    ) -> Result<RecordBatch> {
        let schema = &self.source.options.schema;
        let mut cols: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
        if let (Some(kb), Some((_, key_cols))) = (&key, &self.layout.key) {
            for (j, i) in key_cols.iter().enumerate() {
                cols[*i] = Some(kb.column(j).clone());
            }
        }
        // With `value.fields-include` = ALL the value's copy of a key field wins.
        for (j, i) in self.layout.value_cols.iter().enumerate() {
            cols[*i] = Some(value.column(j).clone());
        }
        let pos = &self.positions[split];
        for (i, k) in &self.layout.meta {
            let a: ArrayRef = match k {
                MetadataKey::Topic => {
                    Arc::new(StringArray::from(vec![pos.topic.as_str(); kept.len()]))
                }
                MetadataKey::Partition => {
                    Arc::new(Int32Array::from(vec![pos.partition; kept.len()]))
                }
                MetadataKey::Offset => Arc::new(Int64Array::from(
                    kept.iter().map(|r| recs[*r].offset).collect::<Vec<_>>(),
                )),
                MetadataKey::TimestampType => Arc::new(StringArray::from(
                    kept.iter()
                        .map(|r| recs[*r].timestamp_type)
                        .collect::<Vec<_>>(),
                )),
                MetadataKey::Timestamp => {
                    let a = TimestampMillisecondArray::from(
                        kept.iter().map(|r| recs[*r].timestamp).collect::<Vec<_>>(),
                    );
                    match schema.field(*i).data_type() {
                        DataType::Timestamp(_, Some(tz)) => Arc::new(a.with_timezone(tz.clone())),
                        _ => Arc::new(a),
                    }
                }
            };
            cols[*i] = Some(a);
        }
        let cols = cols
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                c.ok_or_else(|| {
                    Error::User(format!(
                        "kafka source: column `{}` is neither in the value, the key nor metadata",
                        schema.field(i).name()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }

    /// Bounded: a partition whose next offset reached its end is done. A partition can end
    /// with offsets no record has (transaction markers): the client's position tells.
    fn check_ends(&mut self) -> Option<usize> {
        let position = self.consumer.position().ok();
        for (i, p) in self.positions.iter_mut().enumerate() {
            let Some(end) = p.end else { continue };
            if self.finished[i] || !self.buffers[i].is_empty() {
                continue;
            }
            let fetched = position
                .as_ref()
                .and_then(|t| t.find_partition(&p.topic, p.partition))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            if p.next >= end || fetched >= end {
                p.next = p.next.max(end);
                self.finished[i] = true;
                return Some(i);
            }
        }
        None
    }

    /// New partitions of the topics (or of topics matching the pattern) that this subtask
    /// owns join its assignment, read from their start.
    fn discover(&mut self) -> Result<()> {
        let Some(every) = self.source.options.discovery_interval else {
            return Ok(());
        };
        if self.source.is_bounded() || self.last_discovery.elapsed() < every {
            return Ok(());
        }
        self.last_discovery = Instant::now();
        let all = self.source.partitions(&self.consumer)?;
        let new: Vec<(String, i32)> = all
            .into_iter()
            .filter(|(t, p)| {
                owner(t, *p, self.parallelism) == self.subtask && self.split_of(t, *p).is_none()
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let starts = self
            .source
            .resolve(&self.consumer, &new, &|_, _| Target::Earliest)?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in new.into_iter().zip(starts) {
            tpl.add_partition_offset(&topic, partition, Offset::Offset(next))
                .map_err(|e| self.source.client_error("assigning partitions", e))?;
            if self.positions.is_empty() && self.announced_empty {
                // The placeholder split 0 was finished; the first real one starts at 1.
                self.positions.push(PartitionPosition {
                    topic: String::new(),
                    partition: -1,
                    next: 0,
                    end: Some(0),
                });
                self.finished.push(true);
                self.buffers.push(VecDeque::new());
            }
            self.positions.push(PartitionPosition {
                topic,
                partition,
                next,
                end: None,
            });
            self.finished.push(false);
            self.buffers.push(VecDeque::new());
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| self.source.client_error("assigning new partitions", e))
    }
}

impl SourceReader for KafkaReader {
    fn splits(&self) -> usize {
        self.positions.len().max(1)
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.positions.iter().all(|p| p.partition < 0) && !self.announced_empty {
            // No partition is this subtask's (yet): its one split does not hold event time.
            self.announced_empty = true;
            if self.source.is_bounded() {
                return Ok(SourcePoll::Finished);
            }
            return Ok(SourcePoll::SplitFinished(0));
        }
        if self.buffers.iter().all(VecDeque::is_empty) {
            self.receive()?;
        }
        for split in 0..self.buffers.len() {
            if self.finished[split] || self.buffers[split].is_empty() {
                continue;
            }
            match self.take_batch(split)? {
                Some(batch) if batch.num_rows() > 0 => {
                    return Ok(SourcePoll::Batch { split, batch });
                }
                _ => {}
            }
        }
        if self.source.is_bounded() {
            if let Some(split) = self.check_ends() {
                return Ok(SourcePoll::SplitFinished(split));
            }
            if self.finished.iter().all(|f| *f) {
                return Ok(SourcePoll::Finished);
            }
        }
        self.discover()?;
        Ok(SourcePoll::Pending)
    }

    fn snapshot(&mut self, checkpoint: CheckpointId) -> Result<Vec<u8>> {
        let positions: Vec<PartitionPosition> = self
            .positions
            .iter()
            .filter(|p| p.partition >= 0)
            .cloned()
            .collect();
        let bytes =
            bincode::serialize(&positions).map_err(|e| Error::state("kafka source offsets", e))?;
        if self.source.options.group_id.is_some() {
            self.pending_commits.insert(checkpoint, positions);
        }
        Ok(bytes)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        // The newest positions at or before the completed checkpoint go to the group, for
        // monitoring (`kafka-consumer-groups`); the job itself resumes from its checkpoints.
        let done: Vec<CheckpointId> = self
            .pending_commits
            .range(..=checkpoint)
            .map(|(k, _)| *k)
            .collect();
        let mut positions = None;
        for k in done {
            positions = self.pending_commits.remove(&k);
        }
        let Some(positions) = positions else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for p in &positions {
            if tpl
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                .is_err()
            {
                continue;
            }
        }
        // The final checkpoint's commit is the reader's last act: wait for it.
        let mode = if checkpoint == flink_rs_core::checkpoint::FINAL_CHECKPOINT {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!(
                checkpoint,
                error = %e,
                "kafka source: committing offsets to the group failed"
            );
        }
        Ok(())
    }
}
