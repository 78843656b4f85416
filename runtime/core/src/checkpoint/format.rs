//! The on-storage formats of checkpoints and savepoints (version 1).
//!
//! A checkpoint is a directory:
//! - one state file per operator instance that has state, `{uid}-{subtask}.state`:
//!   magic `FLRSSTAT`, format version (u32 LE), payload length (u64 LE), CRC-32 of the payload
//!   (u32 LE), then the payload: the number of key groups (u32), per key group its number
//!   (u16) and a length-prefixed (u64) blob written by the state backend, then a flag byte and,
//!   when it is 1, the length-prefixed (u64) operator state;
//! - `_metadata`, JSON ([`CheckpointMetadata`]), written last: a directory without it is an
//!   incomplete checkpoint and is never restored. Paths in it are relative to the directory,
//!   so a savepoint can be moved or copied elsewhere.
//!
//! A reader checks the magic, the version, the length and the checksum of every file before
//! any state is handed to an operator, so a truncated or foreign file can never be half
//! restored.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CheckpointId, OperatorSnapshot, SnapshotKind};
use crate::error::{Error, Result};
use crate::key::KeyGroup;

/// Version written into every state file and `_metadata`.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"FLRSSTAT";
const HEADER: usize = 8 + 4 + 8 + 4;

/// The `format` field of `_metadata`.
pub const METADATA_FORMAT: &str = "flink-rs-checkpoint";

/// A state file ready to upload: its bytes as chunks (the state blobs are not copied).
#[derive(Debug, Clone)]
pub struct EncodedFile {
    pub chunks: Vec<Bytes>,
    /// Total bytes.
    pub size: u64,
    /// CRC-32 of the whole file (what `_metadata` records).
    pub crc32: u32,
}

