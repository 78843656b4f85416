//! Record formats of the Kafka connectors: one message's key or value ⇄ one row.
//!
//! `json` (Flink's `json` format: one JSON object per message; a missing field is NULL unless
//! `json.fail-on-missing-field`), `csv` (one CSV line per message) and `raw` (the bytes as a
//! single STRING column). Decoding works on a run of messages at once; when the run does not
//! decode to exactly one row per message, each message is decoded alone, so that an error
//! names the message at fault (or, with `ignore_parse_errors`, that message alone is skipped).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};

use flink_rs_core::error::{Error, Result};

use crate::text_values::{TimestampStandard, with_flink_temporal_text};

/// How a message's key or value maps to a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    /// One JSON object per message (Flink's `json`).
    Json {
        /// `json.fail-on-missing-field`: a field of the schema absent from the object is an
        /// error (by default it is NULL).
        fail_on_missing_field: bool,
        /// `json.ignore-parse-errors`: skip a message that cannot be parsed.
        ignore_parse_errors: bool,
    },
    /// One CSV line per message (Flink's `csv`).
    Csv {
        /// `csv.field-delimiter`.
        delimiter: u8,
        /// `csv.ignore-parse-errors`.
        ignore_parse_errors: bool,
    },
    /// The message bytes as one STRING column (Flink's `raw`).
    Raw,
}

impl RecordFormat {
    /// Flink's `json` with its defaults.
    pub fn json() -> Self {
        RecordFormat::Json {
            fail_on_missing_field: false,
            ignore_parse_errors: false,
        }
    }

    /// Flink's `csv` with its defaults.
    pub fn csv() -> Self {
        RecordFormat::Csv {
            delimiter: b',',
            ignore_parse_errors: false,
        }
    }

    fn ignore_parse_errors(&self) -> bool {
        match self {
            RecordFormat::Json {
                ignore_parse_errors,
                ..
            }
            | RecordFormat::Csv {
                ignore_parse_errors,
                ..
            } => *ignore_parse_errors,
            RecordFormat::Raw => false,
        }
    }

    /// Checks that the format can carry `schema` (raw: exactly one STRING column).
    pub fn check_schema(&self, schema: &SchemaRef, what: &str) -> Result<()> {
        if *self == RecordFormat::Raw {
            let ok = schema.fields().len() == 1 && *schema.field(0).data_type() == DataType::Utf8;
            if !ok {
                return Err(Error::User(format!(
                    "the raw format carries exactly one STRING column; the {what} has {}",
                    describe(schema)
                )));
            }
        }
        Ok(())
    }
}

