//! The conformance suite against Apache Flink (`conformance/README.md`): every query under
//! `conformance/queries` runs on flink-rs, at parallelism 1 and 3, and its final result — the
//! column types and the multiset of rows its changelog leaves — is compared with Flink's,
//! recorded beside it in `conformance/flink` by `record.py` (so this test needs no JVM).
//!
//! `conformance/divergences.txt` names the queries known to differ, each with the reason. The
//! test fails when any other query differs, and also when a listed one no longer differs, so
//! the list (and the count README states) stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::graph::ExecutionConfig;
use flink_rs_core::source::{Sink, SinkWriter};
use flink_rs_sql::compile_query;
use flink_rs_sql::session::flink_type;

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// A float as Python's `'%.9e' % v` writes it (`record.py`'s `text`).
fn float_text(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{v:.9e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// The rows of `batch` as `record.py` writes Flink's, with their changelog kinds.
fn rows(batch: &RecordBatch) -> Result<Vec<(String, String)>> {
    let options = FormatOptions::default()
        .with_null("NULL")
        .with_date_format(Some("%Y-%m-%d"))
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.3f"));
    let (kinds, _) = flink_rs_core::api::print::changelog_columns(batch, &options)?;
    let shown = batch.num_columns() - usize::from(kinds.is_some());
    let mut columns: Vec<Vec<String>> = Vec::new();
    for c in &batch.columns()[..shown] {
        let n = c.len();
        let text: Vec<String> = match c.data_type() {
            DataType::Float32 | DataType::Float64 => {
                let wide = arrow::compute::cast(c, &DataType::Float64)?;
                let a = wide.as_primitive::<Float64Type>();
                (0..n)
                    .map(|i| {
                        if a.is_null(i) {
                            "NULL".into()
                        } else {
                            float_text(a.value(i))
                        }
                    })
                    .collect()
            }
            DataType::Boolean => {
                let a = c.as_boolean();
                (0..n)
                    .map(|i| match (a.is_null(i), a.value(i)) {
                        (true, _) => "NULL".into(),
                        (false, true) => "TRUE".into(),
                        (false, false) => "FALSE".into(),
                    })
                    .collect()
            }
            _ => {
                let f = ArrayFormatter::try_new(c.as_ref(), &options)?;
                (0..n).map(|i| f.value(i).to_string()).collect()
            }
        };
        columns.push(text);
    }
    Ok((0..batch.num_rows())
        .map(|r| {
            let kind = kinds.as_ref().map_or("+I", |k| k.value(r)).to_string();
            let line: Vec<&str> = columns.iter().map(|c| c[r].as_str()).collect();
            (kind, line.join(" | "))
        })
        .collect())
}

/// Collects a query's changelog from every subtask.
#[derive(Default, Clone)]
struct Collect {
    schema: Arc<Mutex<Option<SchemaRef>>>,
    changes: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sink for Collect {
    fn create_writer(
        &self,
        _subtask: usize,
        _parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        if let Ok(mut s) = self.schema.lock() {
            *s = Some(schema.clone());
        }
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for Collect {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = rows(batch)?;
        self.changes
            .lock()
            .map_err(|_| Error::User("poisoned".into()))?
            .extend(rows);
        Ok(())
    }
}

fn statements(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.replace("{data}", &suite().join("data").display().to_string())
}

/// The query's result on flink-rs at parallelism `p`, as `record.py` writes Flink's.
fn run(name: &str, p: usize) -> String {
    let script = format!(
        "{}\n{}",
        statements(&suite().join("ddl.sql")),
        statements(&suite().join("queries").join(format!("{name}.sql")))
    );
    let sink = Collect::default();
    let settings = [("parallelism.default".to_string(), p.to_string())];
    let job = match compile_query(
        &script,
        ExecutionConfig::default(),
        &settings,
        Arc::new(sink.clone()),
    ) {
        Ok(job) => job,
        Err(e) => return format!("error: {}\n", e.message),
    };
    if let Err(e) = job.env.execute() {
        return format!("error: {e}\n");
    }
    let schema = sink.schema.lock().ok().and_then(|s| s.clone());
    let types: Vec<String> = schema
        .iter()
        .flat_map(|s| s.fields().iter())
        .filter(|f| f.name() != "__op")
        .map(|f| flink_type(f.data_type(), false))
        .collect();
    let mut multiset: BTreeMap<String, i64> = BTreeMap::new();
    for (kind, line) in sink.changes.lock().map(|c| c.clone()).unwrap_or_default() {
        let delta = if kind == "+I" || kind == "+U" { 1 } else { -1 };
        *multiset.entry(line).or_default() += delta;
    }
    let mut out = format!("types: {}\n", types.join(", "));
    for (line, n) in multiset {
        if n < 0 {
            out.push_str(&format!(
                "retracted {} time(s) more than inserted: {line}\n",
                -n
            ));
        }
        for _ in 0..n.max(0) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// What differs between Flink's recorded result and flink-rs's, briefly.
fn difference(flink: &str, ours: &str) -> String {
    let (ft, fr) = flink.split_once('\n').unwrap_or((flink, ""));
    let (ot, or) = ours.split_once('\n').unwrap_or((ours, ""));
    let mut out = String::new();
    if ft != ot {
        out.push_str(&format!("    Flink    {ft}\n    flink-rs {ot}\n"));
    }
    let count = |rows: &str| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for l in rows.lines() {
            *m.entry(l.to_string()).or_default() += 1;
        }
        m
    };
    let (fm, om) = (count(fr), count(or));
    let only = |a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| {
        a.iter()
            .filter(|(l, n)| b.get(*l).copied().unwrap_or(0) < **n)
            .map(|(l, _)| l.clone())
            .collect::<Vec<_>>()
    };
    let (only_flink, only_ours) = (only(&fm, &om), only(&om, &fm));
    if !only_flink.is_empty() || !only_ours.is_empty() {
        out.push_str(&format!(
            "    rows: {} from Flink, {} from flink-rs; only Flink's, e.g. {:?}; only flink-rs's, e.g. {:?}\n",
            fr.lines().count(),
            or.lines().count(),
            &only_flink[..only_flink.len().min(3)],
            &only_ours[..only_ours.len().min(3)]
        ));
    }
    out
}

/// `divergences.txt`: `name: why`, `#` comments.
fn divergences() -> BTreeMap<String, String> {
    statements(&suite().join("divergences.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, why)| (n.trim().to_string(), why.trim().to_string()))
        .collect()
}

#[test]
fn queries_give_the_results_apache_flink_gives() {
    let mut names: Vec<String> = std::fs::read_dir(suite().join("queries"))
        .expect("the queries folder")
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_suffix(".sql").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 60, "the suite has {} queries", names.len());
    let known = divergences();
    let unknown: BTreeSet<&String> = known.keys().filter(|k| !names.contains(k)).collect();
    assert!(
        unknown.is_empty(),
        "divergences.txt names queries that do not exist: {unknown:?}"
    );
    let mut problems = Vec::new();
    let mut matching = 0;
    for name in &names {
        let recorded = suite().join("flink").join(format!("{name}.txt"));
        let flink = std::fs::read_to_string(&recorded)
            .unwrap_or_else(|e| panic!("{}: {e} (run record.py)", recorded.display()));
        assert!(
            !flink.starts_with("error:"),
            "{name}: Flink refuses this query ({}); the suite holds only queries Flink runs",
            flink.trim()
        );
        let at_1 = run(name, 1);
        let same = at_1 == flink;
        match (same, known.get(name)) {
            (true, None) => {
                matching += 1;
                let at_3 = run(name, 3);
                if at_3 != flink {
                    problems.push(format!(
                        "{name}: matches Flink at parallelism 1 but not at 3\n{}",
                        difference(&flink, &at_3)
                    ));
                }
            }
            (true, Some(why)) => problems.push(format!(
                "{name}: now matches Flink; remove it from divergences.txt (it said: {why})"
            )),
            (false, None) => problems.push(format!(
                "{name}: differs from Flink\n{}",
                difference(&flink, &at_1)
            )),
            (false, Some(_)) => {}
        }
    }
    eprintln!(
        "{matching} of {} queries give Flink's result; {} are known to differ",
        names.len(),
        known.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn floats_are_written_as_pythons_e_format() {
    assert_eq!(float_text(1234.5), "1.234500000e+03");
    assert_eq!(float_text(-0.00125), "-1.250000000e-03");
    assert_eq!(float_text(0.0), "0.000000000e+00");
    assert_eq!(float_text(1e100), "1.000000000e+100");
}
