//! The Kafka connectors against a real Kafka-protocol broker on 127.0.0.1 (tansu, started by
//! `scripts/kafka-test-server`): SQL jobs reading and writing topics, metadata columns, bad
//! records, offsets across a savepoint at another parallelism, upsert-kafka.
//!
//! tansu 0.6 serves a partition only up to its last batch's first offset + 1 (its high
//! watermark ignores the batch's other records), so whatever writes to it here sends one
//! record per batch: the tests' own producer, and the jobs' sinks through
//! `'properties.batch.num.messages' = '1'` (a librdkafka option, passed through as in Flink).
//!
//! tansu does not implement `EndTxn`, so the exactly-once sink's end-to-end test is ignored
//! here (it runs against Apache Kafka named by `FLINK_RS_KAFKA_BOOTSTRAP`); a test here pins
//! that such a broker fails the job with the broker's reason rather than losing output.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use flink_rs::graph::ExecutionConfig;
use flink_rs::prelude::*;
use flink_rs::sql::compile;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The test broker; stopped when dropped (and by itself when this process is gone).
struct Broker {
    child: Option<std::process::Child>,
    servers: String,
}

/// One message read back: partition, offset, key, value.
type Read = (i32, i64, Option<String>, Option<String>);

impl Broker {
    fn start() -> Result<Self> {
        let (child, ready) = common::start_test_server("kafka-test-server", &[])?;
        // Dropped (and so stopped) below when it named no port.
        let mut broker = Broker {
            child: Some(child),
            servers: String::new(),
        };
        let port: u16 = ready
            .first()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::User(format!("kafka-test-server said READY {ready:?}")))?;
        broker.servers = format!("127.0.0.1:{port}");
        Ok(broker)
    }

    /// A broker run elsewhere (the exactly-once test's Apache Kafka).
    fn external(servers: &str) -> Result<Self> {
        Ok(Broker {
            child: None,
            servers: servers.to_string(),
        })
    }

    fn servers(&self) -> String {
        self.servers.clone()
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .create()
            .map_err(|e| Error::User(e.to_string()))?;
        let r = futures::executor::block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .map_err(|e| Error::User(e.to_string()))?;
        for t in r {
            t.map_err(|(t, e)| Error::User(format!("creating topic {t}: {e}")))?;
        }
        Ok(())
    }

    /// Writes `(partition, key, value)` messages and waits for their acknowledgement.
    fn produce(&self, topic: &str, msgs: &[(i32, Option<String>, String)]) -> Result<()> {
        // One message per batch: tansu 0.6 numbers a partition's end by its last batch's
        // first offset, which is right only for batches of one.
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("batch.num.messages", "1")
            .create()
            .map_err(|e| Error::User(e.to_string()))?;
        for (part, key, value) in msgs {
            let mut rec = BaseRecord::<str, str>::to(topic)
                .partition(*part)
                .payload(value);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            p.send(rec).map_err(|(e, _)| Error::User(e.to_string()))?;
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(30))
            .map_err(|e| Error::User(e.to_string()))
    }

    /// The messages of `topic`: at least `at_least` of them, and what else arrives within
    /// half a second, in partition and offset order. (tansu 0.6 reports a partition's end as
    /// the last batch's first offset + 1, so the ends it reports cannot be waited for.)
    fn read_all(&self, topic: &str, partitions: i32, at_least: usize) -> Result<Vec<Read>> {
        self.read(topic, partitions, at_least, "read_uncommitted")
    }

    /// As [`Broker::read_all`], seeing only committed transactions' messages.
    fn read_committed(&self, topic: &str, partitions: i32, at_least: usize) -> Result<Vec<Read>> {
        self.read(topic, partitions, at_least, "read_committed")
    }

    fn read(
        &self,
        topic: &str,
        partitions: i32,
        at_least: usize,
        isolation: &str,
    ) -> Result<Vec<Read>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("isolation.level", isolation)
            .set("group.id", "flink-rs-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| Error::User(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| Error::User(e.to_string()))?;
        }
        c.assign(&tpl).map_err(|e| Error::User(e.to_string()))?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet_since = Instant::now();
        while out.len() < at_least || quiet_since.elapsed() < Duration::from_millis(500) {
            if Instant::now() > deadline {
                return Err(Error::User(format!(
                    "timed out reading {topic}: {} of at least {at_least} messages",
                    out.len()
                )));
            }
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                let m = m.map_err(|e| Error::User(e.to_string()))?;
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                out.push((m.partition(), m.offset(), text(m.key()), text(m.payload())));
                quiet_since = Instant::now();
            }
        }
        out.sort_by_key(|(p, o, _, _)| (*p, *o));
        Ok(out)
    }

    /// The offsets group `group` committed for `topic`'s partitions.
    fn committed(&self, group: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.servers())
            .set("group.id", group)
            .create()
            .map_err(|e| Error::User(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| Error::User(e.to_string()))?;
        Ok((0..partitions)
            .map(|p| {
                got.find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(-1)
            })
            .collect())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a job that should fail ended: its error, or the outcome it had instead.
fn failure(job: Result<JobHandle>) -> String {
    match job.and_then(|j| j.wait()) {
        Err(e) => e.to_string(),
        Ok(o) => format!("{o:?}"),
    }
}

fn run(script: &str, settings: &[(&str, &str)]) -> Result<JobHandle> {
    let set: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    compile(script, ExecutionConfig::default(), &set)
        .map_err(|e| Error::User(e.to_string()))?
        .env
        .execute_async()
}

/// `n` orders as JSON, spread over `partitions` partitions round-robin: (partition, id, json).
fn orders(first: u64, n: u64, partitions: i32) -> Vec<(i32, Option<String>, String)> {
    (first..first + n)
        .map(|id| {
            (
                (id % partitions as u64) as i32,
                Some(format!("k{}", id % 7)),
                format!(
                    r#"{{"id": {id}, "amount": {}, "ts": "2024-01-01 00:00:{:02}.000"}}"#,
                    (id * 37) % 100,
                    id % 60
                ),
            )
        })
        .collect()
}

#[test]
fn sql_reads_a_topic_with_metadata_and_writes_another() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("orders", 3)?;
    broker.create_topic("big_orders", 2)?;
    let input = orders(0, 600, 3);
    broker.produce("orders", &input)?;
    let script = format!(
        "CREATE TABLE orders (
           id BIGINT, amount BIGINT, ts TIMESTAMP(3),
           part INT METADATA FROM 'partition' VIRTUAL,
           off BIGINT METADATA FROM 'offset' VIRTUAL,
           topic STRING METADATA VIRTUAL
         ) WITH ('connector' = 'kafka', 'topic' = 'orders',
           'properties.bootstrap.servers' = '{s}', 'properties.group.id' = 'reader',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'json');
         CREATE TABLE big_orders (id BIGINT, amount BIGINT, part INT, off BIGINT, topic STRING)
           WITH ('connector' = 'kafka', 'topic' = 'big_orders',
           'properties.bootstrap.servers' = '{s}', 'format' = 'json',
           'properties.batch.num.messages' = '1', 'key.format' = 'csv', 'key.fields' = 'id', 'sink.partitioner' = 'round-robin');
         INSERT INTO big_orders SELECT id, amount, part, off, topic FROM orders WHERE amount >= 50;",
        s = broker.servers()
    );
    assert_eq!(
        run(&script, &[("parallelism.default", "2")])?.wait()?,
        JobOutcome::Finished
    );

    // What each message's position was, as the broker numbered them (in order per partition).
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut expected: Vec<String> = Vec::new();
    for (part, _, json) in &input {
        let off = next_offset.entry(*part).or_insert(0);
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::User(e.to_string()))?;
        let (id, amount) = (
            v["id"].as_u64().unwrap_or(0),
            v["amount"].as_u64().unwrap_or(0),
        );
        if amount >= 50 {
            expected.push(format!(
                r#"{{"id":{id},"amount":{amount},"part":{part},"off":{off},"topic":"orders"}}"#
            ));
        }
        *off += 1;
    }
    expected.sort();
    let out = broker.read_all("big_orders", 2, expected.len())?;
    let mut got: Vec<String> = out.iter().filter_map(|(_, _, _, v)| v.clone()).collect();
    got.sort();
    assert_eq!(got.len(), expected.len(), "rows written");
    assert_eq!(got, expected);
    // Keys are the csv-encoded id; round-robin spread the rows over both partitions.
    for (_, _, k, v) in &out {
        let id = k.as_deref().unwrap_or("?");
        assert!(
            v.as_deref()
                .is_some_and(|v| v.starts_with(&format!(r#"{{"id":{id},"#)))
        );
    }
    assert!(out.iter().any(|m| m.0 == 0) && out.iter().any(|m| m.0 == 1));
    // The group got the offsets of the final checkpoint: every record read.
    assert_eq!(
        broker.committed("reader", "orders", 3)?,
        vec![200, 200, 200]
    );
    Ok(())
}

#[test]
fn a_record_that_cannot_be_read_names_its_topic_partition_and_offset() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("raw_in", 1)?;
    broker.create_topic("raw_out", 1)?;
    let mut msgs = orders(0, 3, 1);
    msgs.push((0, None, "this is not json".into()));
    msgs.extend(orders(3, 2, 1));
    broker.produce("raw_in", &msgs)?;
    let script = |ignore: bool| {
        format!(
            "CREATE TABLE raw_in (id BIGINT, amount BIGINT) WITH ('connector' = 'kafka',
               'topic' = 'raw_in', 'properties.bootstrap.servers' = '{s}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'json', 'json.ignore-parse-errors' = '{ignore}');
             CREATE TABLE raw_out (id STRING) WITH ('connector' = 'kafka', 'topic' = 'raw_out',
               'properties.bootstrap.servers' = '{s}', 'format' = 'raw',
               'properties.batch.num.messages' = '1');
             INSERT INTO raw_out SELECT CAST(id AS STRING) FROM raw_in;",
            s = broker.servers()
        )
    };
    let message = failure(run(&script(false), &[]));
    assert!(
        message.contains("topic `raw_in`, partition 0, offset 3"),
        "the error names the record: {message}"
    );
    assert_eq!(run(&script(true), &[])?.wait()?, JobOutcome::Finished);
    let got: Vec<String> = broker
        .read_all("raw_out", 1, 5)?
        .into_iter()
        .filter_map(|m| m.3)
        .collect();
    assert_eq!(got, vec!["0", "1", "2", "3", "4"]);
    Ok(())
}

#[test]
fn kafka_offsets_survive_a_savepoint_at_another_parallelism() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("events", 5)?;
    broker.produce("events", &orders(0, 1000, 5))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let (out, sp) = (dir.path().join("out"), dir.path().join("sp"));
    let script = format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
         CREATE TABLE events (id BIGINT, amount BIGINT) WITH ('connector' = 'kafka',
           'topic' = 'events', 'properties.bootstrap.servers' = '{s}',
           'properties.group.id' = 'events-job', 'scan.startup.mode' = 'earliest-offset',
           'format' = 'json');
         CREATE TABLE out (id BIGINT, amount BIGINT) WITH ('connector' = 'filesystem',
           'path' = '{out}', 'format' = 'csv');
         INSERT INTO out SELECT id, amount FROM events;",
        s = broker.servers(),
        out = out.display()
    );
    let job = run(&script, &[("parallelism.default", "2")])?;
    common::wait_until(
        "the first 1000 records committed",
        Duration::from_secs(60),
        || common::committed(&out).len() >= 1000,
    );
    let savepoint = job.stop_with_savepoint(Some(&sp.display().to_string()))?;
    assert!(matches!(job.wait()?, JobOutcome::Stopped { .. }));
    assert_eq!(common::committed(&out).len(), 1000);
    // Written while the job was away: read after the resume, at parallelism 3.
    broker.produce("events", &orders(1000, 1000, 5))?;
    let job = run(
        &script,
        &[
            ("parallelism.default", "3"),
            ("execution.savepoint.path", savepoint.as_str()),
        ],
    )?;
    common::wait_until(
        "all 2000 records committed",
        Duration::from_secs(60),
        || common::committed(&out).len() >= 2000,
    );
    // A few more checkpoints: nothing more may arrive.
    std::thread::sleep(Duration::from_millis(800));
    job.cancel();
    let _ = job.wait();
    let mut ids: Vec<u64> = common::committed(&out)
        .iter()
        .filter_map(|l| l.split(',').next().and_then(|v| v.parse().ok()))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..2000).collect::<Vec<_>>(),
        "every record exactly once"
    );
    // The job committed its checkpointed offsets to its group (for monitoring).
    let committed: i64 = broker.committed("events-job", "events", 5)?.iter().sum();
    assert_eq!(committed, 2000);
    Ok(())
}

