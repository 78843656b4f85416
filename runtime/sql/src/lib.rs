//! Flink SQL scripts compiled to dataflows.
//!
//! DataFusion parses queries, resolves names and types, and evaluates expressions (its
//! physical expressions run on our Arrow batches); the streaming parts — window TVFs,
//! watermarks, keyed state, timers — are the engine's. A script is split into statements;
//! `SET` configures the job, `CREATE TABLE`/`CREATE VIEW` declare, and every `INSERT INTO`
//! becomes part of one job (a statement set), planned as: DataFusion logical plan →
//! operators of the engine and the SQL crate's own ([`operators`]); see [`plan`].

mod aggregates;
mod computed_source;
mod connectors;
mod ddl;
mod formats;
mod functions;
mod group_window;
mod kafka;
mod operators;
mod plan;
mod script;
pub mod session;
mod type_rules;
mod window_tvf;

use std::collections::HashMap;
use std::time::Duration;

use datafusion::prelude::{SessionConfig, SessionContext};

pub use functions::{java_date_pattern, register_flink_functions};
pub use script::{SqlError, Statement, split};

use flink_rs_core::api::StreamExecutionEnvironment;
use flink_rs_core::checkpoint::{CheckpointingMode, RestartStrategy, RestoreFrom};
use flink_rs_core::graph::ExecutionConfig;
use flink_rs_core::state::{StateBackendKind, parse_memory_size};

/// A compiled script: the job, ready to run or explain.
pub struct SqlJob {
    pub env: StreamExecutionEnvironment,
    /// Number of INSERT statements in the job.
    pub inserts: usize,
    /// The nexmark string fields the job never reads (its generators skip them).
    pub unread_fields: Vec<String>,
    /// Every configuration key the script SETs and the caller's overrides, the latter
    /// winning: what the engine does not read (`metrics.reporter.prom.port`) its host does.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for SqlJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlJob")
            .field("inserts", &self.inserts)
            .finish()
    }
}

/// Parses a Flink duration (`10 s`, `10s`, `500 ms`, `1 min`, `2h`, or milliseconds).
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000.0,
        "min" | "m" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    };
    Some(Duration::from_millis((n * ms) as u64))
}

