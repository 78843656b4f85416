//! The formats of the `filesystem` connector and their options, with Flink's names:
//! `csv` (`csv.field-delimiter`, `csv.quote-character`, `csv.disable-quote-character`,
//! `csv.escape-character`, `csv.null-literal`, `csv.allow-comments`), `json`
//! (`json.timestamp-format.standard`, `json.encode.ignore-null-fields`) and `raw`.
//!
//! Values are written as Flink's formats write them ([`crate::text_values`]), so that
//! files move between the two engines both ways.

use std::io::{BufRead, Write};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use flink_rs_core::error::{Error, Result};

use crate::text_values::{TimestampStandard, with_flink_temporal_text};

/// How file contents map to rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values.
    Csv(CsvFormat),
    /// One JSON object per line.
    Json(JsonFormat),
    /// One row per line, in a single Utf8 column (Flink's `raw` format).
    Raw,
}

/// Options of the `csv` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvFormat {
    /// `csv.include-header` (this project's option; Flink's csv has no header line).
    pub header: bool,
    /// `csv.field-delimiter`, `,` by default.
    pub delimiter: u8,
    /// `csv.quote-character`, `"` by default; `None` with `csv.disable-quote-character`.
    pub quote: Option<u8>,
    /// `csv.escape-character`, none by default.
    pub escape: Option<u8>,
    /// `csv.null-literal`: the text of a NULL field (by default an empty field).
    pub null_literal: Option<String>,
    /// `csv.allow-comments`: lines starting with `#` are skipped when reading.
    pub allow_comments: bool,
}

impl Default for CsvFormat {
    fn default() -> Self {
        CsvFormat {
            header: false,
            delimiter: b',',
            quote: Some(b'"'),
            escape: None,
            null_literal: None,
            allow_comments: false,
        }
    }
}

/// Options of the `json` format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonFormat {
    /// `json.timestamp-format.standard`: `SQL` (default) or `ISO-8601`.
    pub timestamp_standard: TimestampStandard,
    /// `json.encode.ignore-null-fields`: leave NULL fields out of the object (by default
    /// they are written as `null`, as Flink does).
    pub ignore_null_fields: bool,
}

impl FileFormat {
    /// `csv` with Flink's defaults (no header line).
    pub fn csv() -> Self {
        FileFormat::Csv(CsvFormat::default())
    }

    /// `csv` with a header line naming the columns.
    pub fn csv_with_header() -> Self {
        FileFormat::Csv(CsvFormat {
            header: true,
            ..CsvFormat::default()
        })
    }

    /// `json` with Flink's defaults.
    pub fn json() -> Self {
        FileFormat::Json(JsonFormat::default())
    }

    pub(crate) fn extension(&self) -> &'static str {
        match self {
            FileFormat::Csv(_) => "csv",
            FileFormat::Json(_) => "json",
            FileFormat::Raw => "txt",
        }
    }
}

impl CsvFormat {
    /// A reader of `input` with these options.
    pub(crate) fn reader<R: BufRead>(
        &self,
        schema: SchemaRef,
        batch_size: usize,
        input: R,
    ) -> Result<arrow::csv::reader::BufReader<R>> {
        let mut b = arrow::csv::ReaderBuilder::new(schema)
            .with_header(self.header)
            .with_delimiter(self.delimiter)
            .with_batch_size(batch_size);
        // Arrow's reader always honours a quote character: without one, a byte that cannot
        // occur in text stands in (Flink then reads `"` as an ordinary character).
        b = b.with_quote(self.quote.unwrap_or(0));
        if let Some(e) = self.escape {
            b = b.with_escape(e);
        }
        if self.allow_comments {
            b = b.with_comment(b'#');
        }
        if let Some(n) = &self.null_literal {
            let exact = format!("^{}$", regex::escape(n));
            let re = regex::Regex::new(&exact)
                .map_err(|e| Error::config("csv.null-literal", e.to_string()))?;
            b = b.with_null_regex(re);
        }
        Ok(b.build_buffered(input)?)
    }

    /// A writer into `out` with these options.
    pub(crate) fn writer<W: Write>(&self, out: W) -> arrow::csv::Writer<W> {
        let mut b = arrow::csv::WriterBuilder::new()
            .with_header(self.header)
            .with_delimiter(self.delimiter);
        match self.quote {
            Some(q) => b = b.with_quote(q),
            None => b = b.with_quote_style(arrow::csv::QuoteStyle::Never),
        }
        if let Some(e) = self.escape {
            b = b.with_escape(e).with_double_quote(false);
        }
        if let Some(n) = &self.null_literal {
            b = b.with_null(n.clone());
        }
        b.build(out)
    }
}

