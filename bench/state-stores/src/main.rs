//! `cargo run --release -- STORE KEYS OPS BUDGET_MIB` with STORE `fjall` or `slatedb`.
//!
//! The access pattern of keyed window state in an LSM: keys are a 2-byte key group then an
//! 8-byte key (so a key group is one key range), values an 8-byte accumulator.
//! 1. load: one write per key, in key order of arrival (random);
//! 2. rmw: OPS read-modify-writes of random keys (a window aggregate's per-record path);
//! 3. checkpoint: what the engine must do before it can upload its files (fjall: flush the
//!    memtable to a table file; slatedb: flush the memtable to an SST in the object store).
//!
//! Prints one JSON line: rates, checkpoint time, bytes on disk, peak RSS.

use std::sync::Arc;

/// Records per write batch in the read-modify-write phase.
const BATCH: u64 = 8192;
use std::time::Instant;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn key(k: u64) -> [u8; 10] {
    let mut out = [0u8; 10];
    out[..2].copy_from_slice(&((mix(k) % 128) as u16).to_be_bytes());
    out[2..].copy_from_slice(&k.to_be_bytes());
    out
}

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

struct Figures {
    load_s: f64,
    rmw_s: f64,
    checkpoint_s: f64,
}

fn run_fjall(
    dir: &std::path::Path,
    keys: u64,
    ops: u64,
    budget: u64,
) -> Result<Figures, Box<dyn std::error::Error>> {
    use fjall::{Database, KeyspaceCreateOptions};
    // Half the budget for the block cache, half for write buffers.
    let db = Database::builder(dir)
        .cache_size(budget / 2)
        .max_write_buffer_size(Some(budget / 2))
        .manual_journal_persist(true)
        .open()?;
    let ks = db.keyspace("state", || {
        KeyspaceCreateOptions::default().manual_journal_persist(true)
    })?;
    let t = Instant::now();
    for i in 0..keys {
        ks.insert(key(mix(i) % keys), 1u64.to_le_bytes())?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Reads one by one, the writes of each batch of records as one write batch (the engine
    // processes Arrow batches).
    let mut i = 0;
    while i < ops {
        let end = (i + BATCH).min(ops);
        let mut wb = db.batch();
        for j in i..end {
            let k = key(mix(j ^ 0x5eed) % keys);
            let v = match ks.get(k)? {
                Some(b) => u64::from_le_bytes(b[..8].try_into()?),
                None => 0,
            };
            wb.insert(&ks, k, (v + 1).to_le_bytes());
        }
        wb.commit()?;
        i = end;
    }
    let rmw_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    ks.rotate_memtable_and_wait()?;
    let checkpoint_s = t.elapsed().as_secs_f64();
    Ok(Figures {
        load_s,
        rmw_s,
        checkpoint_s,
    })
}

async fn run_slatedb(
    dir: &std::path::Path,
    keys: u64,
    ops: u64,
    budget: u64,
) -> Result<Figures, Box<dyn std::error::Error>> {
    use slatedb::config::{PutOptions, Settings, WriteOptions};
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?);
    let settings = Settings {
        // Checkpoints make the state durable, as in Flink's backends: no write-ahead log.
        wal_enabled: false,
        flush_interval: None,
        max_unflushed_bytes: (budget / 2) as usize,
        l0_sst_size_bytes: (budget / 8) as usize,
        ..Settings::default()
    };
    let db = slatedb::Db::builder("state", store)
        .with_settings(settings)
        .build()
        .await?;
    let w = WriteOptions::default();
    let p = PutOptions::default();
    let t = Instant::now();
    for i in 0..keys {
        db.put_with_options(key(mix(i) % keys), 1u64.to_le_bytes(), &p, &w)
            .await?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut i = 0;
    while i < ops {
        let end = (i + BATCH).min(ops);
        let mut wb = slatedb::WriteBatch::new();
        for j in i..end {
            let k = key(mix(j ^ 0x5eed) % keys);
            let v = match db.get(k).await? {
                Some(b) => u64::from_le_bytes(b[..8].try_into()?),
                None => 0,
            };
            wb.put(k, (v + 1).to_le_bytes());
        }
        db.write_with_options(wb, &w).await?;
        i = end;
    }
    let rmw_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    db.flush().await?;
    let checkpoint_s = t.elapsed().as_secs_f64();
    db.close().await?;
    Ok(Figures {
        load_s,
        rmw_s,
        checkpoint_s,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: state-store-bench fjall|slatedb KEYS OPS BUDGET_MIB";
    let [_, store, keys, ops, budget] = args.as_slice() else {
        return Err(usage.into());
    };
    let (keys, ops): (u64, u64) = (keys.parse()?, ops.parse()?);
    let budget = budget.parse::<u64>()? << 20;
    let dir = tempfile::tempdir()?;
    let f = match store.as_str() {
        "fjall" => run_fjall(dir.path(), keys, ops, budget)?,
        "slatedb" => run_slatedb(dir.path(), keys, ops, budget).await?,
        _ => return Err(usage.into()),
    };
    println!(
        "{{\"store\":\"{store}\",\"keys\":{keys},\"ops\":{ops},\"budget_mib\":{},\"load_per_s\":{:.0},\"rmw_per_s\":{:.0},\"checkpoint_s\":{:.3},\"bytes_on_disk\":{},\"peak_rss_bytes\":{}}}",
        budget >> 20,
        keys as f64 / f.load_s,
        ops as f64 / f.rmw_s,
        f.checkpoint_s,
        dir_bytes(dir.path()),
        peak_rss()
    );
    Ok(())
}