/// At most `max` characters of `text`, with `…` when cut: an error message quotes input,
/// but not all of a hostile one.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Applies one Flink configuration key. Unknown keys are accepted (Flink passes them on) and
/// reported in the log.
pub fn apply_setting(cfg: &mut ExecutionConfig, key: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| format!("'{key}' = '{value}': {what}");
    let dur = || parse_duration(value).ok_or_else(|| bad("expected a duration such as '10 s'"));
    let num = || {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| bad("expected a number"))
    };
    match key {
        "parallelism.default" => cfg.parallelism = num()?.max(1) as usize,
        // Read by the SQL planner (whether scans of one table share a source).
        "table.optimizer.reuse-source-enabled" | "table.optimizer.reuse-sub-plan-enabled" => {
            if !["true", "false"].contains(&value.trim()) {
                return Err(bad("expected true or false"));
            }
        }
        // Read by the SQL planner (regular joins drop rows that long after storing them).
        "table.exec.state.ttl" => {
            dur()?;
        }
        // Read by the SQL planner (a plain GROUP BY over bounded input: final result or
        // updates); checked here.
        "execution.runtime-mode" => {
            if !["streaming", "batch", "automatic"]
                .contains(&value.trim().to_ascii_lowercase().as_str())
            {
                return Err(bad("expected STREAMING, BATCH or AUTOMATIC"));
            }
        }
        "pipeline.max-parallelism" => cfg.max_parallelism = num()?.clamp(1, 32768) as u16,
        // Flink 1.x spelled "flush only when full" as `-1 ms`.
        "execution.buffer-timeout" | "execution.buffer-timeout.interval"
            if matches!(value.trim(), "-1" | "-1ms" | "-1 ms") =>
        {
            cfg.buffer_timeout_enabled = false
        }
        "execution.buffer-timeout" | "execution.buffer-timeout.interval" => cfg.linger = dur()?,
        "execution.buffer-timeout.enabled" => {
            cfg.buffer_timeout_enabled = match value.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("expected true or false")),
            }
        }
        "pipeline.operator-chaining" | "pipeline.operator-chaining.enabled" => {
            cfg.chaining = value.trim() == "true"
        }
        "execution.checkpointing.interval" => cfg.checkpoint.interval = Some(dur()?),
        "execution.checkpointing.timeout" => cfg.checkpoint.timeout = dur()?,
        "execution.checkpointing.min-pause" => cfg.checkpoint.min_pause = dur()?,
        "execution.checkpointing.max-concurrent-checkpoints" => {
            cfg.checkpoint.max_concurrent = num()? as usize
        }
        "execution.checkpointing.tolerable-failed-checkpoints" => {
            cfg.checkpoint.tolerable_failures = num()? as u32
        }
        "execution.checkpointing.mode" => {
            cfg.checkpoint.mode = match value.trim().to_ascii_uppercase().as_str() {
                "EXACTLY_ONCE" => CheckpointingMode::ExactlyOnce,
                "AT_LEAST_ONCE" => CheckpointingMode::AtLeastOnce,
                _ => return Err(bad("expected EXACTLY_ONCE or AT_LEAST_ONCE")),
            }
        }
        "state.checkpoints.dir" | "execution.checkpointing.dir" => {
            cfg.checkpoint.dir = Some(value.to_string())
        }
        "state.savepoints.dir" | "execution.checkpointing.savepoint-dir" => {
            cfg.checkpoint.savepoint_dir = Some(value.to_string())
        }
        "state.checkpoints.num-retained" | "execution.checkpointing.num-retained" => {
            cfg.checkpoint.retained = num()? as usize
        }
        "execution.savepoint.path" => {
            cfg.restore = Some(if value.trim() == "latest" {
                RestoreFrom::Latest
            } else {
                RestoreFrom::Path(value.to_string())
            })
        }
        "execution.savepoint.ignore-unclaimed-state" => {
            cfg.allow_non_restored_state = value.trim() == "true"
        }
        "$internal.pipeline.job-id" | "pipeline.job-id" => cfg.job_id = Some(value.to_string()),
        "pipeline.name" => cfg.pipeline_name = Some(value.to_string()),
        "restart-strategy.type" | "restart-strategy" => {
            cfg.restart = match value.trim() {
                "none" | "disable" | "off" => RestartStrategy::None,
                "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay {
                    attempts: 3,
                    delay: Duration::from_secs(1),
                },
                "exponential-delay" => RestartStrategy::ExponentialDelay {
                    initial: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                    multiplier: 2.0,
                    reset_after: Duration::from_secs(3600),
                    attempts: u32::MAX,
                },
                "failure-rate" => RestartStrategy::FailureRate {
                    max_failures: 1,
                    interval: Duration::from_secs(60),
                    delay: Duration::from_secs(1),
                },
                _ => {
                    return Err(bad(
                        "expected none, fixed-delay, exponential-delay or failure-rate",
                    ));
                }
            }
        }
        "restart-strategy.fixed-delay.attempts" => {
            if let RestartStrategy::FixedDelay { attempts, .. } = &mut cfg.restart {
                *attempts = num()? as u32;
            }
        }
        "restart-strategy.fixed-delay.delay" => {
            if let RestartStrategy::FixedDelay { delay, .. } = &mut cfg.restart {
                *delay = dur()?;
            }
        }
        "state.backend.type" | "state.backend" => {
            cfg.state_backend.kind = StateBackendKind::parse(value).ok_or_else(|| {
                bad("expected hashmap or disk (rocksdb and forst are accepted as disk)")
            })?
        }
        "execution.checkpointing.incremental" | "state.backend.incremental" => {
            cfg.state_backend.incremental = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("expected true or false")),
            }
        }
        "taskmanager.memory.managed.size" => {
            let bytes = parse_memory_size(value)
                .ok_or_else(|| bad("expected a memory size such as '256m' or '1g'"))?;
            if bytes == 0 {
                return Err(bad("the disk state backend needs a budget above 0"));
            }
            cfg.state_backend.managed_memory = Some(bytes)
        }
        "state.backend.rocksdb.writebuffer.size" | "state.backend.forst.writebuffer.size" => {
            let bytes = parse_memory_size(value)
                .filter(|b| *b > 0)
                .ok_or_else(|| bad("expected a memory size such as '64m'"))?;
            cfg.state_backend.write_buffer = Some(bytes)
        }
        // Flink's RocksDB directory wins over the general temporary directories.
        "state.backend.rocksdb.localdir" | "state.backend.forst.local-dir" => {
            cfg.state_backend.local_dir = Some(value.trim().into())
        }
        "io.tmp.dirs" => {
            if cfg.state_backend.local_dir.is_none() {
                let first = value
                    .split([',', ':'])
                    .map(str::trim)
                    .find(|d| !d.is_empty());
                cfg.state_backend.local_dir =
                    Some(first.ok_or_else(|| bad("expected a directory"))?.into());
            }
        }
        flink_rs_core::paths::KEY => {
            return Err(bad(
                "a cluster setting (the jobmanager's and taskmanagers' configuration), which a job cannot set",
            ));
        }
        k if k.starts_with("s3.") => {
            cfg.checkpoint
                .storage_options
                .insert(k.to_string(), value.to_string());
        }
        other => tracing::info!(key = other, "configuration key not used by flink-rs"),
    }
    Ok(())
}