fn describe(schema: &SchemaRef) -> String {
    if schema.fields().is_empty() {
        return "no columns".into();
    }
    schema
        .fields()
        .iter()
        .map(|f| format!("`{}` {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows decoded from a run of messages.
pub struct Decoded {
    /// One row per kept message.
    pub batch: RecordBatch,
    /// Indexes (into the run) of the messages the rows come from: all of them unless parse
    /// errors were ignored.
    pub kept: Vec<usize>,
}

/// A message that could not be decoded: its index in the run and why.
#[derive(Debug)]
pub struct DecodeError {
    pub index: usize,
    pub message: String,
}

/// Decodes runs of message payloads into rows of one schema.
pub struct RowDecoder {
    format: RecordFormat,
    schema: SchemaRef,
}

impl RowDecoder {
    pub fn new(format: RecordFormat, schema: SchemaRef) -> Self {
        RowDecoder { format, schema }
    }

    /// Decodes `payloads` (one row each). An error names the first message that fails, unless
    /// the format ignores parse errors (then such messages are left out of `kept`).
    pub fn decode(&self, payloads: &[&[u8]]) -> std::result::Result<Decoded, DecodeError> {
        if payloads.is_empty() {
            return Ok(Decoded {
                batch: RecordBatch::new_empty(self.schema.clone()),
                kept: Vec::new(),
            });
        }
        if self.format == RecordFormat::Raw {
            return self.decode_raw(payloads);
        }
        if let Some(batch) = self.decode_run(payloads) {
            return Ok(Decoded {
                batch,
                kept: (0..payloads.len()).collect(),
            });
        }
        // Some message is at fault: decode each alone.
        let mut batches = Vec::with_capacity(payloads.len());
        let mut kept = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            match self.decode_one(p) {
                Ok(b) => {
                    batches.push(b);
                    kept.push(i);
                }
                Err(_) if self.format.ignore_parse_errors() => {}
                Err(message) => return Err(DecodeError { index: i, message }),
            }
        }
        let batch =
            arrow::compute::concat_batches(&self.schema, &batches).map_err(|e| DecodeError {
                index: 0,
                message: e.to_string(),
            })?;
        Ok(Decoded { batch, kept })
    }

    /// The whole run at once, or `None` when it does not give exactly one row per message.
    fn decode_run(&self, payloads: &[&[u8]]) -> Option<RecordBatch> {
        if let RecordFormat::Json {
            fail_on_missing_field: true,
            ..
        } = self.format
        {
            // Every message is checked for its fields: take the per-message path.
            return None;
        }
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + 1).sum());
        for p in payloads {
            buf.extend_from_slice(p);
            buf.push(b'\n');
        }
        let batch = self.decode_bytes(&buf, payloads.len()).ok()?;
        (batch.num_rows() == payloads.len()).then_some(batch)
    }

    fn decode_one(&self, payload: &[u8]) -> std::result::Result<RecordBatch, String> {
        if let RecordFormat::Json {
            fail_on_missing_field: true,
            ..
        } = self.format
        {
            let v: serde_json::Value =
                serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
            let obj = v
                .as_object()
                .ok_or_else(|| "not a JSON object".to_string())?;
            if let Some(f) = self
                .schema
                .fields()
                .iter()
                .find(|f| !obj.contains_key(f.name()))
            {
                return Err(format!(
                    "field `{}` is missing (json.fail-on-missing-field is true)",
                    f.name()
                ));
            }
        }
        let mut buf = payload.to_vec();
        buf.push(b'\n');
        let batch = self.decode_bytes(&buf, 1)?;
        match batch.num_rows() {
            1 => Ok(batch),
            0 => Err("the message is empty".into()),
            n => Err(format!("the message holds {n} records, not one")),
        }
    }

    fn decode_bytes(&self, buf: &[u8], rows: usize) -> std::result::Result<RecordBatch, String> {
        let empty = || RecordBatch::new_empty(self.schema.clone());
        match &self.format {
            RecordFormat::Json { .. } => {
                let mut d = arrow::json::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(rows + 1)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                feed(buf, |b| d.decode(b))?;
                if d.has_partial_record() {
                    return Err("the JSON value is incomplete".into());
                }
                Ok(d.flush().map_err(|e| e.to_string())?.unwrap_or_else(empty))
            }
            RecordFormat::Csv { delimiter, .. } => {
                let mut d = arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_delimiter(*delimiter)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                feed(buf, |b| d.decode(b))?;
                Ok(d.flush().map_err(|e| e.to_string())?.unwrap_or_else(empty))
            }
            RecordFormat::Raw => Err("raw messages are decoded one by one".into()),
        }
    }

    /// Raw: each payload is one STRING value (a message that is not UTF-8 is an error).
    fn decode_raw(&self, payloads: &[&[u8]]) -> std::result::Result<Decoded, DecodeError> {
        let mut values = Vec::with_capacity(payloads.len());
        for (index, p) in payloads.iter().enumerate() {
            let s = std::str::from_utf8(p).map_err(|e| DecodeError {
                index,
                message: format!("not UTF-8 text: {e}"),
            })?;
            values.push(s);
        }
        let col: ArrayRef = Arc::new(StringArray::from(values));
        let batch =
            RecordBatch::try_new(self.schema.clone(), vec![col]).map_err(|e| DecodeError {
                index: 0,
                message: e.to_string(),
            })?;
        Ok(Decoded {
            batch,
            kept: (0..payloads.len()).collect(),
        })
    }
}

