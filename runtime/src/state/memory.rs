//! The in-memory state backend (Flink's HashMapStateBackend): one hash table per state and key
//! group, values kept as live Rust objects, so reads and updates never serialize.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use super::codec::{ByteReader, put_bytes, put_value};
use super::{Cell, CellCodec, KeyedStore, Namespace, StateBackend, StateId};
use crate::error::{Error, Result};
use crate::key::{Key, KeyGroup, mix64};

/// The default state backend: everything on the heap.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStateBackend;

impl StateBackend for MemoryStateBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create_store(
        &self,
        key_groups: Range<KeyGroup>,
        _max_parallelism: u16,
    ) -> Box<dyn KeyedStore> {
        Box::new(MemoryStore::new(key_groups))
    }
}

/// A fast, non-cryptographic hasher for state tables (keys come from our own data, and the
/// per-record lookup is the hot path of every keyed operator).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Hash map type used by state tables.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

type Table = FastMap<(Key, Namespace), Cell>;

/// Keyed state of one operator instance, held in memory.
pub struct MemoryStore {
    key_groups: Range<KeyGroup>,
    names: Vec<String>,
    codecs: Vec<Arc<dyn CellCodec>>,
    /// `tables[state][kg - key_groups.start]`
    tables: Vec<Vec<Table>>,
}

impl MemoryStore {
    /// An empty store for `key_groups`.
    pub fn new(key_groups: Range<KeyGroup>) -> Self {
        MemoryStore {
            key_groups,
            names: Vec::new(),
            codecs: Vec::new(),
            tables: Vec::new(),
        }
    }

    #[inline]
    fn slot(&self, kg: KeyGroup) -> usize {
        // Keys of other key groups never reach this instance (hash partitioning guarantees it);
        // clamp so a bug there shows as wrong results in tests rather than a panic.
        usize::from(kg.saturating_sub(self.key_groups.start))
            .min(usize::from(self.key_groups.end - self.key_groups.start).saturating_sub(1))
    }
}

