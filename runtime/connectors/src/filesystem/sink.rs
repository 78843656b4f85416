//! The exactly-once file sink: part files, pending until their checkpoint completes (see the
//! module doc), optionally partitioned (`PARTITIONED BY`: one directory per partition value,
//! `dt=2024-01-01/`, the partition columns left out of the files, as Flink's) and rolled by
//! size or age (`sink.rolling-policy.*`) besides on every checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use flink_rs_core::checkpoint::{CheckpointId, CheckpointStorage, RestoredState};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Sink, SinkWriter};

use super::destination::Destination;
use super::partition;
use crate::file_format::FileFormat;

/// Writes part files per subtask into a directory, local or in object storage.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    /// Object storage (`s3://…`, `gs://…`, `az://…`) instead of the local directory `dir`.
    store: Option<CheckpointStorage>,
    format: FileFormat,
    rolling: RollingPolicy,
    /// Partition columns (`PARTITIONED BY`), in directory order.
    partition_by: Vec<String>,
    /// The directory name of a NULL partition value (`partition.default-name`).
    default_partition: String,
}

/// When a part file is closed besides at every checkpoint (Flink's
/// `sink.rolling-policy.file-size` and `sink.rolling-policy.rollover-interval`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RollingPolicy {
    pub file_size: Option<u64>,
    pub rollover_interval: Option<Duration>,
}

impl FileSink {
    /// Writes `format` files into the directory `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>, format: FileFormat) -> Self {
        FileSink {
            dir: dir.into(),
            store: None,
            format,
            rolling: RollingPolicy::default(),
            partition_by: Vec::new(),
            default_partition: partition::DEFAULT_NAME.into(),
        }
    }

    /// Writes `format` files below `url` in object storage (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`), opened with `options` (the `s3.*` keys). Exactly-once as in a directory:
    /// a part is written to a local file, uploaded as a hidden `.part-….inprogress` object on
    /// the checkpoint barrier, and copied to its final name when the checkpoint completes.
    pub fn in_object_store(
        url: &str,
        options: &BTreeMap<String, String>,
        format: FileFormat,
    ) -> Result<Self> {
        Ok(FileSink {
            store: Some(CheckpointStorage::open(url, options)?),
            ..Self::new(url, format)
        })
    }

    /// One directory per value of `columns` (`c=v/…`), the columns left out of the files;
    /// a NULL value goes to `default_name`.
    pub fn partitioned_by(mut self, columns: Vec<String>, default_name: &str) -> Self {
        self.partition_by = columns;
        self.default_partition = default_name.to_string();
        self
    }

    /// Also closes a part when it reaches a size or an age.
    pub fn rolling(mut self, policy: RollingPolicy) -> Self {
        self.rolling = policy;
        self
    }
}

/// A file that counts what is written through it (for the size rolling policy).
struct Counting {
    file: File,
    written: Arc<AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

type Out = BufWriter<Counting>;

enum Encoder {
    Csv(Box<arrow::csv::Writer<Out>>),
    Json(
        arrow::json::Writer<Out, arrow::json::writer::LineDelimited>,
        crate::file_format::JsonFormat,
    ),
    Raw(Out),
}

/// A part file that is closed and waits for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingFile {
    /// Checkpoint that must complete before it is published.
    checkpoint: CheckpointId,
    /// Hidden in-progress name and final name, relative to the sink's directory (a
    /// partition's directory first).
    in_progress: String,
    final_name: String,
}

/// A part file being written.
struct OpenPart {
    encoder: Encoder,
    in_progress: String,
    final_name: String,
    written: Arc<AtomicU64>,
    opened: Instant,
}

struct FileWriter {
    dest: Destination,
    format: FileFormat,
    rolling: RollingPolicy,
    subtask: usize,
    parallelism: usize,
    /// Distinguishes this writer's files from every other attempt's.
    token: u64,
    counter: u64,
    /// Open parts by partition directory (`""` unpartitioned).
    open: BTreeMap<String, OpenPart>,
    /// Parts rolled since the last barrier: pending for the next checkpoint.
    rolled: Vec<(String, String)>,
    pending: Vec<PendingFile>,
    /// Partition columns' indices in the input, and the columns written (the others).
    partition_cols: Vec<(String, usize)>,
    data_cols: Vec<usize>,
    default_partition: String,
}

