//! The Kafka sink, with Flink's three delivery guarantees.
//!
//! - `none`: messages are handed to the client and flushed when the input ends.
//! - `at-least-once`: at every checkpoint barrier the writer waits until the broker has
//!   acknowledged every message so far, so a completed checkpoint never lacks one.
//! - `exactly-once`: two-phase commit through Kafka transactions. Pre-commit (on the barrier)
//!   sets the messages written since the last barrier aside and stores them in the checkpoint;
//!   when the checkpoint completes they are written in one transaction of the producer
//!   `{prefix}-{subtask}`, and that transaction also commits, as the offset of partition 0 of
//!   the topic in group `{prefix}-{subtask}`, the checkpoint's id: data and marker become
//!   visible together or not at all. After a failure, the restored pending messages of each
//!   old writer are re-sent only if that writer's marker is below their checkpoint, so
//!   they are committed exactly once; initializing the transactional producer aborts a
//!   transaction a failed attempt left open. Readers see the output with
//!   `isolation.level = read_committed`, one checkpoint at a time, as with Flink.
//!
//!   Unlike Flink's sink, which keeps a transaction open from barrier to commit and resumes it
//!   after a failure through the client's internals, the messages of a checkpoint travel in
//!   the checkpoint (a write-ahead log), so checkpoints grow by the output written per
//!   interval; nothing depends on a broker's transaction timeout. The marker assumes that
//!   checkpoint ids grow along a job's history (they do, resuming included): two jobs, or two
//!   runs resumed from one old savepoint, need distinct `sink.transactional-id-prefix`es.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{Schema, SchemaRef};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use flink_rs_core::checkpoint::{CheckpointId, FINAL_CHECKPOINT, RestoredState};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Sink, SinkWriter};

use super::format::RowEncoder;
use super::options::{DeliveryGuarantee, KafkaSinkOptions, Partitioner};
use super::write_ahead::{Msg, Pending, WriteAhead, marker_of, not_yet_committed};

/// How long flushing, committing or reading metadata may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The changelog column of an updating input.
const OP_COLUMN: &str = "__op";

/// Writes to a Kafka topic (Flink's `KafkaSink`).
pub struct KafkaSink {
    options: Arc<KafkaSinkOptions>,
}

impl KafkaSink {
    pub fn new(options: KafkaSinkOptions) -> Result<Self> {
        if options.guarantee == DeliveryGuarantee::ExactlyOnce
            && options
                .transactional_id_prefix
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return Err(Error::User(
                "kafka sink: 'sink.delivery-guarantee' = 'exactly-once' needs 'sink.transactional-id-prefix'".into(),
            ));
        }
        if let Some(f) = &options.key_format {
            f.check_schema(&project(&options.schema, &options.key_fields)?, "key")?;
        }
        Ok(KafkaSink {
            options: Arc::new(options),
        })
    }
}

