//! The Nexmark generator: an online auction's Person, Auction and Bid events in the standard
//! 1:3:46 proportions, with event times, in the shape of Flink's nexmark table (`event_type`,
//! and nullable `person`, `auction`, `bid` structs, plus a top-level `dateTime`).
//!
//! Deterministic: event `n` is a pure function of `n` and the seed. Event `n` happens at
//! `base_time + n · 1000 / events_per_second` ms. Bids pick auctions and bidders among the
//! recently created ones, with a hot subset (as the Nexmark generator does), so joins and
//! top-N queries see realistic skew.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use bytes::Bytes;

use super::ranges::Ranges;
use flink_rs_core::error::Result;
use flink_rs_core::key::mix64;
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_ID: i64 = 1000;
const HOT_RATIO: u64 = 4;
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const CITIES: [&str; 6] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const FIRST_NAMES: [&str; 6] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky"];
const LAST_NAMES: [&str; 6] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton"];

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn person_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("emailAddress", DataType::Utf8, false),
        Field::new("creditCard", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("dateTime", ts_type(), false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

fn auction_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("itemName", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("initialBid", DataType::Int64, false),
        Field::new("reserve", DataType::Int64, false),
        Field::new("dateTime", ts_type(), false),
        Field::new("expires", ts_type(), false),
        Field::new("seller", DataType::Int64, false),
        Field::new("category", DataType::Int64, false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

fn bid_fields() -> Fields {
    Fields::from(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("dateTime", ts_type(), false),
        Field::new("extra", DataType::Utf8, false),
    ])
}

/// Schema of the nexmark stream (`event_type`: 0 person, 1 auction, 2 bid).
pub fn nexmark_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Int32, false),
        Field::new("person", DataType::Struct(person_fields()), true),
        Field::new("auction", DataType::Struct(auction_fields()), true),
        Field::new("bid", DataType::Struct(bid_fields()), true),
        Field::new("dateTime", ts_type(), false),
    ]))
}

/// The generator's string fields (`struct.field`) that cost time to write.
pub const STRING_FIELDS: &[&str] = &[
    "person.name",
    "person.emailAddress",
    "person.creditCard",
    "person.city",
    "person.state",
    "auction.itemName",
    "auction.description",
    "bid.channel",
    "bid.url",
];

/// The [`STRING_FIELDS`] a job never reads, filled in by the SQL planner as it plans the
/// job's statements (projection push-down, as Flink's sources take projections): the
/// generator writes empty strings there. Every other value is unchanged, and so are the
/// schema and the positions a checkpoint holds. Empty (the default): everything is written.
pub type UnreadFields = Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>;

/// Configuration of the Nexmark generator.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    /// Total events (`None`: unbounded).
    pub events: Option<u64>,
    /// Event-time rate: how many events per event-time second.
    pub events_per_second: u64,
    /// Event time of event 0 (epoch ms).
    pub base_time: i64,
    /// Wall-clock rate limit over all subtasks.
    pub rate: Option<f64>,
    pub seed: u64,
    pub batch_size: usize,
    /// String fields not to write (see [`UnreadFields`]).
    pub unread: UnreadFields,
}

impl NexmarkGenerator {
    /// `events` events at 10 000 events per event-time second.
    pub fn bounded(events: u64) -> Self {
        NexmarkGenerator {
            events: Some(events),
            events_per_second: 10_000,
            base_time: 1_577_836_800_000,
            rate: None,
            seed: 0,
            batch_size: 8192,
            unread: UnreadFields::default(),
        }
    }

    /// Event time of event `n`.
    pub fn event_time(&self, n: u64) -> i64 {
        self.base_time + (n as u128 * 1000 / u128::from(self.events_per_second.max(1))) as i64
    }

    fn rnd(&self, n: u64, salt: u64) -> u64 {
        mix64(self.seed ^ mix64(n.wrapping_mul(31).wrapping_add(salt)))
    }

    /// Id of the last person created at or before event `n`.
    fn last_person(n: u64) -> i64 {
        FIRST_ID + (n / TOTAL_PROPORTION) as i64
    }

