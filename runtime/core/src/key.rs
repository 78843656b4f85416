//! Keys, key groups and how a batch is split by key.
//!
//! A key is extracted from one row by a [`KeySelector`]. Keys hash (with a hash that is stable
//! across processes and runs) to one of `max_parallelism` key groups; each parallel instance of
//! a keyed operator owns a contiguous range of key groups, using Flink's assignment formula.
//! Key groups are the unit that checkpoints store and rescaling moves.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};

use crate::error::{Error, Result};
use crate::rows::Value;

/// Default number of key groups, as in Flink.
pub const DEFAULT_MAX_PARALLELISM: u16 = 128;

/// A key group index in `0..max_parallelism`.
pub type KeyGroup = u16;

/// The key of one record. Integer keys (the common case) need no allocation.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Key {
    /// A null key (all null keys go to one key group).
    Null,
    /// Any integer column, widened.
    Int(i64),
    /// A string column.
    Str(Arc<str>),
    /// Several columns, one value each.
    Composite(Arc<[Key]>),
}

impl Key {
    /// A hash of the key that is the same in every process and every run (unlike `std`'s
    /// randomized hasher), so that all parallel workers agree on key groups.
    pub fn stable_hash(&self) -> u64 {
        match self {
            Key::Null => 0x9e37_79b9_7f4a_7c15,
            Key::Int(v) => mix64(*v as u64),
            Key::Str(s) => hash_bytes(s.as_bytes()),
            Key::Composite(parts) => parts
                .iter()
                .fold(0x243f_6a88_85a3_08d3, |h, k| mix64(h ^ k.stable_hash())),
        }
    }

    /// The key group of this key.
    pub fn key_group(&self, max_parallelism: u16) -> KeyGroup {
        (self.stable_hash() % u64::from(max_parallelism)) as KeyGroup
    }

    /// The key as a row value (for operator output).
    pub fn to_value(&self) -> Value {
        match self {
            Key::Null => Value::Null,
            Key::Int(v) => Value::Int(*v),
            Key::Str(s) => Value::Str(s.to_string()),
            Key::Composite(parts) => Value::Str(
                parts
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Null => write!(f, "null"),
            Key::Int(v) => write!(f, "{v}"),
            Key::Str(s) => write!(f, "{s}"),
            Key::Composite(parts) => {
                let strs: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
                write!(f, "({})", strs.join(","))
            }
        }
    }
}

/// SplitMix64's finalizer: a fast, well-distributed, stable 64-bit mix.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes, finished with [`mix64`].
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The subtask that owns a key group: Flink's `keyGroup * parallelism / maxParallelism`.
#[inline]
pub fn operator_index_for_key_group(
    kg: KeyGroup,
    max_parallelism: u16,
    parallelism: usize,
) -> usize {
    usize::from(kg) * parallelism / usize::from(max_parallelism)
}

/// The contiguous range of key groups a subtask owns.
pub fn key_group_range(
    max_parallelism: u16,
    parallelism: usize,
    subtask: usize,
) -> std::ops::Range<u16> {
    let mp = usize::from(max_parallelism);
    let start = (subtask * mp).div_ceil(parallelism);
    let end = ((subtask + 1) * mp).div_ceil(parallelism);
    start as u16..end as u16
}

/// How keys are taken from rows: one or more columns, looked up by name once per schema.
#[derive(Debug, Clone)]
pub struct KeySelector {
    columns: Arc<[String]>,
}

impl KeySelector {
    /// Key by the named columns (one column gives a plain key, several a composite one).
    pub fn columns<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        KeySelector {
            columns: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Key by a single column.
    pub fn column(name: impl Into<String>) -> Self {
        Self::columns([name.into()])
    }

    /// The key column names.
    pub fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// The output field describing the key (used by operators that emit the key).
    pub fn key_field(&self, schema: &arrow::datatypes::Schema) -> Result<Field> {
        if self.columns.len() == 1 {
            let f = column_index(schema, &self.columns[0]).map(|i| schema.field(i))?;
            let dt = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                _ => DataType::Int64,
            };
            Ok(Field::new(f.name(), dt, true))
        } else {
            Ok(Field::new(self.columns.join("_"), DataType::Utf8, true))
        }
    }

