//! `filesystem`: read and write CSV, JSON lines and raw text files.
//!
//! The source reads a file or every file of a directory (sorted by name); each file is a split,
//! assigned round-robin to subtasks. Its checkpointed position is the number of rows read from
//! each file, so it resumes exactly where it was, at any parallelism.
//!
//! The sink is exactly-once by two-phase commit (Flink's `FileSink` with the on-checkpoint
//! rolling policy): rows go to a hidden `.part-….inprogress` file; on a checkpoint barrier the
//! file is closed and becomes *pending* (its name is stored in the checkpoint); when the
//! checkpoint completes, pending files are renamed to their final `part-…` names (an atomic
//! rename). After a failure, the pending files of the restored checkpoint are published and
//! in-progress files of attempts that never completed a checkpoint are deleted, so the
//! directory's final files hold every row exactly once. In object storage (`s3://…`), the
//! same protocol with an upload on the barrier and a copy to the final name on completion
//! ([`FileSink::in_object_store`]).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use flink_rs_core::checkpoint::{CheckpointId, CheckpointStorage, RestoredState};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Sink, SinkWriter, Source, SourcePoll, SourceReader};

pub use crate::file_format::FileFormat;

/// Reads files of one format with a declared schema.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    /// Object storage (`s3://…`) instead of the local `path`.
    store: Option<CheckpointStorage>,
    format: FileFormat,
    schema: SchemaRef,
    batch_size: usize,
}

impl FileSource {
    /// Reads `path` (a file or a directory of files) as `format` with `schema`.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat, schema: SchemaRef) -> Self {
        FileSource {
            path: path.into(),
            store: None,
            format,
            schema,
            batch_size: 8192,
        }
    }

    /// Reads the object at `url` in object storage (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`), or every object below it, opened with `options` (the `s3.*` keys). An
    /// object is read into memory whole before its rows are parsed.
    pub fn in_object_store(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
        format: FileFormat,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(FileSource {
            store: Some(CheckpointStorage::open(url, options)?),
            ..Self::new(url, format, schema)
        })
    }

    /// Reads text lines as a single column `line`.
    pub fn lines(path: impl Into<PathBuf>) -> Self {
        Self::new(
            path,
            FileFormat::Raw,
            Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)])),
        )
    }

    /// Rows per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        if let Some(storage) = &self.store {
            let mut names: Vec<String> = storage
                .list_files("")?
                .into_iter()
                .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
                .collect();
            names.sort();
            if names.is_empty() {
                // The URL names one object (or nothing, which is the error).
                if storage.size("")?.is_none() {
                    return Err(Error::User(format!(
                        "{}: no such object, and no objects below it",
                        storage.url()
                    )));
                }
                names.push(String::new());
            }
            return Ok(names.into_iter().map(PathBuf::from).collect());
        }
        let meta = std::fs::metadata(&self.path).map_err(|e| Error::io("read", &self.path, e))?;
        if meta.is_file() {
            return Ok(vec![self.path.clone()]);
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io("list", &self.path, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.path, e))?;
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
            if p.is_file() && !hidden {
                files.push(p);
            }
        }
        files.sort();
        Ok(files)
    }
}

type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

struct FileReader {
    source: FileSource,
    files: Vec<PathBuf>,
    /// Rows read so far and whether the file is done, per file of `files`.
    progress: Vec<(u64, bool)>,
    next_file: usize,
    /// The open file: its index, its batches, and rows gone through (read or skipped).
    current: Option<(usize, BatchIter, usize)>,
}

/// One file's position in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FilePosition {
    path: String,
    rows: u64,
    done: bool,
}