impl EncodedFile {
    /// The file as one buffer (tests, small files).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

/// Encodes one operator instance's snapshot as a state file.
pub fn encode_state_file(s: OperatorSnapshot) -> EncodedFile {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(2 * s.keyed.len() + 4);
    let mut small = Vec::with_capacity(16);
    small.extend_from_slice(&(s.keyed.len() as u32).to_le_bytes());
    for (kg, blob) in s.keyed {
        small.extend_from_slice(&kg.to_le_bytes());
        small.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        chunks.push(Bytes::from(std::mem::take(&mut small)));
        chunks.push(Bytes::from(blob));
    }
    match s.operator {
        Some(b) => {
            small.push(1);
            small.extend_from_slice(&(b.len() as u64).to_le_bytes());
            chunks.push(Bytes::from(std::mem::take(&mut small)));
            chunks.push(Bytes::from(b));
        }
        None => {
            small.push(0);
            chunks.push(Bytes::from(small));
        }
    }
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    for c in &chunks {
        crc.update(c);
        len += c.len() as u64;
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    chunks.insert(0, Bytes::from(header));
    let mut whole = crc32fast::Hasher::new();
    for c in &chunks {
        whole.update(c);
    }
    EncodedFile {
        chunks,
        size: HEADER as u64 + len,
        crc32: whole.finalize(),
    }
}

/// A state file written to a local file (see [`spool_state_file`]).
#[derive(Debug, Clone, Copy)]
pub struct SpooledFile {
    pub size: u64,
    pub crc32: u32,
}

/// Encodes one operator instance's snapshot as a state file at local `path`, encoding its
/// deferred keyed state one key group at a time straight into the file: a snapshot larger
/// than memory never has to be held whole. The same bytes as [`encode_state_file`].
pub fn spool_state_file(path: &std::path::Path, mut s: OperatorSnapshot) -> Result<SpooledFile> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |e: std::io::Error| Error::io("write a state file", path.display().to_string(), e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    // Header and key-group count are patched in at the end.
    w.write_all(&[0u8; HEADER + 4]).map_err(io)?;
    let mut rest = crc32fast::Hasher::new();
    let mut len = 4u64;
    let mut groups = 0u32;
    let mut put = |w: &mut std::io::BufWriter<std::fs::File>, bytes: &[u8]| {
        rest.update(bytes);
        len += bytes.len() as u64;
        w.write_all(bytes).map_err(io)
    };
    let mut group = |w: &mut std::io::BufWriter<std::fs::File>, kg: KeyGroup, blob: &[u8]| {
        let mut small = [0u8; 10];
        small[..2].copy_from_slice(&kg.to_le_bytes());
        small[2..].copy_from_slice(&(blob.len() as u64).to_le_bytes());
        put(w, &small)?;
        put(w, blob)?;
        groups += 1;
        Ok::<(), Error>(())
    };
    for (kg, blob) in std::mem::take(&mut s.keyed) {
        group(&mut w, kg, &blob)?;
    }
    if let Some(d) = s.deferred.take() {
        d.run(&mut |kg, blob| group(&mut w, kg, &blob))?;
    }
    match &s.operator {
        Some(b) => {
            let mut small = [1u8; 9];
            small[1..].copy_from_slice(&(b.len() as u64).to_le_bytes());
            put(&mut w, &small)?;
            put(&mut w, b)?;
        }
        None => put(&mut w, &[0u8])?,
    }
    let count = groups.to_le_bytes();
    let mut payload = crc32fast::Hasher::new();
    payload.update(&count);
    payload.combine(&rest);
    let mut header = Vec::with_capacity(HEADER + 4);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&payload.clone().finalize().to_le_bytes());
    let mut whole = crc32fast::Hasher::new();
    whole.update(&header);
    whole.combine(&payload);
    header.extend_from_slice(&count);
    let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(SpooledFile {
        size: HEADER as u64 + len,
        crc32: whole.finalize(),
    })
}

/// A decoded state file; blobs share the file's buffer.
#[derive(Debug, Clone, Default)]
pub struct StateFile {
    pub keyed: Vec<(KeyGroup, Bytes)>,
    pub operator: Option<Bytes>,
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes and verifies a state file; `name` is used in error messages.
pub fn decode_state_file(bytes: Bytes, name: &str) -> Result<StateFile> {
    decode_state_file_checked(bytes, name, true)
}

/// [`decode_state_file`], checking the payload's checksum only when `check_payload` (a
/// caller that verified the whole file against `_metadata` has covered it already).
pub fn decode_state_file_checked(
    bytes: Bytes,
    name: &str,
    check_payload: bool,
) -> Result<StateFile> {
    let bad = |m: String| Error::SnapshotCorrupt(format!("state file {name}: {m}"));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad(
            "not a flink-rs state file (bad magic or too short)".into()
        ));
    }
    let version = le_u32(&bytes[8..]);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads version {FORMAT_VERSION}"
        )));
    }
    let len = le_u64(&bytes[12..]) as usize;
    let crc = le_u32(&bytes[20..]);
    if bytes.len() - HEADER != len {
        return Err(bad(format!(
            "truncated: {} payload bytes, header says {len}",
            bytes.len() - HEADER
        )));
    }
    let payload = bytes.slice(HEADER..);
    if check_payload && crc32fast::hash(&payload) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    let mut pos = 0usize;
    let need = |pos: usize, n: usize| -> Result<()> {
        if pos + n > payload.len() {
            Err(bad("payload ends early".into()))
        } else {
            Ok(())
        }
    };
    need(pos, 4)?;
    let n = le_u32(&payload[pos..]) as usize;
    pos += 4;
    let mut keyed = Vec::with_capacity(n);
    for _ in 0..n {
        need(pos, 10)?;
        let kg = u16::from_le_bytes([payload[pos], payload[pos + 1]]);
        let blen = le_u64(&payload[pos + 2..]) as usize;
        pos += 10;
        need(pos, blen)?;
        keyed.push((kg, payload.slice(pos..pos + blen)));
        pos += blen;
    }
    need(pos, 1)?;
    let operator = if payload[pos] == 1 {
        pos += 1;
        need(pos, 8)?;
        let blen = le_u64(&payload[pos..]) as usize;
        pos += 8;
        need(pos, blen)?;
        let b = payload.slice(pos..pos + blen);
        pos += blen;
        Some(b)
    } else {
        pos += 1;
        None
    };
    if pos != payload.len() {
        return Err(bad("trailing bytes".into()));
    }
    Ok(StateFile { keyed, operator })
}