    /// Extracts the key columns of a batch, checking they exist and have a key type.
    pub fn extract(&self, batch: &RecordBatch) -> Result<KeyColumns> {
        let schema = batch.schema();
        let mut cols = Vec::with_capacity(self.columns.len());
        for name in self.columns.iter() {
            let idx = column_index(&schema, name)?;
            cols.push(KeyColumn::new(name, batch.column(idx).clone())?);
        }
        Ok(KeyColumns { cols })
    }
}

/// Finds a column by name with an error that lists what exists.
pub fn column_index(schema: &arrow::datatypes::Schema, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| Error::UnknownColumn {
        name: name.to_string(),
        available: schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The key columns of one batch, ready for per-row key extraction.
pub struct KeyColumns {
    cols: Vec<KeyColumn>,
}

enum KeyColumn {
    /// Integer column widened to i64 once per batch.
    Int(ArrayRef, Vec<i64>),
    Str(ArrayRef),
}

impl KeyColumn {
    fn new(name: &str, array: ArrayRef) -> Result<Self> {
        macro_rules! widen {
            ($t:ty) => {
                array
                    .as_primitive::<$t>()
                    .values()
                    .iter()
                    .map(|v| *v as i64)
                    .collect()
            };
        }
        let ints: Vec<i64> = match array.data_type() {
            DataType::Int64 => array.as_primitive::<Int64Type>().values().to_vec(),
            DataType::Int32 => widen!(Int32Type),
            DataType::Int16 => widen!(Int16Type),
            DataType::Int8 => widen!(Int8Type),
            DataType::UInt64 => widen!(UInt64Type),
            DataType::UInt32 => widen!(UInt32Type),
            DataType::UInt16 => widen!(UInt16Type),
            DataType::UInt8 => widen!(UInt8Type),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => {
                widen!(arrow::datatypes::TimestampMillisecondType)
            }
            DataType::Utf8 => return Ok(KeyColumn::Str(array)),
            other => {
                return Err(Error::ColumnType {
                    name: name.to_string(),
                    expected: "an integer or string key".into(),
                    actual: other.to_string(),
                });
            }
        };
        Ok(KeyColumn::Int(array, ints))
    }

    #[inline]
    fn key(&self, row: usize) -> Key {
        match self {
            KeyColumn::Int(arr, v) => {
                if arr.is_null(row) {
                    Key::Null
                } else {
                    Key::Int(v[row])
                }
            }
            KeyColumn::Str(arr) => {
                if arr.is_null(row) {
                    Key::Null
                } else {
                    Key::Str(Arc::from(arr.as_string::<i32>().value(row)))
                }
            }
        }
    }
}

impl KeyColumns {
    /// The key of row `row`.
    #[inline]
    pub fn key(&self, row: usize) -> Key {
        if self.cols.len() == 1 {
            self.cols[0].key(row)
        } else {
            Key::Composite(self.cols.iter().map(|c| c.key(row)).collect())
        }
    }

    /// The key group of every row, without building `Key`s for integer keys (the hot path of
    /// hash partitioning).
    pub fn key_groups(&self, max_parallelism: u16, out: &mut Vec<KeyGroup>) {
        out.clear();
        let mp = u64::from(max_parallelism);
        if let [KeyColumn::Int(arr, ints)] = self.cols.as_slice() {
            if arr.null_count() == 0 {
                out.extend(ints.iter().map(|v| (mix64(*v as u64) % mp) as KeyGroup));
                return;
            }
        }
        let n = match self.cols.first() {
            Some(KeyColumn::Int(a, _)) | Some(KeyColumn::Str(a)) => a.len(),
            None => 0,
        };
        out.extend((0..n).map(|r| self.key(r).key_group(max_parallelism)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_ranges_cover_all_groups_once() {
        for p in 1..=7 {
            let mut next = 0;
            for s in 0..p {
                let r = key_group_range(128, p, s);
                assert_eq!(r.start, next);
                for kg in r.clone() {
                    assert_eq!(operator_index_for_key_group(kg, 128, p), s);
                }
                next = r.end;
            }
            assert_eq!(next, 128);
        }
    }

    #[test]
    fn hash_is_stable() {
        // Fixed values: a change here would break restoring existing checkpoints.
        assert_eq!(Key::Int(42).key_group(128), Key::Int(42).key_group(128));
        assert_eq!(mix64(0), 0);
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
    }
}