impl FileReader {
    fn open(&self, path: &Path) -> Result<BatchIter> {
        let (file, p): (Box<dyn std::io::Read + Send>, PathBuf) = match &self.source.store {
            None => (
                Box::new(File::open(path).map_err(|e| Error::io("open", path, e))?),
                path.to_path_buf(),
            ),
            Some(storage) => {
                let name = path.display().to_string();
                let url = PathBuf::from(if name.is_empty() {
                    storage.url().to_string()
                } else {
                    storage.url_of(&name)
                });
                let bytes = storage
                    .get(&name)?
                    .ok_or_else(|| Error::User(format!("{}: the object is gone", url.display())))?;
                (Box::new(std::io::Cursor::new(bytes)), url)
            }
        };
        let schema = self.source.schema.clone();
        let bs = self.source.batch_size;
        Ok(match &self.source.format {
            FileFormat::Csv(csv) => {
                let r = csv.reader(schema, bs, BufReader::new(file))?;
                Box::new(
                    r.map(move |b| b.map_err(|e| Error::User(format!("{}: {e}", p.display())))),
                )
            }
            FileFormat::Json(_) => {
                let r = arrow::json::ReaderBuilder::new(schema)
                    .with_batch_size(bs)
                    .build(BufReader::new(file))?;
                Box::new(
                    r.map(move |b| b.map_err(|e| Error::User(format!("{}: {e}", p.display())))),
                )
            }
            FileFormat::Raw => {
                let mut lines = BufReader::new(file).lines();
                Box::new(std::iter::from_fn(move || {
                    let mut chunk = Vec::new();
                    for line in lines.by_ref() {
                        match line {
                            Ok(l) => chunk.push(l),
                            Err(e) => return Some(Err(Error::io("read", &p, e))),
                        }
                        if chunk.len() >= bs {
                            break;
                        }
                    }
                    if chunk.is_empty() {
                        return None;
                    }
                    Some(
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![Arc::new(StringArray::from(chunk))],
                        )
                        .map_err(Error::from),
                    )
                }))
            }
        })
    }
}

impl SourceReader for FileReader {
    fn splits(&self) -> usize {
        self.files.len()
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.current.is_none() {
            while self.next_file < self.files.len() && self.progress[self.next_file].1 {
                self.next_file += 1;
            }
            if self.next_file >= self.files.len() {
                return Ok(SourcePoll::Finished);
            }
            let it = self.open(&self.files[self.next_file])?;
            self.current = Some((self.next_file, it, 0));
            self.next_file += 1;
        }
        let Some((split, it, seen)) = self.current.as_mut() else {
            return Ok(SourcePoll::Finished);
        };
        let split = *split;
        loop {
            match it.next() {
                Some(batch) => {
                    let batch = batch?;
                    let (read, _) = &mut self.progress[split];
                    // Rows before the restored position were read before the failure.
                    let skip = (*read as usize).saturating_sub(*seen);
                    *seen += batch.num_rows();
                    if skip >= batch.num_rows() {
                        continue;
                    }
                    let batch = batch.slice(skip, batch.num_rows() - skip);
                    *read += batch.num_rows() as u64;
                    return Ok(SourcePoll::Batch { split, batch });
                }
                None => {
                    self.current = None;
                    self.progress[split].1 = true;
                    return Ok(SourcePoll::SplitFinished(split));
                }
            }
        }
    }

    fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<Vec<u8>> {
        let positions: Vec<FilePosition> = self
            .files
            .iter()
            .zip(&self.progress)
            .map(|(f, (rows, done))| FilePosition {
                path: f.display().to_string(),
                rows: *rows,
                done: *done,
            })
            .collect();
        bincode::serialize(&positions).map_err(|e| Error::state("file source position", e))
    }
}

impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        let files: Vec<PathBuf> = self
            .files()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism.max(1) == subtask)
            .map(|(_, f)| f)
            .collect();
        Ok(Box::new(FileReader {
            source: self.clone(),
            progress: vec![(0, false); files.len()],
            files,
            next_file: 0,
            current: None,
        }))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        let mut known = std::collections::HashMap::new();
        for (_, b) in states {
            let positions: Vec<FilePosition> =
                bincode::deserialize(b).map_err(|e| Error::state("file source position", e))?;
            for p in positions {
                known.insert(p.path, (p.rows, p.done));
            }
        }
        let mut r = FileReader {
            source: self.clone(),
            files: Vec::new(),
            progress: Vec::new(),
            next_file: 0,
            current: None,
        };
        let files: Vec<PathBuf> = self
            .files()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism.max(1) == subtask)
            .map(|(_, f)| f)
            .collect();
        r.progress = files
            .iter()
            .map(|f| {
                known
                    .get(&f.display().to_string())
                    .copied()
                    .unwrap_or((0, false))
            })
            .collect();
        r.files = files;
        Ok(Box::new(r))
    }
}

