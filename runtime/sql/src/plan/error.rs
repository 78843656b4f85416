//! Planning errors: DataFusion's, placed at the line and column of the script they are about.

use datafusion::common::DataFusionError;

use crate::script::{SqlError, Statement};

/// Locates a DataFusion error in the statement (its diagnostic span, or the name it names).
pub(crate) fn df_error(st: &Statement, e: &DataFusionError, base: usize) -> SqlError {
    let msg = e.to_string();
    let clean = msg
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("SQL error: ")
        .to_string();
    if let Some(i) = clean.find("Line: ") {
        let rest = &clean[i + 6..];
        let line: usize = rest
            .split(',')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1);
        let col: usize = rest
            .split("Column: ")
            .nth(1)
            .and_then(|c| {
                c.trim_end_matches(|ch: char| !ch.is_ascii_digit())
                    .split(|ch: char| !ch.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(1);
        let off = offset_of(&st.text[base..], line, col) + base;
        return st.error_at_offset(off, clean);
    }
    if clean.contains("found: EOF") {
        return st.error_at_offset(st.text.trim_end().len(), clean);
    }
    if clean.starts_with("Column count doesn't match insert query") {
        return st.error_at_offset(
            base,
            "the SELECT has a different number of columns than the table it inserts into",
        );
    }
    for pat in [
        "No field named ",
        "table '",
        "Invalid function '",
        "Function '",
        "not found: ",
    ] {
        if let Some(i) = clean.find(pat) {
            let name: String = clean[i + pat.len()..]
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let name = name.trim_end_matches('.');
            let last = name.rsplit('.').next().unwrap_or(name).to_string();
            if last.is_empty() {
                continue;
            }
            if let Some(at) = crate::script::find_word(&st.text[base..], &last) {
                return st.error_at_offset(at + base, clean);
            }
        }
    }
    if let Some(d) = e.diagnostic() {
        if let Some(span) = d.span {
            let (line, col) = (span.start.line as usize, span.start.column as usize);
            let off = offset_of(&st.text[base..], line, col) + base;
            return st.error_at_offset(off, clean);
        }
    }
    st.error_at_offset(base, clean)
}

fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut l = 1;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if l == line {
            break;
        }
        if c == '\n' {
            l += 1;
            start = i + 1;
        }
    }
    let mut off = start;
    for (n, (i, _)) in text[start..].char_indices().enumerate() {
        if n + 1 == col {
            off = start + i;
            break;
        }
    }
    off
}
