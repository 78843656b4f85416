//! How state values become bytes in a snapshot: every registered state carries a
//! [`CellCodec`] made for its value type, so the type-erased store can encode and decode its
//! cells without knowing their types.
//!
//! Values are encoded with bincode (compact, fast, serde-driven). A cell is tagged with one
//! byte: `0` a plain value, `1` a value with a TTL stamp.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Cell;
use super::handles::TtlCell;
use crate::error::{Error, Result};

/// What a state value must be: cloneable, sendable and serializable (for checkpoints).
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for T {}

/// Encodes and decodes the cells of one state.
pub trait CellCodec: Send + Sync {
    /// Appends the encoding of `cell` to `out`.
    fn encode(&self, cell: &Cell, out: &mut Vec<u8>) -> Result<()>;
    /// Decodes one cell from exactly `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<Cell>;
}

/// The codec of cells holding a `T` (or a TTL'd `T`).
pub struct SerdeCodec<T>(PhantomData<fn() -> T>);

/// A shared codec for values of type `T`.
pub fn codec<T: Serialize + DeserializeOwned + Send + 'static>() -> Arc<dyn CellCodec> {
    Arc::new(SerdeCodec::<T>(PhantomData))
}

const PLAIN: u8 = 0;
const TTL: u8 = 1;

impl<T: Serialize + DeserializeOwned + Send + 'static> CellCodec for SerdeCodec<T> {
    fn encode(&self, cell: &Cell, out: &mut Vec<u8>) -> Result<()> {
        let r = if let Some(v) = cell.downcast_ref::<T>() {
            out.push(PLAIN);
            bincode::serialize_into(&mut *out, v)
        } else if let Some(t) = cell.downcast_ref::<TtlCell<T>>() {
            out.push(TTL);
            out.extend_from_slice(&t.stamp.to_le_bytes());
            bincode::serialize_into(&mut *out, &t.value)
        } else {
            return Err(Error::state(
                std::any::type_name::<T>(),
                "a stored value has another type than its state was registered with",
            ));
        };
        r.map_err(|e| Error::state(std::any::type_name::<T>(), e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Cell> {
        let bad = |m: &dyn std::fmt::Display| Error::state(std::any::type_name::<T>(), m);
        match bytes.split_first() {
            Some((&PLAIN, rest)) => {
                let v: T = bincode::deserialize(rest).map_err(|e| bad(&e))?;
                Ok(Box::new(v))
            }
            Some((&TTL, rest)) if rest.len() >= 8 => {
                let (stamp, rest) = rest.split_at(8);
                let mut b = [0u8; 8];
                b.copy_from_slice(stamp);
                let value: T = bincode::deserialize(rest).map_err(|e| bad(&e))?;
                Ok(Box::new(TtlCell {
                    value,
                    stamp: i64::from_le_bytes(b),
                }))
            }
            _ => Err(bad(&"corrupt value encoding")),
        }
    }
}

/// Reads the little-endian framing of snapshot blobs, failing (never panicking) on truncation.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8], what: &'a str) -> Self {
        ByteReader { buf, what }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::state(self.what, "truncated snapshot data"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// A `u32` length followed by that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A bincode value.
    pub fn value<T: DeserializeOwned>(&mut self) -> Result<T> {
        let mut cursor = std::io::Cursor::new(self.buf);
        let v = bincode::deserialize_from(&mut cursor).map_err(|e| Error::state(self.what, e))?;
        let used = cursor.position() as usize;
        self.buf = &self.buf[used..];
        Ok(v)
    }
}

/// Appends a `u32` length and the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a bincode value.
pub(crate) fn put_value<T: Serialize>(out: &mut Vec<u8>, v: &T, what: &str) -> Result<()> {
    bincode::serialize_into(&mut *out, v).map_err(|e| Error::state(what, e))
}
