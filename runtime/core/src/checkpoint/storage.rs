//! Checkpoint storage over the `object_store` crate: a local directory (the default), S3,
//! Google Cloud Storage or Azure Blob Storage, chosen by the URL scheme.
//!
//! The engine's task threads never wait on storage: uploads run on a small shared tokio
//! runtime and report back through a callback. Reads (restore) and the few metadata calls are
//! blocking, which is what the job master wants at those points.
//!
//! Credentials come from the environment as each cloud's SDK reads them (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`), or from Flink's configuration keys: `s3.endpoint`,
//! `s3.access-key`, `s3.secret-key`, `s3.region`, `s3.path.style.access`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("checkpoint-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Checkpoint(format!("cannot start the storage runtime: {e}")))
}

/// A root location for checkpoints or savepoints.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    /// The directory, when the storage is a local one (reads map its files instead).
    local_dir: Option<std::path::PathBuf>,
    /// What it was opened with (credentials, endpoint): other paths of the same store
    /// open with them too.
    options: BTreeMap<String, String>,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("url", &self.url)
            .finish()
    }
}

fn os_err(path: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |source| Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

impl CheckpointStorage {
    /// Opens `url`: a local path, `file:///path`, `s3://bucket/prefix`, `gs://bucket/prefix`
    /// or `az://container/prefix` (also `abfs://`, `azure://`).
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let url = url.trim_end_matches('/').to_string();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r.to_string()),
            None => ("file".to_string(), url.clone()),
        };
        let mut local_dir = None;
        let (store, root): (Arc<dyn ObjectStore>, Path) = match scheme.as_str() {
            "file" => {
                let dir = if rest.is_empty() {
                    "/".to_string()
                } else {
                    rest
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io("create directory", &dir, e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(os_err(&url))?;
                local_dir = Some(std::path::PathBuf::from(&dir));
                (Arc::new(fs), Path::default())
            }
            "s3" | "s3a" => {
                let mut b =
                    object_store::aws::AmazonS3Builder::from_env().with_url(format!("s3://{rest}"));
                for (k, v) in options {
                    b = match k.as_str() {
                        "s3.endpoint" => {
                            b.with_endpoint(v).with_allow_http(v.starts_with("http://"))
                        }
                        "s3.access-key" => b.with_access_key_id(v),
                        "s3.secret-key" => b.with_secret_access_key(v),
                        "s3.region" => b.with_region(v),
                        "s3.path.style.access" => {
                            b.with_virtual_hosted_style_request(v.trim() != "true")
                        }
                        _ => b,
                    };
                }
                let s3 = b.build().map_err(os_err(&url))?;
                (Arc::new(s3), prefix_of(&rest))
            }
            "gs" => {
                let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(format!("gs://{rest}"))
                    .build()
                    .map_err(os_err(&url))?;
                (Arc::new(gcs), prefix_of(&rest))
            }
            "az" | "abfs" | "abfss" | "azure" => {
                let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(format!("{scheme}://{rest}"))
                    .build()
                    .map_err(os_err(&url))?;
                (Arc::new(az), prefix_of(&rest))
            }
            other => {
                return Err(Error::config(
                    "state.checkpoints.dir",
                    format!(
                        "unsupported scheme `{other}://` in `{url}`; use a path, file://, s3://, gs:// or az://"
                    ),
                ));
            }
        };
        Ok(CheckpointStorage {
            store,
            root,
            url,
            local_dir,
            options: options.clone(),
        })
    }

    /// Opens another path with this storage's options.
    pub fn open_other(&self, url: &str) -> Result<Self> {
        Self::open(url, &self.options)
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of `rel` below the root (what status and logs show).
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel.trim_start_matches('/'))
    }

    fn path(&self, rel: &str) -> Path {
        let mut parts: Vec<String> = self.root.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(
            rel.split('/')
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string()),
        );
        Path::from_iter(parts)
    }

    /// Writes an object (atomically: readers see all of it or nothing).
    pub fn put(&self, rel: &str, data: Bytes) -> Result<()> {
        let path = self.path(rel);
        runtime()?
            .block_on(self.store.put(&path, PutPayload::from_bytes(data)))
            .map_err(os_err(rel))?;
        Ok(())
    }

    /// Writes an object in the background and calls `done` with the outcome.
    pub fn put_async(
        &self,
        rel: String,
        data: Vec<Bytes>,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let store = self.store.clone();
        let path = self.path(&rel);
        match runtime() {
            Ok(rt) => {
                rt.spawn(async move {
                    let r = store
                        .put(&path, data.into_iter().collect::<PutPayload>())
                        .await
                        .map(|_| ())
                        .map_err(os_err(&rel));
                    done(r);
                });
            }
            Err(e) => done(Err(e)),
        }
    }

    /// Uploads local file `local` as object `rel` in the background (in parts, so it is never
    /// read into memory whole) and calls `done` with the outcome.
    pub fn put_file_async(
        &self,
        rel: String,
        local: std::path::PathBuf,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        const PART: usize = 16 << 20;
        let store = self.store.clone();
        let path = self.path(&rel);
        let upload = async move {
            use std::io::Read;
            let io =
                |e: std::io::Error| Error::io("read a state file", local.display().to_string(), e);
            let mut file = std::fs::File::open(&local).map_err(io)?;
            let upload = store.put_multipart(&path).await.map_err(os_err(&rel))?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; PART];
            loop {
                // At most two parts in flight: memory stays a few parts whatever the size.
                if let Err(e) = w.wait_for_capacity(2).await {
                    let _ = w.abort().await;
                    return Err(os_err(&rel)(e));
                }
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(io(e));
                    }
                };
                w.write(&buf[..n]);
            }
            w.finish().await.map_err(os_err(&rel))?;
            Ok(())
        };
        match runtime() {
            Ok(rt) => {
                rt.spawn(async move { done(upload.await) });
            }
            Err(e) => done(Err(e)),
        }
    }

    /// Uploads local file `local` as object `rel` (in parts) and waits for it.
    pub fn put_file(&self, rel: &str, local: &std::path::Path) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.put_file_async(rel.to_string(), local.to_path_buf(), move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| {
            Error::Checkpoint(format!("the upload of {} was dropped", self.url_of(rel)))
        })?
    }

    /// Copies object `from` to `to` (replacing it); the store's copy, so readers of `to`
    /// see the whole object or the old one.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.path(from), self.path(to));
        let store = self.store.clone();
        runtime()?
            .block_on(async move { store.copy(&a, &b).await })
            .map_err(os_err(from))
    }

    /// Reads an object; `None` when it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move {
            match store.get(&path).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map_err(os_err(rel))
    }

    /// The size of an object without reading it; `None` when it does not exist.
    pub fn size(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move {
            match store.head(&path).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map_err(os_err(rel))
    }

    /// Reads a large, immutable object (a state file); `None` when it does not exist. From a
    /// local directory the file is mapped into memory rather than copied: its pages are
    /// the ones the page cache already holds, so restoring a large state neither copies
    /// it nor has the kernel clear fresh pages for it (which costs as much as the read).
    #[allow(unsafe_code)] // the one mapping below; see its SAFETY note
    pub fn get_large(&self, rel: &str) -> Result<Option<Bytes>> {
        let Some(dir) = &self.local_dir else {
            return self.get(rel);
        };
        let mut file_path = dir.clone();
        for part in self.path(rel).parts() {
            file_path.push(part.as_ref());
        }
        let file = match std::fs::File::open(&file_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &file_path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &file_path, e))?
            .len();
        if len == 0 {
            // Mapping an empty file fails on some systems; there is nothing to map anyway.
            return Ok(Some(Bytes::new()));
        }
        // SAFETY: a mapping is only sound while nobody changes the file. Checkpoint and
        // savepoint files are never modified once written: the engine writes every object
        // to a new temporary file and renames it into place (object_store's local store),
        // and retention only unlinks whole files, which leaves existing mappings intact.
        // Every byte is verified against `_metadata`'s checksum before it is used.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .map_err(|e| Error::io("map", &file_path, e))?;
        Ok(Some(Bytes::from_owner(map)))
    }

    /// Names of the immediate "subdirectories" of `rel`.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move { store.list_with_delimiter(Some(&path)).await });
        match r {
            Ok(l) => Ok(l
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(|s| s.to_string()))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(os_err(rel)(e)),
        }
    }

    /// Names of the objects directly in `rel` (not in its subdirectories).
    pub fn list_files(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move { store.list_with_delimiter(Some(&path)).await });
        match r {
            Ok(l) => Ok(l
                .objects
                .iter()
                .filter_map(|o| o.location.filename().map(|s| s.to_string()))
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(os_err(rel)(e)),
        }
    }

    /// Paths of every object below `rel` (in its subdirectories too), relative to it.
    pub fn list_all(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.path(rel);
        let store = self.store.clone();
        let base: Vec<String> = path.parts().map(|p| p.as_ref().to_string()).collect();
        let r = runtime()?
            .block_on(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await });
        match r {
            Ok(objects) => Ok(objects
                .iter()
                .map(|o| {
                    o.location
                        .parts()
                        .skip(base.len())
                        .map(|p| p.as_ref().to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(os_err(rel)(e)),
        }
    }

    /// Deletes object `rel` (nothing when it is not there).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move { store.delete(&path).await });
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(rel)(e)),
        }
    }

    /// Deletes every object below `rel`.
    pub fn delete_dir(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        let store = self.store.clone();
        let r = runtime()?.block_on(async move {
            let objects: Vec<_> = store.list(Some(&path)).try_collect().await?;
            for o in objects {
                match store.delete(&o.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        r.map_err(os_err(rel))?;
        // A local directory keeps its empty folders; remove them too.
        if self.url.starts_with('/') || self.url.starts_with("file://") {
            let base = self.url.trim_start_matches("file://");
            let _ = std::fs::remove_dir_all(format!("{base}/{rel}"));
        }
        Ok(())
    }
}

fn prefix_of(rest: &str) -> Path {
    match rest.split_once('/') {
        Some((_, p)) => Path::from_iter(p.split('/').filter(|s| !s.is_empty())),
        None => Path::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_directory_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))?;
        let s = CheckpointStorage::open(
            &dir.path().join("cp").display().to_string(),
            &BTreeMap::new(),
        )?;
        s.put("job/chk-1/a", Bytes::from_static(b"one"))?;
        s.put("job/chk-2/_metadata", Bytes::from_static(b"two"))?;
        assert_eq!(s.get("job/chk-1/a")?.as_deref(), Some(&b"one"[..]));
        assert_eq!(s.get("job/chk-9/a")?, None);
        let mut dirs = s.list_dirs("job")?;
        dirs.sort();
        assert_eq!(dirs, ["chk-1", "chk-2"]);
        s.delete_dir("job/chk-1")?;
        assert_eq!(s.list_dirs("job")?, ["chk-2"]);
        assert!(s.list_dirs("nothing")?.is_empty());
        s.put("job/shared/x-0-1.state", Bytes::from_static(b"x"))?;
        assert_eq!(s.list_files("job/shared")?, ["x-0-1.state"]);
        assert!(s.list_files("job")?.is_empty(), "directories are not files");
        s.delete("job/shared/x-0-1.state")?;
        s.delete("job/shared/x-0-1.state")?;
        assert!(s.list_files("job/shared")?.is_empty());
        Ok(())
    }

    #[test]
    fn unknown_scheme_is_named() {
        let e = CheckpointStorage::open("ftp://x/y", &BTreeMap::new()).map(|_| ());
        assert!(matches!(e, Err(Error::Config { .. })));
        assert!(format!("{e:?}").contains("ftp://"));
    }
}