fn project(schema: &SchemaRef, names: &[String]) -> Result<SchemaRef> {
    let fields = names
        .iter()
        .map(|n| {
            schema
                .field_with_name(n)
                .cloned()
                .map_err(|_| Error::User(format!("kafka sink: the rows have no column `{n}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Remembers the first failed delivery; the writer fails with it.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if let Ok(mut f) = self.failed.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

struct KafkaWriter {
    /// The input's schema with the table's column names.
    schema: SchemaRef,
    options: Arc<KafkaSinkOptions>,
    subtask: usize,
    parallelism: usize,
    producer: BaseProducer<Deliveries>,
    key: Option<(RowEncoder, Vec<usize>)>,
    value: RowEncoder,
    value_cols: Vec<usize>,
    timestamp_col: Option<usize>,
    op_col: Option<usize>,
    partitions: i32,
    next_partition: i32,
    /// Exactly-once: written since the last barrier, and pre-committed per checkpoint.
    write_ahead: WriteAhead,
}

impl KafkaWriter {
    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::User(format!(
            "kafka sink (topic `{}`, bootstrap servers {}): {what}: {e}",
            self.options.topic, self.options.bootstrap_servers
        ))
    }

    fn check_deliveries(&self) -> Result<()> {
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone());
        match failed {
            Some(e) => Err(self.error("a message was not delivered", e)),
            None => Ok(()),
        }
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Msg>> {
        let n = batch.num_rows();
        let ops = match self.op_col {
            Some(i) => Some(
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| self.error("encoding", "the row kind column is not text"))?
                    .clone(),
            ),
            None => None,
        };
        let values = self.value.encode(&batch.project(&self.value_cols)?)?;
        let keys = match &self.key {
            Some((enc, cols)) => Some(enc.encode(&batch.project(cols)?)?),
            None => None,
        };
        let ts = match self.timestamp_col {
            Some(i) => Some(
                arrow::compute::cast(
                    batch.column(i),
                    &arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Millisecond,
                        None,
                    ),
                )?
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .ok_or_else(|| self.error("encoding", "the timestamp column is not a timestamp"))?
                .clone(),
            ),
            None => None,
        };
        let mut out = Vec::with_capacity(n);
        for (r, value) in values.into_iter().enumerate() {
            let value = match ops.as_ref().map(|o| o.value(r)) {
                // upsert-kafka: an update's old row is superseded by its new one, a deletion
                // is a tombstone for the key.
                Some("-U") => continue,
                Some("-D") => None,
                _ => Some(value),
            };
            let partition = match self.options.partitioner {
                Partitioner::Default => None,
                Partitioner::Fixed => Some(self.subtask as i32 % self.partitions.max(1)),
                Partitioner::RoundRobin => {
                    let p = self.next_partition;
                    self.next_partition = (p + 1) % self.partitions.max(1);
                    Some(p)
                }
            };
            out.push(Msg {
                key: keys.as_ref().map(|k| k[r].clone()),
                value,
                timestamp: ts.as_ref().and_then(|t| t.is_valid(r).then(|| t.value(r))),
                partition,
            });
        }
        Ok(out)
    }

    /// Hands a message to `producer`, waiting while its queue is full.
    fn send(&self, producer: &BaseProducer<Deliveries>, m: &Msg) -> Result<()> {
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.options.topic);
            if let Some(k) = &m.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(v) = &m.value {
                rec = rec.payload(v.as_slice());
            }
            if let Some(t) = m.timestamp {
                rec = rec.timestamp(t);
            }
            if let Some(p) = m.partition {
                rec = rec.partition(p);
            }
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(self.error("sending a message", e)),
            }
        }
    }

    fn flush(&self) -> Result<()> {
        self.producer
            .flush(TIMEOUT)
            .map_err(|e| self.error("flushing", e))?;
        self.check_deliveries()
    }

    /// Exactly-once: the transactional producer of writer `subtask`, initialized (which
    /// aborts a transaction an earlier attempt left open), and its committed marker.
    fn transactional(
        &self,
        subtask: usize,
    ) -> Result<(BaseProducer<Deliveries>, BaseConsumer, i64)> {
        let prefix = self
            .options
            .transactional_id_prefix
            .as_deref()
            .unwrap_or("flink-rs");
        let id = format!("{prefix}-{subtask}");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.options.bootstrap_servers)
            .set("transactional.id", &id);
        for (k, v) in &self.options.properties {
            c.set(k, v);
        }
        let producer: BaseProducer<Deliveries> = c
            .create_with_context(Deliveries::default())
            .map_err(|e| self.error("creating the transactional producer", e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| self.error(&format!("initializing transactions of `{id}`"), e))?;
        let group: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.options.bootstrap_servers)
            .set("group.id", &id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| self.error("creating the marker group's client", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.options.topic, 0);
        let committed = group
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| self.error(&format!("reading the marker of `{id}`"), e))?;
        let marker = committed
            .find_partition(&self.options.topic, 0)
            .and_then(|e| e.offset().to_raw())
            .unwrap_or(-1);
        Ok((producer, group, marker))
    }

    /// Writes `pending` (in checkpoint order) in one transaction of writer `subtask`'s
    /// producer, with its marker; a restored writer's `state` is first narrowed to what its
    /// marker does not cover.
    fn commit_pending(&self, subtask: usize, pending: Commit<'_>) -> Result<()> {
        let (producer, group, marker) = self.transactional(subtask)?;
        let todo = match pending {
            Commit::Ready(p) => p,
            Commit::Restored(state) => not_yet_committed(state, marker)?,
        };
        let Some(last) = todo.last().map(|p| p.checkpoint) else {
            return Ok(());
        };
        producer
            .begin_transaction()
            .map_err(|e| self.error("beginning a transaction", e))?;
        for p in &todo {
            for m in &p.messages {
                self.send(&producer, m)?;
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.options.topic, 0, Offset::Offset(marker_of(last)))
            .map_err(|e| self.error("marking the transaction", e))?;
        let meta = group
            .group_metadata()
            .ok_or_else(|| self.error("marking the transaction", "no group metadata"))?;
        producer
            .send_offsets_to_transaction(&tpl, &meta, TIMEOUT)
            .map_err(|e| self.error("marking the transaction", e))?;
        producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| self.error(&format!("committing checkpoint {last}'s transaction"), e))?;
        let failed = producer
            .context()
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone());
        if let Some(e) = failed {
            return Err(self.error("a message was not delivered", e));
        }
        Ok(())
    }
}

/// What [`KafkaWriter::commit_pending`] writes.
enum Commit<'a> {
    /// This writer's pending messages of completed checkpoints.
    Ready(Vec<Pending>),
    /// An old writer's stored pending messages.
    Restored(&'a [u8]),
}

