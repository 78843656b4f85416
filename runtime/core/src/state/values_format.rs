//! The encoding of one key group's keyed values, written and read by both backends (so a
//! snapshot of one restores into the other): a `u32` count of states, then per state its
//! name (`u32` length, bytes), a `u64` count of values, and per value the key (bincode), the
//! namespace (two `i64` LE) and the codec's encoding of the value (`u32` length, bytes).

use std::sync::Arc;

use super::codec::ByteReader;
use super::{CellCodec, Namespace, StateId};
use crate::error::{Error, Result};
use crate::key::Key;

/// What [`read_key_group`] finds, in order.
pub(super) enum Visit<'a> {
    /// A state of the job with this many values (states the job no longer registers are
    /// skipped, with a warning).
    State { id: StateId, values: u64 },
    /// One value of the last `State`.
    Value {
        id: StateId,
        key: Key,
        ns: Namespace,
        value: &'a [u8],
    },
}

/// Walks one key group's blob, calling `f` with each registered state and each of its
/// values (still encoded).
pub(super) fn read_key_group<'a>(
    bytes: &'a [u8],
    names: &[String],
    f: &mut dyn FnMut(Visit<'a>) -> Result<()>,
) -> Result<()> {
    let mut r = ByteReader::new(bytes, "keyed state");
    let states = r.u32()?;
    for _ in 0..states {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        let values = r.u64()?;
        let id = names.iter().position(|n| *n == name);
        match id {
            Some(id) => f(Visit::State { id, values })?,
            None => tracing::warn!(
                state = %name,
                "snapshot holds a state the job no longer registers; skipped"
            ),
        }
        for _ in 0..values {
            let key: Key = r.value()?;
            let ns = Namespace {
                start: r.i64()?,
                end: r.i64()?,
            };
            let value = r.bytes()?;
            if let Some(id) = id {
                f(Visit::Value { id, key, ns, value })?;
            }
        }
    }
    Ok(())
}

/// Walks one key group's blob without decoding anything, calling `f` with each value's
/// state name, key and namespace (as encoded) and value: for merging snapshots.
pub(super) fn for_each_raw<'a>(
    bytes: &'a [u8],
    f: &mut dyn FnMut(&'a [u8], &'a [u8], &'a [u8]),
) -> Result<()> {
    let mut r = ByteReader::new(bytes, "keyed state");
    let states = r.u32()?;
    for _ in 0..states {
        let name = r.bytes()?;
        let values = r.u64()?;
        for _ in 0..values {
            let before = r.rest();
            let _: Key = r.value()?;
            r.take(16)?;
            let key_ns = &before[..before.len() - r.rest().len()];
            let value = r.bytes()?;
            f(name, key_ns, value);
        }
    }
    Ok(())
}

/// Checks that the first value of the blob's first state decodes with that state's codec,
/// and with `every_state` the first value of every state (which walks the whole blob). The
/// bytes themselves are covered by the checkpoint's checksum; this catches a snapshot whose
/// value types differ from the job's.
pub(super) fn check_key_group(
    names: &[String],
    codecs: &[Arc<dyn CellCodec>],
    bytes: &[u8],
    every_state: bool,
) -> Result<()> {
    let mut r = ByteReader::new(bytes, "keyed state");
    let states = r.u32()?;
    for _ in 0..states {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        let count = r.u64()?;
        let id = names.iter().position(|n| *n == name);
        for i in 0..count {
            let _: Key = r.value()?;
            r.take(16)?;
            let value = r.bytes()?;
            if i == 0 {
                if let Some(id) = id {
                    codecs[id]
                        .decode(value)
                        .map_err(|e| Error::state(&name, e))?;
                }
                if !every_state {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