/// Writes one part file per subtask into a directory, local or in object storage.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    /// Object storage (`s3://…`, `gs://…`, `az://…`) instead of the local directory `dir`.
    store: Option<CheckpointStorage>,
    format: FileFormat,
}

impl FileSink {
    /// Writes `format` files into the directory `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>, format: FileFormat) -> Self {
        FileSink {
            dir: dir.into(),
            store: None,
            format,
        }
    }

    /// Writes `format` files below `url` in object storage (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`), opened with `options` (the `s3.*` keys). Exactly-once as in a directory:
    /// a part is written to a local file, uploaded as a hidden `.part-….inprogress` object on
    /// the checkpoint barrier, and copied to its final name when the checkpoint completes.
    pub fn in_object_store(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
        format: FileFormat,
    ) -> Result<Self> {
        Ok(FileSink {
            dir: PathBuf::from(url),
            store: Some(CheckpointStorage::open(url, options)?),
            format,
        })
    }
}

/// Where a writer's part files go.
enum Destination {
    /// A local directory: parts are written in it, published by an atomic rename.
    Local(PathBuf),
    /// Object storage: parts are written to `staging` (a local directory of this writer),
    /// uploaded on the barrier and published by a copy to their final name.
    Store {
        storage: CheckpointStorage,
        staging: PathBuf,
    },
}

impl Destination {
    /// Where the open part file `name` is written locally.
    fn local_path(&self, name: &str) -> PathBuf {
        match self {
            Destination::Local(dir) => dir.join(name),
            Destination::Store { staging, .. } => staging.join(name),
        }
    }

    /// A closed part file, durable where a checkpoint can find it.
    fn seal(&self, name: &str) -> Result<()> {
        if let Destination::Store { storage, staging } = self {
            let local = staging.join(name);
            storage.put_file(name, &local)?;
            std::fs::remove_file(&local).map_err(|e| Error::io("delete", &local, e))?;
        }
        Ok(())
    }

    /// Publishes a sealed part under its final name; idempotent (a part already published
    /// is left alone).
    fn publish(&self, in_progress: &str, final_name: &str) -> Result<()> {
        match self {
            Destination::Local(dir) => {
                let (from, to) = (dir.join(in_progress), dir.join(final_name));
                match std::fs::rename(&from, &to) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(()),
                    Err(e) => Err(Error::io("publish", &to, e)),
                }
            }
            Destination::Store { storage, .. } => {
                if storage.size(in_progress)?.is_some() {
                    storage.copy(in_progress, final_name)?;
                    storage.delete(in_progress)
                } else if storage.size(final_name)?.is_some() {
                    Ok(())
                } else {
                    Err(Error::state(
                        "file sink",
                        format!(
                            "{} is gone and {} was never published: the rows of a completed checkpoint are lost",
                            storage.url_of(in_progress),
                            storage.url_of(final_name)
                        ),
                    ))
                }
            }
        }
    }

    /// Names of the files in the directory.
    fn list(&self) -> Result<Vec<String>> {
        match self {
            Destination::Local(dir) => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                    let entry = entry.map_err(|e| Error::io("list", dir, e))?;
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            Destination::Store { storage, .. } => storage.list_files(""),
        }
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self {
            Destination::Local(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("delete", dir.join(name), e)),
            },
            Destination::Store { storage, .. } => storage.delete(name),
        }
    }
}

enum Encoder {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Json(
        arrow::json::Writer<BufWriter<File>, arrow::json::writer::LineDelimited>,
        crate::file_format::JsonFormat,
    ),
    Raw(BufWriter<File>),
}

/// A part file that is closed and waits for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingFile {
    /// Checkpoint that must complete before it is published.
    checkpoint: CheckpointId,
    /// Hidden in-progress name and final name, both in the sink's directory.
    in_progress: String,
    final_name: String,
}

/// The part file being written.
struct OpenPart {
    encoder: Encoder,
    in_progress: String,
    final_name: String,
    rows: usize,
}