    /// Id of the last auction created at or before event `n`.
    fn last_auction(n: u64) -> i64 {
        let epoch = n / TOTAL_PROPORTION;
        let rem = n % TOTAL_PROPORTION;
        let in_epoch = if rem < PERSON_PROPORTION {
            0
        } else {
            (rem - PERSON_PROPORTION + 1).min(AUCTION_PROPORTION)
        };
        FIRST_ID + (epoch * AUCTION_PROPORTION + in_epoch) as i64 - 1
    }

    /// Generates events `[start, end)`.
    pub fn generate(&self, start: u64, end: u64) -> Result<RecordBatch> {
        let n_rows = (end - start) as usize;
        let write = {
            let unread = self.unread.read().map(|u| u.clone()).unwrap_or_default();
            move |field: &str| !unread.contains(field)
        };
        let (w_name, w_email, w_cc, w_city, w_state) = (
            write("person.name"),
            write("person.emailAddress"),
            write("person.creditCard"),
            write("person.city"),
            write("person.state"),
        );
        let (w_item, w_desc, w_channel, w_url) = (
            write("auction.itemName"),
            write("auction.description"),
            write("bid.channel"),
            write("bid.url"),
        );
        let mut kind = Vec::with_capacity(n_rows);
        let mut time = Vec::with_capacity(n_rows);
        let (mut p_valid, mut a_valid, mut b_valid) = (
            Vec::with_capacity(n_rows),
            Vec::with_capacity(n_rows),
            Vec::with_capacity(n_rows),
        );
        // Strings are written straight into Arrow builders (no String per row); columns no
        // statement reads are not built at all.
        let col = |write: bool, bytes: usize| StrCol::new(write, n_rows, bytes);
        let (mut p_name, mut p_email, mut p_cc, mut p_city, mut p_state) = (
            col(w_name, n_rows),
            col(w_email, n_rows),
            col(w_cc, n_rows),
            col(w_city, n_rows),
            col(w_state, n_rows),
        );
        let (mut a_item, mut a_desc) = (col(w_item, n_rows), col(w_desc, n_rows));
        // Most rows are bids, and their URLs are about 60 bytes.
        let (mut b_channel, mut b_url) = (col(w_channel, n_rows * 8), col(w_url, n_rows * 64));
        let lower_first: Vec<String> = FIRST_NAMES.iter().map(|s| s.to_lowercase()).collect();
        let lower_last: Vec<String> = LAST_NAMES.iter().map(|s| s.to_lowercase()).collect();
        let v = || Vec::<i64>::with_capacity(n_rows);
        let mut p_id = v();
        let (mut a_id, mut a_init, mut a_res, mut a_exp, mut a_seller, mut a_cat) =
            (v(), v(), v(), v(), v(), v());
        let (mut b_auction, mut b_bidder, mut b_price) = (v(), v(), v());
        for n in start..end {
            let t = self.event_time(n);
            time.push(t);
            let rem = n % TOTAL_PROPORTION;
            let r = self.rnd(n, 1);
            let (is_p, is_a) = (
                rem < PERSON_PROPORTION,
                (PERSON_PROPORTION..PERSON_PROPORTION + AUCTION_PROPORTION).contains(&rem),
            );
            p_valid.push(is_p);
            a_valid.push(is_a);
            b_valid.push(!is_p && !is_a);
            kind.push(if is_p {
                0
            } else if is_a {
                1
            } else {
                2
            });
            // Person (placeholder values where the row is not a person: masked by nulls).
            let pid = Self::last_person(n);
            p_id.push(pid);
            let (fi, li) = ((r % 6) as usize, ((r >> 8) % 6) as usize);
            p_name.row(|b| {
                if is_p {
                    let _ = write!(b, "{} {}", FIRST_NAMES[fi], LAST_NAMES[li]);
                }
            });
            p_email.row(|b| {
                if is_p {
                    let _ = write!(b, "{}@{}.com", lower_first[fi], lower_last[li]);
                }
            });
            p_cc.row(|b| {
                if is_p {
                    let _ = write!(
                        b,
                        "{:04} {:04} {:04} {:04}",
                        r % 10000,
                        (r >> 14) % 10000,
                        (r >> 28) % 10000,
                        (r >> 42) % 10000
                    );
                }
            });
            // Only person rows carry these (other rows are masked by the struct's nulls).
            p_city.row(|b| {
                if is_p {
                    let _ = b.write_str(CITIES[((r >> 16) % 6) as usize]);
                }
            });
            p_state.row(|b| {
                if is_p {
                    let _ = b.write_str(STATES[((r >> 24) % 6) as usize]);
                }
            });
            // Auction.
            let aid = Self::last_auction(n);
            a_id.push(aid);
            a_item.row(|b| {
                if is_a {
                    let _ = write!(b, "item-{aid}");
                }
            });
            a_desc.row(|b| {
                if is_a {
                    let _ = write!(b, "description of {aid}");
                }
            });
            let init = 100 + (r % 10_000) as i64;
            a_init.push(init);
            a_res.push(init + ((r >> 20) % 1000) as i64);
            a_exp.push(t + 10_000 + ((r >> 30) % 20_000) as i64);
            // Sellers: mostly hot persons.
            let seller = if (r >> 40) % HOT_RATIO > 0 {
                (pid / 10) * 10
            } else {
                FIRST_ID + ((r >> 44) % (pid - FIRST_ID + 1) as u64) as i64
            };
            a_seller.push(seller.max(FIRST_ID));
            a_cat.push(10 + ((r >> 50) % 5) as i64);

            // Bid: hot auctions and bidders among recent ones.
            let r2 = self.rnd(n, 2);
            let last_a = aid.max(FIRST_ID);
            let auction = if r2 % HOT_RATIO > 0 {
                ((last_a / 10) * 10).max(FIRST_ID)
            } else {
                (last_a - (r2 >> 8) as i64 % 100).max(FIRST_ID)
            };
            b_auction.push(auction);
            let bidder = if (r2 >> 16) % HOT_RATIO > 0 {
                ((pid / 10) * 10 + 1).max(FIRST_ID)
            } else {
                (pid - ((r2 >> 24) % 1000) as i64).max(FIRST_ID)
            };
            b_bidder.push(bidder);
            b_price.push(100 + ((r2 >> 32) % 100_000) as i64);
            b_channel.row(|b| {
                let _ = b.write_str(CHANNELS[((r2 >> 48) % 4) as usize]);
            });
            b_url.row(|b| {
                if !is_p && !is_a {
                    // One of 4 channels × 1000 ids, formatted once per process.
                    let idx = ((r2 >> 48) % 4) as usize * 1000 + ((r2 >> 52) % 1000) as usize;
                    let _ = b.write_str(&bid_urls()[idx]);
                }
            });
        }
        let ts = || -> ArrayRef { Arc::new(TimestampMillisecondArray::from(time.clone())) };
        let s = |c: StrCol| -> ArrayRef { c.finish(n_rows) };
        // The `extra` columns are empty strings: offsets only.
        let empty = || StrCol(None).finish(n_rows);
        let i = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let person = StructArray::try_new(
            person_fields(),
            vec![
                i(p_id),
                s(p_name),
                s(p_email),
                s(p_cc),
                s(p_city),
                s(p_state),
                ts(),
                empty(),
            ],
            Some(NullBuffer::from(p_valid)),
        )?;
        let auction = StructArray::try_new(
            auction_fields(),
            vec![
                i(a_id),
                s(a_item),
                s(a_desc),
                i(a_init),
                i(a_res),
                ts(),
                Arc::new(TimestampMillisecondArray::from(a_exp)),
                i(a_seller),
                i(a_cat),
                empty(),
            ],
            Some(NullBuffer::from(a_valid)),
        )?;
        let bid = StructArray::try_new(
            bid_fields(),
            vec![
                i(b_auction),
                i(b_bidder),
                i(b_price),
                s(b_channel),
                s(b_url),
                ts(),
                empty(),
            ],
            Some(NullBuffer::from(b_valid)),
        )?;
        Ok(RecordBatch::try_new(
            nexmark_schema(),
            vec![
                Arc::new(Int32Array::from(kind)),
                Arc::new(person),
                Arc::new(auction),
                Arc::new(bid),
                ts(),
            ],
        )?)
    }
}