fn kind(st: &Statement) -> String {
    st.text
        .split_whitespace()
        .take(4)
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_set(st: &Statement) -> Result<Option<(String, String)>, SqlError> {
    let body = st.text.trim()[3..].trim();
    if body.is_empty() {
        return Ok(None);
    }
    let unquote = |s: &str| s.trim().trim_matches('\'').trim_matches('"').to_string();
    let (k, v) = body
        .split_once('=')
        .ok_or_else(|| st.error("expected SET 'key' = 'value'"))?;
    Ok(Some((unquote(k), unquote(v))))
}

/// Compiles a script. `overrides` (from `--set key=value`) win over the script's `SET`s.
pub fn compile(
    script: &str,
    base: ExecutionConfig,
    overrides: &[(String, String)],
) -> Result<SqlJob, SqlError> {
    compile_with(script, base, overrides, None)
}

/// Compiles a script whose bare `SELECT`s write their rows to `sink` (the SQL client's
/// result view) rather than being refused.
pub fn compile_query(
    script: &str,
    base: ExecutionConfig,
    overrides: &[(String, String)],
    sink: flink_rs_core::source::SinkRef,
) -> Result<SqlJob, SqlError> {
    compile_with(script, base, overrides, Some(sink))
}

fn compile_with(
    script: &str,
    base: ExecutionConfig,
    overrides: &[(String, String)],
    select: Option<flink_rs_core::source::SinkRef>,
) -> Result<SqlJob, SqlError> {
    let statements = split(script);
    if statements.is_empty() {
        return Err(SqlError {
            statement: 0,
            line: 1,
            column: 1,
            message: "the script has no statements".into(),
        });
    }
    // Configuration first: it shapes every operator.
    let cluster_dirs = (
        base.checkpoint.dir.clone(),
        base.checkpoint.savepoint_dir.clone(),
    );
    let mut cfg = base;
    let mut settings = std::collections::BTreeMap::new();
    for st in &statements {
        if kind(st).starts_with("SET") {
            if let Some((k, v)) = parse_set(st)? {
                apply_setting(&mut cfg, &k, &v).map_err(|m| st.error(m))?;
                settings.insert(k, v);
            }
        }
    }
    // `execution.runtime-mode`: STREAMING makes a plain GROUP BY over bounded input update
    // its result as rows come, as over unbounded input; otherwise it writes the final result.
    let mut streaming_mode = false;
    for st in &statements {
        if kind(st).starts_with("SET") {
            if let Ok(Some((k, v))) = parse_set(st) {
                if k == "execution.runtime-mode" {
                    streaming_mode = v.trim().eq_ignore_ascii_case("streaming");
                }
            }
        }
    }
    for (k, v) in overrides {
        if k == "execution.runtime-mode" {
            streaming_mode = v.trim().eq_ignore_ascii_case("streaming");
        }
    }
    // `table.optimizer.reuse-source-enabled` (Flink's default: true).
    let mut reuse_sources = true;
    // `table.optimizer.reuse-sub-plan-enabled` (Flink's default: true).
    let mut reuse_subplans = true;
    let sets = statements
        .iter()
        .filter(|st| kind(st).starts_with("SET"))
        .filter_map(|st| parse_set(st).ok().flatten());
    // `table.exec.state.ttl` (Flink's default 0: state is kept for ever).
    let mut state_ttl = None;
    for (k, v) in sets.chain(overrides.iter().cloned()) {
        if k == "table.optimizer.reuse-source-enabled" {
            reuse_sources = v.trim() == "true";
        }
        if k == "table.optimizer.reuse-sub-plan-enabled" {
            reuse_subplans = v.trim() == "true";
        }
        if k == "table.exec.state.ttl" {
            state_ttl = parse_duration(&v)
                .map(|d| d.as_millis() as i64)
                .filter(|ms| *ms > 0);
        }
    }
    let mut restart_set = overrides
        .iter()
        .any(|(k, _)| k.starts_with("restart-strategy"));
    for st in &statements {
        if kind(st).starts_with("SET") {
            if let Ok(Some((k, _))) = parse_set(st) {
                restart_set |= k.starts_with("restart-strategy");
            }
        }
    }
    for (k, v) in overrides {
        apply_setting(&mut cfg, k, v).map_err(|m| SqlError {
            statement: 0,
            line: 0,
            column: 0,
            message: format!("--set {m}"),
        })?;
        settings.insert(k.clone(), v.clone());
    }
    // Flink's default: a checkpointed job without a configured restart strategy restarts
    // with exponential delay (1 s growing by 1.5 up to 1 min) instead of failing.
    if !restart_set && cfg.checkpoint.interval.is_some() && cfg.restart == RestartStrategy::None {
        cfg.restart = RestartStrategy::ExponentialDelay {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            reset_after: Duration::from_secs(3600),
            attempts: u32::MAX,
        };
    }
    // The cluster's allowed paths: a job may keep the directories its cluster gives it, and
    // choose others only inside them.
    if let Some(allowed) = &cfg.allowed_paths {
        for (key, dir, cluster) in [
            (
                "state.checkpoints.dir",
                &cfg.checkpoint.dir,
                &cluster_dirs.0,
            ),
            (
                "state.savepoints.dir",
                &cfg.checkpoint.savepoint_dir,
                &cluster_dirs.1,
            ),
        ] {
            let Some(d) = dir.as_ref().filter(|d| Some(*d) != cluster.as_ref()) else {
                continue;
            };
            if let Err(message) = allowed.check(key, d) {
                // At the SET that chose it (an override has no statement: the first).
                let at = statements
                    .iter()
                    .rfind(|st| {
                        kind(st).starts_with("SET")
                            && matches!(parse_set(st), Ok(Some((k, _))) if k == key)
                    })
                    .or(statements.first());
                return Err(match at {
                    Some(st) => st.error(message),
                    None => SqlError {
                        statement: 0,
                        line: 1,
                        column: 1,
                        message,
                    },
                });
            }
        }
    }
    let env = StreamExecutionEnvironment::with_config(cfg);
    // Flink keeps identifiers as written (`dateTime`), so no lower-casing of unquoted names.
    // Decimal literals are DECIMALs (`0.908` is a DECIMAL(3, 3)), as in Flink, not DOUBLEs.
    let ctx = type_rules::with_flink_type_rules(SessionContext::new_with_config(
        SessionConfig::new()
            .with_information_schema(false)
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
            .set_bool("datafusion.sql_parser.parse_float_as_decimal", true),
    ));
    // COUNT(DISTINCT) is an accumulator here, not a nested aggregation.
    ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    // An inner join stays an inner join: rewriting it into a semi join (when the other side
    // is unique on the keys) saves nothing in a stream and would hide the join condition.
    ctx.remove_optimizer_rule("eliminate_join");
    functions::register_flink_functions(&ctx);
    let mut planner = plan::Planner {
        env: &env,
        ctx: &ctx,
        tables: HashMap::new(),
        windows: 0,
        top_n: HashMap::new(),
        streaming_mode,
        sources: Default::default(),
        reuse_sources,
        // As in Flink, sub-plans that read a source are shared only when sources are.
        reuse_subplans: reuse_subplans && reuse_sources,
        subplans: Default::default(),
        state_ttl,
        field_uses: Default::default(),
        unread: Default::default(),
        views: HashMap::new(),
        all_tvfs: Vec::new(),
    };
    let mut inserts = 0;
    for st in &statements {
        let k = kind(st);
        let words: Vec<&str> = k.split(' ').collect();
        let text_upper = st.text.trim_start().to_ascii_uppercase();
        match words.as_slice() {
            ["SET", ..] | ["RESET", ..] => {}
            ["END"] | ["BEGIN", "STATEMENT", "SET"] => {}
            ["CREATE", "TABLE", ..] | ["CREATE", "TEMPORARY", "TABLE", ..] => {
                let def = ddl::parse_create_table(st)?;
                planner.declare(st, def)?;
            }
            ["CREATE", "VIEW", ..] | ["CREATE", "TEMPORARY", "VIEW", ..] => {
                planner.create_view(st)?;
            }
            ["INSERT", ..] => {
                planner.insert(st, 0)?;
                inserts += 1;
            }
            ["EXECUTE", "STATEMENT", "SET", ..] | ["BEGIN", ..]
                if text_upper.contains("INSERT") =>
            {
                let at = script::find_word(&st.text, "INSERT").unwrap_or(0);
                planner.insert(st, at)?;
                inserts += 1;
            }
            ["EXECUTE", "STATEMENT", "SET", ..] => {}
            ["EXECUTE", "INSERT", ..] => {
                let at = script::find_word(&st.text, "INSERT").unwrap_or(0);
                planner.insert(st, at)?;
                inserts += 1;
            }
            ["SELECT", ..] | ["WITH", ..] if select.is_some() => {
                if let Some(sink) = &select {
                    planner.select(st, sink.clone())?;
                    inserts += 1;
                }
            }
            ["SELECT", ..] | ["WITH", ..] => {
                return Err(st.error(
                    "a job writes its results with INSERT INTO <table> SELECT …; a bare SELECT has nowhere to go (declare a 'print' table to see rows)",
                ));
            }
            _ => {
                return Err(st.error(format!(
                    "unsupported statement `{}`; supported: SET, CREATE [TEMPORARY] TABLE, CREATE [TEMPORARY] VIEW, INSERT INTO, EXECUTE STATEMENT SET",
                    excerpt(
                        &st.text.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
                        60
                    )
                )));
            }
        }
    }
    if inserts == 0 {
        let last = statements.last().map(|s| s.number).unwrap_or(0);
        return Err(SqlError {
            statement: last,
            line: statements.last().map(|s| s.line).unwrap_or(1),
            column: 1,
            message: "the script has no INSERT INTO statement, so there is no job to run".into(),
        });
    }
    let unread_fields = planner
        .unread
        .read()
        .map(|u| u.iter().cloned().collect())
        .unwrap_or_default();
    Ok(SqlJob {
        env,
        inserts,
        unread_fields,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = include_str!("../../../examples/nexmark/ddl.sql");

    fn unread(query: &str) -> Vec<String> {
        let script = format!("{DDL}\n{query}");
        compile(&script, ExecutionConfig::default(), &[])
            .expect("compiles")
            .unread_fields
    }

    #[test]
    fn nexmark_fields_no_statement_reads_are_not_written() {
        let q0 = include_str!("../../../examples/nexmark/q0.sql");
        let u = unread(q0);
        for f in ["bid.url", "bid.channel", "person.name", "auction.itemName"] {
            assert!(u.contains(&f.to_string()), "{f} is not read by q0: {u:?}");
        }
        // A field read by one statement of a statement set is written for all.
        let two = "CREATE TABLE s1 (u VARCHAR) WITH ('connector' = 'blackhole');
            CREATE TABLE s2 (c VARCHAR) WITH ('connector' = 'blackhole');
            INSERT INTO s1 SELECT url FROM bid;
            INSERT INTO s2 SELECT person.city FROM nexmark WHERE event_type = 0;";
        let u = unread(two);
        assert!(!u.contains(&"bid.url".to_string()), "{u:?}");
        assert!(!u.contains(&"person.city".to_string()), "{u:?}");
        assert!(u.contains(&"person.name".to_string()), "{u:?}");
        // A struct read whole has all its fields written.
        let whole = "CREATE TABLE s (b VARCHAR) WITH ('connector' = 'blackhole');
            INSERT INTO s SELECT CASE WHEN bid IS NULL THEN 'no' ELSE 'yes' END FROM nexmark;";
        let u = unread(whole);
        assert!(!u.iter().any(|f| f.starts_with("bid.")), "{u:?}");
        // Filters and window TVFs over views count as reads.
        let filtered = "CREATE TABLE s (n BIGINT) WITH ('connector' = 'blackhole');
            INSERT INTO s SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
            WHERE channel = 'Google' GROUP BY window_start, window_end;";
        let u = unread(filtered);
        assert!(!u.contains(&"bid.channel".to_string()), "{u:?}");
    }

    #[test]
    fn the_disk_backend_s_write_buffer_is_set_by_flink_s_keys() {
        let mut cfg = ExecutionConfig::default();
        apply_setting(&mut cfg, "state.backend.forst.writebuffer.size", "16m").expect("set");
        assert_eq!(cfg.state_backend.write_buffer, Some(16 << 20));
        apply_setting(&mut cfg, "state.backend.rocksdb.writebuffer.size", "1g").expect("set");
        assert_eq!(cfg.state_backend.write_buffer, Some(1 << 30));
        for bad in ["0", "lots"] {
            let e = apply_setting(&mut cfg, "state.backend.rocksdb.writebuffer.size", bad)
                .expect_err("refused");
            assert!(e.contains("memory size"), "{e}");
        }
    }

    #[test]
    fn an_unsupported_statement_is_quoted_short() {
        let long = "x".repeat(100_000);
        let e = compile(&long, ExecutionConfig::default(), &[])
            .expect_err("not a statement")
            .to_string();
        assert!(
            e.contains("unsupported statement") && e.len() < 400,
            "{} chars",
            e.len()
        );
        assert_eq!(excerpt("DROP TABLE t", 60), "DROP TABLE t");
        assert_eq!(excerpt("ab\u{e9}cd", 3), "ab\u{e9}…");
    }

    #[test]
    fn a_job_reads_and_writes_only_inside_the_clusters_allowed_paths() {
        let tmp = tempfile::tempdir().expect("tmp");
        let allowed_dir = tmp.path().join("allowed");
        let mut base = ExecutionConfig {
            allowed_paths: Some(
                flink_rs_core::paths::AllowedPaths::parse(&allowed_dir.display().to_string())
                    .expect("paths"),
            ),
            ..ExecutionConfig::default()
        };
        base.checkpoint.dir = Some("/cluster/checkpoints".into());
        let job = |sink: &str, extra: &str| {
            format!(
                "{extra}
CREATE TABLE src (a BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '3');
CREATE TABLE out (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '{sink}', 'format' = 'csv');
INSERT INTO out SELECT a FROM src;"
            )
        };
        let inside = allowed_dir.join("out").display().to_string();
        compile(&job(&inside, ""), base.clone(), &[]).expect("a sink inside");
        // The cluster's own checkpoint directory stays usable.
        compile(
            &job(&inside, "SET 'execution.checkpointing.interval' = '1 s';"),
            base.clone(),
            &[],
        )
        .expect("the cluster's checkpoint directory");
        let outside = tmp.path().join("elsewhere").display().to_string();
        let e = compile(&job(&outside, ""), base.clone(), &[])
            .expect_err("a sink outside")
            .to_string();
        assert!(
            e.contains(&outside) && e.contains("sink path") && e.contains("line 4"),
            "{e}"
        );
        let escape = format!("{}/../elsewhere", allowed_dir.display());
        assert!(
            compile(&job(&escape, ""), base.clone(), &[]).is_err(),
            "`..` out of it"
        );
        let e = compile(
            &job(&inside, "SET 'state.checkpoints.dir' = '/tmp/mine';"),
            base.clone(),
            &[],
        )
        .expect_err("a checkpoint directory outside")
        .to_string();
        assert!(
            e.contains("state.checkpoints.dir") && e.contains("/tmp/mine"),
            "{e}"
        );
        let e = compile(
            &job(&inside, "SET 'flink-rs.filesystem.allowed-paths' = '/';"),
            base.clone(),
            &[],
        )
        .expect_err("a job widening them")
        .to_string();
        assert!(e.contains("cluster setting"), "{e}");
        // Without the setting, anywhere.
        compile(&job(&outside, ""), ExecutionConfig::default(), &[]).expect("no restriction");
    }

    #[test]
    fn buffer_timeout_keys_have_flinks_three_modes() {
        use std::time::Duration;
        let mut cfg = ExecutionConfig::default();
        assert_eq!(
            cfg.buffer_timeout(),
            Some(Duration::from_millis(100)),
            "Flink's default"
        );
        apply_setting(&mut cfg, "execution.buffer-timeout.interval", "0 ms").expect("valid");
        assert_eq!(cfg.buffer_timeout(), Some(Duration::ZERO));
        apply_setting(&mut cfg, "execution.buffer-timeout.interval", "5ms").expect("valid");
        apply_setting(&mut cfg, "execution.buffer-timeout.enabled", "false").expect("valid");
        assert_eq!(cfg.buffer_timeout(), None, "flush only when full");
        // Disabled wins over an interval set later, as in Flink.
        apply_setting(&mut cfg, "execution.buffer-timeout.interval", "10ms").expect("valid");
        assert_eq!(cfg.buffer_timeout(), None);
        apply_setting(&mut cfg, "execution.buffer-timeout.enabled", "true").expect("valid");
        assert_eq!(cfg.buffer_timeout(), Some(Duration::from_millis(10)));
        // Flink 1.x's spelling of "only when full".
        apply_setting(&mut cfg, "execution.buffer-timeout", "-1 ms").expect("valid");
        assert_eq!(cfg.buffer_timeout(), None);
        for (k, v) in [
            ("execution.buffer-timeout.enabled", "yes"),
            ("execution.buffer-timeout.interval", "-5 ms"),
            ("execution.buffer-timeout.interval", "soon"),
        ] {
            let e = apply_setting(&mut cfg, k, v).expect_err("refused");
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
    }

    #[test]
    fn state_backend_keys_configure_the_backend_and_name_bad_values() {
        use flink_rs_core::state::StateBackendKind;
        let mut cfg = ExecutionConfig::default();
        for (k, v) in [
            ("state.backend.type", "rocksdb"),
            ("taskmanager.memory.managed.size", "512m"),
            ("io.tmp.dirs", "/data/a,/data/b"),
        ] {
            apply_setting(&mut cfg, k, v).expect("valid");
        }
        assert_eq!(cfg.state_backend.kind, StateBackendKind::Disk);
        assert_eq!(cfg.state_backend.managed_memory, Some(512 << 20));
        assert_eq!(
            cfg.state_backend.local_dir.as_deref(),
            Some(std::path::Path::new("/data/a"))
        );
        // RocksDB's own directory wins over the temporary directories, in either order.
        apply_setting(&mut cfg, "state.backend.rocksdb.localdir", "/ssd").expect("valid");
        apply_setting(&mut cfg, "io.tmp.dirs", "/data/c").expect("valid");
        assert_eq!(
            cfg.state_backend.local_dir.as_deref(),
            Some(std::path::Path::new("/ssd"))
        );
        let e = apply_setting(&mut cfg, "state.backend.type", "filesystem").expect_err("refused");
        assert!(
            e.contains("state.backend.type") && e.contains("hashmap or disk"),
            "{e}"
        );
        let e = apply_setting(&mut cfg, "taskmanager.memory.managed.size", "lots")
            .expect_err("refused");
        assert!(
            e.contains("taskmanager.memory.managed.size") && e.contains("256m"),
            "{e}"
        );
        let e =
            apply_setting(&mut cfg, "taskmanager.memory.managed.size", "0").expect_err("refused");
        assert!(e.contains("above 0"), "{e}");
    }
}
