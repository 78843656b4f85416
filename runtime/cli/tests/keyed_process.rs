//! Keyed process functions with state and timers, two-input `connect`, and the file
//! connectors, each checked against a direct computation over the same input.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use arrow::datatypes::DataType;
use flink_rs::prelude::*;
use flink_rs::state::{ListState, MapState, ReducingState};

const EVENTS: u64 = 30_000;

fn bids(env: &StreamExecutionEnvironment) -> DataStream {
    env.from_source(
        BidGenerator::bounded(EVENTS).batch_size(1000),
        Some(WatermarkStrategy::monotonous("ts")),
    )
}

/// Per bidder: the number of bids and the highest price, emitted once at end of input by an
/// event-time timer at +∞, using value, reducing, list and map state.
#[derive(Clone, Default)]
struct BidderStats {
    count: Option<ValueState<i64>>,
    max_price: Option<ReducingState<i64>>,
    last_prices: Option<ListState<i64>>,
    per_auction: Option<MapState<i64, i64>>,
}

impl ProcessFunction for BidderStats {
    fn open(&mut self, s: &mut StateRegistry<'_>) -> Result<()> {
        self.count = Some(s.value("count"));
        self.max_price = Some(s.reducing("max", |a: &i64, b: &i64| *a.max(b)));
        self.last_prices = Some(s.list("prices"));
        self.per_auction = Some(s.map("per-auction"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _: &mut RowCollector,
    ) -> Result<()> {
        let (Some(count), Some(max), Some(list), Some(map)) = (
            &self.count,
            &self.max_price,
            &self.last_prices,
            &self.per_auction,
        ) else {
            return Err(Error::User("not opened".into()));
        };
        let price = row[2].as_i64().unwrap_or(0);
        let auction = row[0].as_i64().unwrap_or(0);
        let c = count.get(ctx).unwrap_or(0) + 1;
        count.update(ctx, c);
        max.add(ctx, price);
        list.add(ctx, price);
        let n = map.get(ctx, &auction).unwrap_or(0);
        map.put(ctx, auction, n + 1);
        ctx.register_event_time_timer(i64::MAX);
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(count), Some(max), Some(list), Some(map)) = (
            &self.count,
            &self.max_price,
            &self.last_prices,
            &self.per_auction,
        ) else {
            return Err(Error::User("not opened".into()));
        };
        let c = count.get(ctx).unwrap_or(0);
        let list_len = list.get(ctx).len() as i64;
        let map_total: i64 = map.entries(ctx).iter().map(|(_, v)| *v).sum();
        if list_len != c || map_total != c {
            return Err(Error::User(format!(
                "states disagree: {c} {list_len} {map_total}"
            )));
        }
        out.collect(vec![
            ctx.current_key().to_value(),
            Value::Int(c),
            Value::Int(max.get(ctx).unwrap_or(0)),
        ])?;
        count.clear(ctx);
        Ok(())
    }
}

fn expected_stats() -> BTreeMap<i64, (i64, i64)> {
    let mut m = BTreeMap::new();
    for i in 0..EVENTS {
        let bidder = 1000 + ((i * 40_503) % 100_000) as i64;
        let price = 100 + ((i * 16_807) % 10_000) as i64;
        let e = m.entry(bidder).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(price);
    }
    m
}

#[test]
fn keyed_state_and_timers_match_direct_computation() -> Result<()> {
    for p in [1, 3] {
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(p);
        let out = bids(&env)
            .key_by("bidder")
            .process(
                schema(&[
                    ("bidder", DataType::Int64, false),
                    ("bids", DataType::Int64, false),
                    ("max_price", DataType::Int64, false),
                ]),
                BidderStats::default(),
            )
            .collect();
        env.execute()?;
        let got: BTreeMap<i64, (i64, i64)> = out
            .rows()
            .iter()
            .map(|r| {
                (
                    r[0].as_i64().unwrap_or(0),
                    (r[1].as_i64().unwrap_or(0), r[2].as_i64().unwrap_or(0)),
                )
            })
            .collect();
        assert_eq!(got.len(), out.len(), "a key was emitted twice");
        assert_eq!(got, expected_stats(), "parallelism {p}");
    }
    Ok(())
}

/// Two keyed inputs: input 1 carries per-auction reserve prices, input 0 bids; at the end
/// every bid is emitted with whether it met its auction's reserve (a keyed two-input join).
#[derive(Clone, Default)]
struct ReserveJoin {
    reserve: Option<ValueState<i64>>,
    pending: Option<ListState<i64>>,
}

impl ProcessFunction for ReserveJoin {
    fn open(&mut self, s: &mut StateRegistry<'_>) -> Result<()> {
        self.reserve = Some(s.value("reserve"));
        self.pending = Some(s.list("bids"));
        Ok(())
    }
    fn process_element(
        &mut self,
        input: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _: &mut RowCollector,
    ) -> Result<()> {
        let (Some(reserve), Some(pending)) = (&self.reserve, &self.pending) else {
            return Err(Error::User("not opened".into()));
        };
        match input {
            0 => pending.add(ctx, row[2].as_i64().unwrap_or(0)),
            _ => reserve.update(ctx, row[1].as_i64().unwrap_or(0)),
        }
        ctx.register_event_time_timer(i64::MAX);
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: Timestamp,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(reserve), Some(pending)) = (&self.reserve, &self.pending) else {
            return Err(Error::User("not opened".into()));
        };
        let r = reserve.get(ctx);
        for p in pending.get(ctx) {
            let met = r.map_or(Value::Null, |r| Value::Bool(p >= r));
            out.collect(vec![ctx.current_key().to_value(), Value::Int(p), met])?;
        }
        Ok(())
    }
}