impl SinkWriter for KafkaWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?;
        let msgs = self.encode(&batch)?;
        if self.options.guarantee == DeliveryGuarantee::ExactlyOnce {
            self.write_ahead.stage(msgs);
            return Ok(());
        }
        for m in &msgs {
            self.send(&self.producer, m)?;
        }
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()
    }

    fn recover(&mut self, restored: &RestoredState) -> Result<()> {
        if self.options.guarantee != DeliveryGuarantee::ExactlyOnce {
            return Ok(());
        }
        for (old_subtask, bytes) in &restored.operator {
            // Each old writer's pending messages are recovered by exactly one new writer,
            // with the old writer's transactional id (fencing whatever it left open).
            if old_subtask % self.parallelism.max(1) != self.subtask {
                continue;
            }
            self.commit_pending(*old_subtask, Commit::Restored(bytes))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.options.guarantee == DeliveryGuarantee::ExactlyOnce {
            self.write_ahead.seal(FINAL_CHECKPOINT);
            return Ok(());
        }
        self.flush()
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>> {
        match self.options.guarantee {
            DeliveryGuarantee::None => Ok(None),
            DeliveryGuarantee::AtLeastOnce => self.flush().map(|()| None),
            DeliveryGuarantee::ExactlyOnce => {
                // The final checkpoint's messages were sealed when the input ended.
                if checkpoint != FINAL_CHECKPOINT {
                    self.write_ahead.seal(checkpoint);
                }
                self.write_ahead.state()
            }
        }
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        if self.options.guarantee != DeliveryGuarantee::ExactlyOnce {
            return Ok(());
        }
        let ready = self.write_ahead.take_ready(checkpoint);
        if ready.is_empty() {
            return Ok(());
        }
        self.commit_pending(self.subtask, Commit::Ready(ready))
    }
}

impl Sink for KafkaSink {
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let o = &self.options;
        // The input's columns take the table's names, by position.
        let data: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != OP_COLUMN)
            .collect();
        if data.len() != o.schema.fields().len() {
            return Err(Error::User(format!(
                "kafka sink (topic `{}`): the query gives {} columns, the table takes {} ({})",
                o.topic,
                data.len(),
                o.schema.fields().len(),
                o.schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let renamed: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| match o.schema.fields().get(i) {
                    Some(t) if f.name() != OP_COLUMN => {
                        f.as_ref().clone().with_name(t.name().clone())
                    }
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let schema = &renamed;
        let index = |n: &str| schema.index_of(n).ok();
        let op_col = index(OP_COLUMN);
        let is_key = |n: &str| o.key_fields.iter().any(|k| k == n);
        let is_ts = |n: &str| o.timestamp_column.as_deref() == Some(n);
        let value_cols: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                let n = f.name().as_str();
                n != OP_COLUMN && !is_ts(n) && (o.value_includes_key || !is_key(n))
            })
            .map(|(i, _)| i)
            .collect();
        let value_schema = Arc::new(schema.project(&value_cols)?);
        o.value_format.check_schema(&value_schema, "value")?;
        let key = match &o.key_format {
            Some(f) => {
                let cols = o
                    .key_fields
                    .iter()
                    .map(|k| {
                        index(k).ok_or_else(|| {
                            Error::User(format!("kafka sink: the rows have no key column `{k}`"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some((RowEncoder::new(f.clone()), cols))
            }
            None => None,
        };
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &o.bootstrap_servers);
        if o.guarantee != DeliveryGuarantee::None {
            c.set("enable.idempotence", "true");
        }
        for (k, v) in &o.properties {
            c.set(k, v);
        }
        let producer: BaseProducer<Deliveries> =
            c.create_with_context(Deliveries::default()).map_err(|e| {
                Error::User(format!(
                    "kafka sink (bootstrap servers {}): cannot create the producer: {e}",
                    o.bootstrap_servers
                ))
            })?;
        let md = producer
            .client()
            .fetch_metadata(Some(&o.topic), TIMEOUT)
            .map_err(|e| {
                Error::User(format!(
                    "kafka sink: reading the metadata of topic `{}` failed (bootstrap servers {}): {e}",
                    o.topic, o.bootstrap_servers
                ))
            })?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == o.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(Error::User(format!(
                "kafka sink: topic `{}` does not exist (bootstrap servers {})",
                o.topic, o.bootstrap_servers
            )));
        }
        Ok(Box::new(KafkaWriter {
            schema: renamed.clone(),
            options: o.clone(),
            subtask,
            parallelism,
            producer,
            key,
            value: RowEncoder::new(o.value_format.clone()),
            value_cols,
            timestamp_col: o.timestamp_column.as_deref().and_then(index),
            op_col,
            partitions,
            next_partition: subtask as i32 % partitions,
            write_ahead: WriteAhead::default(),
        }))
    }
}
