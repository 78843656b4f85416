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

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use flink_rs_core::checkpoint::{CheckpointId, CheckpointStorage};
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

pub use crate::file_format::FileFormat;

mod destination;
mod partition;
mod sink;

pub use partition::DEFAULT_NAME as DEFAULT_PARTITION_NAME;
pub use sink::{FileSink, RollingPolicy};

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

    /// The reader of subtask `subtask`: every `parallelism`-th file, from the positions in
    /// `known` (by path; the start for the others).
    fn reader(
        &self,
        subtask: usize,
        parallelism: usize,
        known: &HashMap<String, (u64, bool)>,
    ) -> Result<Box<dyn SourceReader>> {
        let files: Vec<PathBuf> = self
            .files()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism.max(1) == subtask)
            .map(|(_, f)| f)
            .collect();
        let progress = files
            .iter()
            .map(|f| {
                known
                    .get(&f.display().to_string())
                    .copied()
                    .unwrap_or((0, false))
            })
            .collect();
        Ok(Box::new(FileReader {
            source: self.clone(),
            files,
            progress,
            next_file: 0,
            current: None,
        }))
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
        self.reader(subtask, parallelism, &HashMap::new())
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        let mut known = HashMap::new();
        for (_, b) in states {
            let positions: Vec<FilePosition> =
                bincode::deserialize(b).map_err(|e| Error::state("file source position", e))?;
            for p in positions {
                known.insert(p.path, (p.rows, p.done));
            }
        }
        self.reader(subtask, parallelism, &known)
    }
}
