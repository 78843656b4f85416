//! `WITH ('connector' = …)` options → the engine's sources and sinks.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Schema, SchemaRef};

use crate::computed_source::{ComputedColumns, ComputedSource};
use crate::ddl::TableDef;
use flink_rs_connectors::{
    BlackholeSink, DataGen, FieldGen, FileSink, FileSource, NexmarkGenerator, PrintSink,
    nexmark_schema,
};
use flink_rs_core::api::{DataStream, StreamExecutionEnvironment};
use flink_rs_core::source::Source;
use flink_rs_core::watermark::WatermarkStrategy;

/// Source connectors (for errors).
pub const SOURCES: &str = "datagen, nexmark, bids, filesystem, kafka";
/// Sink connectors (for errors).
pub const SINKS: &str = "print, blackhole, filesystem, kafka, upsert-kafka";

/// An error about option `key` (or the connector as a whole).
pub struct OptionError {
    pub key: Option<String>,
    pub message: String,
}

/// A path of the job inside the cluster's `flink-rs.filesystem.allowed-paths`, if it has
/// any.
fn allowed(
    paths: Option<flink_rs_core::paths::AllowedPaths>,
    what: &str,
    path: &str,
) -> Result<(), OptionError> {
    match paths {
        Some(p) => p.check(what, path).map_err(|m| err("path", m)),
        None => Ok(()),
    }
}

pub(crate) fn err(key: &str, message: impl Into<String>) -> OptionError {
    OptionError {
        key: Some(key.to_string()),
        message: message.into(),
    }
}

fn connector(def: &TableDef) -> Result<&str, OptionError> {
    def.options.get("connector").map(String::as_str).ok_or(OptionError {
        key: None,
        message: format!(
            "table `{}` has no 'connector' option; use one of {SOURCES} (sources) or {SINKS} (sinks)",
            def.name
        ),
    })
}

fn number<T: std::str::FromStr>(def: &TableDef, key: &str) -> Result<Option<T>, OptionError> {
    def.options
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| err(key, format!("'{key}' must be a number, not '{v}'")))
        })
        .transpose()
}

/// Object-storage schemes a filesystem table's path may have (written through
/// `object_store`, as checkpoints are).
const OBJECT_STORE_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// Where a filesystem table's files are.
enum FileLocation {
    Local(String),
    /// An object-storage URL (`s3://bucket/prefix`).
    ObjectStore(String),
}

/// The location a filesystem table's `'path'` names: a plain path, a `file:` URI as Flink
/// users write them (`file:///tmp/out`, `file:/tmp/out`), or an object-storage URL. Any other
/// scheme is refused rather than taken for a relative directory named `hdfs:`.
fn file_location(def: &TableDef) -> Result<FileLocation, OptionError> {
    let path = def
        .options
        .get("path")
        .ok_or_else(|| err("connector", "the filesystem connector needs 'path'"))?;
    match path.split_once("://") {
        Some((scheme, rest))
            if OBJECT_STORE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) =>
        {
            if rest.split('/').next().is_none_or(str::is_empty) {
                return Err(err(
                    "path",
                    format!("'{path}' names no bucket ({scheme}://bucket/prefix)"),
                ));
            }
            Ok(FileLocation::ObjectStore(
                path.trim_end_matches('/').to_string(),
            ))
        }
        _ => file_path(def).map(FileLocation::Local),
    }
}