/// `_metadata`: what a checkpoint holds and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Always [`METADATA_FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    pub job_id: String,
    pub checkpoint_id: CheckpointId,
    pub kind: SnapshotKind,
    /// When the checkpoint completed (epoch ms).
    pub timestamp_ms: i64,
    pub max_parallelism: u16,
    /// True for the snapshot taken when every task had finished (the job's end).
    pub finished: bool,
    pub operators: Vec<OperatorMetadata>,
}

/// One operator of the job in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorMetadata {
    /// Stable id that maps the state onto a (possibly changed) job.
    pub uid: String,
    pub name: String,
    pub parallelism: usize,
    /// How the operator laid its state out (`keyed-store` for the state backend's stores;
    /// see [`crate::graph::Node::state_layout`]); absent in checkpoints written before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_layout: Option<String>,
    pub subtasks: Vec<SubtaskMetadata>,
}

/// One operator instance's state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubtaskMetadata {
    pub subtask: usize,
    /// Key groups `[start, end)` the instance owned.
    pub key_groups: [u16; 2],
    /// File name relative to the checkpoint directory; `None` when it had no state.
    pub file: Option<String>,
    pub size: u64,
    pub crc32: u32,
    /// Whether the file holds operator (non-keyed) state, which every new instance reads
    /// whatever key groups it owns; absent in checkpoints written before it existed (then
    /// every file is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_state: Option<bool>,
    /// Incremental checkpoints: the checkpoint whose state the instance's own (last) file
    /// adds to; absent when that file is whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<CheckpointId>,
    /// Incremental checkpoints: the files that together hold the instance's state, oldest
    /// first: a whole snapshot, then the changes of each later checkpoint (see
    /// [`crate::state::merge_key_group_chain`]). Shared by the checkpoints that refer to
    /// them, under the job's directory; `file` is then `None`, and `size` is what this
    /// checkpoint added (its last file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<SharedFile>,
}

/// A state file shared by incremental checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharedFile {
    /// Relative to the job's directory: `shared/{uid}-{subtask}-{checkpoint}.state`.
    pub path: String,
    pub size: u64,
    pub crc32: u32,
}

impl SubtaskMetadata {
    /// Whether the instance left any state.
    pub fn has_state(&self) -> bool {
        self.file.is_some() || !self.chain.is_empty()
    }

    /// Bytes of every file the instance's state is made of (its full size).
    pub fn full_size(&self) -> u64 {
        if self.chain.is_empty() {
            self.size
        } else {
            self.chain.iter().map(|f| f.size).sum()
        }
    }
}

/// The directory, relative to a job's directory, of the files incremental checkpoints
/// share.
pub const SHARED_DIR: &str = "shared";

/// The name of a shared state file: `{uid}-{subtask}-{checkpoint}.state`.
pub fn shared_file_name(uid: &str, subtask: usize, checkpoint: CheckpointId) -> String {
    format!("{uid}-{subtask}-{checkpoint}.state")
}

/// The checkpoint that wrote shared file `name` (see [`shared_file_name`]).
pub fn shared_file_checkpoint(name: &str) -> Option<CheckpointId> {
    name.strip_suffix(".state")?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
}

