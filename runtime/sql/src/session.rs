//! A SQL session, statement by statement, as Flink's SQL client runs one (`flink-rs sql`).
//!
//! `SET`/`RESET` change the session's configuration; `CREATE TABLE`, `CREATE VIEW` and
//! `DROP` its catalog; `SHOW TABLES`, `DESCRIBE` and `EXPLAIN` answer from them; a `SELECT`
//! or an `INSERT` is compiled with the session's tables and settings into a job the caller
//! runs. `BEGIN STATEMENT SET; … END;` gathers INSERTs into one job, as in Flink.

use arrow::datatypes::{DataType, TimeUnit};
use flink_rs_core::graph::ExecutionConfig;
use flink_rs_core::source::SinkRef;

use crate::ddl::{self, TableDef};
use crate::script::{SqlError, Statement, split};
use crate::{SqlJob, apply_setting, compile, compile_query, kind, parse_set};

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    /// Done (a setting, a declaration); the message says what.
    Done(String),
    /// The session's settings (`SET;`).
    Settings(Vec<(String, String)>),
    /// A small result (`SHOW TABLES`, `DESCRIBE`).
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// A dataflow plan (`EXPLAIN`).
    Explain(String),
    /// A `SELECT`: its job writes the rows to the sink the caller gave.
    Query(SqlJob),
    /// An `INSERT` or a statement set: the job, and the script and settings it was
    /// compiled from (what a cluster is sent).
    Insert {
        job: SqlJob,
        script: String,
        settings: Vec<(String, String)>,
    },
    /// `QUIT` / `EXIT`.
    Quit,
}

/// A declared table or view.
struct Object {
    name: String,
    /// The declaring statement.
    text: String,
    /// A table's definition (`None`: a view).
    table: Option<TableDef>,
}

/// One client's session: settings and catalog.
pub struct Session {
    base: ExecutionConfig,
    /// Settings in the order they were made (the last of a key wins).
    settings: Vec<(String, String)>,
    objects: Vec<Object>,
    /// INSERTs of an open `BEGIN STATEMENT SET`.
    statement_set: Option<Vec<String>>,
}

impl Session {
    /// A session over `base` with `settings` (`--set`) made first.
    pub fn new(base: ExecutionConfig, settings: Vec<(String, String)>) -> Session {
        Session {
            base,
            settings,
            objects: Vec::new(),
            statement_set: None,
        }
    }

    /// The session's value of a configuration key.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `BEGIN STATEMENT SET` is open (the client's prompt says so).
    pub fn in_statement_set(&self) -> bool {
        self.statement_set.is_some()
    }