#[test]
fn upsert_kafka_holds_an_updating_aggregate_as_a_compacted_changelog() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("clicks", 2)?;
    broker.create_topic("counts", 2)?;
    let users = ["ann", "bob", "cy", "dee"];
    let clicks: Vec<(i32, Option<String>, String)> = (0..300u64)
        .map(|i| {
            let u = users[(i * i % 4) as usize];
            (
                (i % 2) as i32,
                None,
                format!(r#"{{"user": "{u}", "n": {i}}}"#),
            )
        })
        .collect();
    broker.produce("clicks", &clicks)?;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, c) in &clicks {
        for u in users {
            if c.contains(&format!("\"{u}\"")) {
                *expected.entry(u.to_string()).or_default() += 1;
            }
        }
    }
    let script = format!(
        "CREATE TABLE clicks (`user` STRING, n BIGINT) WITH ('connector' = 'kafka',
           'topic' = 'clicks', 'properties.bootstrap.servers' = '{s}',
           'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
         CREATE TABLE counts (`user` STRING, clicks BIGINT, PRIMARY KEY (`user`) NOT ENFORCED)
           WITH ('connector' = 'upsert-kafka', 'topic' = 'counts',
           'properties.bootstrap.servers' = '{s}', 'key.format' = 'raw', 'value.format' = 'json',
           'properties.batch.num.messages' = '1');
         INSERT INTO counts SELECT `user`, COUNT(*) FROM clicks GROUP BY `user`;",
        s = broker.servers()
    );
    let job = run(&script, &[("parallelism.default", "2")])?;
    let table = |msgs: Vec<Read>| -> BTreeMap<String, u64> {
        let mut t = BTreeMap::new();
        for (_, _, k, v) in msgs {
            let k = k.unwrap_or_default();
            match v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()) {
                Some(v) => {
                    t.insert(k, v["clicks"].as_u64().unwrap_or(0));
                }
                None => {
                    t.remove(&k);
                }
            }
        }
        t
    };
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        last = table(broker.read_all("counts", 2, 2)?);
        if last == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    job.cancel();
    let _ = job.wait();
    assert_eq!(last, expected, "the topic's table (last value per key)");
    Ok(())
}