impl CheckpointMetadata {
    /// Parses and checks `_metadata`.
    pub fn parse(bytes: &[u8], where_: &str) -> Result<Self> {
        let m: CheckpointMetadata = serde_json::from_slice(bytes)
            .map_err(|e| Error::SnapshotCorrupt(format!("{where_}/_metadata is not valid: {e}")))?;
        if m.format != METADATA_FORMAT {
            return Err(Error::SnapshotIncompatible(format!(
                "{where_}/_metadata has format `{}`, expected `{METADATA_FORMAT}`",
                m.format
            )));
        }
        if m.version != FORMAT_VERSION {
            return Err(Error::SnapshotIncompatible(format!(
                "{where_}/_metadata has format version {}, this build reads version {FORMAT_VERSION}",
                m.version
            )));
        }
        Ok(m)
    }

    /// Bytes of state files this checkpoint wrote (with incremental checkpoints, what it
    /// added; Flink's "checkpointed data size").
    pub fn state_size(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .map(|s| s.size)
            .sum()
    }

    /// Bytes of every state file this checkpoint is made of, shared ones included (Flink's
    /// "full checkpoint data size").
    pub fn full_size(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .map(SubtaskMetadata::full_size)
            .sum()
    }

    /// The shared files this checkpoint refers to.
    pub fn shared_files(&self) -> impl Iterator<Item = &SharedFile> {
        self.operators
            .iter()
            .flat_map(|o| &o.subtasks)
            .flat_map(|s| &s.chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip_and_damage_detection() -> Result<()> {
        let snap = OperatorSnapshot {
            keyed: vec![(3, b"abc".to_vec()), (7, vec![])],
            operator: Some(b"pos".to_vec()),
            deferred: None,
            ..Default::default()
        };
        let spooled = tempfile::NamedTempFile::new().expect("temp file");
        let on_disk = spool_state_file(spooled.path(), snap.clone()).expect("spooled");
        let enc = encode_state_file(snap);
        let bytes = std::fs::read(spooled.path()).expect("read back");
        assert_eq!(
            bytes,
            enc.to_vec(),
            "spooled and in-memory files are the same bytes"
        );
        assert_eq!((on_disk.size, on_disk.crc32), (enc.size, enc.crc32));
        // The same state, its key groups encoded as the file is written.
        let deferred = OperatorSnapshot {
            keyed: Vec::new(),
            operator: Some(b"pos".to_vec()),
            deferred: Some(super::super::DeferredKeyed::new(
                std::env::temp_dir(),
                |emit| {
                    emit(3, b"abc".to_vec())?;
                    emit(7, Vec::new())
                },
            )),
            ..Default::default()
        };
        spool_state_file(spooled.path(), deferred).expect("spooled");
        let streamed = std::fs::read(spooled.path()).expect("read back");
        assert_eq!(
            streamed,
            enc.to_vec(),
            "a deferred encoding writes the same bytes"
        );
        let bytes = enc.to_vec();
        assert_eq!(enc.size, bytes.len() as u64);
        assert_eq!(enc.crc32, crc32fast::hash(&bytes));
        let f = decode_state_file(Bytes::from(bytes.clone()), "t")?;
        assert_eq!(f.keyed.len(), 2);
        assert_eq!(&f.keyed[0].1[..], b"abc");
        assert_eq!(f.keyed[1].0, 7);
        assert_eq!(f.operator.as_deref(), Some(&b"pos"[..]));

        let truncated = Bytes::from(bytes[..bytes.len() - 1].to_vec());
        let e = decode_state_file(truncated, "t").map(|_| ());
        assert!(format!("{e:?}").contains("truncated"), "{e:?}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let e = decode_state_file(Bytes::from(flipped), "t").map(|_| ());
        assert!(format!("{e:?}").contains("checksum"), "{e:?}");
        let mut v2 = bytes;
        v2[8] = 2;
        let e = decode_state_file(Bytes::from(v2), "t").map(|_| ());
        assert!(format!("{e:?}").contains("format version 2"), "{e:?}");
        Ok(())
    }
}