/// Hands `buf` to a streaming decoder until it has taken all of it (a decoder that takes
/// nothing is full: the bytes held more records than messages).
fn feed(
    buf: &[u8],
    mut decode: impl FnMut(&[u8]) -> std::result::Result<usize, arrow::error::ArrowError>,
) -> std::result::Result<(), String> {
    let mut at = 0;
    while at < buf.len() {
        let n = decode(&buf[at..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("more records than messages".into());
        }
        at += n;
    }
    Ok(())
}

/// Encodes rows of one schema as message payloads (one per row).
pub struct RowEncoder {
    format: RecordFormat,
}

impl RowEncoder {
    pub fn new(format: RecordFormat) -> Self {
        RowEncoder { format }
    }

    /// One payload per row of `batch`.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let n = batch.num_rows();
        match &self.format {
            RecordFormat::Json { .. } => {
                let mut buf = Vec::new();
                // As Flink's json: NULL fields written as `null`, timestamps as its text.
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
                w.write(&with_flink_temporal_text(batch, TimestampStandard::Sql)?)?;
                w.finish()?;
                drop(w);
                // JSON escapes newlines inside strings: each line is one row.
                let rows: Vec<Vec<u8>> = buf
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                if rows.len() != n {
                    return Err(Error::User(format!(
                        "the json format wrote {} lines for {n} rows",
                        rows.len()
                    )));
                }
                Ok(rows)
            }
            RecordFormat::Csv { delimiter, .. } => {
                let batch = with_flink_temporal_text(batch, TimestampStandard::Sql)?;
                (0..n)
                    .map(|r| {
                        let mut buf = Vec::new();
                        let mut w = arrow::csv::WriterBuilder::new()
                            .with_header(false)
                            .with_delimiter(*delimiter)
                            .build(&mut buf);
                        w.write(&batch.slice(r, 1))?;
                        drop(w);
                        while buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        Ok(buf)
                    })
                    .collect()
            }
            RecordFormat::Raw => {
                let col = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::User("the raw format writes one STRING column".into()))?;
                Ok((0..n)
                    .map(|r| {
                        if col.is_null(r) {
                            Vec::new()
                        } else {
                            col.value(r).as_bytes().to_vec()
                        }
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn ids(b: &RecordBatch) -> Vec<Option<i64>> {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    #[test]
    fn json_messages_decode_one_row_each_and_missing_fields_are_null() {
        let d = RowDecoder::new(RecordFormat::json(), schema());
        let msgs: [&[u8]; 3] = [
            br#"{"id": 1, "name": "a"}"#,
            br#"{"id": 2}"#,
            br#"{"name": "c", "x": 9}"#,
        ];
        let out = d.decode(&msgs).expect("decodes");
        assert_eq!(ids(&out.batch), vec![Some(1), Some(2), None]);
        assert_eq!(out.kept, vec![0, 1, 2]);
    }

    #[test]
    fn a_bad_message_is_named_by_its_index_or_skipped() {
        let msgs: [&[u8]; 4] = [
            br#"{"id": 1}"#,
            b"not json",
            br#"{"id": 3"#,
            br#"{"id": 4}"#,
        ];
        let strict = RowDecoder::new(RecordFormat::json(), schema());
        let e = strict.decode(&msgs).err().expect("fails");
        assert_eq!(e.index, 1);
        let lenient = RowDecoder::new(
            RecordFormat::Json {
                fail_on_missing_field: false,
                ignore_parse_errors: true,
            },
            schema(),
        );
        let out = lenient.decode(&msgs).expect("skips");
        assert_eq!(ids(&out.batch), vec![Some(1), Some(4)]);
        assert_eq!(out.kept, vec![0, 3]);
        // Two messages that only make one value together are not one row.
        let split: [&[u8]; 2] = [br#"{"id": 1,"#, br#""name": "a"}"#];
        assert_eq!(strict.decode(&split).err().map(|e| e.index), Some(0));
        // Nor is a message holding two values.
        let two: [&[u8]; 1] = [br#"{"id": 1} {"id": 2}"#];
        assert!(
            strict
                .decode(&two)
                .err()
                .is_some_and(|e| e.message.contains("2 records"))
        );
    }

    #[test]
    fn fail_on_missing_field_names_the_field() {
        let d = RowDecoder::new(
            RecordFormat::Json {
                fail_on_missing_field: true,
                ignore_parse_errors: false,
            },
            schema(),
        );
        let msgs: [&[u8]; 2] = [br#"{"id": 1, "name": null}"#, br#"{"id": 2}"#];
        let e = d.decode(&msgs).err().expect("fails");
        assert_eq!(e.index, 1);
        assert!(e.message.contains("`name` is missing"), "{}", e.message);
    }

    #[test]
    fn csv_and_raw_round_trip_through_the_encoder() {
        for format in [RecordFormat::csv(), RecordFormat::json()] {
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(vec![Some(1), None])),
                    Arc::new(StringArray::from(vec![Some("a,\nb"), Some("c")])),
                ],
            )
            .expect("batch");
            let payloads = RowEncoder::new(format.clone())
                .encode(&batch)
                .expect("encodes");
            assert_eq!(payloads.len(), 2, "{format:?}");
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let back = RowDecoder::new(format.clone(), schema())
                .decode(&refs)
                .expect("decodes");
            assert_eq!(back.batch, batch, "{format:?}");
        }
        let raw = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let msgs: [&[u8]; 2] = [b"one\ntwo", b""];
        let out = RowDecoder::new(RecordFormat::Raw, raw.clone())
            .decode(&msgs)
            .expect("raw");
        assert_eq!(out.batch.num_rows(), 2);
        assert!(RecordFormat::Raw.check_schema(&schema(), "value").is_err());
        let bad: [&[u8]; 1] = [&[0xff, 0xfe]];
        assert!(
            RowDecoder::new(RecordFormat::Raw, raw)
                .decode(&bad)
                .is_err()
        );
    }
}