#[test]
fn exactly_once_on_a_broker_without_transactions_fails_with_the_brokers_reason() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("eo_in", 1)?;
    broker.create_topic("eo_out", 1)?;
    broker.produce("eo_in", &orders(0, 10, 1))?;
    let script = format!(
        "CREATE TABLE eo_in (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'eo_in',
           'properties.bootstrap.servers' = '{s}', 'scan.startup.mode' = 'earliest-offset',
           'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
         CREATE TABLE eo_out (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'eo_out',
           'properties.bootstrap.servers' = '{s}', 'format' = 'json',
           'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'eo');
         INSERT INTO eo_out SELECT id FROM eo_in;",
        s = broker.servers()
    );
    let message = failure(run(&script, &[]));
    assert!(message.contains("EndTxn"), "{message}");
    // Nothing became visible: the job's output was not committed.
    assert!(broker.read_all("eo_out", 1, 0)?.is_empty());
    Ok(())
}

/// Fails the job (an error, then a panic, alternately) when the rows it has seen pass each of
/// `n` points about `spacing` rows apart.
struct Injector {
    seen: std::sync::atomic::AtomicU64,
    points: std::sync::Mutex<Vec<u64>>,
    fired: std::sync::atomic::AtomicU32,
}

impl Injector {
    fn new(n: u64, spacing: u64) -> std::sync::Arc<Self> {
        let mut points: Vec<u64> = (1..=n)
            .map(|i| i * spacing + (i * 7919) % (spacing / 2))
            .collect();
        points.reverse();
        std::sync::Arc::new(Injector {
            seen: Default::default(),
            points: std::sync::Mutex::new(points),
            fired: Default::default(),
        })
    }