/// The local path a filesystem table's `'path'` names: a plain path, or a `file:` URI as
/// Flink users write them (`file:///tmp/out`, `file:/tmp/out`). Any other scheme is refused
/// rather than taken for a relative directory named `s3:`.
fn file_path(def: &TableDef) -> Result<String, OptionError> {
    let path = def
        .options
        .get("path")
        .ok_or_else(|| err("connector", "the filesystem connector needs 'path'"))?;
    let Some((scheme, rest)) = path.split_once(':').filter(|(scheme, _)| {
        // A URI scheme: a letter, then letters, digits, `+`, `-` or `.` (RFC 3986).
        scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) else {
        return Ok(path.clone());
    };
    if !scheme.eq_ignore_ascii_case("file") {
        return Err(err(
            "path",
            format!(
                "'{path}': the filesystem connector reads and writes local paths, file:// URIs and s3://, gs:// and az:// URLs; {scheme}:// paths are not supported"
            ),
        ));
    }
    // `file:///tmp/out` (an empty authority) or `file:/tmp/out`; `file://host/…` names
    // another machine's file.
    let local = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            return Err(err(
                "path",
                format!(
                    "'{path}' names a host; a file URI of this machine is file:///absolute/path"
                ),
            ));
        }
        None if rest.starts_with('/') => rest,
        None => {
            return Err(err(
                "path",
                format!("'{path}': a file URI holds an absolute path, as in file:///tmp/out"),
            ));
        }
    };
    if local.contains('%') {
        return Err(err(
            "path",
            format!("'{path}': percent-encoded file URIs are not supported; write the path itself"),
        ));
    }
    Ok(local.to_string())
}

