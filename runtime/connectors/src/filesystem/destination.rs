//! Where the file sink's part files go: a local directory, or object storage.

use std::path::PathBuf;

use flink_rs_core::checkpoint::CheckpointStorage;
use flink_rs_core::error::{Error, Result};

/// Where a writer's part files go.
pub(super) enum Destination {
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
    pub(super) fn local_path(&self, name: &str) -> PathBuf {
        match self {
            Destination::Local(dir) => dir.join(name),
            Destination::Store { staging, .. } => staging.join(name),
        }
    }

    /// `local_path(name)`, its directory (a partition's) created.
    pub(super) fn create_local(&self, name: &str) -> Result<PathBuf> {
        let path = self.local_path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        Ok(path)
    }

    /// A closed part file, durable where a checkpoint can find it.
    pub(super) fn seal(&self, name: &str) -> Result<()> {
        if let Destination::Store { storage, staging } = self {
            let local = staging.join(name);
            storage.put_file(name, &local)?;
            std::fs::remove_file(&local).map_err(|e| Error::io("delete", &local, e))?;
        }
        Ok(())
    }

    /// Publishes a sealed part under its final name; idempotent (a part already published
    /// is left alone).
    pub(super) fn publish(&self, in_progress: &str, final_name: &str) -> Result<()> {
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

    /// Paths of the files below the directory, partitions' included, relative to it.
    pub(super) fn list(&self) -> Result<Vec<String>> {
        match self {
            Destination::Local(dir) => {
                let mut names = Vec::new();
                let mut todo = vec![(dir.clone(), String::new())];
                while let Some((d, prefix)) = todo.pop() {
                    for entry in std::fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))? {
                        let entry = entry.map_err(|e| Error::io("list", &d, e))?;
                        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                        if is_dir {
                            todo.push((entry.path(), format!("{name}/")));
                        } else {
                            names.push(name);
                        }
                    }
                }
                Ok(names)
            }
            Destination::Store { storage, .. } => storage.list_all(""),
        }
    }

    pub(super) fn delete(&self, name: &str) -> Result<()> {
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