    fn check(&self, rows: usize) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let total = self.seen.fetch_add(rows as u64, SeqCst) + rows as u64;
        let due = match self.points.lock() {
            Ok(mut p) if p.last().is_some_and(|next| total >= *next) => p.pop().is_some(),
            _ => false,
        };
        if due {
            let k = self.fired.fetch_add(1, SeqCst);
            if k % 2 == 0 {
                return Err(Error::User(format!("injected failure #{k} at row {total}")));
            }
            panic!("injected panic #{k} at row {total}");
        }
        Ok(())
    }
}

/// Where the window job writes.
enum Out<'a> {
    Files(&'a Path),
    Topic(
        &'a str,
        flink_rs::connectors::kafka_options::DeliveryGuarantee,
    ),
}

/// A topic of `n` events (`k`, `ts`) over 4 partitions, each partition in event-time order.
fn produce_events(broker: &Broker, topic: &str, n: u64) -> Result<()> {
    broker.create_topic(topic, 4)?;
    let msgs: Vec<(i32, Option<String>, String)> = (0..n)
        .map(|i| {
            let ms = i * 3;
            (
                (i % 4) as i32,
                None,
                format!(
                    r#"{{"k": {}, "ts": "2024-01-01 00:{:02}:{:02}.{:03}"}}"#,
                    (i * 7) % 13,
                    ms / 60_000,
                    (ms / 1000) % 60,
                    ms % 1000
                ),
            )
        })
        .collect();
    broker.produce(topic, &msgs)
}

