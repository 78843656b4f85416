//! `CREATE TABLE` in Flink's dialect: columns, computed columns (`name AS expr`),
//! `WATERMARK FOR col AS col - INTERVAL 'n' unit`, `PRIMARY KEY … NOT ENFORCED`, and
//! `WITH ('key' = 'value', …)`. sqlparser does not know the Flink parts, so the statement is
//! read token by token here; column types and expressions are handed to sqlparser and
//! DataFusion.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::script::{SqlError, Statement};

/// A table declared in the script.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Field>,
    /// Computed columns: name, SQL expression text and its byte offset in the statement.
    pub computed: Vec<(String, String, usize)>,
    /// Event-time column and the watermark delay in ms (`None` delay: `WATERMARK FOR c AS c`).
    pub watermark: Option<(String, i64)>,
    pub options: BTreeMap<String, String>,
    /// Byte offsets of option keys (for errors).
    pub option_at: BTreeMap<String, usize>,
    /// Metadata columns (`col TYPE METADATA [FROM 'key'] [VIRTUAL]`), also in `columns`.
    pub metadata: Vec<MetadataColumn>,
    /// `PRIMARY KEY (…) NOT ENFORCED`: the key's columns.
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY (…)`: the partition columns, and the byte offset of the clause.
    pub partitioned_by: Vec<String>,
    pub partitioned_at: usize,
}

/// A column whose value is the connector's metadata rather than the record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    pub column: String,
    /// The metadata key (`FROM 'key'`, else the column's name).
    pub key: String,
    /// `VIRTUAL`: read only, left out when the table is written.
    pub is_virtual: bool,
    /// Byte offset of the column definition (for errors).
    pub at: usize,
}

struct Tokens<'a> {
    st: &'a Statement,
    toks: Vec<TokenWithSpan>,
    pos: usize,
    line_starts: Vec<usize>,
}

impl<'a> Tokens<'a> {
    fn new(st: &'a Statement) -> Result<Self, SqlError> {
        let toks = Tokenizer::new(&GenericDialect {}, &st.text)
            .tokenize_with_location()
            .map_err(|e| {
                st.error_at(
                    e.location.line as usize,
                    e.location.column as usize,
                    e.message.clone(),
                )
            })?
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let mut line_starts = vec![0];
        for (i, b) in st.text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        Ok(Tokens {
            st,
            toks,
            pos: 0,
            line_starts,
        })
    }

    fn offset(&self, t: &TokenWithSpan) -> usize {
        let l = (t.span.start.line as usize).max(1) - 1;
        let base = self.line_starts.get(l).copied().unwrap_or(0);
        // Columns count characters; statements here are ASCII where it matters.
        let mut off = base;
        for (n, (i, _)) in self.st.text[base..].char_indices().enumerate() {
            if n + 1 == t.span.start.column as usize {
                off = base + i;
                break;
            }
        }
        off
    }

    fn end_offset(&self, t: &TokenWithSpan) -> usize {
        let l = (t.span.end.line as usize).max(1) - 1;
        let base = self.line_starts.get(l).copied().unwrap_or(0);
        let mut off = self.st.text.len();
        for (n, (i, _)) in self.st.text[base..].char_indices().enumerate() {
            if n + 1 == t.span.end.column as usize {
                off = base + i;
                break;
            }
        }
        off
    }

    fn peek(&self) -> Option<&TokenWithSpan> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<TokenWithSpan> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err_here(&self, msg: impl Into<String>) -> SqlError {
        match self.peek().or_else(|| self.toks.last()) {
            Some(t) => self.st.error_at(
                t.span.start.line as usize,
                t.span.start.column as usize,
                msg,
            ),
            None => self.st.error(msg),
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(TokenWithSpan {
                token: Token::Word(w),
                ..
            }) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(self.err_here(format!("expected {kw}")))
        }
    }

    fn expect(&mut self, tok: Token, what: &str) -> Result<(), SqlError> {
        match self.peek() {
            Some(t) if t.token == tok => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.err_here(format!("expected {what}"))),
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, usize), SqlError> {
        match self.peek().cloned() {
            Some(t) => match &t.token {
                Token::Word(w) => {
                    self.pos += 1;
                    Ok((w.value.clone(), self.offset(&t)))
                }
                _ => Err(self.err_here(format!("expected {what}"))),
            },
            None => Err(self.err_here(format!("expected {what}"))),
        }
    }

    /// Tokens up to (not including) the next top-level `,` or the `)` closing the current
    /// level.
    fn element(&mut self) -> Vec<TokenWithSpan> {
        let mut depth = 0i32;
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            match t.token {
                Token::LParen | Token::Lt => depth += 1,
                Token::RParen | Token::Gt if depth == 0 => break,
                Token::RParen | Token::Gt => depth -= 1,
                Token::Comma if depth == 0 => break,
                _ => {}
            }
            out.push(t.clone());
            self.pos += 1;
        }
        out
    }

    fn text_of(&self, toks: &[TokenWithSpan]) -> (String, usize) {
        match (toks.first(), toks.last()) {
            (Some(a), Some(b)) => {
                let (s, e) = (self.offset(a), self.end_offset(b));
                (self.st.text[s..e.max(s)].to_string(), s)
            }
            _ => (String::new(), 0),
        }
    }
}

fn word(t: &TokenWithSpan) -> Option<&str> {
    match &t.token {
        Token::Word(w) => Some(w.value.as_str()),
        _ => None,
    }
}

/// Parses `CREATE [TEMPORARY] TABLE [IF NOT EXISTS] name (…) [WITH (…)]`.
pub fn parse_create_table(st: &Statement) -> Result<TableDef, SqlError> {
    let mut t = Tokens::new(st)?;
    t.expect_keyword("CREATE")?;
    t.keyword("TEMPORARY");
    t.expect_keyword("TABLE")?;
    if t.keyword("IF") {
        t.expect_keyword("NOT")?;
        t.expect_keyword("EXISTS")?;
    }
    let (mut name, _) = t.ident("a table name")?;
    while t.peek().is_some_and(|x| x.token == Token::Period) {
        t.next();
        name = t.ident("a table name")?.0;
    }
    let mut def = TableDef {
        name,
        columns: Vec::new(),
        computed: Vec::new(),
        watermark: None,
        options: BTreeMap::new(),
        option_at: BTreeMap::new(),
        metadata: Vec::new(),
        primary_key: Vec::new(),
        partitioned_by: Vec::new(),
        partitioned_at: 0,
    };
    let mut watermark_at = 0;
    if t.peek().is_some_and(|x| x.token == Token::LParen) {
        t.next();
        loop {
            let el = t.element();
            let Some(first) = el.first() else {
                return Err(t.err_here("expected a column definition"));
            };
            let first_word = word(first).unwrap_or_default().to_ascii_uppercase();
            if first_word == "WATERMARK" {
                watermark_at = t.offset(first);
                def.watermark = Some(parse_watermark(&t, &el)?);
            } else if first_word == "PRIMARY" || first_word == "CONSTRAINT" {
                def.primary_key = parse_primary_key(st, &t, &el)?;
            } else if el
                .get(1)
                .and_then(word)
                .is_some_and(|w| w.eq_ignore_ascii_case("AS"))
            {
                let (name, _) = (word(first).unwrap_or_default().to_string(), 0);
                let (text, at) = t.text_of(&el[2..]);
                if text.trim().is_empty() {
                    return Err(st.error_at_offset(
                        t.offset(first),
                        "a computed column needs an expression after AS",
                    ));
                }
                def.computed.push((name, text, at));
            } else {
                let Some(cname) = word(first) else {
                    return Err(st.error_at_offset(t.offset(first), "expected a column name"));
                };
                let rest: Vec<_> = el[1..].to_vec();
                let not_null = rest.windows(2).any(|w| {
                    word(&w[0]).is_some_and(|a| a.eq_ignore_ascii_case("NOT"))
                        && word(&w[1]).is_some_and(|b| b.eq_ignore_ascii_case("NULL"))
                });
                let type_toks: Vec<_> = rest
                    .iter()
                    .take_while(|x| {
                        !word(x).is_some_and(|w| {
                            ["NOT", "NULL", "COMMENT", "METADATA", "PRIMARY"]
                                .iter()
                                .any(|k| w.eq_ignore_ascii_case(k))
                        })
                    })
                    .cloned()
                    .collect();
                let (ttext, tat) = t.text_of(&type_toks);
                if ttext.is_empty() {
                    return Err(st.error_at_offset(
                        t.offset(first),
                        format!("column `{cname}` needs a type"),
                    ));
                }
                let dt = parse_type(&ttext).map_err(|m| st.error_at_offset(tat, m))?;
                let is_word =
                    |x: &TokenWithSpan, w: &str| word(x).is_some_and(|a| a.eq_ignore_ascii_case(w));
                if let Some(m) = rest.iter().position(|x| is_word(x, "METADATA")) {
                    let mut key = cname.to_string();
                    let mut is_virtual = false;
                    let mut i = m + 1;
                    if rest.get(i).is_some_and(|x| is_word(x, "FROM")) {
                        match rest.get(i + 1).map(|x| &x.token) {
                            Some(Token::SingleQuotedString(k)) => key = k.clone(),
                            _ => {
                                return Err(st.error_at_offset(
                                    t.offset(&rest[i]),
                                    "expected a quoted metadata key after METADATA FROM, as in METADATA FROM 'timestamp'",
                                ));
                            }
                        }
                        i += 2;
                    }
                    if rest.get(i).is_some_and(|x| is_word(x, "VIRTUAL")) {
                        is_virtual = true;
                    }
                    def.metadata.push(MetadataColumn {
                        column: cname.to_string(),
                        key,
                        is_virtual,
                        at: t.offset(first),
                    });
                }
                if rest
                    .windows(2)
                    .any(|w| is_word(&w[0], "PRIMARY") && is_word(&w[1], "KEY"))
                {
                    def.primary_key = vec![cname.to_string()];
                }
                def.columns.push(Field::new(cname, dt, !not_null));
            }
            match t.next() {
                Some(x) if x.token == Token::Comma => continue,
                Some(x) if x.token == Token::RParen => break,
                _ => return Err(t.err_here("expected `,` or `)` in the column list")),
            }
        }
    }
    if let Some((col, _)) = &def.watermark {
        let physical = def.columns.iter().any(|f| f.name() == col);
        let computed = def.computed.iter().any(|(n, _, _)| n == col);
        if !physical && !computed {
            return Err(st.error_at_offset(
                watermark_at,
                format!(
                    "the watermark column `{col}` is not a column of `{}`",
                    def.name
                ),
            ));
        }
    }
    loop {
        if t.keyword("COMMENT") {
            // The comment's text.
            t.next();
        } else if let Some(at) = t.peek().map(|x| t.offset(x))
            && t.keyword("PARTITIONED")
        {
            t.expect_keyword("BY")?;
            t.expect(Token::LParen, "`(` after PARTITIONED BY")?;
            def.partitioned_at = at;
            loop {
                let (col, col_at) = t.ident("a partition column")?;
                if !def.columns.iter().any(|f| *f.name() == col) {
                    return Err(st.error_at_offset(
                        col_at,
                        format!(
                            "the partition column `{col}` is not a physical column of `{}`",
                            def.name
                        ),
                    ));
                }
                def.partitioned_by.push(col);
                match t.next().map(|x| x.token) {
                    Some(Token::Comma) => continue,
                    Some(Token::RParen) => break,
                    _ => return Err(t.err_here("expected `,` or `)` in PARTITIONED BY")),
                }
            }
        } else {
            break;
        }
    }
    if t.keyword("WITH") {
        t.expect(Token::LParen, "`(` after WITH")?;
        loop {
            let bad_key =
                t.err_here("expected a quoted option name, as in 'connector' = 'datagen'");
            let k = t.next();
            let (key, at) = match k.as_ref().map(|x| (&x.token, x)) {
                Some((Token::SingleQuotedString(s), x)) => (s.clone(), t.offset(x)),
                _ => {
                    return Err(bad_key);
                }
            };
            t.expect(Token::Eq, "`=` after the option name")?;
            let v = match t.next().map(|x| x.token) {
                Some(Token::SingleQuotedString(s)) => s,
                Some(Token::Number(n, _)) => n,
                _ => return Err(t.err_here(format!("expected a quoted value for option '{key}'"))),
            };
            def.option_at.insert(key.clone(), at);
            def.options.insert(key, v);
            match t.next().map(|x| x.token) {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => break,
                _ => return Err(t.err_here("expected `,` or `)` in WITH options")),
            }
        }
    }
    if let Some(x) = t.peek() {
        if !matches!(x.token, Token::EOF | Token::SemiColon) {
            return Err(t.err_here("unexpected text after the table definition"));
        }
    }
    Ok(def)
}

/// `[CONSTRAINT name] PRIMARY KEY (a, b) NOT ENFORCED`: the key's columns.
fn parse_primary_key(
    st: &Statement,
    t: &Tokens<'_>,
    el: &[TokenWithSpan],
) -> Result<Vec<String>, SqlError> {
    let at = el.first().map_or(0, |x| t.offset(x));
    let open = el.iter().position(|x| x.token == Token::LParen);
    let close = el.iter().position(|x| x.token == Token::RParen);
    let (Some(open), Some(close)) = (open, close) else {
        return Err(st.error_at_offset(at, "expected PRIMARY KEY (column, …) NOT ENFORCED"));
    };
    let cols: Vec<String> = el[open + 1..close]
        .iter()
        .filter_map(|x| word(x).map(str::to_string))
        .collect();
    let enforced = !el[close..]
        .iter()
        .any(|x| word(x).is_some_and(|w| w.eq_ignore_ascii_case("NOT")));
    if cols.is_empty() || enforced {
        return Err(st.error_at_offset(
            at,
            "expected PRIMARY KEY (column, …) NOT ENFORCED (Flink does not enforce keys; say so)",
        ));
    }
    Ok(cols)
}

fn parse_watermark(t: &Tokens<'_>, el: &[TokenWithSpan]) -> Result<(String, i64), SqlError> {
    let st = t.st;
    let at = |i: usize| el.get(i).map(|x| t.offset(x)).unwrap_or(0);
    let kw = |i: usize, k: &str| {
        el.get(i)
            .and_then(word)
            .is_some_and(|w| w.eq_ignore_ascii_case(k))
    };
    if !kw(1, "FOR") {
        return Err(st.error_at_offset(
            at(1),
            "expected WATERMARK FOR column AS column - INTERVAL 'n' SECOND",
        ));
    }
    let col = el.get(2).and_then(word).ok_or_else(|| {
        st.error_at_offset(at(2), "expected the event-time column after WATERMARK FOR")
    })?;
    if !kw(3, "AS") {
        return Err(st.error_at_offset(at(3), "expected AS after the watermark column"));
    }
    let same = el.get(4).and_then(word).is_some_and(|w| w == col);
    if !same {
        return Err(st.error_at_offset(
            at(4),
            format!("the watermark expression must be `{col}` or `{col} - INTERVAL 'n' unit`"),
        ));
    }
    if el.len() == 5 {
        return Ok((col.to_string(), 0));
    }
    let minus = el.get(5).is_some_and(|x| x.token == Token::Minus);
    if !minus || !kw(6, "INTERVAL") {
        return Err(st.error_at_offset(
            at(5),
            format!("the watermark expression must be `{col}` or `{col} - INTERVAL 'n' unit`"),
        ));
    }
    let amount = match el.get(7).map(|x| &x.token) {
        Some(Token::SingleQuotedString(s)) => s.trim().parse::<f64>().ok(),
        Some(Token::Number(n, _)) => n.parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| st.error_at_offset(at(7), "expected a number in quotes after INTERVAL"))?;
    let unit = el
        .get(8)
        .and_then(word)
        .unwrap_or("SECOND")
        .to_ascii_uppercase();
    let ms = unit_ms(&unit).ok_or_else(|| {
        st.error_at_offset(
            at(8),
            format!("unknown interval unit `{unit}`; use MILLISECOND, SECOND, MINUTE, HOUR or DAY"),
        )
    })?;
    Ok((col.to_string(), (amount * ms as f64) as i64))
}

/// Milliseconds per interval unit.
pub fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    })
}

/// Maps a Flink SQL column type to Arrow.
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let supported = "supported types: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, STRING, VARCHAR(n), CHAR(n), DATE, TIMESTAMP(3), TIMESTAMP_LTZ(3)";
    let upper = text.trim().to_ascii_uppercase();
    if upper == "STRING" {
        return Ok(DataType::Utf8);
    }
    if upper.starts_with("TIMESTAMP_LTZ") {
        return Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some("UTC".into()),
        ));
    }
    let mut p = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .map_err(|e| format!("cannot read type `{text}`: {e}"))?;
    let t = p
        .parse_data_type()
        .map_err(|e| format!("cannot read type `{text}`: {e}; {supported}"))?;
    Ok(match t {
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::TinyInt(_) => DataType::Int8,
        SqlType::SmallInt(_) => DataType::Int16,
        SqlType::Int(_) | SqlType::Integer(_) => DataType::Int32,
        SqlType::BigInt(_) => DataType::Int64,
        SqlType::Float(_) | SqlType::Real => DataType::Float32,
        SqlType::Double(_) | SqlType::DoublePrecision => DataType::Float64,
        SqlType::Varchar(_)
        | SqlType::Char(_)
        | SqlType::Text
        | SqlType::String(_)
        | SqlType::CharVarying(_)
        | SqlType::Character(_) => DataType::Utf8,
        SqlType::Date => DataType::Date32,
        SqlType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(p, s)) => {
            DataType::Decimal128(p as u8, s as i8)
        }
        other => return Err(format!("type `{other}` is not supported; {supported}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::split;

    #[test]
    fn reads_flink_ddl() -> Result<(), SqlError> {
        let st = &split(
            "CREATE TEMPORARY TABLE bids (\n  auction BIGINT NOT NULL,\n  price DOUBLE,\n  ts TIMESTAMP(3),\n  big AS price * 2,\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n) WITH ('connector' = 'datagen', 'number-of-rows' = '10')",
        )[0];
        let d = parse_create_table(st)?;
        assert_eq!(d.name, "bids");
        assert_eq!(d.columns.len(), 3);
        assert_eq!(d.columns[0].data_type(), &DataType::Int64);
        assert!(!d.columns[0].is_nullable());
        assert_eq!(d.computed[0].0, "big");
        assert_eq!(d.computed[0].1, "price * 2");
        assert_eq!(d.watermark, Some(("ts".into(), 5000)));
        assert_eq!(
            d.options.get("number-of-rows").map(String::as_str),
            Some("10")
        );
        Ok(())
    }

    #[test]
    fn bad_type_points_at_it() {
        let st = &split("CREATE TABLE t (\n  a BIGINT,\n  b MAP<INT, INT>\n)")[0];
        let e = parse_create_table(st)
            .err()
            .map(|e| (e.line, e.column, e.message));
        let (l, c, m) = e.unwrap_or_default();
        assert_eq!((l, c), (3, 5), "{m}");
        assert!(
            m.contains("not supported") || m.contains("cannot read"),
            "{m}"
        );
    }
}
