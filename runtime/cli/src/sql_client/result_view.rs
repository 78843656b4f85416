//! How the SQL client shows rows: Flink's `tableau` mode (a table drawn as rows arrive, with
//! the row kind in an `op` column when the result can update) and `changelog` mode (one
//! `+I[…]` line per change, as the print connector writes them).

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;

use flink_rs::error::{Error, Result};
use flink_rs::source::{Sink, SinkWriter};

/// `sql-client.execution.result-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tableau,
    Changelog,
}

/// A query's result, shown on standard output as it arrives (every parallel writer shares
/// one table).
#[derive(Clone)]
pub struct ResultView {
    mode: Mode,
    /// Show the `op` column (a streaming result, which may update).
    with_op: bool,
    max_width: usize,
    state: Arc<Mutex<ViewState>>,
}

#[derive(Default)]
struct ViewState {
    widths: Option<Vec<usize>>,
    rows: u64,
}

impl ResultView {
    pub fn new(mode: Mode, with_op: bool, max_width: usize) -> ResultView {
        ResultView {
            mode,
            with_op,
            max_width: max_width.max(4),
            state: Arc::default(),
        }
    }

    /// Closes the table (tableau) and says how many rows came.
    pub fn finish(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Ok(st) = self.state.lock() else {
            return Ok(());
        };
        if self.mode == Mode::Tableau {
            match &st.widths {
                Some(w) if st.rows > 0 => writeln!(out, "{}", rule(w))?,
                _ => {}
            }
        }
        match st.rows {
            0 => writeln!(out, "Empty set"),
            n => writeln!(
                out,
                "Received a total of {n} row{}",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

impl Sink for ResultView {
    fn create_writer(
        &self,
        _subtask: usize,
        _parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let columns: Vec<(String, usize)> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != "__op")
            .map(|f| {
                let w = type_width(f.data_type()).min(self.max_width);
                (f.name().clone(), w.max(f.name().chars().count()))
            })
            .collect();
        if let Ok(mut st) = self.state.lock() {
            if st.widths.is_none() {
                let mut widths: Vec<usize> = Vec::new();
                let mut names: Vec<String> = Vec::new();
                if self.with_op {
                    widths.push(2);
                    names.push("op".into());
                }
                for (n, w) in &columns {
                    widths.push(*w);
                    names.push(n.clone());
                }
                if self.mode == Mode::Tableau {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", rule(&widths));
                    let _ = writeln!(out, "{}", line(&widths, &names));
                    let _ = writeln!(out, "{}", rule(&widths));
                }
                st.widths = Some(widths);
            }
        }
        Ok(Box::new(ViewWriter { view: self.clone() }))
    }
}

struct ViewWriter {
    view: ResultView,
}

impl SinkWriter for ViewWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::default()
            .with_null("<NULL>")
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
            .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.3f"));
        let (kinds, formatters) = flink_rs::api::print::changelog_columns(batch, &options)?;
        let Ok(mut st) = self.view.state.lock() else {
            return Ok(());
        };
        let widths = st.widths.clone().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for r in 0..batch.num_rows() {
            let kind = kinds.as_ref().map_or("+I", |k| k.value(r)).to_string();
            let values: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            let text = match self.view.mode {
                Mode::Changelog => format!("{kind}[{}]", values.join(", ")),
                Mode::Tableau => {
                    let cells: Vec<String> = if self.view.with_op {
                        std::iter::once(kind).chain(values).collect()
                    } else {
                        values
                    };
                    line(&widths, &cells)
                }
            };
            writeln!(out, "{text}").map_err(|e| Error::io("write", "stdout", e))?;
            st.rows += 1;
        }
        out.flush().map_err(|e| Error::io("flush", "stdout", e))
    }
}

/// `+----+------+`
pub fn rule(widths: &[usize]) -> String {
    let mut s = String::from("+");
    for w in widths {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
    }
    s
}

/// `| a |    1 |`: values right-aligned, cut to their column with `...`.
pub fn line(widths: &[usize], cells: &[String]) -> String {
    let mut s = String::from("|");
    for (w, c) in widths.iter().zip(cells) {
        let n = c.chars().count();
        let cell = if n > *w {
            let keep: String = c.chars().take(w.saturating_sub(3)).collect();
            format!("{keep}...")
        } else {
            c.clone()
        };
        s.push_str(&format!(" {cell:>w$} |", w = *w));
    }
    s
}

/// A small table whose rows are all known (SHOW TABLES, DESCRIBE, SET): columns as wide as
/// their widest cell.
pub fn print_table(
    out: &mut impl Write,
    header: &[String],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "Empty set");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    writeln!(out, "{}", rule(&widths))?;
    writeln!(out, "{}", line(&widths, header))?;
    writeln!(out, "{}", rule(&widths))?;
    for r in rows {
        writeln!(out, "{}", line(&widths, r))?;
    }
    writeln!(out, "{}", rule(&widths))?;
    writeln!(
        out,
        "{} row{} in set",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}

/// The width Flink's tableau gives a column of this type in streaming mode (its values are
/// not known in advance).
fn type_width(t: &DataType) -> usize {
    match t {
        DataType::Boolean => 7,
        DataType::Int8 => 4,
        DataType::Int16 => 6,
        DataType::Int32 => 11,
        DataType::Int64 => 20,
        DataType::Float32 | DataType::Float64 => 22,
        DataType::Decimal128(p, _) => *p as usize + 2,
        DataType::Date32 | DataType::Date64 => 10,
        DataType::Timestamp(_, _) => 23,
        _ => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_right_aligned_and_cut_to_their_column() {
        let widths = [2, 5];
        assert_eq!(rule(&widths), "+----+-------+");
        assert_eq!(
            line(&widths, &["+I".into(), "abcdefgh".into()]),
            "| +I | ab... |"
        );
        assert_eq!(line(&widths, &["-U".into(), "7".into()]), "| -U |     7 |");
        let mut out = Vec::new();
        print_table(&mut out, &["table name".into()], &[vec!["bids".into()]]).expect("print");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "+------------+\n| table name |\n+------------+\n|       bids |\n+------------+\n1 row in set\n"
        );
    }
}