/// A string column of one batch: built, or (nobody reads it) empty strings.
struct StrCol(Option<StringBuilder>);

impl StrCol {
    fn new(write: bool, rows: usize, bytes: usize) -> Self {
        StrCol(write.then(|| StringBuilder::with_capacity(rows, bytes)))
    }

    /// Adds one row: what `f` writes (nothing: an empty string), when the column is built.
    fn row(&mut self, f: impl FnOnce(&mut StringBuilder)) {
        if let Some(b) = &mut self.0 {
            f(b);
            b.append_value("");
        }
    }

    fn finish(self, rows: usize) -> ArrayRef {
        match self.0 {
            Some(mut b) => Arc::new(b.finish()),
            None => Arc::new(StringArray::new(
                arrow::buffer::OffsetBuffer::new_zeroed(rows),
                arrow::buffer::Buffer::from_vec(Vec::<u8>::new()),
                None,
            )),
        }
    }
}

/// Bid URLs: `https://www.nexmark.com/{channel}/item.htm?query=1&channel_id={id}` for the 4
/// channels × 1000 ids, indexed `channel * 1000 + id`.
fn bid_urls() -> &'static [String] {
    static URLS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    URLS.get_or_init(|| {
        CHANNELS
            .iter()
            .flat_map(|ch| {
                (0..1000).map(move |id| {
                    format!("https://www.nexmark.com/{ch}/item.htm?query=1&channel_id={id}")
                })
            })
            .collect()
    })
}