/// Kafka (bounded at the topic's end) → fault injector → per `k`, tumbling 1 s count
/// windows → `out`; checkpoints every 20 ms, restarts on failure. The DataStream API's view of
/// the same connectors SQL uses.
fn window_job(
    broker: &Broker,
    topic: &str,
    out: Out<'_>,
    inject: std::sync::Arc<Injector>,
    checkpoints: &Path,
) -> Result<JobHandle> {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use flink_rs::connectors::kafka_options::*;
    use flink_rs::connectors::{FileFormat, FileSink, KafkaSink, KafkaSource};
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.configure(|c| {
        c.checkpoint.interval = Some(Duration::from_millis(20));
        c.checkpoint.dir = Some(checkpoints.display().to_string());
        c.restart = RestartStrategy::FixedDelay {
            attempts: 100,
            delay: Duration::from_millis(5),
        };
    });
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    let source = KafkaSource::new(KafkaSourceOptions {
        bootstrap_servers: broker.servers(),
        topics: Topics::Names(vec![topic.to_string()]),
        group_id: None,
        properties: Vec::new(),
        startup: StartupMode::EarliestOffset,
        bounded: BoundedMode::LatestOffset,
        schema: schema.clone(),
        value_format: RecordFormat::json(),
        key_format: None,
        key_fields: Vec::new(),
        value_includes_key: true,
        metadata: Vec::new(),
        discovery_interval: None,
        batch_size: 200,
    })?;
    let counts = env
        .from_source(source, Some(WatermarkStrategy::monotonous("ts")))
        .uid("events")
        .map_batches(schema, move |b| {
            inject.check(b.num_rows())?;
            Ok(b)
        })
        .uid("injector")
        .key_by("k")
        .window(Windows::tumbling(Duration::from_secs(1)))
        .aggregate(Count)?
        .uid("windows");
    match out {
        Out::Files(dir) => counts.sink(FileSink::new(dir, FileFormat::csv())),
        Out::Topic(topic, guarantee) => {
            let sink_schema = counts.schema();
            counts.sink(KafkaSink::new(KafkaSinkOptions {
                bootstrap_servers: broker.servers(),
                topic: topic.to_string(),
                // See the module's note on tansu's batches.
                properties: vec![("batch.num.messages".into(), "1".into())],
                schema: sink_schema.clone(),
                value_format: RecordFormat::json(),
                key_format: None,
                key_fields: Vec::new(),
                value_includes_key: true,
                timestamp_column: None,
                guarantee,
                transactional_id_prefix: Some(format!("{topic}-tx")),
                partitioner: Partitioner::Default,
                upsert: false,
            })?)
        }
    }
    .uid("sink");
    env.execute_async()
}

