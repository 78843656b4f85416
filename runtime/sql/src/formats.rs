//! `'format' = …` of the filesystem connector and its options, with Flink's names (the
//! Kafka connectors' formats are read in `kafka.rs` with the same helpers).

use flink_rs_connectors::{CsvFormat, FileFormat, JsonFormat, TimestampStandard};

use crate::connectors::{OptionError, err};
use crate::ddl::TableDef;

/// The options each format of the filesystem connector takes.
pub(crate) fn file_format_options(def: &TableDef) -> &'static [&'static str] {
    match format_name(def).as_deref() {
        Some("csv") => &[
            "csv.include-header",
            "csv.field-delimiter",
            "csv.quote-character",
            "csv.disable-quote-character",
            "csv.escape-character",
            "csv.null-literal",
            "csv.allow-comments",
        ],
        Some("json") => &[
            "json.timestamp-format.standard",
            "json.encode.ignore-null-fields",
        ],
        _ => &[],
    }
}

fn format_name(def: &TableDef) -> Option<String> {
    def.options.get("format").map(|s| s.to_ascii_lowercase())
}

/// The filesystem connector's `format` with its options.
pub(crate) fn file_format(def: &TableDef) -> Result<FileFormat, OptionError> {
    match format_name(def).as_deref() {
        Some("csv") => {
            let quote_key = "csv.quote-character";
            let disabled = boolean(def, "csv.disable-quote-character")?;
            if disabled && def.options.contains_key(quote_key) {
                return Err(err(
                    quote_key,
                    "'csv.quote-character' and 'csv.disable-quote-character' = 'true' cannot \
                     be set together",
                ));
            }
            Ok(FileFormat::Csv(CsvFormat {
                header: boolean(def, "csv.include-header")?,
                delimiter: character(def, "csv.field-delimiter")?.unwrap_or(b','),
                quote: if disabled {
                    None
                } else {
                    Some(character(def, quote_key)?.unwrap_or(b'"'))
                },
                escape: character(def, "csv.escape-character")?,
                null_literal: def.options.get("csv.null-literal").cloned(),
                allow_comments: boolean(def, "csv.allow-comments")?,
            }))
        }
        Some("json") => {
            let key = "json.timestamp-format.standard";
            let timestamp_standard = match def.options.get(key) {
                None => TimestampStandard::Sql,
                Some(v) => TimestampStandard::parse(v).ok_or_else(|| {
                    err(
                        key,
                        format!("'{key}' must be 'SQL' or 'ISO-8601', not '{v}'"),
                    )
                })?,
            };
            Ok(FileFormat::Json(JsonFormat {
                timestamp_standard,
                ignore_null_fields: boolean(def, "json.encode.ignore-null-fields")?,
            }))
        }
        Some("raw") => Ok(FileFormat::Raw),
        Some(other) => Err(err(
            "format",
            format!("unknown format '{other}'; use csv, json or raw"),
        )),
        None => Err(err(
            "connector",
            "the filesystem connector needs 'format' = 'csv' | 'json' | 'raw'",
        )),
    }
}

/// A `true`/`false` option, false when absent.
pub(crate) fn boolean(def: &TableDef, key: &str) -> Result<bool, OptionError> {
    match def
        .options
        .get(key)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(err(
            key,
            format!("'{key}' must be true or false, not '{v}'"),
        )),
    }
}

/// A one-character option (an ASCII character, or `\t` for a tab, as Flink accepts).
pub(crate) fn character(def: &TableDef, key: &str) -> Result<Option<u8>, OptionError> {
    let Some(v) = def.options.get(key) else {
        return Ok(None);
    };
    match v.as_bytes() {
        [b] if b.is_ascii() => Ok(Some(*b)),
        _ if v == "\\t" => Ok(Some(b'\t')),
        _ => Err(err(
            key,
            format!("'{key}' must be one ASCII character, not '{v}'"),
        )),
    }
}
