//! `print`: writes rows to stdout in Flink's format (`+I[a, b]`, prefixed with the subtask
//! number when the sink runs in parallel).

use std::io::Write;

use arrow::array::AsArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};
use crate::source::{Sink, SinkWriter};

/// Prints rows to standard output.
#[derive(Debug, Clone, Default)]
pub struct PrintSink {
    prefix: Option<String>,
}

impl PrintSink {
    /// Prints to stdout.
    pub fn stdout() -> Self {
        PrintSink::default()
    }

    /// Prints with an identifier before each row (`print-identifier`).
    pub fn with_identifier(id: &str) -> Self {
        PrintSink {
            prefix: Some(id.to_string()),
        }
    }
}

struct Writer {
    prefix: String,
}

/// A batch as rows to show: the row kinds of a changelog (`+I`, `-U`, `+U`, `-D`, its last
/// column `__op`, when it has one) and formatters of the other columns.
pub fn changelog_columns<'a>(
    batch: &'a RecordBatch,
    options: &'a FormatOptions<'a>,
) -> Result<(Option<arrow::array::StringArray>, Vec<ArrayFormatter<'a>>)> {
    let kinds = batch
        .schema()
        .fields()
        .last()
        .filter(|f| f.name() == "__op")
        .and_then(|_| batch.columns().last())
        .and_then(|c| c.as_string_opt::<i32>().cloned());
    let shown = batch.num_columns() - usize::from(kinds.is_some());
    let formatters = batch.columns()[..shown]
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), options))
        .collect::<std::result::Result<_, _>>()?;
    Ok((kinds, formatters))
}

impl SinkWriter for Writer {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        // Arrow's formatting: timestamps as ISO date-times, nulls as `null` (as Flink prints).
        let options = FormatOptions::default().with_null("null");
        let (kinds, formatters) = changelog_columns(batch, &options)?;
        let mut out = std::io::stdout().lock();
        let mut line = String::new();
        for r in 0..batch.num_rows() {
            line.clear();
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                use std::fmt::Write as _;
                let _ = write!(line, "{}", f.value(r));
            }
            let kind = kinds.as_ref().map_or("+I", |k| k.value(r));
            writeln!(out, "{}{kind}[{}]", self.prefix, line)
                .map_err(|e| Error::io("write", "stdout", e))?;
        }
        Ok(())
    }
}

impl Sink for PrintSink {
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        _: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let mut prefix = String::new();
        if let Some(p) = &self.prefix {
            prefix.push_str(p);
            prefix.push(':');
        }
        if parallelism > 1 {
            prefix.push_str(&format!("{}> ", subtask + 1));
        } else if !prefix.is_empty() {
            prefix.push(' ');
        }
        Ok(Box::new(Writer { prefix }))
    }
}