struct FileWriter {
    dest: Destination,
    format: FileFormat,
    subtask: usize,
    parallelism: usize,
    /// Distinguishes this writer's files from every other attempt's.
    token: u64,
    counter: u64,
    current: Option<OpenPart>,
    pending: Vec<PendingFile>,
}

/// `(token, subtask)` of a part file name `[.]part-{token}-{subtask}-{n}.{ext}[.inprogress]`.
fn parse_part(name: &str) -> Option<(u64, usize)> {
    let rest = name.trim_start_matches('.').strip_prefix("part-")?;
    let mut it = rest.split(['-', '.']);
    let token = u64::from_str_radix(it.next()?, 16).ok()?;
    let subtask = it.next()?.parse().ok()?;
    Some((token, subtask))
}

impl FileWriter {
    fn open_part(&mut self) -> Result<&mut OpenPart> {
        if self.current.is_none() {
            let name = format!(
                "part-{:016x}-{}-{}.{}",
                self.token,
                self.subtask,
                self.counter,
                self.format.extension()
            );
            self.counter += 1;
            let in_progress = format!(".{name}.inprogress");
            let path = self.dest.local_path(&in_progress);
            let file =
                BufWriter::new(File::create(&path).map_err(|e| Error::io("create", &path, e))?);
            let encoder = match &self.format {
                FileFormat::Csv(csv) => Encoder::Csv(Box::new(csv.writer(file))),
                FileFormat::Json(json) => Encoder::Json(json.writer(file), json.clone()),
                FileFormat::Raw => Encoder::Raw(file),
            };
            self.current = Some(OpenPart {
                encoder,
                in_progress,
                final_name: name,
                rows: 0,
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| Error::state("file sink", "no open part file"))
    }

    /// Flushes and closes the open part file (if it has rows) as pending for `checkpoint`.
    fn close_part(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let path = self.dest.local_path(&part.in_progress);
        let flush_err = |e| Error::io("flush", path.clone(), e);
        let file = match part.encoder {
            Encoder::Csv(w) => w.into_inner(),
            Encoder::Json(mut w, _) => {
                w.finish()?;
                w.into_inner()
            }
            Encoder::Raw(w) => w,
        };
        let file = file.into_inner().map_err(|e| flush_err(e.into_error()))?;
        // Durable before it is named in a checkpoint.
        file.sync_all().map_err(flush_err)?;
        drop(file);
        self.dest.seal(&part.in_progress)?;
        self.pending.push(PendingFile {
            checkpoint,
            in_progress: part.in_progress,
            final_name: part.final_name,
        });
        Ok(())
    }

    /// Publishes a pending file; idempotent (a file already published is left alone).
    fn publish(&self, f: &PendingFile) -> Result<()> {
        self.dest.publish(&f.in_progress, &f.final_name)
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
        self.open_part()?;
        let dest = &self.dest;
        let part = self
            .current
            .as_mut()
            .ok_or_else(|| Error::state("file sink", "no open part file"))?;
        part.rows += batch.num_rows();
        match &mut part.encoder {
            Encoder::Csv(w) => crate::file_format::write_csv(w, batch)?,
            Encoder::Json(w, json) => w.write(&json.prepare(batch)?)?,
            Encoder::Raw(w) => {
                for r in 0..batch.num_rows() {
                    let vals: Vec<String> = flink_rs_core::rows::row_at(batch, r)
                        .iter()
                        .map(|v| v.to_string())
                        .collect();
                    writeln!(w, "{}", vals.join(","))
                        .map_err(|e| Error::io("write", dest.local_path(&part.in_progress), e))?;
                }
            }
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
        self.close_part(flink_rs_core::checkpoint::FINAL_CHECKPOINT)
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>> {
        if checkpoint != flink_rs_core::checkpoint::FINAL_CHECKPOINT {
            self.close_part(checkpoint)?;
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
        _schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let token = flink_rs_core::key::mix64(
            nanos ^ ((subtask as u64) << 48) ^ u64::from(std::process::id()),
        );
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
            subtask,
            parallelism,
            token,
            counter: 0,
            current: None,
            pending: Vec::new(),
        }))
    }
}