/// Writes batches as Flink's `csv` format writes rows.
pub(crate) fn write_csv<W: Write>(
    w: &mut arrow::csv::Writer<W>,
    batch: &RecordBatch,
) -> Result<()> {
    Ok(w.write(&with_flink_temporal_text(batch, TimestampStandard::Sql)?)?)
}

impl JsonFormat {
    /// A line-delimited writer into `out` with these options.
    pub(crate) fn writer<W: Write>(
        &self,
        out: W,
    ) -> arrow::json::Writer<W, arrow::json::writer::LineDelimited> {
        arrow::json::WriterBuilder::new()
            .with_explicit_nulls(!self.ignore_null_fields)
            .build(out)
    }

    /// `batch` as this format writes it (temporal values as Flink's text).
    pub(crate) fn prepare(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        with_flink_temporal_text(batch, self.timestamp_standard)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a;b \"q\""), Some("c")])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_704_067_205_980),
                    None,
                ])) as ArrayRef,
            ),
        ])
        .expect("batch")
    }

    fn csv_text(f: &CsvFormat) -> String {
        let mut out = Vec::new();
        let mut w = f.writer(&mut out);
        write_csv(&mut w, &batch()).expect("write");
        drop(w);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn csv_writes_flinks_timestamps_and_reads_them_back() {
        let f = CsvFormat::default();
        let text = csv_text(&f);
        assert_eq!(text, "1,\"a;b \"\"q\"\"\",2024-01-01 00:00:05.98\n,c,\n");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let read: Vec<RecordBatch> = f
            .reader(schema, 100, text.as_bytes())
            .expect("reader")
            .collect::<std::result::Result<_, _>>()
            .expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].column(0).as_ref(), batch().column(0).as_ref());
        assert_eq!(read[0].column(2).as_ref(), batch().column(2).as_ref());
    }

    #[test]
    fn csv_options_shape_the_text_both_ways() {
        let f = CsvFormat {
            delimiter: b';',
            null_literal: Some("N/A".into()),
            allow_comments: true,
            ..CsvFormat::default()
        };
        let text = csv_text(&f);
        assert_eq!(
            text,
            "1;\"a;b \"\"q\"\"\";2024-01-01 00:00:05.98\nN/A;c;N/A\n"
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let commented = format!("# written by Flink\n{text}");
        let read: Vec<RecordBatch> = f
            .reader(schema, 100, commented.as_bytes())
            .expect("reader")
            .collect::<std::result::Result<_, _>>()
            .expect("read");
        assert_eq!(read[0].num_rows(), 2);
        assert_eq!(read[0].column(0).as_ref(), batch().column(0).as_ref());
        assert_eq!(read[0].column(1).as_ref(), batch().column(1).as_ref());

        let unquoted = CsvFormat {
            quote: None,
            delimiter: b'|',
            ..CsvFormat::default()
        };
        assert_eq!(
            csv_text(&unquoted),
            "1|a;b \"q\"|2024-01-01 00:00:05.98\n|c|\n"
        );
    }

    #[test]
    fn json_writes_nulls_and_flinks_timestamps_unless_told_otherwise() {
        let write = |f: &JsonFormat| {
            let mut out = Vec::new();
            let mut w = f.writer(&mut out);
            w.write(&f.prepare(&batch()).expect("prepare"))
                .expect("write");
            w.finish().expect("finish");
            drop(w);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(
            write(&JsonFormat::default()),
            "{\"id\":1,\"name\":\"a;b \\\"q\\\"\",\"ts\":\"2024-01-01 00:00:05.98\"}\n\
             {\"id\":null,\"name\":\"c\",\"ts\":null}\n"
        );
        let iso = JsonFormat {
            timestamp_standard: TimestampStandard::Iso8601,
            ignore_null_fields: true,
        };
        assert_eq!(
            write(&iso),
            "{\"id\":1,\"name\":\"a;b \\\"q\\\"\",\"ts\":\"2024-01-01T00:00:05.98\"}\n\
             {\"name\":\"c\"}\n"
        );
    }
}