const EVENTS: u64 = 24_000;

#[test]
fn the_kafka_source_is_exactly_once_through_twenty_injected_failures() -> Result<()> {
    let broker = Broker::start()?;
    produce_events(&broker, "events", EVENTS)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let (calm, faulty) = (dir.path().join("calm"), dir.path().join("faulty"));
    let job = window_job(
        &broker,
        "events",
        Out::Files(&calm),
        Injector::new(0, 1),
        &dir.path().join("cp1"),
    )?;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    let inject = Injector::new(22, 1_500);
    let job = window_job(
        &broker,
        "events",
        Out::Files(&faulty),
        inject.clone(),
        &dir.path().join("cp2"),
    )?;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    let fired = inject.fired.load(std::sync::atomic::Ordering::SeqCst);
    assert!(fired >= 20, "only {fired} failures were injected");
    let expected = common::committed(&calm);
    let total: u64 = expected
        .iter()
        .filter_map(|l| l.rsplit(',').next().and_then(|c| c.parse::<u64>().ok()))
        .sum();
    assert_eq!(
        total, EVENTS,
        "the failure-free run counts every event once"
    );
    assert!(
        common::committed(&faulty) == expected,
        "window counts after {fired} failures"
    );
    Ok(())
}

/// The sink's output through injected failures, against a failure-free run's: every record
/// at least once (`at-least-once`) or each exactly once (`exactly-once`, read committed).
fn sink_through_failures(
    broker: &Broker,
    guarantee: flink_rs::connectors::kafka_options::DeliveryGuarantee,
) -> Result<()> {
    use flink_rs::connectors::kafka_options::DeliveryGuarantee;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    // Fresh topics per run: an external broker keeps them between runs.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (input, calm, faulty) = (
        format!("sink_in_{run}"),
        format!("calm_out_{run}"),
        format!("faulty_out_{run}"),
    );
    produce_events(broker, &input, EVENTS)?;
    broker.create_topic(&calm, 2)?;
    broker.create_topic(&faulty, 2)?;
    let job = window_job(
        broker,
        &input,
        Out::Topic(&calm, guarantee),
        Injector::new(0, 1),
        &dir.path().join("cp1"),
    )?;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    let inject = Injector::new(22, 1_500);
    let job = window_job(
        broker,
        &input,
        Out::Topic(&faulty, guarantee),
        inject.clone(),
        &dir.path().join("cp2"),
    )?;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    assert!(inject.fired.load(std::sync::atomic::Ordering::SeqCst) >= 20);
    let values = |topic: &str, at_least: usize| -> Result<Vec<String>> {
        let mut v: Vec<String> = broker
            .read_committed(topic, 2, at_least)?
            .into_iter()
            .filter_map(|m| m.3)
            .collect();
        v.sort();
        Ok(v)
    };
    let expected = values(&calm, 1)?;
    let got = values(&faulty, expected.len())?;
    if guarantee == DeliveryGuarantee::ExactlyOnce {
        assert!(
            got == expected,
            "{} records, {} expected",
            got.len(),
            expected.len()
        );
    } else {
        let mut distinct = got.clone();
        distinct.dedup();
        assert!(distinct == expected, "every record at least once");
    }
    Ok(())
}

#[test]
fn the_at_least_once_sink_writes_every_record_through_twenty_injected_failures() -> Result<()> {
    let broker = Broker::start()?;
    sink_through_failures(
        &broker,
        flink_rs::connectors::kafka_options::DeliveryGuarantee::AtLeastOnce,
    )
}