    /// Runs one statement. `sink` makes the sink a `SELECT` writes its rows to.
    pub fn execute(
        &mut self,
        st: &Statement,
        sink: impl FnOnce() -> SinkRef,
    ) -> Result<Outcome, SqlError> {
        let k = kind(st);
        let words: Vec<&str> = k.split(' ').collect();
        if let Some(set) = &mut self.statement_set {
            return match words.as_slice() {
                ["INSERT", ..] => {
                    set.push(st.text.clone());
                    Ok(Outcome::Done(
                        "Add SQL update statement to the statement set.".into(),
                    ))
                }
                ["END"] => {
                    let inserts = std::mem::take(set);
                    self.statement_set = None;
                    if inserts.is_empty() {
                        return Ok(Outcome::Done("The statement set is empty.".into()));
                    }
                    let body: String = inserts.iter().map(|i| format!("{i};\n")).collect();
                    let script = format!("EXECUTE STATEMENT SET BEGIN\n{body}END");
                    self.insert(st, &script)
                }
                _ => {
                    Err(st.error("only INSERT statements belong in a statement set; END closes it"))
                }
            };
        }
        match words.as_slice() {
            ["QUIT"] | ["EXIT"] => Ok(Outcome::Quit),
            ["SET"] => Ok(Outcome::Settings(self.effective_settings())),
            ["SET", ..] => {
                let Some((key, value)) = parse_set(st)? else {
                    return Ok(Outcome::Settings(self.effective_settings()));
                };
                if !is_client_key(&key) {
                    let mut probe = self.base.clone();
                    apply_setting(&mut probe, &key, &value).map_err(|m| st.error(m))?;
                } else {
                    check_client_setting(&key, &value).map_err(|m| st.error(m))?;
                }
                self.settings.push((key, value));
                Ok(Outcome::Done("Session property has been set.".into()))
            }
            ["RESET"] => {
                self.settings.clear();
                Ok(Outcome::Done("All session properties have been set to their default values.".into()))
            }
            ["RESET", ..] => {
                let key = st.text.trim()[5..]
                    .trim()
                    .trim_matches('\'')
                    .trim_matches('"')
                    .to_string();
                self.settings.retain(|(k, _)| *k != key);
                Ok(Outcome::Done("Session property has been reset.".into()))
            }
            ["CREATE", "TABLE", ..] | ["CREATE", "TEMPORARY", "TABLE", ..] => {
                let def = ddl::parse_create_table(st)?;
                self.declare(st, def.name.clone(), Some(def))?;
                Ok(Outcome::Done("Execute statement succeeded.".into()))
            }
            ["CREATE", "VIEW", ..] | ["CREATE", "TEMPORARY", "VIEW", ..] => {
                let name = object_name(st, if words[1] == "VIEW" { 2 } else { 3 })?;
                self.declare(st, name, None)?;
                Ok(Outcome::Done("Execute statement succeeded.".into()))
            }
            ["DROP", "TABLE", ..]
            | ["DROP", "VIEW", ..]
            | ["DROP", "TEMPORARY", "TABLE", ..]
            | ["DROP", "TEMPORARY", "VIEW", ..] => self.drop(st, &words),
            ["SHOW", "TABLES"] => {
                let mut names: Vec<&str> = self.objects.iter().map(|o| o.name.as_str()).collect();
                names.sort_unstable();
                Ok(Outcome::Table {
                    header: vec!["table name".into()],
                    rows: names.into_iter().map(|n| vec![n.to_string()]).collect(),
                })
            }
            ["SHOW", "VIEWS"] => {
                let mut names: Vec<&str> = self
                    .objects
                    .iter()
                    .filter(|o| o.table.is_none())
                    .map(|o| o.name.as_str())
                    .collect();
                names.sort_unstable();
                Ok(Outcome::Table {
                    header: vec!["view name".into()],
                    rows: names.into_iter().map(|n| vec![n.to_string()]).collect(),
                })
            }
            ["DESCRIBE", ..] | ["DESC", ..] => self.describe(st),
            ["EXPLAIN", ..] => {
                let mut inner = st.text.trim_start()[7..].trim_start();
                if inner.len() >= 8 && inner[..8].eq_ignore_ascii_case("PLAN FOR") {
                    inner = inner[8..].trim_start();
                }
                let sink: Option<SinkRef> = Some(std::sync::Arc::new(
                    flink_rs_connectors::BlackholeSink::default(),
                ));
                let job = self.compile(st, inner, sink)?;
                Ok(Outcome::Explain(job.env.graph().explain()))
            }
            ["BEGIN", "STATEMENT", "SET"] => {
                self.statement_set = Some(Vec::new());
                Ok(Outcome::Done("Begin a statement set.".into()))
            }
            ["SELECT", ..] | ["WITH", ..] => {
                self.compile(st, &st.text, Some(sink())).map(Outcome::Query)
            }
            ["INSERT", ..] | ["EXECUTE", ..] => self.insert(st, &st.text),
            _ => Err(st.error(format!(
                "unsupported statement `{}`; supported: SET, RESET, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW, SHOW TABLES, SHOW VIEWS, DESCRIBE, EXPLAIN, SELECT, INSERT INTO, BEGIN STATEMENT SET … END, QUIT",
                crate::excerpt(&words.join(" "), 60)
            ))),
        }
    }

    /// The settings in effect, one per key, sorted.
    fn effective_settings(&self) -> Vec<(String, String)> {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in &self.settings {
            map.insert(k.clone(), v.clone());
        }
        map.into_iter().collect()
    }

