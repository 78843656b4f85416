//! Window results against a brute-force oracle: for random out-of-order input whose disorder
//! stays within the watermark delay (so nothing is late), every window kind's output equals
//! an independent computation of the same windows, at parallelism 1, 2 and 4 alike.
//! Late data is checked against a replay of the watermark the source emits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::DataType;
use flink_rs::prelude::*;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
struct Event {
    key: i64,
    ts: i64,
    value: i64,
}

fn batches(events: &[Event], batch_rows: usize) -> Vec<RecordBatch> {
    let s = event_schema();
    events
        .chunks(batch_rows.max(1))
        .map(|c| {
            RecordBatch::try_new(
                s.clone(),
                vec![
                    Arc::new(Int64Array::from(
                        c.iter().map(|e| e.key).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(c.iter().map(|e| e.ts).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(
                        c.iter().map(|e| e.value).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("valid batch")
        })
        .collect()
}

fn event_schema() -> arrow::datatypes::SchemaRef {
    schema(&[
        ("key", DataType::Int64, false),
        ("ts", DataType::Int64, false),
        ("value", DataType::Int64, false),
    ])
}

/// (key, window_start, window_end, count, sum)
type Out = (i64, i64, i64, i64, i64);

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
    Cumulative(i64, i64),
}

impl Kind {
    fn windows(self) -> Windows {
        let ms = |v: i64| Duration::from_millis(v as u64);
        match self {
            Kind::Tumbling(s) => Windows::tumbling(ms(s)),
            Kind::Sliding(s, sl) => Windows::sliding(ms(s), ms(sl)),
            Kind::Session(g) => Windows::session(ms(g)),
            Kind::Cumulative(st, m) => Windows::cumulative(ms(st), ms(m)),
        }
    }
}

/// Brute force: which windows contain `ts`, computed from the definitions.
fn oracle_windows(kind: Kind, ts: i64) -> Vec<(i64, i64)> {
    match kind {
        Kind::Tumbling(size) => {
            let start = ts.div_euclid(size) * size;
            vec![(start, start + size)]
        }
        Kind::Sliding(size, slide) => {
            // every start = k·slide with start <= ts < start + size
            let lo = (ts - size).div_euclid(slide) - 1;
            let hi = ts.div_euclid(slide) + 1;
            (lo..=hi)
                .map(|k| k * slide)
                .filter(|s| *s <= ts && ts < s + size)
                .map(|s| (s, s + size))
                .collect()
        }
        Kind::Cumulative(step, max) => {
            let start = ts.div_euclid(max) * max;
            (1..=max / step)
                .map(|j| start + j * step)
                .filter(|e| ts < *e)
                .map(|e| (start, e))
                .collect()
        }
        Kind::Session(_) => unreachable!("sessions are computed per key"),
    }
}

fn oracle(kind: Kind, events: &[Event]) -> Vec<Out> {
    let mut acc: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    if let Kind::Session(gap) = kind {
        let mut by_key: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
        for e in events {
            by_key.entry(e.key).or_default().push(e);
        }
        for (k, mut es) in by_key {
            es.sort_by_key(|e| e.ts);
            let mut cur: Option<(i64, i64, i64, i64)> = None; // start, end, count, sum
            for e in es {
                cur = match cur {
                    // Flink merges windows that overlap or touch: [a, b) and [c, d) with c <= b.
                    Some((s, end, c, sum)) if e.ts <= end => {
                        Some((s, end.max(e.ts + gap), c + 1, sum + e.value))
                    }
                    Some((s, end, c, sum)) => {
                        acc.insert((k, s, end), (c, sum));
                        Some((e.ts, e.ts + gap, 1, e.value))
                    }
                    None => Some((e.ts, e.ts + gap, 1, e.value)),
                };
            }
            if let Some((s, end, c, sum)) = cur {
                acc.insert((k, s, end), (c, sum));
            }
        }
    } else {
        for e in events {
            for (s, end) in oracle_windows(kind, e.ts) {
                let a = acc.entry((e.key, s, end)).or_insert((0, 0));
                a.0 += 1;
                a.1 += e.value;
            }
        }
    }
    acc.into_iter()
        .map(|((k, s, e), (c, v))| (k, s, e, c, v))
        .collect()
}

/// Count and sum in one accumulator, so one window result holds both.
#[derive(Clone, Default)]
struct CountSum {
    value: usize,
}

impl AggregateFunction for CountSum {
    type Acc = (i64, i64);
    fn bind(&mut self, input: &arrow::datatypes::Schema) -> Result<Vec<arrow::datatypes::Field>> {
        self.value = input.index_of("value")?;
        Ok(vec![
            arrow::datatypes::Field::new("count", DataType::Int64, false),
            arrow::datatypes::Field::new("sum", DataType::Int64, false),
        ])
    }
    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, i64), row: RowRef<'_>) -> Result<()> {
        acc.0 += 1;
        acc.1 += row.i64(self.value).unwrap_or(0);
        Ok(())
    }
    fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(i64, i64)) -> Row {
        vec![Value::Int(acc.0), Value::Int(acc.1)]
    }
}

fn run_job(
    kind: Kind,
    events: &[Event],
    batch_rows: usize,
    parallelism: usize,
    delay: i64,
) -> Result<Vec<Out>> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism);
    let src = CollectionSource::new(event_schema(), batches(events, batch_rows))?;
    let out = env
        .from_source(
            src,
            Some(WatermarkStrategy::bounded_out_of_orderness(
                "ts",
                Duration::from_millis(delay as u64),
            )),
        )
        .key_by("key")
        .window(kind.windows())
        .aggregate(CountSum::default())?
        .collect();
    env.execute()?;
    let mut rows: Vec<Out> = out
        .rows()
        .into_iter()
        .map(|r| {
            let i = |k: usize| r[k].as_i64().unwrap_or(i64::MIN);
            (i(0), i(1), i(2), i(4), i(5))
        })
        .collect();
    rows.sort();
    Ok(rows)
}