#[test]
#[ignore = "needs a broker with transactions (tansu 0.6 has no EndTxn): set FLINK_RS_KAFKA_BOOTSTRAP to an Apache Kafka broker (examples/kafka/docker-compose.yml) and run with --ignored"]
fn the_exactly_once_sink_writes_each_record_once_through_twenty_injected_failures() -> Result<()> {
    let servers = std::env::var("FLINK_RS_KAFKA_BOOTSTRAP")
        .map_err(|_| Error::User("FLINK_RS_KAFKA_BOOTSTRAP names the broker".into()))?;
    let broker = Broker::external(&servers)?;
    sink_through_failures(
        &broker,
        flink_rs::connectors::kafka_options::DeliveryGuarantee::ExactlyOnce,
    )
}

#[test]
fn an_unreachable_broker_fails_the_job_naming_the_bootstrap_servers() -> Result<()> {
    // Nothing listens on port 1; the request timeout is Kafka's option, shortened.
    let script = "CREATE TABLE t (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 't',
           'properties.bootstrap.servers' = '127.0.0.1:1',
           'properties.default.api.timeout.ms' = '1500',
           'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
         CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
         INSERT INTO out SELECT id FROM t;";
    let started = Instant::now();
    let message = failure(run(script, &[]));
    assert!(
        message.contains("bootstrap servers 127.0.0.1:1"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed after the timeout"
    );
    Ok(())
}

#[test]
fn an_idle_partition_does_not_hold_windows_back_and_new_topics_are_discovered() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("clicks-a", 2)?;
    let at = |s: u64| format!(r#"{{"n": 1, "ts": "2024-01-01 00:00:{s:02}.000"}}"#);
    // Only partition 0 has data; partition 1 stays empty.
    let msgs: Vec<(i32, Option<String>, String)> = [1, 2, 6, 7, 8, 12]
        .iter()
        .map(|s| (0, None, at(*s)))
        .collect();
    broker.produce("clicks-a", &msgs)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    let out = dir.path().join("out");
    let script = format!(
        "SET 'execution.checkpointing.interval' = '100 ms';
         CREATE TABLE clicks (n BIGINT, ts TIMESTAMP(3), topic STRING METADATA VIRTUAL,
           WATERMARK FOR ts AS ts) WITH ('connector' = 'kafka',
           'topic-pattern' = 'clicks-.*', 'properties.bootstrap.servers' = '{s}',
           'scan.startup.mode' = 'earliest-offset', 'format' = 'json',
           'scan.watermark.idle-timeout' = '300 ms',
           'scan.topic-partition-discovery.interval' = '200 ms');
         CREATE TABLE out (topic STRING, window_start TIMESTAMP(3), c BIGINT) WITH (
           'connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');
         INSERT INTO out SELECT topic, window_start, COUNT(*) FROM TABLE(
           TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '5' SECOND))
           GROUP BY topic, window_start, window_end;",
        s = broker.servers(),
        out = out.display()
    );
    let job = run(&script, &[("parallelism.default", "1")])?;
    // Windows [0 s, 5 s) and [5 s, 10 s) close on partition 0's watermark alone.
    common::wait_until("two windows of clicks-a", Duration::from_secs(30), || {
        common::committed(&out).len() >= 2
    });
    // A topic matching the pattern, created while the job runs, is found and read.
    broker.create_topic("clicks-b", 1)?;
    // (After the watermark passed 12 s: earlier rows of it would be late.) clicks-a stays
    // idle: clicks-b's own rows move the watermark past its window.
    broker.produce("clicks-b", &[(0, None, at(17)), (0, None, at(22))])?;
    common::wait_until("a window of clicks-b", Duration::from_secs(30), || {
        common::committed(&out)
            .iter()
            .any(|l| l.starts_with("clicks-b"))
    });
    job.cancel();
    let _ = job.wait();
    let lines = common::committed(&out);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("clicks-a,2024-01-01 00:00:00,") && l.ends_with(",2")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("clicks-a,2024-01-01 00:00:05,") && l.ends_with(",3")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("clicks-b,2024-01-01 00:00:15,") && l.ends_with(",1")),
        "{lines:?}"
    );
    Ok(())
}