#[test]
fn connected_keyed_streams_join_both_inputs() -> Result<()> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let bids = bids(&env);
    let reserves = env.from_source(
        DataGen::new(schema(&[
            ("auction", DataType::Int64, false),
            ("reserve", DataType::Int64, false),
            ("ts", DataType::Int64, false),
        ]))?
        .field(
            "auction",
            FieldGen::Sequence {
                start: 1000,
                end: None,
            },
        )?
        .field(
            "reserve",
            FieldGen::Random {
                min: 100,
                max: 10_099,
            },
        )?
        .field(
            "ts",
            FieldGen::Sequence {
                start: 0,
                end: None,
            },
        )?
        .seed(7)
        .rows(100_000),
        Some(WatermarkStrategy::monotonous("ts")),
    );
    let reserve_rows = reserves.collect();
    let out = bids
        .key_by("auction")
        .connect(&reserves.key_by("auction"))
        .process(
            schema(&[
                ("auction", DataType::Int64, false),
                ("price", DataType::Int64, false),
                ("met", DataType::Boolean, true),
            ]),
            ReserveJoin::default(),
        )
        .collect();
    env.execute()?;
    let reserve: HashMap<i64, i64> = reserve_rows
        .rows()
        .iter()
        .map(|r| (r[0].as_i64().unwrap_or(0), r[1].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(reserve.len(), 100_000);
    let mut expected: Vec<(i64, i64, bool)> = (0..EVENTS)
        .map(|i| {
            let auction = 1000 + ((i * 2_654_435_761) % 100_000) as i64;
            let price = 100 + ((i * 16_807) % 10_000) as i64;
            (auction, price, price >= reserve[&auction])
        })
        .collect();
    expected.sort();
    let mut got: Vec<(i64, i64, bool)> = out
        .rows()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap_or(0),
                r[1].as_i64().unwrap_or(0),
                r[2] == Value::Bool(true),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn file_sink_and_source_round_trip_csv_and_json() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
    for (name, format) in [
        ("csv", FileFormat::csv_with_header()),
        ("json", FileFormat::json()),
    ] {
        let path = dir.path().join(name);
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        let s = bids(&env);
        let in_schema = s.schema().clone();
        let original = s.collect();
        s.sink(FileSink::new(&path, format.clone()));
        env.execute()?;
        // Part files are published under their final names only when complete.
        let names: Vec<String> = std::fs::read_dir(&path)
            .map_err(|e| Error::io("list", &path, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("inprogress")), "{names:?}");
        let env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        let back = env
            .from_source(FileSource::new(&path, format, in_schema), None)
            .collect();
        env.execute()?;
        let mut a = original.rows();
        let mut b = back.rows();
        a.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        b.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        assert_eq!(a.len(), EVENTS as usize);
        assert_eq!(a, b, "{name}");
    }
    Ok(())
}

#[test]
fn failing_task_fails_the_job_with_its_name_and_cause() -> Result<()> {
    let env = StreamExecutionEnvironment::new();
    env.from_source(BidGenerator::unbounded(), None)
        .filter(|b| {
            if b.num_rows() > 0 {
                Err(Error::User("boom in filter".into()))
            } else {
                Ok(arrow::array::BooleanArray::from(Vec::<bool>::new()))
            }
        })
        .rebalance()
        .sink(BlackholeSink::default());
    let err = env
        .execute()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("boom in filter") && err.contains("Filter"),
        "{err}"
    );

    let env = StreamExecutionEnvironment::new();
    env.from_source(BidGenerator::unbounded(), None)
        .rebalance()
        .map_batches(flink_rs::connectors::bid_schema(), |_| {
            panic!("panic in map")
        })
        .sink(BlackholeSink::default());
    let err = env
        .execute()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("panicked") && err.contains("panic in map"),
        "{err}"
    );
    Ok(())
}

#[test]
fn unknown_key_column_is_reported_before_running() {
    let env = StreamExecutionEnvironment::new();
    let err = bids(&env)
        .key_by("auctoin")
        .window(Windows::tumbling(Duration::from_secs(1)))
        .count()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("unknown column `auctoin`") && err.contains("auction, bidder"),
        "{err}"
    );
}

/// Re-emits every row unchanged.
#[derive(Clone, Default)]
struct PassThrough;

impl ProcessFunction for PassThrough {
    fn process_element(
        &mut self,
        _: usize,
        row: &Row,
        _: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        out.collect(row.clone())
    }
}

#[test]
fn partly_filled_hash_exchange_batches_are_sent_after_the_linger_time() -> Result<()> {
    // 100 rows/s never fill an 8192-row batch and no watermark or end of input flushes the
    // exchange: rows reach the sink only through the linger flush.
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.configure(|c| c.linger = Duration::from_millis(50));
    let s = env.from_source(BidGenerator::unbounded().rate(100.0), None);
    let out = s
        .key_by("auction")
        .process(s.schema().clone(), PassThrough)
        .collect();
    let job = env.execute_async()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.len() < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    job.cancel();
    job.wait()?;
    assert!(out.len() >= 20, "only {} rows arrived", out.len());
    Ok(())
}
