//! `filesystem`: read and write CSV, JSON lines and raw text files.
//!
//! The source reads a file or every file of a directory (sorted by name); each file is a split,
//! assigned round-robin to subtasks. The sink writes one part file per subtask into a
//! directory, as `.inprogress` while running and renamed to its final name when its input ends,
//! so a reader never sees a half-written part file under a final name.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::source::{Sink, SinkWriter, Source, SourcePoll, SourceReader};

/// How file contents map to rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated values; `header` says whether the first line names the columns.
    Csv { header: bool },
    /// One JSON object per line.
    Json,
    /// One row per line, in a single Utf8 column (Flink's `raw` format).
    Raw,
}

impl FileFormat {
    fn extension(&self) -> &'static str {
        match self {
            FileFormat::Csv { .. } => "csv",
            FileFormat::Json => "json",
            FileFormat::Raw => "txt",
        }
    }
}

/// Reads files of one format with a declared schema.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    batch_size: usize,
}

impl FileSource {
    /// Reads `path` (a file or a directory of files) as `format` with `schema`.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat, schema: SchemaRef) -> Self {
        FileSource {
            path: path.into(),
            format,
            schema,
            batch_size: 8192,
        }
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
    next_file: usize,
    current: Option<(usize, BatchIter)>,
}

impl FileReader {
    fn open(&self, path: &Path) -> Result<BatchIter> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let schema = self.source.schema.clone();
        let bs = self.source.batch_size;
        let p = path.to_path_buf();
        Ok(match &self.source.format {
            FileFormat::Csv { header } => {
                let r = arrow::csv::ReaderBuilder::new(schema)
                    .with_header(*header)
                    .with_batch_size(bs)
                    .build(file)?;
                Box::new(
                    r.map(move |b| b.map_err(|e| Error::User(format!("{}: {e}", p.display())))),
                )
            }
            FileFormat::Json => {
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
            if self.next_file >= self.files.len() {
                return Ok(SourcePoll::Finished);
            }
            let it = self.open(&self.files[self.next_file])?;
            self.current = Some((self.next_file, it));
            self.next_file += 1;
        }
        let Some((split, it)) = self.current.as_mut() else {
            return Ok(SourcePoll::Finished);
        };
        let split = *split;
        match it.next() {
            Some(batch) => Ok(SourcePoll::Batch {
                split,
                batch: batch?,
            }),
            None => {
                self.current = None;
                Ok(SourcePoll::SplitFinished(split))
            }
        }
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
        let files = self
            .files()?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism.max(1) == subtask)
            .map(|(_, f)| f)
            .collect();
        Ok(Box::new(FileReader {
            source: self.clone(),
            files,
            next_file: 0,
            current: None,
        }))
    }
}

/// Writes one part file per subtask into a directory.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
}

impl FileSink {
    /// Writes `format` files into the directory `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>, format: FileFormat) -> Self {
        FileSink {
            dir: dir.into(),
            format,
        }
    }
}

enum Encoder {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Raw(BufWriter<File>),
}

struct FileWriter {
    encoder: Option<Encoder>,
    in_progress: PathBuf,
    final_path: PathBuf,
}

impl SinkWriter for FileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self.encoder.as_mut() {
            Some(Encoder::Csv(w)) => w.write(batch)?,
            Some(Encoder::Json(w)) => w.write(batch)?,
            Some(Encoder::Raw(w)) => {
                for r in 0..batch.num_rows() {
                    let vals: Vec<String> = crate::rows::row_at(batch, r)
                        .iter()
                        .map(|v| v.to_string())
                        .collect();
                    writeln!(w, "{}", vals.join(","))
                        .map_err(|e| Error::io("write", &self.in_progress, e))?;
                }
            }
            None => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let flush_err = |e| Error::io("flush", self.in_progress.clone(), e);
        match self.encoder.take() {
            Some(Encoder::Csv(w)) => w.into_inner().flush().map_err(flush_err)?,
            Some(Encoder::Json(mut w)) => {
                w.finish()?;
                w.into_inner().flush().map_err(flush_err)?
            }
            Some(Encoder::Raw(mut w)) => w.flush().map_err(flush_err)?,
            None => return Ok(()),
        }
        std::fs::rename(&self.in_progress, &self.final_path)
            .map_err(|e| Error::io("publish", &self.final_path, e))
    }
}

impl Sink for FileSink {
    fn create_writer(
        &self,
        subtask: usize,
        _parallelism: usize,
        _schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let name = format!("part-{subtask}-0.{}", self.format.extension());
        let final_path = self.dir.join(&name);
        let in_progress = self.dir.join(format!(".{name}.inprogress"));
        let file = BufWriter::new(
            File::create(&in_progress).map_err(|e| Error::io("create", &in_progress, e))?,
        );
        let encoder = match &self.format {
            FileFormat::Csv { header } => Encoder::Csv(Box::new(
                arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(file),
            )),
            FileFormat::Json => Encoder::Json(arrow::json::LineDelimitedWriter::new(file)),
            FileFormat::Raw => Encoder::Raw(file),
        };
        Ok(Box::new(FileWriter {
            encoder: Some(encoder),
            in_progress,
            final_path,
        }))
    }
}