/// Checks a table's options when it is declared (whether it will be read or written).
pub fn validate(def: &TableDef) -> Result<(), OptionError> {
    let name = connector(def)?;
    if !def.partitioned_by.is_empty() && name != "filesystem" {
        return Err(err(
            "connector",
            format!("PARTITIONED BY is for the filesystem connector, not '{name}'"),
        ));
    }
    if let Some(m) = def.metadata.first() {
        if name != "kafka" && name != "upsert-kafka" {
            return Err(err(
                "connector",
                format!(
                    "column `{}` is a METADATA column, but the {name} connector has no metadata",
                    m.column
                ),
            ));
        }
    }
    if !def.primary_key.is_empty() && name == "kafka" {
        return Err(err(
            "connector",
            "the kafka connector writes and reads append-only rows and takes no PRIMARY KEY; use upsert-kafka for a keyed changelog",
        ));
    }
    let allowed: &[&str] = match name {
        "kafka" | "upsert-kafka" => return crate::kafka::validate(def),
        "datagen" => {
            number::<u64>(def, "number-of-rows")?;
            number::<f64>(def, "rows-per-second")?;
            for f in &def.columns {
                if !flink_rs_connectors::datagen_supports(f.data_type()) {
                    return Err(err(
                        "connector",
                        format!(
                            "datagen generates {} columns; `{}` is {}",
                            flink_rs_connectors::DATAGEN_TYPES,
                            f.name(),
                            f.data_type()
                        ),
                    ));
                }
            }
            for k in def.options.keys().filter(|k| k.starts_with("fields.")) {
                let col = k["fields.".len()..]
                    .rsplit_once('.')
                    .map_or("", |(col, _)| col);
                let Some(field) = def.columns.iter().find(|f| f.name() == col) else {
                    return Err(err(
                        k,
                        format!("option '{k}' names column `{col}`, which the table does not have"),
                    ));
                };
                let supported = datagen_field_options(def, field)?;
                let opt = &k["fields.".len() + col.len() + 1..];
                if !supported.contains(&opt) {
                    let kind = def
                        .options
                        .get(&format!("fields.{col}.kind"))
                        .map_or("random", String::as_str);
                    return Err(err(
                        k,
                        format!(
                            "unsupported option '{k}' for datagen: a {kind} {} column takes {}",
                            field.data_type(),
                            supported
                                .iter()
                                .map(|o| format!("'fields.{col}.{o}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                match opt {
                    "start" | "end" | "min" | "max" | "length" => {
                        number::<i64>(def, k)?;
                    }
                    "null-rate" => {
                        number::<f64>(def, k)?;
                    }
                    "max-past" => {
                        duration(def, k)?;
                    }
                    _ => {}
                }
            }
            // The generator's own checks (min ≤ max, end ≥ start, null-rate on a NOT NULL
            // column), at CREATE TABLE rather than when the job starts.
            datagen(def, physical_schema(def)?)?;
            &["connector", "number-of-rows", "rows-per-second"]
        }
        "bids" => {
            number::<u64>(def, "number-of-rows")?;
            &["connector", "number-of-rows"]
        }
        "nexmark" => {
            number::<u64>(def, "events.num")?;
            number::<f64>(def, "next-event.rate")?;
            &["connector", "events.num", "next-event.rate"]
        }
        "filesystem" => {
            file_location(def)?;
            crate::formats::file_format(def)?;
            number::<u64>(def, "sink.parallelism")?;
            rolling_policy(def)?;
            let formats = crate::formats::file_format_options(def);
            return check_keys(
                def,
                &[
                    &[
                        "connector",
                        "path",
                        "format",
                        "sink.parallelism",
                        "sink.rolling-policy.file-size",
                        "sink.rolling-policy.rollover-interval",
                        "partition.default-name",
                    ],
                    formats,
                ]
                .concat(),
            );
        }
        "print" | "blackhole" => {
            number::<u64>(def, "sink.parallelism")?;
            &["connector", "sink.parallelism"]
        }
        other => {
            return Err(err(
                "connector",
                format!("unknown connector '{other}'; sources: {SOURCES}; sinks: {SINKS}"),
            ));
        }
    };
    check_keys(def, allowed)
}

/// `sink.rolling-policy.file-size` and `sink.rolling-policy.rollover-interval`.
fn rolling_policy(def: &TableDef) -> Result<flink_rs_connectors::RollingPolicy, OptionError> {
    let size = "sink.rolling-policy.file-size";
    let interval = "sink.rolling-policy.rollover-interval";
    let file_size = def
        .options
        .get(size)
        .map(|v| {
            flink_rs_core::state::parse_memory_size(v)
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    err(
                        size,
                        format!("'{size}' must be a size such as '128mb', not '{v}'"),
                    )
                })
        })
        .transpose()?;
    let rollover_interval = def
        .options
        .get(interval)
        .map(|v| {
            crate::parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    err(
                        interval,
                        format!("'{interval}' must be a duration such as '30 min', not '{v}'"),
                    )
                })
        })
        .transpose()?;
    Ok(flink_rs_connectors::RollingPolicy {
        file_size,
        rollover_interval,
    })
}

/// Every option of `def` is one of `allowed` (datagen's `fields.*` are checked column by
/// column beforehand): anything else is refused, naming it and the known ones.
fn check_keys(def: &TableDef, allowed: &[&str]) -> Result<(), OptionError> {
    let name = connector(def)?;
    for k in def.options.keys() {
        let per_field = name == "datagen" && k.starts_with("fields.");
        if !allowed.contains(&k.as_str()) && !per_field {
            return Err(err(
                k,
                format!(
                    "unknown option '{k}' for connector '{name}'; known: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The `fields.<column>.*` options datagen takes for `field`, by its kind and type (as
/// Flink's datagen: a sequence takes `start` and `end`, a random generator `min` and `max`,
/// `length` for strings and `max-past` for timestamps; any column `null-rate`).
fn datagen_field_options(
    def: &TableDef,
    field: &arrow::datatypes::Field,
) -> Result<&'static [&'static str], OptionError> {
    let key = format!("fields.{}.kind", field.name());
    let kind = def.options.get(&key).map(String::as_str);
    Ok(match (kind, field.data_type()) {
        (Some("sequence"), DataType::Boolean) => {
            return Err(err(
                &key,
                format!(
                    "a BOOLEAN column such as `{}` cannot be a sequence",
                    field.name()
                ),
            ));
        }
        (Some("sequence"), _) => &["kind", "start", "end", "null-rate"],
        (Some("random") | None, DataType::Utf8) => &["kind", "length", "null-rate"],
        (Some("random") | None, DataType::Boolean) => &["kind", "null-rate"],
        (Some("random") | None, DataType::Timestamp(..) | DataType::Date32) => {
            &["kind", "max-past", "null-rate"]
        }
        (Some("random") | None, _) => &["kind", "min", "max", "null-rate"],
        (Some(other), _) => {
            return Err(err(
                &key,
                format!("unknown kind '{other}'; use sequence or random"),
            ));
        }
    })
}

/// A duration option (`'10 s'`, `'5 min'`, `'100'` milliseconds).
fn duration(def: &TableDef, key: &str) -> Result<Option<Duration>, OptionError> {
    def.options
        .get(key)
        .map(|v| {
            crate::parse_duration(v).ok_or_else(|| {
                err(
                    key,
                    format!("expected a duration such as '10 s' or '5 min', not '{v}'"),
                )
            })
        })
        .transpose()
}

/// The datagen source a table's options describe (checked by `validate`).
fn datagen(def: &TableDef, schema: SchemaRef) -> Result<DataGen, OptionError> {
    let mut g = DataGen::new(schema.clone()).map_err(|e| err("connector", e.to_string()))?;
    if let Some(n) = number::<u64>(def, "number-of-rows")? {
        g = g.rows(n);
    }
    if let Some(r) = number::<f64>(def, "rows-per-second")? {
        if r.is_nan() || r <= 0.0 {
            return Err(err(
                "rows-per-second",
                format!("must be a positive number of rows, not {r}"),
            ));
        }
        g = g.rate(r);
    }
    for f in schema.fields() {
        let key = |k: &str| format!("fields.{}.{k}", f.name());
        let kind = def.options.get(&key("kind")).map(String::as_str);
        let fg = match kind {
            Some("sequence") => {
                let start = number::<i64>(def, &key("start"))?.unwrap_or(0);
                let end = number::<i64>(def, &key("end"))?;
                Some(FieldGen::Sequence { start, end })
            }
            _ => {
                if let Some(past) = duration(def, &key("max-past"))? {
                    Some(FieldGen::Past {
                        max_past_ms: i64::try_from(past.as_millis()).unwrap_or(i64::MAX),
                    })
                } else {
                    let min = number::<i64>(def, &key("min"))?;
                    let max = number::<i64>(def, &key("max"))?;
                    let length = number::<i64>(def, &key("length"))?;
                    match (min, max, length) {
                        (_, _, Some(n)) => Some(FieldGen::Random { min: n, max: n }),
                        (None, None, None) => None,
                        (a, b, None) => Some(FieldGen::Random {
                            min: a.unwrap_or(0),
                            max: b.unwrap_or(1000),
                        }),
                    }
                }
            }
        };
        if let Some(fg) = fg {
            g = g.field(f.name(), fg).map_err(|e| match e {
                flink_rs_core::Error::Config { key, message } => err(&key, message),
                other => err(&key("kind"), other.to_string()),
            })?;
        }
        if let Some(rate) = number::<f64>(def, &key("null-rate"))? {
            g = g.null_rate(f.name(), rate).map_err(|e| match e {
                flink_rs_core::Error::Config { key, message } => err(&key, message),
                other => err(&key("null-rate"), other.to_string()),
            })?;
        }
    }
    Ok(g)
}

/// The physical schema a source table produces (declared columns, or the connector's own).
pub fn physical_schema(def: &TableDef) -> Result<SchemaRef, OptionError> {
    let own = match connector(def)? {
        "nexmark" => Some(nexmark_schema()),
        "bids" => Some(flink_rs_connectors::bid_schema()),
        _ => None,
    };
    if let Some(ns) = own {
        if def.columns.is_empty() {
            return Ok(ns);
        }
        for f in &def.columns {
            match ns.field_with_name(f.name()) {
                Ok(nf) if nf.data_type() == f.data_type() => {}
                Ok(nf) => {
                    return Err(err(
                        "connector",
                        format!(
                            "column `{}` of a {} table has type {}, the connector produces {}",
                            f.name(),
                            connector(def)?,
                            f.data_type(),
                            nf.data_type()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(err(
                        "connector",
                        format!(
                            "the {} connector has no column `{}`; it produces {} (declare no columns to take them all)",
                            connector(def)?,
                            f.name(),
                            ns.fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(Arc::new(Schema::new(def.columns.clone())))
}

/// A stream reading the table (with its watermark strategy).
/// A connector with a schema of its own (nexmark, bids): the declared columns, or all of its
/// columns when none are declared.
fn declared_columns(s: DataStream, def: &TableDef) -> Result<DataStream, OptionError> {
    if def.columns.is_empty() {
        return Ok(s);
    }
    let names: Vec<String> = def.columns.iter().map(|f| f.name().clone()).collect();
    s.select(&names)
        .map_err(|e| err("connector", e.to_string()))
}

/// `unread`: the nexmark string fields no statement reads (filled in while planning).
/// Reads `source`, each batch extended with `computed` columns when they are given.
fn read(
    env: &StreamExecutionEnvironment,
    source: impl Source,
    wm: Option<WatermarkStrategy>,
    computed: &Option<ComputedColumns>,
) -> DataStream {
    match computed {
        Some(c) => env.from_source(ComputedSource::new(source, c.clone()), wm),
        None => env.from_source(source, wm),
    }
}

/// The stream of a source table. `computed`: the table's computed columns, evaluated as the
/// source reads (a watermark on a computed column needs them there); without it the stream
/// has the physical columns only.
pub fn source(
    env: &StreamExecutionEnvironment,
    def: &TableDef,
    unread: &flink_rs_connectors::UnreadFields,
    computed: Option<ComputedColumns>,
) -> Result<DataStream, OptionError> {
    let name = connector(def)?;
    if computed.is_some() && (name == "nexmark" || name == "bids") {
        return Err(err(
            "connector",
            format!(
                "the {name} generator keeps its own event time; a watermark on a computed column needs a datagen, filesystem or kafka table"
            ),
        ));
    }
    let wm = def.watermark.as_ref().map(|(col, delay)| {
        if *delay == 0 {
            WatermarkStrategy::monotonous(col.clone())
        } else {
            WatermarkStrategy::bounded_out_of_orderness(
                col.clone(),
                Duration::from_millis(*delay as u64),
            )
        }
    });
    let schema = physical_schema(def)?;
    let stream = match connector(def)? {
        "datagen" => read(env, datagen(def, schema.clone())?, wm, &computed),
        "nexmark" => {
            let mut g = match number::<u64>(def, "events.num")? {
                Some(n) => NexmarkGenerator::bounded(n),
                None => {
                    let mut g = NexmarkGenerator::bounded(0);
                    g.events = None;
                    g
                }
            };
            if let Some(r) = number::<f64>(def, "next-event.rate")? {
                g.rate = Some(r);
            }
            g.unread = unread.clone();
            let wm = wm.or_else(|| {
                Some(WatermarkStrategy::bounded_out_of_orderness(
                    "dateTime",
                    Duration::from_secs(4),
                ))
            });
            declared_columns(env.from_source(g, wm), def)?
        }
        "bids" => {
            // The benchmark bid stream (`bench/run` W1-W3, and Apache Flink's anchor runs).
            let g = match number::<u64>(def, "number-of-rows")? {
                Some(n) => flink_rs_connectors::BidGenerator::bounded(n),
                None => flink_rs_connectors::BidGenerator::unbounded(),
            };
            let wm = wm.or_else(|| {
                Some(WatermarkStrategy::bounded_out_of_orderness(
                    "ts",
                    Duration::from_secs(1),
                ))
            });
            declared_columns(env.from_source(g, wm), def)?
        }
        "filesystem" => {
            let format = crate::formats::file_format(def)?;
            let source = match file_location(def)? {
                _ if !def.partitioned_by.is_empty() => {
                    return Err(err(
                        "path",
                        format!(
                            "`{}` is PARTITIONED BY ({}): reading a partitioned filesystem table (its partition directories) is not supported yet; the sink writes them",
                            def.name,
                            def.partitioned_by.join(", ")
                        ),
                    ));
                }
                FileLocation::Local(path) => {
                    allowed(env.allowed_paths(), "source path", &path)?;
                    FileSource::new(path, format, schema)
                }
                FileLocation::ObjectStore(url) => {
                    allowed(env.allowed_paths(), "source path", &url)?;
                    let mut options = std::collections::BTreeMap::new();
                    env.configure(|c| options = c.checkpoint.storage_options.clone());
                    FileSource::in_object_store(&url, &options, format, schema)
                        .map_err(|e| err("path", format!("'{url}': {e}")))?
                }
            };
            read(env, source, wm, &computed)
        }
        "kafka" | "upsert-kafka" => {
            let options = crate::kafka::source_options(def, schema)?;
            let wm = match def.options.get("scan.watermark.idle-timeout") {
                Some(v) => {
                    let d = crate::parse_duration(v).ok_or_else(|| {
                        err(
                            "scan.watermark.idle-timeout",
                            format!("expected a duration such as '10 s', not '{v}'"),
                        )
                    })?;
                    wm.map(|w| if d.is_zero() { w } else { w.with_idleness(d) })
                }
                None => wm,
            };
            let source = flink_rs_connectors::KafkaSource::new(options)
                .map_err(|e| err("connector", e.to_string()))?;
            read(env, source, wm, &computed)
        }
        "print" | "blackhole" => {
            return Err(err(
                "connector",
                format!(
                    "`{}` is a sink connector and cannot be read; sources: {SOURCES}",
                    connector(def)?
                ),
            ));
        }
        other => {
            return Err(err(
                "connector",
                format!("unknown connector '{other}'; sources: {SOURCES}; sinks: {SINKS}"),
            ));
        }
    };
    Ok(stream)
}

/// Writes `stream` to the table.
/// Whether a sink table takes a changelog (rows with a row kind) rather than inserts only.
pub fn accepts_updates(def: &TableDef) -> bool {
    matches!(
        def.options.get("connector").map(String::as_str),
        Some("print" | "blackhole" | "upsert-kafka")
    )
}

pub fn sink(stream: &DataStream, def: &TableDef) -> Result<DataStream, OptionError> {
    let written = match connector(def)? {
        "print" => stream.sink(PrintSink::stdout()),
        "blackhole" => stream.sink(BlackholeSink::default()),
        "filesystem" => {
            let format = crate::formats::file_format(def)?;
            let sink = match file_location(def)? {
                FileLocation::Local(path) => {
                    allowed(stream.allowed_paths(), "sink path", &path)?;
                    FileSink::new(path, format)
                }
                FileLocation::ObjectStore(url) => {
                    allowed(stream.allowed_paths(), "sink path", &url)?;
                    FileSink::in_object_store(&url, &stream.storage_options(), format)
                        .map_err(|e| err("path", format!("'{url}': {e}")))?
                }
            };
            let default = def
                .options
                .get("partition.default-name")
                .map_or(flink_rs_connectors::DEFAULT_PARTITION_NAME, String::as_str);
            stream.sink(
                sink.partitioned_by(def.partitioned_by.clone(), default)
                    .rolling(rolling_policy(def)?),
            )
        }
        "kafka" | "upsert-kafka" => {
            let sink = flink_rs_connectors::KafkaSink::new(crate::kafka::sink_options(def)?)
                .map_err(|e| err("connector", e.to_string()))?;
            stream.sink(sink)
        }
        "datagen" | "nexmark" | "bids" => {
            return Err(err(
                "connector",
                format!(
                    "`{}` is a source connector and cannot be written; sinks: {SINKS}",
                    connector(def)?
                ),
            ));
        }
        other => {
            return Err(err(
                "connector",
                format!("unknown connector '{other}'; sinks: {SINKS}"),
            ));
        }
    };
    // Flink's `sink.parallelism`: the sink's own parallelism (the job's by default).
    Ok(match number::<u64>(def, "sink.parallelism")? {
        Some(0) => return Err(err("sink.parallelism", "must be at least 1")),
        Some(p) => written.set_parallelism(p as usize),
        None => written,
    })
}
