//! `WITH ('connector' = 'kafka' | 'upsert-kafka', …)`: Flink's Kafka options → the Kafka
//! connector's typed options.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use crate::connectors::{OptionError, err};
use crate::ddl::TableDef;
use crate::formats::{boolean, character};
use flink_rs_connectors::kafka_options::{
    BoundedMode, DeliveryGuarantee, KafkaSinkOptions, KafkaSourceOptions, MetadataKey, Partitioner,
    RecordFormat, StartupMode, Topics,
};

/// Options both connectors take (besides `properties.*` and format options).
const OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "topic-pattern",
    "format",
    "key.format",
    "key.fields",
    "value.format",
    "value.fields-include",
    "scan.startup.mode",
    "scan.startup.timestamp-millis",
    "scan.startup.specific-offsets",
    "scan.bounded.mode",
    "scan.bounded.timestamp-millis",
    "scan.bounded.specific-offsets",
    "scan.topic-partition-discovery.interval",
    "scan.watermark.idle-timeout",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.partitioner",
    "sink.parallelism",
];

/// Options of a format, by the prefix they take (`json.`, or `value.json.` with
/// `value.format`).
fn format_options(format: &str) -> &'static [&'static str] {
    match format {
        "json" => &["fail-on-missing-field", "ignore-parse-errors"],
        "csv" => &["field-delimiter", "ignore-parse-errors"],
        _ => &[],
    }
}

fn upsert(def: &TableDef) -> bool {
    def.options.get("connector").map(String::as_str) == Some("upsert-kafka")
}

fn opt<'a>(def: &'a TableDef, key: &str) -> Option<&'a str> {
    def.options.get(key).map(String::as_str)
}

fn millis(def: &TableDef, key: &str) -> Result<Option<i64>, OptionError> {
    opt(def, key)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                err(
                    key,
                    format!("'{key}' must be milliseconds since the epoch, not '{v}'"),
                )
            })
        })
        .transpose()
}

/// `partition:0,offset:42;partition:1,offset:300`.
fn specific_offsets(def: &TableDef, key: &str) -> Result<Vec<(i32, i64)>, OptionError> {
    let Some(v) = opt(def, key) else {
        return Err(err(
            key,
            format!("this mode needs '{key}' = 'partition:0,offset:42;…'"),
        ));
    };
    let bad = || {
        err(
            key,
            format!("'{key}' = '{v}': expected 'partition:0,offset:42;partition:1,offset:300'"),
        )
    };
    v.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|one| {
            let mut p = None;
            let mut o = None;
            for kv in one.split(',') {
                match kv.trim().split_once(':') {
                    Some(("partition", n)) => p = n.trim().parse::<i32>().ok(),
                    Some(("offset", n)) => o = n.trim().parse::<i64>().ok(),
                    _ => return Err(bad()),
                }
            }
            p.zip(o).ok_or_else(bad)
        })
        .collect()
}

/// A format and its options under `prefix` (`""` for `format`, `key.`/`value.`).
fn record_format(def: &TableDef, key: &str, prefix: &str) -> Result<RecordFormat, OptionError> {
    let name = opt(def, key).unwrap_or_default().to_ascii_lowercase();
    let o = |k: &str| format!("{prefix}{name}.{k}");
    Ok(match name.as_str() {
        "json" => RecordFormat::Json {
            fail_on_missing_field: boolean(def, &o("fail-on-missing-field"))?,
            ignore_parse_errors: boolean(def, &o("ignore-parse-errors"))?,
        },
        "csv" => RecordFormat::Csv {
            delimiter: character(def, &o("field-delimiter"))?.unwrap_or(b','),
            ignore_parse_errors: boolean(def, &o("ignore-parse-errors"))?,
        },
        "raw" => RecordFormat::Raw,
        "" => {
            return Err(err(
                "connector",
                format!(
                    "the {} connector needs '{key}' = 'json' | 'csv' | 'raw'",
                    connector_name(def)
                ),
            ));
        }
        other => {
            return Err(err(
                key,
                format!("unknown format '{other}'; use json, csv or raw"),
            ));
        }
    })
}

fn connector_name(def: &TableDef) -> &'static str {
    if upsert(def) { "upsert-kafka" } else { "kafka" }
}

/// What both directions share.
struct Common {
    bootstrap_servers: String,
    properties: Vec<(String, String)>,
    group_id: Option<String>,
    value_format: RecordFormat,
    key_format: Option<RecordFormat>,
    key_fields: Vec<String>,
    value_includes_key: bool,
}