struct Reader {
    g: NexmarkGenerator,
    ranges: Ranges,
}

impl SourceReader for Reader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.ranges.next() {
            None => SourcePoll::Pending,
            Some(None) => SourcePoll::Finished,
            Some(Some((start, end))) => SourcePoll::Batch {
                split: 0,
                batch: self.g.generate(start, end)?,
            },
        })
    }

    fn snapshot(
        &mut self,
        _checkpoint: flink_rs_core::checkpoint::CheckpointId,
    ) -> Result<Vec<u8>> {
        self.ranges.snapshot()
    }
}

impl Source for NexmarkGenerator {
    fn schema(&self) -> SchemaRef {
        nexmark_schema()
    }

    fn is_bounded(&self) -> bool {
        self.events.is_some()
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            g: self.clone(),
            ranges: Ranges::new(
                self.events,
                self.batch_size,
                self.rate,
                subtask,
                parallelism,
            ),
        }))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            g: self.clone(),
            ranges: Ranges::restore(
                self.events,
                self.batch_size,
                self.rate,
                subtask,
                parallelism,
                states,
            )?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn unread_fields_are_empty_and_everything_else_is_unchanged() -> Result<()> {
        let full = NexmarkGenerator::bounded(3000).generate(1000, 3000)?;
        let g = NexmarkGenerator::bounded(3000);
        if let Ok(mut u) = g.unread.write() {
            u.extend(STRING_FIELDS.iter().map(|f| f.to_string()));
        }
        let pruned = g.generate(1000, 3000)?;
        assert_eq!(full.schema(), pruned.schema());
        let mut skipped = 0;
        for (i, top) in full.schema().fields().iter().enumerate() {
            let (a, b) = (full.column(i), pruned.column(i));
            let (Some(a), Some(b)) = (a.as_struct_opt(), b.as_struct_opt()) else {
                assert_eq!(a, b, "{}", top.name());
                continue;
            };
            assert_eq!(a.nulls(), b.nulls());
            for (j, f) in a.fields().iter().enumerate() {
                let path = format!("{}.{}", top.name(), f.name());
                if STRING_FIELDS.contains(&path.as_str()) {
                    skipped += 1;
                    let s = b.column(j).as_string::<i32>();
                    assert!(s.iter().all(|v| v == Some("")), "{path} is written");
                    let written = a.column(j).as_string::<i32>();
                    assert!(written.iter().any(|v| v.is_some_and(|v| !v.is_empty())));
                } else {
                    assert_eq!(a.column(j), b.column(j), "{path}");
                }
            }
        }
        assert_eq!(skipped, STRING_FIELDS.len());
        Ok(())
    }

    #[test]
    fn proportions_are_1_3_46_and_times_increase() -> Result<()> {
        let g = NexmarkGenerator::bounded(5000);
        let b = g.generate(0, 5000)?;
        let kinds = b.column(0).as_primitive::<Int32Type>();
        let count = |k| kinds.values().iter().filter(|v| **v == k).count();
        assert_eq!((count(0), count(1), count(2)), (100, 300, 4600));
        assert_eq!(b.column(1).null_count(), 4900);
        assert_eq!(g.event_time(10_000) - g.event_time(0), 1000);
        // Same input, same output.
        assert_eq!(g.generate(100, 200)?, g.generate(100, 200)?);
        Ok(())
    }
}