    fn declare(
        &mut self,
        st: &Statement,
        name: String,
        table: Option<TableDef>,
    ) -> Result<(), SqlError> {
        if self
            .objects
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&name))
        {
            return Err(st.error_near(
                &name,
                format!("a table or view named `{name}` already exists (DROP it first)"),
            ));
        }
        self.objects.push(Object {
            name,
            text: st.text.clone(),
            table,
        });
        Ok(())
    }

    fn drop(&mut self, st: &Statement, words: &[&str]) -> Result<Outcome, SqlError> {
        let temporary = words.get(1) == Some(&"TEMPORARY");
        let view = words[if temporary { 2 } else { 1 }] == "VIEW";
        let mut at = if temporary { 3 } else { 2 };
        let tokens: Vec<&str> = st.text.split_whitespace().collect();
        let if_exists = tokens.get(at).is_some_and(|w| w.eq_ignore_ascii_case("IF"))
            && tokens
                .get(at + 1)
                .is_some_and(|w| w.eq_ignore_ascii_case("EXISTS"));
        if if_exists {
            at += 2;
        }
        let name = object_name(st, at)?;
        let found = self
            .objects
            .iter()
            .position(|o| o.name.eq_ignore_ascii_case(&name));
        match found {
            Some(i) if self.objects[i].table.is_none() == view => {
                self.objects.remove(i);
                Ok(Outcome::Done("Execute statement succeeded.".into()))
            }
            Some(_) => Err(st.error_near(
                &name,
                format!(
                    "`{name}` is a {}, not a {}",
                    if view { "table" } else { "view" },
                    if view { "view" } else { "table" }
                ),
            )),
            None if if_exists => Ok(Outcome::Done("Execute statement succeeded.".into())),
            None => Err(st.error_near(
                &name,
                format!("no {} named `{name}`", if view { "view" } else { "table" }),
            )),
        }
    }

    fn describe(&self, st: &Statement) -> Result<Outcome, SqlError> {
        let name = object_name(st, 1)?;
        let Some(object) = self
            .objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(&name))
        else {
            return Err(st.error_near(&name, format!("no table or view named `{name}`")));
        };
        let Some(def) = &object.table else {
            return Err(st.error_near(
                &name,
                format!("`{name}` is a view; DESCRIBE shows tables only, for now"),
            ));
        };
        let mut rows = Vec::new();
        for f in &def.columns {
            let key = if def.primary_key.iter().any(|k| k == f.name()) {
                format!("PRI({})", def.primary_key.join(", "))
            } else {
                String::new()
            };
            let extras = match def.metadata.iter().find(|m| m.column == *f.name()) {
                Some(m) if m.is_virtual => format!("METADATA FROM '{}' VIRTUAL", m.key),
                Some(m) => format!("METADATA FROM '{}'", m.key),
                None => String::new(),
            };
            rows.push(vec![
                f.name().clone(),
                flink_type(
                    f.data_type(),
                    def.watermark.as_ref().map(|w| &w.0) == Some(f.name()),
                ),
                f.is_nullable().to_string().to_ascii_uppercase(),
                key,
                extras,
                watermark_of(def, f.name()),
            ]);
        }
        for (column, expr, _) in &def.computed {
            rows.push(vec![
                column.clone(),
                String::new(),
                "TRUE".into(),
                String::new(),
                format!("AS {}", expr.trim()),
                watermark_of(def, column),
            ]);
        }
        Ok(Outcome::Table {
            header: ["name", "type", "null", "key", "extras", "watermark"]
                .map(String::from)
                .to_vec(),
            rows,
        })
    }

    fn insert(&self, st: &Statement, text: &str) -> Result<Outcome, SqlError> {
        let job = self.compile(st, text, None)?;
        Ok(Outcome::Insert {
            job,
            script: self.script(text),
            settings: self.job_settings(),
        })
    }

    /// The session's declarations followed by `text`.
    fn script(&self, text: &str) -> String {
        let mut script = String::new();
        for o in &self.objects {
            script.push_str(&o.text);
            script.push_str(";\n");
        }
        script.push_str(text);
        script
    }

    /// The settings a job gets (not the client's own).
    fn job_settings(&self) -> Vec<(String, String)> {
        self.effective_settings()
            .into_iter()
            .filter(|(k, _)| !is_client_key(k))
            .collect()
    }

    /// Compiles `text` (the statement `st` or part of it) after the session's declarations,
    /// with its settings. Errors point into `st`.
    fn compile(
        &self,
        st: &Statement,
        text: &str,
        sink: Option<SinkRef>,
    ) -> Result<SqlJob, SqlError> {
        let declarations = self.script("");
        let declared_lines = declarations.matches('\n').count();
        let statements = self.objects.len();
        let script = self.script(text);
        let settings = self.job_settings();
        let r = match sink {
            Some(sink) => compile_query(&script, self.base.clone(), &settings, sink),
            None => compile(&script, self.base.clone(), &settings),
        };
        r.map_err(|mut e| {
            if e.statement > statements {
                // In the statement itself: positions as the user typed it.
                let offset = st.text.find(text.trim_start()).unwrap_or(0);
                let lead = split(&st.text[..offset]).len();
                e.statement = st.number + lead;
                e.line = e.line.saturating_sub(declared_lines) + st.line - 1;
            } else if e.statement > 0 {
                let name = self
                    .objects
                    .get(e.statement - 1)
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                e.message = format!("in the declaration of `{name}`: {}", e.message);
                e.statement = st.number;
                e.line = st.line;
                e.column = st.column;
            }
            e
        })
    }
}

