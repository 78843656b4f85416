//! Word count over a text file: the classic first Flink job, on the DataStream API.
//!
//! ```text
//! cargo run --release --example wordcount -- README.md
//! ```
//!
//! Lines are split into lowercase words, keyed by word, and counted in keyed state; each
//! word's final count is emitted by an event-time timer at the end of the (bounded) input.

use anyhow::Context;
use arrow::datatypes::DataType;
use flink_rs::prelude::*;

#[derive(Clone, Default)]
struct CountWords {
    count: Option<ValueState<i64>>,
}

impl ProcessFunction for CountWords {
    fn open(&mut self, states: &mut StateRegistry<'_>) -> Result<()> {
        self.count = Some(states.value("count"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _: usize,
        _row: &Row,
        ctx: &mut ProcessContext<'_>,
        _: &mut RowCollector,
    ) -> Result<()> {
        if let Some(count) = &self.count {
            let n = count.get(ctx).unwrap_or(0);
            count.update(ctx, n + 1);
            // Fires once, when the final watermark closes the bounded input.
            ctx.register_event_time_timer(Timestamp::MAX);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        if let Some(n) = self.count.as_ref().and_then(|c| c.get(ctx)) {
            out.collect(vec![ctx.current_key().to_value(), Value::Int(n)])?;
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "README.md".to_string());
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let words = schema(&[("word", DataType::Utf8, false)]);
    let counts = env
        .from_source(FileSource::lines(&path), None)
        .flat_map_rows(words, |row, out| {
            for w in row[0]
                .as_str()
                .unwrap_or("")
                .split(|c: char| !c.is_alphanumeric())
            {
                if !w.is_empty() {
                    out.push(vec![Value::Str(w.to_lowercase())]);
                }
            }
            Ok(())
        })
        .key_by("word")
        .process(
            schema(&[
                ("word", DataType::Utf8, false),
                ("count", DataType::Int64, false),
            ]),
            CountWords::default(),
        )
        .collect();
    let started = std::time::Instant::now();
    env.execute()
        .with_context(|| format!("word count over {path}"))?;
    let mut rows = counts.rows();
    rows.sort_by(|a, b| {
        b[1].partial_cmp(&a[1])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a[0].to_string().cmp(&b[0].to_string()))
    });
    println!(
        "{} distinct words in {path}; the 10 most frequent:",
        rows.len()
    );
    for r in rows.iter().take(10) {
        println!("{:>6}  {}", r[1], r[0]);
    }
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}
