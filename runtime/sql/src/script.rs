//! Splitting a SQL script into statements, with positions, and the error type that points
//! into the script.

use std::fmt;

/// An error in a SQL script: which statement, where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SqlError {
    /// 1-based statement number in the script.
    pub statement: usize,
    /// 1-based line and column in the script.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "statement {} (line {}, column {}): {}",
            self.statement, self.line, self.column, self.message
        )
    }
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub struct Statement {
    /// 1-based number.
    pub number: usize,
    /// The text, without the terminating `;` (comments inside are kept).
    pub text: String,
    /// Script line and column of the statement's first character.
    pub line: usize,
    pub column: usize,
}

impl Statement {
    /// An error at a position given relative to this statement's text (1-based line and
    /// column, as sqlparser reports them).
    pub fn error_at(&self, line: usize, column: usize, message: impl Into<String>) -> SqlError {
        let (l, c) = if line <= 1 {
            (self.line, self.column + column.saturating_sub(1))
        } else {
            (self.line + line - 1, column)
        };
        SqlError {
            statement: self.number,
            line: l,
            column: c.max(1),
            message: message.into(),
        }
    }

    /// An error at byte offset `offset` of this statement's text.
    pub fn error_at_offset(&self, offset: usize, message: impl Into<String>) -> SqlError {
        let (mut line, mut col) = (1, 1);
        for ch in self.text[..offset.min(self.text.len())].chars() {
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        self.error_at(line, col, message)
    }

    /// An error at the first occurrence of `needle` (case-insensitive, as a whole word) in
    /// the statement, or at its start.
    pub fn error_near(&self, needle: &str, message: impl Into<String>) -> SqlError {
        let offset = find_word(&self.text, needle).unwrap_or(0);
        self.error_at_offset(offset, message)
    }

    /// An error at the statement's start.
    pub fn error(&self, message: impl Into<String>) -> SqlError {
        self.error_at(1, 1, message)
    }
}

/// Byte offset of `word` in `text` as a whole word, ignoring case and skipping string
/// literals and comments.
pub fn find_word(text: &str, word: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let w = word.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&w) {
        let at = from + i;
        let before = at == 0 || !is_ident(bytes[at - 1]);
        let end = at + w.len();
        let after = end >= bytes.len() || !is_ident(bytes[end]);
        if before && after && !in_literal(text, at) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn in_literal(text: &str, at: usize) -> bool {
    let mut quote = false;
    for (i, b) in text.bytes().enumerate() {
        if i >= at {
            break;
        }
        if b == b'\'' {
            quote = !quote;
        }
    }
    quote
}

/// Splits a script at top-level semicolons, skipping comments and string literals.
pub fn split(script: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = script.char_indices().collect();
    let (mut line, mut col) = (1usize, 1usize);
    let mut start: Option<(usize, usize, usize)> = None; // byte offset, line, column
    let mut i = 0;
    let push = |from: (usize, usize, usize), to: usize, out: &mut Vec<Statement>| {
        let text = script[from.0..to].trim_end().to_string();
        if !text.trim().is_empty() {
            out.push(Statement {
                number: out.len() + 1,
                text,
                line: from.1,
                column: from.2,
            });
        }
    };
    while i < chars.len() {
        let (off, c) = chars[i];
        let next = chars.get(i + 1).map(|x| x.1);
        let advance = |c: char, line: &mut usize, col: &mut usize| {
            if c == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
        };
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i].1 != '\n' {
                advance(chars[i].1, &mut line, &mut col);
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            if start.is_none() {
                // A comment before the statement is not part of it.
            }
            advance(c, &mut line, &mut col);
            advance('*', &mut line, &mut col);
            i += 2;
            while i < chars.len()
                && !(chars[i].1 == '*' && chars.get(i + 1).map(|x| x.1) == Some('/'))
            {
                advance(chars[i].1, &mut line, &mut col);
                i += 1;
            }
            i = (i + 2).min(chars.len());
            col += 2;
            continue;
        }
        if c.is_whitespace() && start.is_none() {
            advance(c, &mut line, &mut col);
            i += 1;
            continue;
        }
        if start.is_none() && c != ';' {
            start = Some((off, line, col));
        }
        if c == '\'' || c == '"' || c == '`' {
            let q = c;
            advance(c, &mut line, &mut col);
            i += 1;
            while i < chars.len() {
                let ch = chars[i].1;
                advance(ch, &mut line, &mut col);
                i += 1;
                if ch == q {
                    if q == '\'' && chars.get(i).map(|x| x.1) == Some('\'') {
                        advance('\'', &mut line, &mut col);
                        i += 1;
                        continue;
                    }
                    break;
                }
            }
            continue;
        }
        if c == ';' {
            if let Some(s) = start.take() {
                push(s, off, &mut out);
            }
            advance(c, &mut line, &mut col);
            i += 1;
            continue;
        }
        advance(c, &mut line, &mut col);
        i += 1;
    }
    if let Some(s) = start {
        push(s, script.len(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_positions_and_skips_comments_and_strings() {
        let s = "-- a job\nSET 'a' = 'x;y';\n\n  /* c; */ CREATE TABLE t (\n a INT);\nINSERT INTO t SELECT 1";
        let st = split(s);
        assert_eq!(st.len(), 3);
        assert_eq!(st[0].text, "SET 'a' = 'x;y'");
        assert_eq!((st[0].line, st[0].column), (2, 1));
        assert!(st[1].text.starts_with("CREATE TABLE t"));
        assert_eq!((st[1].line, st[1].column), (4, 12));
        assert_eq!((st[2].line, st[2].column), (6, 1));
        let e = st[1].error_at(2, 2, "x");
        assert_eq!((e.line, e.column), (5, 2));
        let e = st[1].error_near("a", "x");
        assert_eq!((e.line, e.column), (5, 2));
    }
}