fn common(def: &TableDef) -> Result<Common, OptionError> {
    let name = connector_name(def);
    // Unknown options first: a misspelled one is named, with the ones there are.
    let value_format_key = if def.options.contains_key("value.format") {
        "value.format"
    } else {
        "format"
    };
    let value_prefix = if value_format_key == "value.format" {
        "value."
    } else {
        ""
    };
    let vf = opt(def, value_format_key)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let kf = opt(def, "key.format").map(str::to_ascii_lowercase);
    for k in def.options.keys() {
        let known = OPTIONS.contains(&k.as_str())
            || k.starts_with("properties.")
            || format_options(&vf)
                .iter()
                .any(|o| *k == format!("{value_prefix}{vf}.{o}"))
            || kf.as_deref().is_some_and(|kf| {
                format_options(kf)
                    .iter()
                    .any(|o| *k == format!("key.{kf}.{o}"))
            });
        if !known {
            let mut all: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
            all.push("properties.*".into());
            all.extend(
                format_options(&vf)
                    .iter()
                    .map(|o| format!("{value_prefix}{vf}.{o}")),
            );
            return Err(err(
                k,
                format!(
                    "unsupported option '{k}' for connector '{name}'; supported: {}",
                    all.join(", ")
                ),
            ));
        }
    }
    if def.options.contains_key("format") && def.options.contains_key("value.format") {
        return Err(err(
            "value.format",
            "set 'format' or 'value.format', not both",
        ));
    }
    let bootstrap_servers = opt(def, "properties.bootstrap.servers")
        .ok_or_else(|| {
            err(
                "connector",
                format!("the {name} connector needs 'properties.bootstrap.servers'"),
            )
        })?
        .to_string();
    let mut properties = Vec::new();
    for (k, v) in &def.options {
        if let Some(p) = k.strip_prefix("properties.") {
            if p != "bootstrap.servers" && p != "group.id" {
                properties.push((p.to_string(), v.clone()));
            }
        }
    }
    let value_format = record_format(def, value_format_key, value_prefix)?;
    let key_format = match def.options.contains_key("key.format") {
        true => Some(record_format(def, "key.format", "key.")?),
        false => None,
    };
    let mut key_fields: Vec<String> = opt(def, "key.fields")
        .map(|v| {
            v.split(';')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if upsert(def) {
        if def.primary_key.is_empty() {
            return Err(err(
                "connector",
                "the upsert-kafka connector needs PRIMARY KEY (…) NOT ENFORCED: the key of its messages",
            ));
        }
        if !key_fields.is_empty() {
            return Err(err(
                "key.fields",
                "upsert-kafka takes its key fields from the PRIMARY KEY; drop 'key.fields'",
            ));
        }
        if key_format.is_none() {
            return Err(err(
                "connector",
                "the upsert-kafka connector needs 'key.format'",
            ));
        }
        key_fields = def.primary_key.clone();
    }
    if key_format.is_some() == key_fields.is_empty() {
        return Err(err(
            "key.fields",
            "'key.format' and 'key.fields' go together: name the key's columns in 'key.fields' = 'a;b'",
        ));
    }
    for k in &key_fields {
        if !def.columns.iter().any(|f| f.name() == k) {
            return Err(err(
                "key.fields",
                format!("key field `{k}` is not a column of `{}`", def.name),
            ));
        }
    }
    let value_includes_key = match opt(def, "value.fields-include")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ALL") => true,
        Some("EXCEPT_KEY") => false,
        Some(v) => {
            return Err(err(
                "value.fields-include",
                format!("'value.fields-include' must be ALL or EXCEPT_KEY, not '{v}'"),
            ));
        }
    };
    for m in &def.metadata {
        if MetadataKey::parse(&m.key).is_none() {
            return Err(err(
                "connector",
                format!(
                    "column `{}`: the {name} connector has no metadata key '{}'; it has {}",
                    m.column,
                    m.key,
                    MetadataKey::ALL
                ),
            ));
        }
    }
    Ok(Common {
        bootstrap_servers,
        properties,
        group_id: opt(def, "properties.group.id").map(str::to_string),
        value_format,
        key_format,
        key_fields,
        value_includes_key,
    })
}

/// Checks a Kafka table's options when it is declared.
pub fn validate(def: &TableDef) -> Result<(), OptionError> {
    common(def)?;
    topics(def)?;
    if !upsert(def) {
        startup(def)?;
        bounded(def)?;
    }
    guarantee(def)?;
    partitioner(def)?;
    Ok(())
}

fn topics(def: &TableDef) -> Result<Topics, OptionError> {
    match (opt(def, "topic"), opt(def, "topic-pattern")) {
        (Some(_), Some(_)) => Err(err(
            "topic-pattern",
            "set 'topic' or 'topic-pattern', not both",
        )),
        (Some(t), None) => Ok(Topics::Names(
            t.split(';')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )),
        (None, Some(p)) => regex::Regex::new(&format!("^(?:{p})$"))
            .map(Topics::Pattern)
            .map_err(|e| {
                err(
                    "topic-pattern",
                    format!("'topic-pattern' is not a regular expression: {e}"),
                )
            }),
        (None, None) => Err(err(
            "connector",
            format!(
                "the {} connector needs 'topic' (or 'topic-pattern' to read)",
                connector_name(def)
            ),
        )),
    }
}

fn startup(def: &TableDef) -> Result<StartupMode, OptionError> {
    let k = "scan.startup.mode";
    Ok(match opt(def, k).unwrap_or("group-offsets") {
        "earliest-offset" => StartupMode::EarliestOffset,
        "latest-offset" => StartupMode::LatestOffset,
        "group-offsets" => {
            let reset = match opt(def, "properties.auto.offset.reset") {
                None | Some("none") => None,
                Some("earliest" | "smallest") => {
                    Some(flink_rs_connectors::kafka_options::Reset::Earliest)
                }
                Some("latest" | "largest") => {
                    Some(flink_rs_connectors::kafka_options::Reset::Latest)
                }
                Some(v) => {
                    return Err(err(
                        "properties.auto.offset.reset",
                        format!(
                            "'properties.auto.offset.reset' must be earliest, latest or none, not '{v}'"
                        ),
                    ));
                }
            };
            StartupMode::GroupOffsets { reset }
        }
        "timestamp" => StartupMode::Timestamp(
            millis(def, "scan.startup.timestamp-millis")?.ok_or_else(|| {
                err(
                    k,
                    "'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis'",
                )
            })?,
        ),
        "specific-offsets" => {
            StartupMode::SpecificOffsets(specific_offsets(def, "scan.startup.specific-offsets")?)
        }
        v => {
            return Err(err(
                k,
                format!(
                    "unknown startup mode '{v}'; use earliest-offset, latest-offset, group-offsets, timestamp or specific-offsets"
                ),
            ));
        }
    })
}

fn bounded(def: &TableDef) -> Result<BoundedMode, OptionError> {
    let k = "scan.bounded.mode";
    Ok(match opt(def, k).unwrap_or("unbounded") {
        "unbounded" => BoundedMode::Unbounded,
        "latest-offset" => BoundedMode::LatestOffset,
        "group-offsets" => {
            if opt(def, "properties.group.id").is_none() {
                return Err(err(
                    k,
                    "'scan.bounded.mode' = 'group-offsets' needs 'properties.group.id'",
                ));
            }
            BoundedMode::GroupOffsets
        }
        "timestamp" => BoundedMode::Timestamp(
            millis(def, "scan.bounded.timestamp-millis")?.ok_or_else(|| {
                err(
                    k,
                    "'scan.bounded.mode' = 'timestamp' needs 'scan.bounded.timestamp-millis'",
                )
            })?,
        ),
        "specific-offsets" => {
            BoundedMode::SpecificOffsets(specific_offsets(def, "scan.bounded.specific-offsets")?)
        }
        v => {
            return Err(err(
                k,
                format!(
                    "unknown bounded mode '{v}'; use unbounded, latest-offset, group-offsets, timestamp or specific-offsets"
                ),
            ));
        }
    })
}

fn guarantee(def: &TableDef) -> Result<DeliveryGuarantee, OptionError> {
    let k = "sink.delivery-guarantee";
    let g = match opt(def, k).unwrap_or("at-least-once") {
        "none" => DeliveryGuarantee::None,
        "at-least-once" => DeliveryGuarantee::AtLeastOnce,
        "exactly-once" => DeliveryGuarantee::ExactlyOnce,
        v => {
            return Err(err(
                k,
                format!("'{k}' must be none, at-least-once or exactly-once, not '{v}'"),
            ));
        }
    };
    if g == DeliveryGuarantee::ExactlyOnce
        && opt(def, "sink.transactional-id-prefix").is_none_or(str::is_empty)
    {
        return Err(err(
            k,
            "'sink.delivery-guarantee' = 'exactly-once' needs 'sink.transactional-id-prefix'",
        ));
    }
    Ok(g)
}

fn partitioner(def: &TableDef) -> Result<Partitioner, OptionError> {
    let k = "sink.partitioner";
    Ok(match opt(def, k).unwrap_or("default") {
        "default" => Partitioner::Default,
        "fixed" => Partitioner::Fixed,
        "round-robin" => Partitioner::RoundRobin,
        v => {
            return Err(err(
                k,
                format!(
                    "'{k}' must be default, fixed or round-robin (a class name is Java's), not '{v}'"
                ),
            ));
        }
    })
}

/// The source's options (the table's columns, metadata included, are its rows).
pub fn source_options(
    def: &TableDef,
    schema: SchemaRef,
) -> Result<KafkaSourceOptions, OptionError> {
    if upsert(def) {
        return Err(err(
            "connector",
            "reading an upsert-kafka table (as a changelog) is not supported yet; write it, or read the topic with the kafka connector",
        ));
    }
    let c = common(def)?;
    let bounded = bounded(def)?;
    let startup = startup(def)?;
    if matches!(startup, StartupMode::GroupOffsets { .. }) && c.group_id.is_none() {
        return Err(err(
            "scan.startup.mode",
            "'scan.startup.mode' = 'group-offsets' (the default) needs 'properties.group.id'; or set 'scan.startup.mode' = 'earliest-offset'",
        ));
    }
    let discovery = match opt(def, "scan.topic-partition-discovery.interval") {
        Some(v) => {
            let d = crate::parse_duration(v).ok_or_else(|| {
                err(
                    "scan.topic-partition-discovery.interval",
                    format!("expected a duration such as '5 min', not '{v}'"),
                )
            })?;
            (!d.is_zero()).then_some(d)
        }
        None => Some(std::time::Duration::from_secs(300)),
    };
    Ok(KafkaSourceOptions {
        bootstrap_servers: c.bootstrap_servers,
        topics: topics(def)?,
        group_id: c.group_id,
        properties: c.properties,
        startup,
        bounded,
        schema,
        value_format: c.value_format,
        key_format: c.key_format,
        key_fields: c.key_fields,
        value_includes_key: c.value_includes_key,
        metadata: def
            .metadata
            .iter()
            .filter_map(|m| MetadataKey::parse(&m.key).map(|(k, _)| (m.column.clone(), k)))
            .collect(),
        discovery_interval: discovery,
        batch_size: 8192,
    })
}

/// The sink's options: it writes the table's columns but VIRTUAL metadata ones, which the
/// query's columns fill by position.
pub fn sink_options(def: &TableDef) -> Result<KafkaSinkOptions, OptionError> {
    let c = common(def)?;
    let topic = match topics(def)? {
        Topics::Names(n) if n.len() == 1 => n[0].clone(),
        _ => {
            return Err(err(
                "topic",
                "a kafka sink writes one 'topic' (not a list or 'topic-pattern')",
            ));
        }
    };
    let mut timestamp_column = None;
    for m in &def.metadata {
        match MetadataKey::parse(&m.key) {
            Some((MetadataKey::Timestamp, true)) if !m.is_virtual => {
                timestamp_column = Some(m.column.clone())
            }
            Some(_) if m.is_virtual => {}
            _ => {
                return Err(err(
                    "connector",
                    format!(
                        "column `{}`: metadata '{}' cannot be written; declare it VIRTUAL",
                        m.column, m.key
                    ),
                ));
            }
        }
    }
    // The rows written carry the table's columns (a VIRTUAL metadata column is not written).
    Ok(KafkaSinkOptions {
        bootstrap_servers: c.bootstrap_servers,
        topic,
        properties: c.properties,
        schema: Arc::new(Schema::new(
            def.columns
                .iter()
                .filter(|f| {
                    !def.metadata
                        .iter()
                        .any(|m| m.is_virtual && m.column == *f.name())
                })
                .cloned()
                .collect::<Vec<_>>(),
        )),
        value_format: c.value_format,
        key_format: c.key_format,
        key_fields: c.key_fields,
        value_includes_key: c.value_includes_key,
        timestamp_column,
        guarantee: guarantee(def)?,
        transactional_id_prefix: opt(def, "sink.transactional-id-prefix").map(str::to_string),
        partitioner: partitioner(def)?,
        upsert: upsert(def),
    })
}
