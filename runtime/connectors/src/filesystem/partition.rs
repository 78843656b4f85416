//! Partition directories of the file sink, as Flink names them: `col=value/` per partition
//! column, the value's text with the characters a path cannot hold escaped as `%XX`, and a
//! NULL value as the default partition name.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use flink_rs_core::error::Result;

/// Flink's `partition.default-name`.
pub const DEFAULT_NAME: &str = "__DEFAULT_PARTITION__";

/// Each row's partition directory (`c1=v1/c2=v2/`) for the columns `cols` (name, index).
pub(super) fn directories(
    batch: &RecordBatch,
    cols: &[(String, usize)],
    default_name: &str,
) -> Result<Vec<String>> {
    let options = FormatOptions::default().with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
    let mut dirs = vec![String::new(); batch.num_rows()];
    for (name, i) in cols {
        let col = batch.column(*i);
        let f = ArrayFormatter::try_new(col.as_ref(), &options)?;
        let key = escape(name);
        for (r, dir) in dirs.iter_mut().enumerate() {
            let value = if col.is_null(r) {
                default_name.to_string()
            } else {
                escape(&f.value(r).to_string())
            };
            dir.push_str(&key);
            dir.push('=');
            dir.push_str(&value);
            dir.push('/');
        }
    }
    Ok(dirs)
}

/// A path segment for `v`: the characters Flink escapes (control characters and
/// `"#%'*/:=?\{[]^`) as `%XX`.
pub(super) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        let special = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            );
        if special {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn directories_name_each_row_s_partition_as_flink_does() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("dt", DataType::Utf8, true),
                Field::new("hm", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("2024-01-01"),
                    None,
                    Some("a/b:c"),
                ])),
                Arc::new(Int64Array::from(vec![Some(5), Some(7), None])),
            ],
        )
        .expect("batch");
        let dirs =
            directories(&batch, &[("dt".into(), 0), ("hm".into(), 1)], DEFAULT_NAME).expect("dirs");
        assert_eq!(
            dirs,
            [
                "dt=2024-01-01/hm=5/",
                "dt=__DEFAULT_PARTITION__/hm=7/",
                "dt=a%2Fb%3Ac/hm=__DEFAULT_PARTITION__/",
            ]
        );
    }
}