/// `(token, subtask)` of a part file `[dir/][.]part-{token}-{subtask}-{n}.{ext}[.inprogress]`.
fn parse_part(path: &str) -> Option<(u64, usize)> {
    let name = path.rsplit('/').next()?;
    let rest = name.trim_start_matches('.').strip_prefix("part-")?;
    let mut it = rest.split(['-', '.']);
    let token = u64::from_str_radix(it.next()?, 16).ok()?;
    let subtask = it.next()?.parse().ok()?;
    Some((token, subtask))
}

impl FileWriter {
    fn open_part(&mut self, dir: &str) -> Result<&mut OpenPart> {
        if !self.open.contains_key(dir) {
            let name = format!(
                "part-{:016x}-{}-{}.{}",
                self.token,
                self.subtask,
                self.counter,
                self.format.extension()
            );
            self.counter += 1;
            let in_progress = format!("{dir}.{name}.inprogress");
            let path = self.dest.create_local(&in_progress)?;
            let written = Arc::new(AtomicU64::new(0));
            let file = BufWriter::new(Counting {
                file: File::create(&path).map_err(|e| Error::io("create", &path, e))?,
                written: written.clone(),
            });
            let encoder = match &self.format {
                FileFormat::Csv(csv) => Encoder::Csv(Box::new(csv.writer(file))),
                FileFormat::Json(json) => Encoder::Json(json.writer(file), json.clone()),
                FileFormat::Raw => Encoder::Raw(file),
            };
            self.open.insert(
                dir.to_string(),
                OpenPart {
                    encoder,
                    in_progress,
                    final_name: format!("{dir}{name}"),
                    written,
                    opened: Instant::now(),
                },
            );
        }
        self.open
            .get_mut(dir)
            .ok_or_else(|| Error::state("file sink", "no open part file"))
    }

    /// Flushes and closes a part file, durable where a checkpoint finds it: (in-progress
    /// name, final name).
    fn seal(&self, part: OpenPart) -> Result<(String, String)> {
        let path = self.dest.local_path(&part.in_progress);
        let flush_err = |e| Error::io("flush", path.clone(), e);
        let out = match part.encoder {
            Encoder::Csv(w) => w.into_inner(),
            Encoder::Json(mut w, _) => {
                w.finish()?;
                w.into_inner()
            }
            Encoder::Raw(w) => w,
        };
        let counting = out.into_inner().map_err(|e| flush_err(e.into_error()))?;
        // Durable before it is named in a checkpoint.
        counting.file.sync_all().map_err(flush_err)?;
        drop(counting);
        self.dest.seal(&part.in_progress)?;
        Ok((part.in_progress, part.final_name))
    }

    /// Closes every open part, and those rolled since the last barrier, as pending for
    /// `checkpoint`.
    fn close_parts(&mut self, checkpoint: CheckpointId) -> Result<()> {
        for (_, part) in std::mem::take(&mut self.open) {
            let sealed = self.seal(part)?;
            self.rolled.push(sealed);
        }
        for (in_progress, final_name) in self.rolled.drain(..) {
            self.pending.push(PendingFile {
                checkpoint,
                in_progress,
                final_name,
            });
        }
        Ok(())
    }

    /// Closes the part of `dir` when the rolling policy says so.
    fn maybe_roll(&mut self, dir: &str) -> Result<()> {
        let due = self.open.get(dir).is_some_and(|p| {
            self.rolling
                .file_size
                .is_some_and(|s| p.written.load(Ordering::Relaxed) >= s)
                || self
                    .rolling
                    .rollover_interval
                    .is_some_and(|i| p.opened.elapsed() >= i)
        });
        if due && let Some(part) = self.open.remove(dir) {
            let sealed = self.seal(part)?;
            self.rolled.push(sealed);
        }
        Ok(())
    }

    /// Publishes a pending file; idempotent (a file already published is left alone).
    fn publish(&self, f: &PendingFile) -> Result<()> {
        self.dest.publish(&f.in_progress, &f.final_name)
    }

