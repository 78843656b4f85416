//! Window table-valued functions: `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size [, offset]))`,
//! `HOP(…, slide, size [, offset])`, `CUMULATE(…, step, size)`.
//!
//! sqlparser cannot read them, so the call is cut out of the query text (replaced by a
//! synthetic table name padded to the same length, so positions after it stay right) and
//! planned as a table whose rows are the input's rows with `window_start`, `window_end` and
//! `window_time` added — one row per window the row belongs to, as Flink defines the TVFs.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};

use crate::ddl::unit_ms;
use crate::script::find_word;
use flink_rs_core::error::{Error, Result};

/// Which windows a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble {
        size: i64,
        offset: i64,
    },
    Hop {
        slide: i64,
        size: i64,
        offset: i64,
    },
    Cumulate {
        step: i64,
        size: i64,
    },
    /// Rows closer than `gap` (per PARTITION BY key) share a window; windows are merged as
    /// rows arrive, so these rows exist only aggregated (the window operator computes them).
    Session {
        gap: i64,
    },
}

/// A window TVF found in a query.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    /// The synthetic table name it was replaced by.
    pub alias: String,
    pub table: String,
    pub time_column: String,
    pub kind: WindowKind,
    /// Byte offset of the call in the statement.
    pub at: usize,
    /// SESSION's `PARTITION BY` columns.
    pub partition: Vec<String>,
}

fn floor_mod(a: i64, b: i64) -> i64 {
    ((a % b) + b) % b
}

impl WindowKind {
    fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            WindowKind::Tumble { size, .. } if size <= 0 => {
                Err("the window size must be positive".into())
            }
            WindowKind::Hop { slide, size, .. } if slide <= 0 || size <= 0 => {
                Err("HOP needs a positive slide and size".into())
            }
            WindowKind::Hop { slide, size, .. } if size % slide != 0 => Err(format!(
                "HOP size ({size} ms) must be a multiple of the slide ({slide} ms)"
            )),
            WindowKind::Session { gap } if gap <= 0 => {
                Err("the session gap must be positive".into())
            }
            WindowKind::Cumulate { step, size } if step <= 0 || size <= 0 || size % step != 0 => {
                Err(format!(
                    "CUMULATE size ({size} ms) must be a positive multiple of the step ({step} ms)"
                ))
            }
            _ => Ok(()),
        }
    }

    /// `(start, end)` of every window containing `ts`.
    pub fn assign(&self, ts: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match *self {
            WindowKind::Tumble { size, offset } => {
                let start = ts - floor_mod(ts - offset, size);
                out.push((start, start + size));
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
            } => {
                let last = ts - floor_mod(ts - offset, slide);
                let mut start = last;
                while start > ts - size {
                    out.push((start, start + size));
                    start -= slide;
                }
                out.reverse();
            }
            // Not assignable per row (see `WindowKind::Session`).
            WindowKind::Session { .. } => {}
            WindowKind::Cumulate { step, size } => {
                let start = ts - floor_mod(ts, size);
                let mut end = start + step;
                while end <= start + size {
                    if end > ts {
                        out.push((start, end));
                    }
                    end += step;
                }
            }
        }
    }
}

/// The schema of the TVF's output: the input's columns and the three window columns.
pub fn output_schema(input: &Schema) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", ts(), false));
    fields.push(Field::new("window_end", ts(), false));
    fields.push(Field::new("window_time", ts(), false));
    Arc::new(Schema::new(fields))
}

/// Adds the window columns to a batch (one output row per window of each input row).
pub fn assign_batch(
    kind: WindowKind,
    time_index: usize,
    out_schema: &SchemaRef,
    b: &RecordBatch,
) -> Result<RecordBatch> {
    let times = b
        .column(time_index)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| Error::User("the window time column must be TIMESTAMP(3)".into()))?;
    let mut idx = Vec::with_capacity(b.num_rows());
    let (mut starts, mut ends) = (
        Vec::with_capacity(b.num_rows()),
        Vec::with_capacity(b.num_rows()),
    );
    let mut w = Vec::new();
    for r in 0..b.num_rows() {
        if times.is_null(r) {
            continue;
        }
        kind.assign(times.value(r), &mut w);
        for (s, e) in &w {
            idx.push(r as u32);
            starts.push(*s);
            ends.push(*e);
        }
    }
    let base = if idx.len() == b.num_rows() && idx.iter().enumerate().all(|(i, r)| *r as usize == i)
    {
        b.clone()
    } else {
        take_record_batch(b, &UInt32Array::from(idx))?
    };
    let mut cols = base.columns().to_vec();
    let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
    cols.push(Arc::new(TimestampMillisecondArray::from(starts)));
    cols.push(Arc::new(TimestampMillisecondArray::from(ends)));
    cols.push(Arc::new(TimestampMillisecondArray::from(times)));
    Ok(RecordBatch::try_new(out_schema.clone(), cols)?)
}

fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote = false;
    for (i, c) in text[open..].char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' if !quote => depth += 1,
            ')' if !quote => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_args(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' if !quote => depth += 1,
            ')' if !quote => depth -= 1,
            ',' if !quote && depth == 0 => {
                out.push((start, &s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &s[start..]));
    out
}

fn interval_ms(arg: &str) -> Option<i64> {
    let t = arg.trim();
    let rest = t
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("INTERVAL"))
        .map(|_| t[8..].trim())?;
    let (num, unit) = if let Some(r) = rest.strip_prefix('\'') {
        let end = r.find('\'')?;
        (r[..end].trim().to_string(), r[end + 1..].trim().to_string())
    } else {
        let mut it = rest.split_whitespace();
        (
            it.next()?.to_string(),
            it.next().unwrap_or("SECOND").to_string(),
        )
    };
    let n: f64 = num.parse().ok()?;
    Some((n * unit_ms(&unit.to_ascii_uppercase())? as f64) as i64)
}

/// Finds window TVF calls in `text`, replaces each by a synthetic table name (same length)
/// and returns the rewritten text. Errors carry a byte offset.
pub fn rewrite(
    text: &str,
    counter: &mut usize,
) -> std::result::Result<(String, Vec<WindowTvf>), (usize, String)> {
    let mut out = text.to_string();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = find_word(&out[from..], "TABLE") {
        let at = from + rel;
        let after = out[at + 5..].trim_start();
        let open = at + 5 + (out[at + 5..].len() - after.len());
        if !after.starts_with('(') {
            from = at + 5;
            continue;
        }
        let inner = after[1..].trim_start();
        let fname: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let upper = fname.to_ascii_uppercase();
        if !["TUMBLE", "HOP", "CUMULATE", "SESSION"].contains(&upper.as_str()) {
            from = at + 5;
            continue;
        }
        let close = matching_paren(&out, open).ok_or((
            at,
            "unbalanced parentheses in the window function call".to_string(),
        ))?;
        let call_open = out[open + 1..]
            .find('(')
            .map(|i| open + 1 + i)
            .ok_or((at, "expected ( after the window function".to_string()))?;
        let call_close =
            matching_paren(&out, call_open).ok_or((at, "unbalanced parentheses".to_string()))?;
        let args_text = &out[call_open + 1..call_close];
        let mut args = split_args(args_text);
        let raw_first = args.first().map(|a| a.1).unwrap_or("");
        let first_at = call_open
            + 1
            + args.first().map(|a| a.0).unwrap_or(0)
            + (raw_first.len() - raw_first.trim_start().len());
        let mut first = raw_first.trim();
        // SESSION(TABLE t PARTITION BY a, b, DESCRIPTOR(ts), gap)
        let mut partition = Vec::new();
        if let Some(p) = find_word(first, "PARTITION") {
            if upper != "SESSION" {
                return Err((
                    first_at + p,
                    format!("{upper} takes no PARTITION BY; SESSION does"),
                ));
            }
            let by = first[p + 9..].trim_start();
            let Some(col) = by
                .get(..2)
                .filter(|b| b.eq_ignore_ascii_case("BY"))
                .map(|_| by[2..].trim())
            else {
                return Err((first_at + p, "expected PARTITION BY <columns>".into()));
            };
            partition.push(col.to_string());
            first = first[..p].trim();
            // Further partition columns are the next arguments, up to DESCRIPTOR(…).
            while args.len() > 1
                && !args[1]
                    .1
                    .trim_start()
                    .get(..10)
                    .is_some_and(|d| d.eq_ignore_ascii_case("DESCRIPTOR"))
            {
                partition.push(args.remove(1).1.trim().to_string());
            }
            if let Some(bad) = partition.iter().find(|c| {
                c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            }) {
                return Err((
                    first_at + p,
                    format!("PARTITION BY takes column names, found `{bad}`"),
                ));
            }
        }
        let arg_at = |i: usize| call_open + 1 + args.get(i).map(|a| a.0).unwrap_or(0);
        let table = first
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("TABLE"))
            .map(|_| first[5..].trim().to_string())
            .filter(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            })
            .ok_or((
                first_at,
                format!("the first argument of {upper} must be TABLE <name>"),
            ))?;
        let second = args.get(1).map(|a| a.1.trim()).unwrap_or("");
        let time_column = second
            .get(..10)
            .filter(|p| p.eq_ignore_ascii_case("DESCRIPTOR"))
            .and_then(|_| second[10..].trim().strip_prefix('('))
            .and_then(|s| s.strip_suffix(')'))
            .map(|s| s.trim().to_string())
            .ok_or((
                arg_at(1),
                format!("the second argument of {upper} must be DESCRIPTOR(<time column>)"),
            ))?;
        let mut ms = Vec::new();
        for i in 2..args.len() {
            ms.push(interval_ms(args[i].1).ok_or((
                arg_at(i),
                format!(
                    "expected an interval such as INTERVAL '10' SECOND, found `{}`",
                    args[i].1.trim()
                ),
            ))?);
        }
        let n_ok = |lo: usize, hi: usize| (lo..=hi).contains(&ms.len());
        let kind = match upper.as_str() {
            "TUMBLE" if n_ok(1, 2) => WindowKind::Tumble {
                size: ms[0],
                offset: ms.get(1).copied().unwrap_or(0),
            },
            "HOP" if n_ok(2, 3) => WindowKind::Hop {
                slide: ms[0],
                size: ms[1],
                offset: ms.get(2).copied().unwrap_or(0),
            },
            "CUMULATE" if n_ok(2, 2) => WindowKind::Cumulate {
                step: ms[0],
                size: ms[1],
            },
            "SESSION" if n_ok(1, 1) => WindowKind::Session { gap: ms[0] },
            _ => {
                return Err((
                    open + 1,
                    format!(
                        "{upper} takes TABLE t, DESCRIPTOR(col) and {}",
                        match upper.as_str() {
                            "TUMBLE" => "a size (and an offset)",
                            "HOP" => "a slide and a size (and an offset)",
                            "SESSION" => "a gap (and PARTITION BY columns after the table)",
                            _ => "a step and a size",
                        }
                    ),
                ));
            }
        };
        kind.validate().map_err(|m| (open + 1, m))?;
        let alias = format!("__window_{}", *counter);
        *counter += 1;
        let span = close + 1 - at;
        if alias.len() > span {
            return Err((at, "window call too short to rewrite".into()));
        }
        let replacement: String = alias
            .chars()
            .chain(
                out[at..=close]
                    .chars()
                    .skip(alias.len())
                    .map(|c| if c == '\n' { '\n' } else { ' ' }),
            )
            .collect();
        out.replace_range(at..=close, &replacement);
        found.push(WindowTvf {
            alias,
            table,
            time_column,
            kind,
            at,
            partition,
        });
        from = at + span;
    }
    Ok((out, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_calls_and_keeps_positions() {
        let q = "SELECT window_start, COUNT(*) FROM TABLE(\n  TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECONDS)) GROUP BY window_start";
        let mut n = 0;
        let (out, tvfs) = rewrite(q, &mut n).unwrap_or_default();
        assert_eq!(out.len(), q.len());
        assert!(out.contains("FROM __window_0"));
        assert_eq!(out.find("GROUP"), q.find("GROUP"));
        assert_eq!(tvfs[0].table, "bids");
        assert_eq!(tvfs[0].time_column, "ts");
        assert_eq!(
            tvfs[0].kind,
            WindowKind::Tumble {
                size: 10_000,
                offset: 0
            }
        );
    }

    #[test]
    fn assigns_like_flink() {
        let mut w = Vec::new();
        WindowKind::Hop {
            slide: 2,
            size: 6,
            offset: 0,
        }
        .assign(7, &mut w);
        assert_eq!(w, vec![(2, 8), (4, 10), (6, 12)]);
        WindowKind::Cumulate { step: 2, size: 6 }.assign(7, &mut w);
        assert_eq!(w, vec![(6, 8), (6, 10), (6, 12)]);
        WindowKind::Tumble { size: 5, offset: 0 }.assign(-1, &mut w);
        assert_eq!(w, vec![(-5, 0)]);
    }
}
