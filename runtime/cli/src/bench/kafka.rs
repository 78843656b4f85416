//! `bench/run kafka-source` and `bench/run kafka-pipeline`: the Kafka connectors against a
//! broker on this machine.
//!
//! The input topic (4 partitions) is filled first with `events` JSON bids (not timed; its rate
//! is printed on stderr), then the job runs bounded at the topic's end:
//! - `kafka-source`: topic → blackhole (the source and JSON decoding alone);
//! - `kafka-pipeline`: topic → `price > 500` → topic (JSON, at-least-once).
//!
//! The broker is `FLINK_RS_KAFKA_BOOTSTRAP` when set, else the test broker that
//! `scripts/kafka-test-server` starts (tansu; it takes one record per batch, see
//! docs/kafka.md, so the sink is told `batch.num.messages = 1` there).

use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::{BenchOptions, BenchResult};
use crate::error::{Error, Result};

const PARTITIONS: i32 = 4;

/// The broker: an address, and the test server's process when this run started one.
struct Broker {
    servers: String,
    tansu: bool,
    _child: Option<ChildGuard>,
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker() -> Result<Broker> {
    if let Ok(servers) = std::env::var("FLINK_RS_KAFKA_BOOTSTRAP") {
        return Ok(Broker {
            servers,
            tansu: false,
            _child: None,
        });
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-test-server");
    let mut child = std::process::Command::new(&script)
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("start", &script, e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::User("no output from the Kafka test server".into()))?;
    let guard = ChildGuard(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| Error::io("read", &script, e))?;
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| Error::User(format!("the Kafka test server did not start: {line:?}")))?;
    Ok(Broker {
        servers: format!("127.0.0.1:{port}"),
        tansu: true,
        _child: Some(guard),
    })
}

fn client_err(what: &str) -> impl Fn(KafkaError) -> Error + '_ {
    move |e| Error::User(format!("{what}: {e}"))
}

fn create_topic(b: &Broker, name: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.servers)
        .create()
        .map_err(client_err("admin client"))?;
    let r = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .map_err(client_err("creating topics"))?;
    for t in r {
        t.map_err(|(t, e)| Error::User(format!("creating topic {t}: {e}")))?;
    }
    Ok(())
}

/// Fills `topic` with `events` bids; returns how many pass `price > 500`.
fn fill(b: &Broker, topic: &str, events: u64) -> Result<u64> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.servers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    if b.tansu {
        c.set("batch.num.messages", "1");
    }
    let p: BaseProducer = c.create().map_err(client_err("producer"))?;
    let start = Instant::now();
    let mut passing = 0;
    for i in 0..events {
        let price = (i * 7919) % 1000;
        passing += u64::from(price > 500);
        let value = format!(
            r#"{{"auction":{},"bidder":{},"price":{price},"ts":{}}}"#,
            1000 + (i * 31) % 1000,
            i % 10_000,
            1_700_000_000_000 + i
        );
        let part = (i % PARTITIONS as u64) as i32;
        loop {
            match p.send(
                BaseRecord::<str, str>::to(topic)
                    .partition(part)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::User(format!("producing the input: {e}"))),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(600))
        .map_err(client_err("producing the input"))?;
    let s = start.elapsed().as_secs_f64();
    eprintln!(
        "input: {events} messages into {topic} in {s:.2} s ({:.0}/s)",
        events as f64 / s.max(1e-9)
    );
    Ok(passing)
}

/// Runs `kafka-source` or `kafka-pipeline` over `events` events.
pub fn run_kafka(
    name: &str,
    parallelism: usize,
    events: u64,
    opts: &BenchOptions,
) -> Result<BenchResult> {
    if name != "kafka-source" && name != "kafka-pipeline" {
        return Err(Error::config(
            "workload",
            format!("unknown workload `{name}`; Kafka workloads: kafka-source, kafka-pipeline"),
        ));
    }
    let b = broker()?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (input, output) = (format!("bench_in_{run}"), format!("bench_out_{run}"));
    create_topic(&b, &input)?;
    create_topic(&b, &output)?;
    let passing = fill(&b, &input, events)?;
    let batch = if b.tansu {
        ", 'properties.batch.num.messages' = '1'"
    } else {
        ""
    };
    let source = format!(
        "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, ts BIGINT) WITH (
           'connector' = 'kafka', 'topic' = '{input}', 'properties.bootstrap.servers' = '{s}',
           'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
           'format' = 'json');",
        s = b.servers
    );
    let script = if name == "kafka-source" {
        format!(
            "{source}
             CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, ts BIGINT)
               WITH ('connector' = 'blackhole');
             INSERT INTO out SELECT * FROM bids;"
        )
    } else {
        format!(
            "{source}
             CREATE TABLE out (auction BIGINT, price BIGINT) WITH ('connector' = 'kafka',
               'topic' = '{output}', 'properties.bootstrap.servers' = '{s}', 'format' = 'json'{batch});
             INSERT INTO out SELECT auction, price FROM bids WHERE price > 500;",
            s = b.servers
        )
    };
    let source_only = name == "kafka-source";
    super::run_script(name, &script, parallelism, events, opts, |blackhole| {
        if source_only { blackhole } else { passing }
    })
}