    fn write_part(&mut self, dir: &str, batch: &RecordBatch) -> Result<()> {
        let in_progress = self.open_part(dir)?.in_progress.clone();
        let path = self.dest.local_path(&in_progress);
        let part = self
            .open
            .get_mut(dir)
            .ok_or_else(|| Error::state("file sink", "no open part file"))?;
        match &mut part.encoder {
            Encoder::Csv(w) => crate::file_format::write_csv(w, batch)?,
            Encoder::Json(w, json) => w.write(&json.prepare(batch)?)?,
            Encoder::Raw(w) => {
                for r in 0..batch.num_rows() {
                    let vals: Vec<String> = flink_rs_core::rows::row_at(batch, r)
                        .iter()
                        .map(|v| v.to_string())
                        .collect();
                    writeln!(w, "{}", vals.join(",")).map_err(|e| Error::io("write", &path, e))?;
                }
            }
        }
        self.maybe_roll(dir)
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if let Destination::Store { staging, .. } = &self.dest {
            // Parts of this writer not yet uploaded are rows a restart produces again.
            let _ = std::fs::remove_dir_all(staging);
        }
    }
}

impl SinkWriter for FileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.partition_cols.is_empty() {
            return self.write_part("", batch);
        }
        let dirs = partition::directories(batch, &self.partition_cols, &self.default_partition)?;
        let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (r, d) in dirs.iter().enumerate() {
            rows.entry(d.as_str()).or_default().push(r as u32);
        }
        let data = batch.project(&self.data_cols)?;
        for (dir, idx) in rows {
            let part = if idx.len() == batch.num_rows() {
                data.clone()
            } else {
                let idx = UInt32Array::from(idx);
                let cols = data
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                RecordBatch::try_new(data.schema(), cols)?
            };
            self.write_part(dir, &part)?;
        }
        Ok(())
    }

    fn recover(&mut self, restored: &RestoredState) -> Result<()> {
        let mut keep = std::collections::HashSet::new();
        for (old_subtask, bytes) in &restored.operator {
            let files: Vec<PendingFile> = bincode::deserialize(bytes)
                .map_err(|e| Error::state("file sink pending files", e))?;
            for f in files {
                keep.insert(f.in_progress.clone());
                // The checkpoint these belong to completed: publish them. Each old writer's
                // files are published by exactly one new writer.
                if old_subtask % self.parallelism.max(1) == self.subtask {
                    self.publish(&f)?;
                }
            }
        }
        // In-progress files of attempts that never completed a checkpoint hold rows that
        // will be produced again: delete them (each stale file by exactly one writer).
        for name in self.dest.list()? {
            if !name.ends_with(".inprogress") || keep.contains(&name) {
                continue;
            }
            if let Some((token, subtask)) = parse_part(&name) {
                if token != self.token && subtask % self.parallelism.max(1) == self.subtask {
                    self.dest.delete(&name)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.close_parts(flink_rs_core::checkpoint::FINAL_CHECKPOINT)
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>> {
        if checkpoint != flink_rs_core::checkpoint::FINAL_CHECKPOINT {
            self.close_parts(checkpoint)?;
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        bincode::serialize(&self.pending)
            .map(Some)
            .map_err(|e| Error::state("file sink pending files", e))
    }

    fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|f| f.checkpoint <= checkpoint);
        self.pending = later;
        for f in &ready {
            self.publish(f)?;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let token = flink_rs_core::key::mix64(
            nanos ^ ((subtask as u64) << 48) ^ u64::from(std::process::id()),
        );
        let mut partition_cols = Vec::new();
        for c in &self.partition_by {
            let i = schema.index_of(c).map_err(|_| {
                Error::config(
                    "PARTITIONED BY",
                    format!("the partition column `{c}` is not in the rows written"),
                )
            })?;
            partition_cols.push((c.clone(), i));
        }
        let data_cols: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !partition_cols.iter().any(|(_, p)| p == i))
            .collect();
        let dest = match &self.store {
            None => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| Error::io("create", &self.dir, e))?;
                Destination::Local(self.dir.clone())
            }
            Some(storage) => {
                let staging = std::env::temp_dir().join(format!("flink-rs-file-sink-{token:016x}"));
                std::fs::create_dir_all(&staging).map_err(|e| Error::io("create", &staging, e))?;
                Destination::Store {
                    storage: storage.clone(),
                    staging,
                }
            }
        };
        Ok(Box::new(FileWriter {
            dest,
            format: self.format.clone(),
            rolling: self.rolling,
            subtask,
            parallelism,
            token,
            counter: 0,
            open: BTreeMap::new(),
            rolled: Vec::new(),
            pending: Vec::new(),
            partition_cols,
            data_cols,
            default_partition: self.default_partition.clone(),
        }))
    }
}