impl KeyedStore for MemoryStore {
    fn register(&mut self, name: &str, codec: Arc<dyn CellCodec>) -> StateId {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_string());
        self.codecs.push(codec);
        let n = usize::from(self.key_groups.end - self.key_groups.start).max(1);
        self.tables.push((0..n).map(|_| Table::default()).collect());
        self.names.len() - 1
    }

    #[inline]
    fn get(&self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<&Cell> {
        // `(Key, Namespace)` lookups need an owned tuple; integer keys clone for free.
        self.tables[state][self.slot(kg)].get(&(key.clone(), ns))
    }

    #[inline]
    fn get_mut(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &Key,
        ns: Namespace,
    ) -> Option<&mut Cell> {
        let slot = self.slot(kg);
        self.tables[state][slot].get_mut(&(key.clone(), ns))
    }

    fn put(&mut self, state: StateId, kg: KeyGroup, key: Key, ns: Namespace, value: Cell) {
        let slot = self.slot(kg);
        self.tables[state][slot].insert((key, ns), value);
    }

    fn remove(&mut self, state: StateId, kg: KeyGroup, key: &Key, ns: Namespace) -> Option<Cell> {
        let slot = self.slot(kg);
        self.tables[state][slot].remove(&(key.clone(), ns))
    }

    fn entries(&self, state: StateId) -> Vec<(KeyGroup, Key, Namespace)> {
        let mut out = Vec::new();
        for (i, t) in self.tables[state].iter().enumerate() {
            let kg = self.key_groups.start + i as KeyGroup;
            out.extend(t.keys().map(|(k, ns)| (kg, k.clone(), *ns)));
        }
        out
    }

    fn len(&self) -> usize {
        self.tables.iter().flatten().map(|t| t.len()).sum()
    }

    fn key_groups(&self) -> Range<KeyGroup> {
        self.key_groups.clone()
    }

    fn snapshot_key_group(&self, kg: KeyGroup, out: &mut Vec<u8>) -> Result<()> {
        if !self.key_groups.contains(&kg) {
            return Ok(());
        }
        let slot = usize::from(kg - self.key_groups.start);
        let used: Vec<usize> = (0..self.names.len())
            .filter(|s| !self.tables[*s][slot].is_empty())
            .collect();
        out.extend_from_slice(&(used.len() as u32).to_le_bytes());
        for s in used {
            let table = &self.tables[s][slot];
            put_bytes(out, self.names[s].as_bytes());
            out.extend_from_slice(&(table.len() as u64).to_le_bytes());
            for ((key, ns), cell) in table {
                put_value(out, key, &self.names[s])?;
                out.extend_from_slice(&ns.start.to_le_bytes());
                out.extend_from_slice(&ns.end.to_le_bytes());
                // Length placeholder, value encoded in place, then the length patched in.
                let at = out.len();
                out.extend_from_slice(&[0u8; 4]);
                self.codecs[s]
                    .encode(cell, out)
                    .map_err(|e| Error::state(&self.names[s], e))?;
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
        Ok(())
    }

    fn key_group_len(&self, kg: KeyGroup) -> usize {
        if !self.key_groups.contains(&kg) {
            return 0;
        }
        let slot = usize::from(kg - self.key_groups.start);
        self.tables.iter().map(|t| t[slot].len()).sum()
    }

    fn restore_key_groups(&mut self, groups: &[(KeyGroup, &[u8])]) -> Result<()> {
        for (kg, _) in groups {
            if !self.key_groups.contains(kg) {
                return Err(Error::Checkpoint(format!(
                    "key group {kg} restored into a store for key groups {:?}",
                    self.key_groups
                )));
            }
        }
        // Key groups decode independently: split them over the machine's cores, each worker
        // building whole tables, then install the tables here.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(groups.len())
            .max(1);
        let names = &self.names;
        let codecs = &self.codecs;
        let chunk = groups.len().div_ceil(workers).max(1);
        type Decoded = Result<Vec<(KeyGroup, Vec<Table>)>>;
        let decoded: Vec<Decoded> = std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(kg, bytes)| Ok((*kg, decode_key_group(names, codecs, bytes)?)))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Checkpoint("a state restore worker panicked".into()))
                    })
                })
                .collect()
        });
        for part in decoded {
            for (kg, tables) in part? {
                let slot = usize::from(kg - self.key_groups.start);
                for (state, table) in tables.into_iter().enumerate() {
                    let target = &mut self.tables[state][slot];
                    if target.is_empty() {
                        *target = table;
                    } else {
                        target.extend(table);
                    }
                }
            }
        }
        Ok(())
    }

    fn restore_key_group(&mut self, kg: KeyGroup, bytes: &[u8]) -> Result<()> {
        self.restore_key_groups(&[(kg, bytes)])
    }
}

/// Decodes one key group's blob into one table per registered state.
fn decode_key_group(
    names: &[String],
    codecs: &[Arc<dyn CellCodec>],
    bytes: &[u8],
) -> Result<Vec<Table>> {
    let mut tables: Vec<Table> = names.iter().map(|_| Table::default()).collect();
    let mut r = ByteReader::new(bytes, "keyed state");
    let states = r.u32()?;
    for _ in 0..states {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        let count = r.u64()?;
        let id = names.iter().position(|n| *n == name);
        match id {
            Some(id) => tables[id].reserve(count as usize),
            None => tracing::warn!(
                state = %name,
                "snapshot holds a state the job no longer registers; skipped"
            ),
        }
        for _ in 0..count {
            let key: Key = r.value()?;
            let ns = Namespace {
                start: r.i64()?,
                end: r.i64()?,
            };
            let value = r.bytes()?;
            if let Some(id) = id {
                let cell = codecs[id]
                    .decode(value)
                    .map_err(|e| Error::state(&name, e))?;
                tables[id].insert((key, ns), cell);
            }
        }
    }
    Ok(tables)
}