/// Random events whose arrival order is at most `delay` behind the running maximum.
fn arb_events(delay: i64) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0i64..5, 0i64..3000, -50i64..50, 0i64..=delay), 1..120).prop_map(
        move |raw| {
            let mut max = i64::MIN;
            raw.into_iter()
                .map(|(key, t, value, back)| {
                    // Advance time monotonically, then step back by at most `delay`.
                    max = max.max(t);
                    Event {
                        key,
                        ts: (max - back).max(0),
                        value,
                    }
                })
                .collect()
        },
    )
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1i64..500).prop_map(Kind::Tumbling),
        (1i64..6, 1i64..150).prop_map(|(m, sl)| Kind::Sliding(sl * m, sl)),
        (1i64..300).prop_map(Kind::Session),
        (1i64..5, 1i64..200).prop_map(|(m, st)| Kind::Cumulative(st, st * m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn windows_equal_brute_force_at_parallelism_1_2_4(
        kind in arb_kind(),
        events in arb_events(200),
        batch_rows in 1usize..20,
    ) {
        let expected = oracle(kind, &events);
        for p in [1, 2, 4] {
            let got = run_job(kind, &events, batch_rows, p, 200).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, &expected, "kind {:?} parallelism {}", kind, p);
        }
    }
}

/// Late data: one row per batch at parallelism 1, so the watermark before row j is exactly
/// `max(ts[0..j]) - delay - 1`; replay that to know which rows are late.
fn late_oracle(
    size: i64,
    lateness: i64,
    delay: i64,
    events: &[Event],
) -> (Vec<Out>, Vec<(i64, i64, i64)>) {
    let mut wm = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut acc: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut late = Vec::new();
    for e in events {
        let start = e.ts.div_euclid(size) * size;
        let window_late = start + size - 1 + lateness <= wm;
        if window_late {
            // A tumbling window holds its own records, so the record is late too.
            assert!(e.ts + lateness <= wm);
            late.push((e.key, e.ts, e.value));
        } else {
            let a = acc.entry((e.key, start, start + size)).or_insert((0, 0));
            a.0 += 1;
            a.1 += e.value;
        }
        max_ts = max_ts.max(e.ts);
        wm = wm.max(max_ts - delay - 1);
    }
    late.sort();
    (
        acc.into_iter()
            .map(|((k, s, e), (c, v))| (k, s, e, c, v))
            .collect(),
        late,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn late_rows_go_to_the_side_output_exactly_when_late(
        events in arb_events(600),
        size in 50i64..400,
        lateness in 0i64..200,
        delay in 0i64..150,
    ) {
        let env = StreamExecutionEnvironment::new();
        let src = CollectionSource::new(event_schema(), batches(&events, 1))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let windowed = env
            .from_source(src, Some(WatermarkStrategy::bounded_out_of_orderness("ts", Duration::from_millis(delay as u64))))
            .key_by("key")
            .window(Windows::tumbling(Duration::from_millis(size as u64)))
            .allowed_lateness(Duration::from_millis(lateness as u64))
            .side_output_late_data("late")
            .aggregate(CountSum::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let results = windowed.collect();
        let late = windowed.side_output("late").map_err(|e| TestCaseError::fail(e.to_string()))?.collect();
        env.execute().map_err(|e| TestCaseError::fail(e.to_string()))?;

        let (expected, expected_late) = late_oracle(size, lateness, delay, &events);
        // With late firings a window may be emitted several times: the last emission counts.
        let mut last: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
        for r in results.rows() {
            let i = |k: usize| r[k].as_i64().unwrap_or(i64::MIN);
            last.insert((i(0), i(1), i(2)), (i(4), i(5)));
        }
        let got: Vec<Out> = last.into_iter().map(|((k, s, e), (c, v))| (k, s, e, c, v)).collect();
        prop_assert_eq!(got, expected);
        let mut got_late: Vec<(i64, i64, i64)> = late
            .rows()
            .into_iter()
            .map(|r| (r[0].as_i64().unwrap_or(0), r[1].as_i64().unwrap_or(0), r[2].as_i64().unwrap_or(0)))
            .collect();
        got_late.sort();
        prop_assert_eq!(got_late, expected_late);
    }
}

#[test]
fn reduce_and_process_window_functions() -> Result<()> {
    #[derive(Clone)]
    struct Values;
    impl ProcessWindowFunction for Values {
        fn bind(&mut self, _: &arrow::datatypes::Schema) -> Result<Vec<arrow::datatypes::Field>> {
            Ok(vec![arrow::datatypes::Field::new(
                "values",
                DataType::Utf8,
                false,
            )])
        }
        fn process(&self, _key: &Key, _w: Window, rows: &[Row], out: &mut Vec<Row>) -> Result<()> {
            let mut v: Vec<i64> = rows.iter().filter_map(|r| r[2].as_i64()).collect();
            v.sort();
            out.push(vec![Value::Str(format!("{v:?}"))]);
            Ok(())
        }
    }
    let events: Vec<Event> = (0..40)
        .map(|i| Event {
            key: i % 2,
            ts: i * 10,
            value: i,
        })
        .collect();
    let env = StreamExecutionEnvironment::new();
    let s = env.from_source(
        CollectionSource::new(event_schema(), batches(&events, 7))?,
        Some(WatermarkStrategy::monotonous("ts")),
    );
    let keyed = s
        .key_by("key")
        .window(Windows::tumbling(Duration::from_millis(100)));
    let maxes = keyed
        .reduce(|a, b| if b[2] > a[2] { b.clone() } else { a })?
        .collect();
    let lists = keyed.process(Values)?.collect();
    env.execute()?;
    let mut m: Vec<(i64, i64, i64)> = maxes
        .rows()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap_or(0),
                r[1].as_i64().unwrap_or(0),
                r[6].as_i64().unwrap_or(0),
            )
        })
        .collect();
    m.sort();
    // window [0,100) holds i = 0..9: key 0 max 8, key 1 max 9; and so on.
    let expected: Vec<(i64, i64, i64)> = (0..4)
        .flat_map(|w| [(0, w * 100, w * 10 + 8), (1, w * 100, w * 10 + 9)])
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(m, expected);
    let l: Vec<String> = lists
        .rows()
        .iter()
        .filter(|r| r[0] == Value::Int(0) && r[1] == Value::Int(0))
        .map(|r| r[4].to_string())
        .collect();
    assert_eq!(l, vec!["[0, 2, 4, 6, 8]".to_string()]);
    Ok(())
}
