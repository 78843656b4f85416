//! Which keyed-state backend a job uses, from Flink's configuration keys:
//! `state.backend.type` (`hashmap`, or `disk` with its aliases `rocksdb` and `forst`),
//! `taskmanager.memory.managed.size` (the disk backend's memory budget) and `io.tmp.dirs` /
//! `state.backend.rocksdb.localdir` (where its files go).

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    DEFAULT_MANAGED_MEMORY, DiskOptions, DiskStateBackend, MemoryStateBackend, StateBackend,
};

/// The kind of keyed-state backend (`state.backend.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// Everything on the heap (Flink's `hashmap`, the default).
    #[default]
    Hashmap,
    /// An embedded LSM tree on local disk behind a bounded cache (`disk`; Flink's `rocksdb`
    /// and `forst` name the same role).
    Disk,
}

impl StateBackendKind {
    /// Parses a `state.backend.type` value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hashmap" => Some(StateBackendKind::Hashmap),
            "disk" | "rocksdb" | "forst" => Some(StateBackendKind::Disk),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StateBackendKind::Hashmap => "hashmap",
            StateBackendKind::Disk => "disk",
        }
    }
}

/// The key of [`StateBackendConfig::write_buffer`] (Flink's RocksDB name).
pub const WRITE_BUFFER_KEY: &str = "state.backend.rocksdb.writebuffer.size";

/// The configured backend; [`build`](Self::build) makes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateBackendConfig {
    pub kind: StateBackendKind,
    /// `taskmanager.memory.managed.size` (`None`: [`DEFAULT_MANAGED_MEMORY`]).
    pub managed_memory: Option<u64>,
    /// `state.backend.rocksdb.localdir`, else the first of `io.tmp.dirs`.
    pub local_dir: Option<PathBuf>,
    /// `execution.checkpointing.incremental` (Flink 1.x: `state.backend.incremental`): a
    /// checkpoint writes only what changed since the last one (disk backend only).
    pub incremental: bool,
    /// `state.backend.rocksdb.writebuffer.size` (also `state.backend.forst.writebuffer.size`):
    /// how many bytes of changed values a store of the disk backend keeps before it writes
    /// them out, which also bounds what a checkpoint's synchronous part writes (`None`: a
    /// quarter of its cache; [`DiskOptions::max_dirty_bytes`]).
    pub write_buffer: Option<u64>,
}

impl StateBackendConfig {
    /// The configuration keys that give this backend (for a job submitted elsewhere).
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "state.backend.type".to_string(),
            self.kind.name().to_string(),
        )];
        if let Some(m) = self.managed_memory {
            out.push(("taskmanager.memory.managed.size".into(), m.to_string()));
        }
        if let Some(d) = &self.local_dir {
            out.push(("io.tmp.dirs".into(), d.display().to_string()));
        }
        if self.incremental {
            out.push(("execution.checkpointing.incremental".into(), "true".into()));
        }
        if let Some(b) = self.write_buffer {
            out.push((WRITE_BUFFER_KEY.into(), b.to_string()));
        }
        out
    }

    /// The disk backend's options from this configuration.
    pub fn disk_options(&self) -> DiskOptions {
        DiskOptions {
            managed_memory: self.managed_memory.unwrap_or(DEFAULT_MANAGED_MEMORY),
            local_dir: self.local_dir.clone(),
            incremental: self.incremental,
            max_dirty_bytes: self.write_buffer.map(|b| b as usize),
            ..Default::default()
        }
    }

    /// An error when the settings cannot go together: incremental checkpoints need the disk
    /// backend (the heap backend has no record of what changed; Flink ignores the setting
    /// there, which would leave a user believing checkpoints are incremental).
    pub fn validate(&self) -> Result<(), crate::error::Error> {
        if self.incremental && self.kind != StateBackendKind::Disk {
            return Err(crate::error::Error::config(
                "execution.checkpointing.incremental",
                "incremental checkpoints need state.backend.type: disk (rocksdb, forst); \
                 the hashmap backend writes whole checkpoints",
            ));
        }
        if self.write_buffer.is_some() && self.kind != StateBackendKind::Disk {
            return Err(crate::error::Error::config(
                WRITE_BUFFER_KEY,
                "the write buffer is the disk state backend's (state.backend.type: disk, \
                 rocksdb or forst); the hashmap backend has none",
            ));
        }
        Ok(())
    }

    /// A backend as configured (each call makes a new one: stores of one backend share its
    /// memory budget).
    pub fn build(&self) -> Arc<dyn StateBackend> {
        match self.kind {
            StateBackendKind::Hashmap => Arc::new(MemoryStateBackend::default()),
            StateBackendKind::Disk => Arc::new(DiskStateBackend::new(self.disk_options())),
        }
    }
}

/// Parses a Flink memory size: a number with an optional unit (`b`, `k`/`kb`, `m`/`mb`,
/// `g`/`gb`, `t`/`tb`, also Flink's `kibibytes` style), in bytes; `None` for anything else.
pub fn parse_memory_size(value: &str) -> Option<u64> {
    let v = value.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" | "kibibytes" => 10,
        "m" | "mb" | "mib" | "mebibytes" => 20,
        "g" | "gb" | "gib" | "gibibytes" => 30,
        "t" | "tb" | "tib" | "tebibytes" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_as_flink_writes_them() {
        assert_eq!(parse_memory_size("256m"), Some(256 << 20));
        assert_eq!(parse_memory_size("256 mb"), Some(256 << 20));
        assert_eq!(parse_memory_size("1g"), Some(1 << 30));
        assert_eq!(parse_memory_size("1024"), Some(1024));
        assert_eq!(parse_memory_size("64 kibibytes"), Some(64 << 10));
        assert_eq!(parse_memory_size("1.5g"), None);
        assert_eq!(parse_memory_size("lots"), None);
        assert_eq!(parse_memory_size("99999999999t"), None);
    }

    #[test]
    fn backend_names_and_aliases() {
        assert_eq!(
            StateBackendKind::parse("HashMap"),
            Some(StateBackendKind::Hashmap)
        );
        for disk in ["disk", "rocksdb", "ForSt"] {
            assert_eq!(StateBackendKind::parse(disk), Some(StateBackendKind::Disk));
        }
        assert_eq!(StateBackendKind::parse("filesystem"), None);
        let b = StateBackendConfig {
            kind: StateBackendKind::Disk,
            ..Default::default()
        };
        assert_eq!(b.build().name(), "disk");
        assert_eq!(StateBackendConfig::default().build().name(), "memory");
    }

    #[test]
    fn the_write_buffer_bounds_the_disk_backend_s_changed_values() {
        let mut b = StateBackendConfig {
            kind: StateBackendKind::Disk,
            write_buffer: Some(8 << 20),
            ..Default::default()
        };
        assert_eq!(b.disk_options().max_dirty_bytes, Some(8 << 20));
        assert!(
            b.settings()
                .contains(&(WRITE_BUFFER_KEY.into(), (8u64 << 20).to_string()))
        );
        assert!(b.validate().is_ok());
        b.kind = StateBackendKind::Hashmap;
        let e = b
            .validate()
            .expect_err("hashmap has no write buffer")
            .to_string();
        assert!(e.contains(WRITE_BUFFER_KEY), "{e}");
        assert_eq!(
            StateBackendConfig::default().disk_options().max_dirty_bytes,
            None
        );
    }
}