/// Keys of the client itself (not the job's).
fn is_client_key(key: &str) -> bool {
    key.starts_with("sql-client.") || key == "table.dml-sync"
}

fn check_client_setting(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim().to_ascii_lowercase();
    let ok = match key {
        "sql-client.execution.result-mode" => {
            if v == "table" {
                return Err(format!(
                    "'{key}' = '{value}': the full-screen table view is not implemented; 'tableau' and 'changelog' are"
                ));
            }
            ["tableau", "changelog"].contains(&v.as_str())
        }
        "table.dml-sync" => ["true", "false"].contains(&v.as_str()),
        "sql-client.display.max-column-width" => v.parse::<usize>().is_ok_and(|n| n > 0),
        _ => {
            return Err(format!(
                "unknown client option '{key}'; supported: sql-client.execution.result-mode, sql-client.display.max-column-width, table.dml-sync"
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("'{key}' = '{value}' is not a valid value"))
    }
}

/// The name after the statement's first `words` words (unquoted).
fn object_name(st: &Statement, words: usize) -> Result<String, SqlError> {
    st.text
        .split_whitespace()
        .nth(words)
        .map(|w| {
            w.trim_end_matches(';')
                .split('(')
                .next()
                .unwrap_or_default()
                .trim_matches('`')
                .to_string()
        })
        .filter(|n| !n.is_empty())
        .ok_or_else(|| st.error("expected a table or view name"))
}

fn watermark_of(def: &TableDef, column: &str) -> String {
    match &def.watermark {
        Some((c, delay)) if c == column => match delay {
            0 => format!("`{c}`"),
            ms if ms % 1000 == 0 => format!("`{c}` - INTERVAL '{}' SECOND", ms / 1000),
            ms => format!("`{c}` - INTERVAL '0.{ms:03}' SECOND"),
        },
        _ => String::new(),
    }
}

/// Flink's name of a column type.
pub fn flink_type(t: &DataType, rowtime: bool) -> String {
    let attr = if rowtime { " *ROWTIME*" } else { "" };
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            match tz {
                Some(_) => format!("TIMESTAMP_LTZ({p}){attr}"),
                None => format!("TIMESTAMP({p}){attr}"),
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => "TIME(0)".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("ARRAY<{}>", flink_type(f.data_type(), false))
        }
        DataType::Map(f, _) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                flink_type(kv[0].data_type(), false),
                flink_type(kv[1].data_type(), false)
            ),
            other => format!("MAP<{other}>"),
        },
        DataType::Struct(fields) => format!(
            "ROW<{}>",
            fields
                .iter()
                .map(|f| format!("`{}` {}", f.name(), flink_type(f.data_type(), false)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string().to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(text: &str) -> Vec<Statement> {
        split(text)
    }

    fn blackhole() -> SinkRef {
        std::sync::Arc::new(flink_rs_connectors::BlackholeSink::default())
    }

    const BIDS: &str = "CREATE TABLE bids (auction BIGINT, price DOUBLE, ts TIMESTAMP(3),
        WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH ('connector' = 'datagen', 'number-of-rows' = '10')";

    #[test]
    fn a_session_declares_describes_and_compiles_with_its_settings() {
        let mut s = Session::new(ExecutionConfig::default(), Vec::new());
        let sts = statements(&format!(
            "{BIDS};
             SET 'parallelism.default' = '3';
             SHOW TABLES;
             DESCRIBE bids;
             SELECT auction, price FROM bids WHERE price > 1;
             SET;"
        ));
        assert!(matches!(
            s.execute(&sts[0], blackhole),
            Ok(Outcome::Done(_))
        ));
        assert!(matches!(
            s.execute(&sts[1], blackhole),
            Ok(Outcome::Done(_))
        ));
        match s.execute(&sts[2], blackhole) {
            Ok(Outcome::Table { rows, .. }) => assert_eq!(rows, vec![vec!["bids".to_string()]]),
            _ => panic!("SHOW TABLES lists the table"),
        }
        match s.execute(&sts[3], blackhole) {
            Ok(Outcome::Table { rows, .. }) => {
                assert_eq!(
                    rows[0][..3],
                    ["auction", "BIGINT", "TRUE"].map(String::from)
                );
                assert_eq!(rows[1][1], "DOUBLE");
                assert_eq!(rows[2][1], "TIMESTAMP(3) *ROWTIME*");
                assert_eq!(rows[2][5], "`ts` - INTERVAL '1' SECOND");
            }
            _ => panic!("DESCRIBE shows the columns"),
        }
        match s.execute(&sts[4], blackhole) {
            Ok(Outcome::Query(job)) => {
                let mut parallelism = 0;
                job.env.configure(|c| parallelism = c.parallelism);
                assert_eq!(parallelism, 3);
            }
            Ok(_) => panic!("a query"),
            Err(e) => panic!("{e}"),
        }
        match s.execute(&sts[5], blackhole) {
            Ok(Outcome::Settings(v)) => {
                assert_eq!(v, vec![("parallelism.default".into(), "3".into())])
            }
            _ => panic!("SET lists the settings"),
        }
    }

    #[test]
    fn errors_name_the_statement_as_typed_and_nothing_is_half_declared() {
        let mut s = Session::new(ExecutionConfig::default(), Vec::new());
        let sts = statements(&format!(
            "{BIDS};\n{BIDS};\nSELECT nope\n  FROM bids;\nSET 'sql-client.execution.result-mode' = 'table';\nDROP TABLE other;\nFROB;"
        ));
        assert!(s.execute(&sts[0], blackhole).is_ok());
        let e = s.execute(&sts[1], blackhole).expect_err("a second `bids`");
        assert!(e.message.contains("already exists"), "{e}");
        let e = s.execute(&sts[2], blackhole).expect_err("unknown column");
        assert_eq!((e.statement, e.line), (3, sts[2].line), "{e}");
        assert!(e.message.contains("nope"), "{e}");
        let e = s.execute(&sts[3], blackhole).expect_err("table mode");
        assert!(e.message.contains("not implemented"), "{e}");
        let e = s.execute(&sts[4], blackhole).expect_err("no such table");
        assert!(e.message.contains("no table named `other`"), "{e}");
        let e = s.execute(&sts[5], blackhole).expect_err("unsupported");
        assert!(e.message.contains("unsupported statement `FROB`"), "{e}");
    }

    #[test]
    fn a_statement_set_is_one_job() {
        let mut s = Session::new(ExecutionConfig::default(), Vec::new());
        let sts = statements(&format!(
            "{BIDS};
             CREATE TABLE a (auction BIGINT) WITH ('connector' = 'blackhole');
             BEGIN STATEMENT SET;
             INSERT INTO a SELECT auction FROM bids;
             INSERT INTO a SELECT auction + 1 FROM bids;
             END;"
        ));
        for st in &sts[..4] {
            assert!(s.execute(st, blackhole).is_ok());
        }
        assert!(s.in_statement_set());
        assert!(s.execute(&sts[4], blackhole).is_ok());
        match s.execute(&sts[5], blackhole) {
            Ok(Outcome::Insert { job, .. }) => assert_eq!(job.inserts, 2),
            Ok(_) => panic!("a job"),
            Err(e) => panic!("{e}"),
        }
        assert!(!s.in_statement_set());
    }
}
