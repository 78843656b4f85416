//! Fault tolerance, shown by injecting faults: jobs with keyed window state, keyed process
//! state and timers, and the exactly-once file sink are failed (task errors and panics) many
//! times over their run, restored from their latest checkpoint each time, and their committed
//! output is compared with a failure-free run's, record for record. Also: at-least-once mode
//! loses nothing; stop-with-savepoint and resume at other parallelisms; a new process finds
//! the latest checkpoint by itself; damaged checkpoints are refused or skipped.
//!
//! The fault-injection, savepoint and resume tests run on both keyed-state backends (the
//! `heap` and `disk` modules at the end); the savepoint test also switches backends between
//! the stop and the resume. The disk backend gets a 16 KiB budget, so values are evicted to
//! disk and read back all through the run, and writes changed values out every KiB.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field};
use flink_rs::checkpoint::{
    CheckpointId, CheckpointingMode, RestartStrategy, RestoreFrom, RestoredState,
};
use flink_rs::prelude::*;
use flink_rs::source::{Sink, SinkWriter};
use flink_rs::state::{DiskOptions, DiskStateBackend, MapState, MemoryStateBackend};

/// Fails the task that runs it when the rows it has seen (over all attempts) pass each of
/// its failure points: alternately with an error and with a panic.
struct Injector {
    seen: AtomicU64,
    points: Mutex<Vec<u64>>,
    fired: AtomicU32,
}

impl Injector {
    /// `n` failure points about `spacing` rows apart, jittered by a seeded generator.
    fn new(n: usize, spacing: u64, seed: u64) -> Arc<Self> {
        let mut x = seed | 1;
        let mut at = 0;
        let mut points = Vec::new();
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += spacing / 2 + x % spacing;
            points.push(at);
        }
        points.reverse();
        Arc::new(Injector {
            seen: AtomicU64::new(0),
            points: Mutex::new(points),
            fired: AtomicU32::new(0),
        })
    }

    fn none() -> Arc<Self> {
        Self::new(0, 1, 1)
    }

    fn check(&self, rows: usize) -> Result<()> {
        let total = self.seen.fetch_add(rows as u64, Ordering::SeqCst) + rows as u64;
        let due = {
            let Ok(mut p) = self.points.lock() else {
                return Ok(());
            };
            match p.last() {
                Some(&next) if total >= next => {
                    p.pop();
                    true
                }
                _ => false,
            }
        };
        if due {
            let k = self.fired.fetch_add(1, Ordering::SeqCst);
            if k % 2 == 0 {
                return Err(Error::User(format!("injected failure #{k} at row {total}")));
            }
            panic!("injected panic #{k} at row {total}");
        }
        Ok(())
    }
}

/// Per key: number of bids, total price, and bids per auction bucket, emitted by an
/// event-time timer at the end of input (value state, map state and timers).
#[derive(Clone, Default)]
struct Totals {
    sum: Option<ValueState<i64>>,
    buckets: Option<MapState<i64, i64>>,
}

impl ProcessFunction for Totals {
    fn open(&mut self, s: &mut StateRegistry<'_>) -> Result<()> {
        self.sum = Some(s.value("sum"));
        self.buckets = Some(s.map("buckets"));
        Ok(())
    }

    fn process_element(
        &mut self,
        _: usize,
        row: &Row,
        ctx: &mut ProcessContext<'_>,
        _: &mut RowCollector,
    ) -> Result<()> {
        let (Some(sum), Some(buckets)) = (&self.sum, &self.buckets) else {
            return Err(Error::User("not opened".into()));
        };
        let price = row[2].as_i64().unwrap_or(0);
        let bucket = row[0].as_i64().unwrap_or(0) % 7;
        let total = sum.get(ctx).unwrap_or(0) + price;
        sum.update(ctx, total);
        let n = buckets.get(ctx, &bucket).unwrap_or(0) + 1;
        buckets.put(ctx, bucket, n);
        ctx.register_event_time_timer(i64::MAX);
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_>,
        out: &mut RowCollector,
    ) -> Result<()> {
        let (Some(sum), Some(buckets)) = (&self.sum, &self.buckets) else {
            return Err(Error::User("not opened".into()));
        };
        let key = ctx.current_key().clone();
        let Key::Int(k) = key else {
            return Err(Error::User("integer key expected".into()));
        };
        let mut b: Vec<(i64, i64)> = buckets.entries(ctx);
        b.sort();
        let count: i64 = b.iter().map(|(_, c)| c).sum();
        out.collect(vec![
            Value::Int(k),
            Value::Int(count),
            Value::Int(sum.get(ctx).unwrap_or(0)),
            Value::Str(format!("{b:?}")),
        ])
    }
}

/// The keyed-state backend a job runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Heap,
    Disk,
    /// The disk backend with incremental checkpoints (configured as a user would:
    /// `state.backend.type: disk`, `execution.checkpointing.incremental: true`).
    DiskIncremental,
}

impl Backend {
    fn other(self) -> Backend {
        match self {
            Backend::Heap => Backend::Disk,
            Backend::Disk | Backend::DiskIncremental => Backend::Heap,
        }
    }
}

struct JobSpec {
    rows: u64,
    backend: Backend,
    /// The disk backend the job uses when `backend` is `Disk` (kept to read its figures).
    disk: Arc<DiskStateBackend>,
    rate: Option<f64>,
    parallelism: usize,
    checkpoint_interval: Option<Duration>,
    mode: CheckpointingMode,
    checkpoint_dir: Option<String>,
    storage_options: BTreeMap<String, String>,
    restore: Option<RestoreFrom>,
    job_id: Option<String>,
    restart: RestartStrategy,
    with_totals: bool,
    allow_non_restored_state: bool,
    /// Restores decode in the background whatever their size (the path large states take).
    background_restore: bool,
    /// Armed, the window sink's next commit fails after it published ([`CommitFault`]).
    commit_fault: Option<Arc<AtomicBool>>,
    /// The window sink writes to this object-storage URL (with these options) instead of
    /// `windows/` in the output directory.
    windows_in_store: Option<(String, BTreeMap<String, String>)>,
    /// The window sink writes one directory per key (`k=7/`), rolling parts at 2 KiB.
    windows_partitioned: bool,
}

impl JobSpec {
    fn new(rows: u64, parallelism: usize) -> Self {
        JobSpec {
            rows,
            backend: Backend::Heap,
            // 16 KiB: 8 KiB of live values, fewer than the job's keys and windows.
            disk: Arc::new(DiskStateBackend::new(DiskOptions {
                managed_memory: 16 << 10,
                local_dir: None,
                incremental: false,
                // Every restore of the suite's disk runs goes on in the background.
                lazy_restore_min_bytes: 0,
                // Changed values are written out every few records, between checkpoints.
                max_dirty_bytes: Some(1 << 10),
            })),
            rate: None,
            parallelism,
            checkpoint_interval: None,
            mode: CheckpointingMode::ExactlyOnce,
            checkpoint_dir: None,
            storage_options: BTreeMap::new(),
            restore: None,
            job_id: None,
            restart: RestartStrategy::None,
            with_totals: true,
            allow_non_restored_state: false,
            background_restore: false,
            commit_fault: None,
            windows_in_store: None,
            windows_partitioned: false,
        }
    }
}

/// A file sink whose commit, once `armed`, publishes and then fails the task (once): a
/// failure between a checkpoint's commit and the next step of the job.
struct CommitFault {
    inner: FileSink,
    armed: Arc<AtomicBool>,
}

struct CommitFaultWriter {
    inner: Box<dyn SinkWriter>,
    armed: Arc<AtomicBool>,
}

impl Sink for CommitFault {
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(CommitFaultWriter {
            inner: self.inner.create_writer(subtask, parallelism, schema)?,
            armed: self.armed.clone(),
        }))
    }
}

impl SinkWriter for CommitFaultWriter {
    fn write(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<()> {
        self.inner.write(batch)
    }
    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }
    fn recover(&mut self, restored: &RestoredState) -> Result<()> {
        self.inner.recover(restored)
    }
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Option<Vec<u8>>> {
        self.inner.pre_commit(checkpoint)
    }
    fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.inner.commit(checkpoint)?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::User(format!(
                "injected failure after committing {checkpoint}"
            )));
        }
        Ok(())
    }
}

/// Bids → (fault injector) → key `bidder % 50` → tumbling 5 ms count windows → sink `windows/`,
/// and → keyed totals with state and a timer → sink `totals/`.
fn start_job(spec: &JobSpec, out: &Path, inject: Arc<Injector>) -> Result<JobHandle> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(spec.parallelism);
    match spec.backend {
        Backend::Heap if spec.background_restore => {
            env.set_state_backend(Arc::new(
                MemoryStateBackend::with_background_restore_min_bytes(0),
            ));
        }
        Backend::Heap => {}
        Backend::Disk => {
            env.set_state_backend(spec.disk.clone());
        }
        Backend::DiskIncremental => {}
    }
    let incremental = spec.backend == Backend::DiskIncremental;
    env.configure(|c| {
        if incremental {
            c.state_backend.kind = flink_rs::state::StateBackendKind::Disk;
            c.state_backend.managed_memory = Some(16 << 10);
            c.state_backend.incremental = true;
        }
        c.checkpoint.interval = spec.checkpoint_interval;
        c.checkpoint.mode = spec.mode;
        c.checkpoint.dir = spec.checkpoint_dir.clone();
        c.checkpoint.storage_options = spec.storage_options.clone();
        c.checkpoint.retained = 2;
        c.restart = spec.restart.clone();
        c.restore = spec.restore.clone();
        c.job_id = spec.job_id.clone();
        c.allow_non_restored_state = spec.allow_non_restored_state;
        c.linger = Duration::from_millis(5);
    });
    let mut gen_ = BidGenerator::bounded(spec.rows).batch_size(500);
    if let Some(r) = spec.rate {
        gen_ = gen_.rate(r);
    }
    let bids = env
        .from_source(gen_, Some(WatermarkStrategy::monotonous("ts")))
        .uid("bids")
        .map_batches(flink_rs::connectors::bid_schema(), move |b| {
            inject.check(b.num_rows())?;
            Ok(b)
        })
        .uid("injector")
        .with_column(Field::new("k", DataType::Int64, false), |b| {
            let bidder = b
                .column_by_name("bidder")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| Error::User("bidder column".into()))?;
            Ok(Arc::new(
                bidder
                    .iter()
                    .map(|v| v.map(|v| v % 50))
                    .collect::<Int64Array>(),
            ))
        })
        .uid("key");
    let counts = bids
        .key_by("k")
        .window(Windows::tumbling(Duration::from_millis(5)))
        .aggregate(Count)?
        .uid("windows");
    let file = match &spec.windows_in_store {
        Some((url, options)) => FileSink::in_object_store(url, options, FileFormat::csv())?,
        None => FileSink::new(out.join("windows"), FileFormat::csv()),
    };
    let file = if spec.windows_partitioned {
        file.partitioned_by(vec!["k".into()], "null")
            .rolling(flink_rs::connectors::RollingPolicy {
                file_size: Some(2 << 10),
                rollover_interval: None,
            })
    } else {
        file
    };
    match &spec.commit_fault {
        Some(armed) => counts.sink(CommitFault {
            inner: file,
            armed: armed.clone(),
        }),
        None => counts.sink(file),
    }
    .uid("windows-sink");
    if !spec.with_totals {
        return env.execute_async();
    }
    bids.key_by("k")
        .process(
            schema(&[
                ("k", DataType::Int64, false),
                ("count", DataType::Int64, false),
                ("sum", DataType::Int64, false),
                ("buckets", DataType::Utf8, false),
            ]),
            Totals::default(),
        )
        .uid("totals")
        .sink(FileSink::new(out.join("totals"), FileFormat::csv()))
        .uid("totals-sink");
    env.execute_async()
}

/// Every line of the published part files under `dir`, sorted; fails on leftovers.
fn committed(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".inprogress"))
                .collect()
        })
        .unwrap_or_default()
}

fn outputs(out: &Path) -> (Vec<String>, Vec<String>) {
    (
        committed(&out.join("windows")),
        committed(&out.join("totals")),
    )
}

fn tmp() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::io("tempdir", "", e))
}

/// A job of `rows` bids at `rate` rows/s, parallelism 2, checkpointing into `cp` and
/// restarting (5 ms apart) up to `attempts` times.
fn restarting(rows: u64, rate: f64, cp: &Path, attempts: u32) -> JobSpec {
    let mut spec = JobSpec::new(rows, 2);
    spec.rate = Some(rate);
    spec.checkpoint_dir = Some(cp.display().to_string());
    spec.restart = RestartStrategy::FixedDelay {
        attempts,
        delay: Duration::from_millis(5),
    };
    spec
}

const ROWS: u64 = 400_000;

fn reference(rows: u64) -> Result<(Vec<String>, Vec<String>)> {
    let dir = tmp()?;
    let outcome = start_job(&JobSpec::new(rows, 2), dir.path(), Injector::none())?.wait()?;
    assert_eq!(outcome, JobOutcome::Finished);
    let (w, t) = outputs(dir.path());
    assert!(
        w.len() > 1000 && t.len() == 50,
        "reference run too small: {} {}",
        w.len(),
        t.len()
    );
    Ok((w, t))
}

fn with_failures(
    backend: Backend,
    mode: CheckpointingMode,
    cp: &Path,
    out: &Path,
) -> Result<(JobHandle, Arc<Injector>, Arc<DiskStateBackend>)> {
    let inject = Injector::new(22, 14_000, 7);
    let mut spec = restarting(ROWS, 150_000.0, cp, 100);
    spec.backend = backend;
    spec.checkpoint_interval = Some(Duration::from_millis(15));
    spec.mode = mode;
    // The exactly-once run restores every time through background decoding, the
    // at-least-once run before the tasks start: both paths face the twenty failures.
    spec.background_restore = mode == CheckpointingMode::ExactlyOnce;
    Ok((
        start_job(&spec, out, inject.clone())?,
        inject,
        spec.disk.clone(),
    ))
}

fn exactly_once_output_survives_twenty_failures(backend: Backend) -> Result<()> {
    let (ref_w, ref_t) = reference(ROWS)?;
    let cp = tmp()?;
    let out = tmp()?;
    let (job, inject, disk) = with_failures(
        backend,
        CheckpointingMode::ExactlyOnce,
        cp.path(),
        out.path(),
    )?;
    let stats = job.checkpoint_stats_handle();
    let outcome = job.wait()?;
    assert_eq!(outcome, JobOutcome::Finished);
    let fired = inject.fired.load(Ordering::SeqCst);
    assert!(fired >= 20, "only {fired} failures were injected");
    let (w, t) = outputs(out.path());
    assert_eq!(w.len(), ref_w.len(), "window output rows");
    assert!(
        w == ref_w,
        "window output differs from the failure-free run"
    );
    assert!(t == ref_t, "keyed totals differ from the failure-free run");
    assert!(leftovers(&out.path().join("windows")).is_empty());
    assert!(leftovers(&out.path().join("totals")).is_empty());
    let stats = stats();
    eprintln!(
        "{} checkpoints completed, {} of them incremental, {} restarts",
        stats.completed, stats.incremental, stats.restarts
    );
    if backend == Backend::DiskIncremental {
        assert!(
            stats.incremental * 2 > stats.completed,
            "most checkpoints build on an earlier one"
        );
        shared_files_are_those_retained_checkpoints_use(cp.path())?;
    } else {
        assert_eq!(stats.incremental, 0);
    }
    if backend == Backend::Disk {
        let evicted = disk.evicted_values();
        assert!(evicted > 10_000, "only {evicted} values went to disk");
        eprintln!("disk backend: {evicted} values evicted over the run");
    }
    Ok(())
}

/// After a job with incremental checkpoints: its shared state files are exactly those its
/// retained checkpoints refer to (none missing, none left behind).
fn shared_files_are_those_retained_checkpoints_use(root: &Path) -> Result<()> {
    let jobs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io("list", root.display().to_string(), e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(jobs.len(), 1, "one job directory: {jobs:?}");
    let job = &jobs[0];
    let mut referenced = std::collections::BTreeSet::new();
    let mut retained = 0;
    for dir in std::fs::read_dir(job)
        .map_err(|e| Error::io("list", job.display().to_string(), e))?
        .flatten()
    {
        let meta = dir.path().join("_metadata");
        if !dir.file_name().to_string_lossy().starts_with("chk-") {
            continue;
        }
        let bytes =
            std::fs::read(&meta).map_err(|e| Error::io("read", meta.display().to_string(), e))?;
        let m = flink_rs::checkpoint::CheckpointMetadata::parse(&bytes, "test")?;
        retained += 1;
        referenced.extend(m.shared_files().map(|f| f.path.clone()));
    }
    assert_eq!(retained, 2, "state.checkpoints.num-retained");
    let mut present = std::collections::BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(job.join("shared")) {
        for e in entries.flatten() {
            present.insert(format!("shared/{}", e.file_name().to_string_lossy()));
        }
    }
    assert_eq!(
        present, referenced,
        "shared files vs what retained checkpoints use"
    );
    Ok(())
}

fn at_least_once_mode_loses_nothing(backend: Backend) -> Result<()> {
    let (ref_w, ref_t) = reference(ROWS)?;
    let cp = tmp()?;
    let out = tmp()?;
    let (job, inject, _) = with_failures(
        backend,
        CheckpointingMode::AtLeastOnce,
        cp.path(),
        out.path(),
    )?;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    assert!(inject.fired.load(Ordering::SeqCst) >= 20);
    let (w, t) = outputs(out.path());
    // Without alignment a restored state may include records after the barrier, so counts
    // can come out higher; and watermarks are not part of a checkpoint (as in Flink), so a
    // replayed record of a window that had already fired (and was committed) starts that
    // window again and fires it a second time with the replayed records only. What
    // at-least-once promises is that every record is counted: over all emissions of a
    // window, at least the failure-free count.
    let parse = |lines: &[String]| -> BTreeMap<String, Vec<i64>> {
        let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for l in lines {
            let (head, n) = l.rsplit_once(',').unwrap_or((l, "0"));
            m.entry(head.to_string())
                .or_default()
                .push(n.parse().unwrap_or(0));
        }
        m
    };
    let (got, want) = (parse(&w), parse(&ref_w));
    let mut fired_twice = 0;
    for (k, n) in &want {
        let g = got.get(k).cloned().unwrap_or_default();
        if g.len() > 1 && fired_twice == 0 {
            eprintln!("for example window {k}: emitted {g:?}, failure-free {n:?}");
        }
        fired_twice += usize::from(g.len() > 1);
        let sum: i64 = g.iter().sum();
        assert!(
            sum >= n.iter().sum::<i64>(),
            "window {k}: emitted {g:?}, failure-free {n:?}"
        );
    }
    eprintln!(
        "{fired_twice} of {} windows fired more than once",
        want.len()
    );
    assert_eq!(t.len(), ref_t.len(), "every key's totals are there");
    Ok(())
}

/// Stops on `backend`, resumes at parallelism 1 on the other backend and at 4 on the same.
fn stop_with_savepoint_then_resume_at_one_and_four(backend: Backend) -> Result<()> {
    let rows = 300_000;
    let (ref_w, ref_t) = reference(rows)?;
    let out = tmp()?;
    let sp = tmp()?;
    let mut spec = JobSpec::new(rows, 2);
    spec.backend = backend;
    spec.rate = Some(200_000.0);
    let job = start_job(&spec, out.path(), Injector::none())?;
    // Stop mid-run: after 40 % of the input, when windows have fired and more remain.
    common::wait_until("40 % of the input", Duration::from_secs(60), || {
        common::source_records(&job) >= rows * 2 / 5
    });
    let path = job.stop_with_savepoint(Some(&sp.path().display().to_string()))?;
    let outcome = job.wait()?;
    assert_eq!(
        outcome,
        JobOutcome::Stopped {
            savepoint: path.clone()
        }
    );
    let (w1, _) = outputs(out.path());
    let listing: Vec<_> = std::fs::read_dir(out.path().join("windows"))
        .map(|it| it.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !w1.is_empty() && w1.len() < ref_w.len(),
        "{listing:?} {path}"
    );
    assert!(
        !w1.is_empty() && w1.len() < ref_w.len(),
        "the stop should come mid-run ({} of {} windows written)",
        w1.len(),
        ref_w.len()
    );
    // Savepoints are relocatable: move it before restoring.
    let moved = tmp()?;
    let path = {
        let to = moved.path().join("moved-savepoint");
        std::fs::rename(&path, &to).map_err(|e| Error::io("move", &path, e))?;
        to.display().to_string()
    };
    for p in [1, 4] {
        // Each resume continues in its own copy of the output directory.
        let copy = tmp()?;
        for sub in ["windows", "totals"] {
            std::fs::create_dir_all(copy.path().join(sub))
                .map_err(|e| Error::io("mkdir", "", e))?;
            for e in std::fs::read_dir(out.path().join(sub))
                .map_err(|e| Error::io("ls", "", e))?
                .flatten()
            {
                std::fs::copy(e.path(), copy.path().join(sub).join(e.file_name()))
                    .map_err(|e| Error::io("copy", "", e))?;
            }
        }
        let mut spec = JobSpec::new(rows, p);
        spec.backend = if p == 1 { backend.other() } else { backend };
        spec.restore = Some(RestoreFrom::Path(path.clone()));
        // Rescaled to 4, each instance decodes its key groups in the background.
        spec.background_restore = p == 4;
        let outcome = start_job(&spec, copy.path(), Injector::none())?.wait()?;
        assert_eq!(outcome, JobOutcome::Finished);
        let (w, t) = outputs(copy.path());
        assert!(
            w == ref_w,
            "windows after resuming at parallelism {p} on {:?} differ",
            spec.backend
        );
        assert!(
            t == ref_t,
            "totals after resuming at parallelism {p} on {:?} differ",
            spec.backend
        );
    }
    Ok(())
}

/// A process that dies (here: is cancelled, which commits nothing beyond its last completed
/// checkpoint, as a crash would) and a new one with the same job id and `latest` continue the
/// job from storage by themselves; with `by_path`, the new one is given the latest
/// checkpoint's URL instead (`--fromSavepoint` with a checkpoint, as Flink allows) and
/// runs at parallelism 3.
fn resume_latest_in(
    backend: Backend,
    cp_url: &str,
    options: BTreeMap<String, String>,
    by_path: bool,
) -> Result<()> {
    let rows = 300_000;
    let (ref_w, ref_t) = reference(rows)?;
    let out = tmp()?;
    let job_id = format!("resume-{}", std::process::id());
    let mut spec = JobSpec::new(rows, 2);
    spec.backend = backend;
    spec.rate = Some(200_000.0);
    spec.checkpoint_interval = Some(Duration::from_millis(30));
    spec.checkpoint_dir = Some(cp_url.to_string());
    spec.storage_options = options;
    spec.job_id = Some(job_id.clone());
    let job = start_job(&spec, out.path(), Injector::none())?;
    common::wait_until("three checkpoints", Duration::from_secs(60), || {
        job.checkpoint_stats().completed >= 3
    });
    let stats = job.checkpoint_stats();
    job.cancel();
    assert_eq!(job.wait()?, JobOutcome::Cancelled);
    assert!(stats.completed >= 3, "checkpoints completed: {stats:?}");
    let (w1, _) = outputs(out.path());
    assert!(w1.len() < ref_w.len());

    spec.rate = None;
    spec.restore = Some(RestoreFrom::Latest);
    if by_path {
        let storage = flink_rs::checkpoint::CheckpointStorage::open(cp_url, &spec.storage_options)?;
        let latest = flink_rs::checkpoint::find_latest(&storage, &job_id)?
            .ok_or_else(|| Error::User("no checkpoint to resume from".into()))?;
        if backend == Backend::DiskIncremental {
            assert!(
                latest.metadata.full_size() > latest.metadata.state_size(),
                "{} is incremental",
                latest.url
            );
        }
        spec.restore = Some(RestoreFrom::Path(latest.url.clone()));
        // At another parallelism: instances merge the chains of the old ones whose key
        // groups they take.
        spec.parallelism = 3;
    }
    let job = start_job(&spec, out.path(), Injector::none())?;
    let restored = job.checkpoint_stats().restored;
    assert_eq!(job.wait()?, JobOutcome::Finished);
    assert!(
        restored
            .as_deref()
            .is_some_and(|r| r.contains(&job_id) && r.contains("chk-")),
        "restored from {restored:?}"
    );
    let (w, t) = outputs(out.path());
    assert!(
        w == ref_w,
        "windows differ after resuming from the latest checkpoint"
    );
    assert!(
        t == ref_t,
        "totals differ after resuming from the latest checkpoint"
    );
    Ok(())
}

fn new_process_resumes_from_latest_checkpoint_in_a_directory(backend: Backend) -> Result<()> {
    let cp = tmp()?;
    resume_latest_in(
        backend,
        &format!("file://{}", cp.path().display()),
        BTreeMap::new(),
        false,
    )
}

fn checkpoint_dirs(root: &Path, job: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(job))
        .map(|it| it.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    });
    v
}

#[test]
fn damaged_checkpoints_are_refused_or_skipped() -> Result<()> {
    let cp = tmp()?;
    let out = tmp()?;
    let job_id = "damaged";
    let mut spec = JobSpec::new(200_000, 1);
    spec.rate = Some(100_000.0);
    spec.checkpoint_interval = Some(Duration::from_millis(40));
    spec.checkpoint_dir = Some(cp.path().display().to_string());
    spec.job_id = Some(job_id.into());
    let job = start_job(&spec, out.path(), Injector::none())?;
    common::wait_until("two checkpoints", Duration::from_secs(60), || {
        job.checkpoint_stats().completed >= 2
    });
    job.cancel();
    job.wait()?;
    // Complete ones only (a checkpoint in flight at the cancel may have left files).
    let dirs: Vec<PathBuf> = checkpoint_dirs(cp.path(), job_id)
        .into_iter()
        .filter(|d| d.join("_metadata").exists())
        .collect();
    assert!(dirs.len() >= 2, "retained checkpoints: {dirs:?}");
    let newest = &dirs[dirs.len() - 1];
    let previous = &dirs[dirs.len() - 2];

    // Truncate one state file of the newest checkpoint.
    let state = std::fs::read_dir(newest)
        .map_err(|e| Error::io("ls", newest, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "state"))
        .ok_or_else(|| Error::User("no state file".into()))?;
    let bytes = std::fs::read(&state).map_err(|e| Error::io("read", &state, e))?;
    std::fs::write(&state, &bytes[..bytes.len() / 2]).map_err(|e| Error::io("write", &state, e))?;

    // Named explicitly, it is refused with a message that says why.
    let mut explicit = JobSpec::new(200_000, 1);
    explicit.restore = Some(RestoreFrom::Path(newest.display().to_string()));
    let err = start_job(&explicit, out.path(), Injector::none())
        .map(|_| ())
        .err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("does not match _metadata"), "{msg}");

    // A missing _metadata is named too.
    let bare = tmp()?;
    let mut missing = JobSpec::new(10, 1);
    missing.restore = Some(RestoreFrom::Path(bare.path().display().to_string()));
    let msg = start_job(&missing, out.path(), Injector::none())
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("no _metadata"), "{msg}");

    // `latest` falls back to the previous complete checkpoint.
    let mut latest = spec;
    latest.rate = None;
    latest.restore = Some(RestoreFrom::Latest);
    let job = start_job(&latest, out.path(), Injector::none())?;
    let restored = job.checkpoint_stats().restored.unwrap_or_default();
    job.wait()?;
    let prev_name = previous
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        restored.ends_with(&prev_name),
        "restored {restored}, expected {prev_name}"
    );
    Ok(())
}

/// The file sink partitioned by key (a directory per key, the key left out of the files)
/// with parts rolled at 2 KiB between checkpoints, through twenty injected failures: every
/// partition holds exactly the failure-free run's rows of its key, and nothing in progress
/// is left.
#[test]
fn a_partitioned_rolling_file_sink_is_exactly_once_through_twenty_failures() -> Result<()> {
    let (ref_w, _) = reference(ROWS)?;
    let (cp, out) = (tmp()?, tmp()?);
    let inject = Injector::new(22, 14_000, 3);
    let mut spec = restarting(ROWS, 150_000.0, cp.path(), 100);
    spec.checkpoint_interval = Some(Duration::from_millis(15));
    spec.windows_partitioned = true;
    let outcome = start_job(&spec, out.path(), inject.clone())?.wait()?;
    assert_eq!(outcome, JobOutcome::Finished);
    let fired = inject.fired.load(Ordering::SeqCst);
    assert!(fired >= 20, "only {fired} failures were injected");
    let windows = out.path().join("windows");
    let mut w = Vec::new();
    let mut parts = 0;
    for d in std::fs::read_dir(&windows)
        .map_err(|e| Error::io("ls", &windows, e))?
        .flatten()
    {
        let name = d.file_name().to_string_lossy().into_owned();
        let k = name
            .strip_prefix("k=")
            .unwrap_or_else(|| panic!("not a partition directory: {name}"))
            .to_string();
        assert!(
            leftovers(&d.path()).is_empty(),
            "{name}: in-progress files left"
        );
        for line in committed(&d.path()) {
            w.push(format!("{k},{line}"));
        }
        parts += std::fs::read_dir(d.path())
            .map(|it| it.count())
            .unwrap_or(0);
    }
    w.sort();
    assert_eq!(w.len(), ref_w.len(), "window rows");
    assert!(
        w == ref_w,
        "the partitioned window rows differ from the failure-free run, e.g. {:?} against {:?}",
        w.first(),
        ref_w.first()
    );
    assert!(parts > 100, "{parts} part files: parts roll by size");
    Ok(())
}

/// The exactly-once file sink writing to S3 (the test server) through twenty injected
/// failures: the published objects hold the failure-free run's rows, each once, and no
/// in-progress object is left.
#[test]
fn the_file_sink_in_s3_is_exactly_once_through_twenty_failures() -> Result<()> {
    let s3 = common::S3Server::start("results")?;
    let rows = 200_000;
    let (ref_w, ref_t) = reference(rows)?;
    let (cp, out) = (tmp()?, tmp()?);
    let inject = Injector::new(21, 7_000, 5);
    let mut spec = restarting(rows, 100_000.0, cp.path(), 100);
    spec.checkpoint_interval = Some(Duration::from_millis(40));
    let url = format!("s3://{}/jobs/windows", s3.bucket);
    spec.windows_in_store = Some((url.clone(), s3.options()));
    let outcome = start_job(&spec, out.path(), inject.clone())?.wait()?;
    assert_eq!(outcome, JobOutcome::Finished);
    let fired = inject.fired.load(Ordering::SeqCst);
    assert!(fired >= 20, "only {fired} failures were injected");
    let store = flink_rs::checkpoint::CheckpointStorage::open(&url, &s3.options())?;
    let names = store.list_files("")?;
    let mut w = Vec::new();
    for n in names.iter().filter(|n| n.starts_with("part-")) {
        let bytes = store.get(n)?.unwrap_or_default();
        w.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
    }
    w.sort();
    assert_eq!(w.len(), ref_w.len(), "window rows in S3");
    assert!(
        w == ref_w,
        "the window rows in S3 differ from the failure-free run"
    );
    let left: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".inprogress"))
        .collect();
    assert!(left.is_empty(), "in-progress objects left: {left:?}");
    let (_, t) = outputs(out.path());
    assert!(t == ref_t, "keyed totals differ from the failure-free run");
    Ok(())
}

#[test]
fn checkpoints_in_s3_resume_like_a_directory() -> Result<()> {
    let s3 = common::S3Server::start("checkpoints")?;
    let url = format!("s3://{}/flink", s3.bucket);
    // Incremental checkpoints, restored from the newest one's URL: its shared files are
    // found in the job's directory above it.
    resume_latest_in(Backend::DiskIncremental, &url, s3.options(), true)?;
    // The checkpoints really are in the bucket, in the documented layout.
    let storage = flink_rs::checkpoint::CheckpointStorage::open(&url, &s3.options())?;
    let jobs = storage.list_dirs("")?;
    assert!(jobs.iter().any(|j| j.starts_with("resume-")), "{jobs:?}");
    let job = jobs
        .iter()
        .find(|j| j.starts_with("resume-"))
        .cloned()
        .unwrap_or_default();
    let dirs = storage.list_dirs(&job)?;
    let chks: Vec<&String> = dirs.iter().filter(|d| d.starts_with("chk-")).collect();
    assert!(!chks.is_empty() && chks.len() <= 2, "retained: {dirs:?}");
    // Shared files: exactly those the retained checkpoints refer to.
    let mut referenced = std::collections::BTreeSet::new();
    for chk in &chks {
        let c = flink_rs::checkpoint::load_checkpoint(&storage, &format!("{job}/{chk}"))?;
        referenced.extend(c.metadata.shared_files().map(|f| f.path.clone()));
    }
    let shared: std::collections::BTreeSet<String> = storage
        .list_files(&format!("{job}/shared"))?
        .into_iter()
        .map(|f| format!("shared/{f}"))
        .collect();
    assert_eq!(shared, referenced, "shared files in the bucket");
    let latest = flink_rs::checkpoint::find_latest(&storage, &job)?;
    assert!(latest.is_some_and(|c| c.metadata.finished));
    Ok(())
}

#[test]
fn savepoint_with_state_for_a_removed_operator_needs_allow_non_restored_state() -> Result<()> {
    let out = tmp()?;
    let sp = tmp()?;
    let mut spec = JobSpec::new(200_000, 2);
    spec.rate = Some(200_000.0);
    let job = start_job(&spec, out.path(), Injector::none())?;
    common::wait_until("30 % of the input", Duration::from_secs(60), || {
        common::source_records(&job) >= 60_000
    });
    let path = job.trigger_savepoint(Some(&sp.path().display().to_string()))?;
    job.cancel();
    job.wait()?;

    // The changed job has no `totals` branch: its state has nowhere to go.
    let mut changed = JobSpec::new(200_000, 2);
    changed.with_totals = false;
    changed.restore = Some(RestoreFrom::Path(path.clone()));
    let msg = start_job(&changed, out.path(), Injector::none())
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("`totals`") && msg.contains("allowNonRestoredState"),
        "{msg}"
    );
    changed.allow_non_restored_state = true;
    assert_eq!(
        start_job(&changed, out.path(), Injector::none())?.wait()?,
        JobOutcome::Finished
    );
    Ok(())
}

/// A source whose reader cannot snapshot: every checkpoint is declined.
struct NoSnapshots(BidGenerator);

impl flink_rs::source::Source for NoSnapshots {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.0.schema()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create_reader(
        &self,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Box<dyn flink_rs::source::SourceReader>> {
        struct R(Box<dyn flink_rs::source::SourceReader>);
        impl flink_rs::source::SourceReader for R {
            fn splits(&self) -> usize {
                self.0.splits()
            }
            fn poll_next(&mut self) -> Result<flink_rs::source::SourcePoll> {
                self.0.poll_next()
            }
        }
        Ok(Box::new(R(self.0.create_reader(subtask, parallelism)?)))
    }
}

fn declining_job(tolerable: u32) -> Result<(JobHandle, tempfile::TempDir)> {
    let cp = tmp()?;
    let env = StreamExecutionEnvironment::new();
    env.configure(|c| {
        c.checkpoint.interval = Some(Duration::from_millis(20));
        c.checkpoint.dir = Some(cp.path().display().to_string());
        c.checkpoint.tolerable_failures = tolerable;
    });
    env.from_source(
        NoSnapshots(
            BidGenerator::bounded(60_000)
                .batch_size(500)
                .rate(100_000.0),
        ),
        None,
    )
    .sink(flink_rs::connectors::BlackholeSink::default());
    Ok((env.execute_async()?, cp))
}

#[test]
fn failed_checkpoints_are_tolerated_up_to_the_limit() -> Result<()> {
    // Tolerated: the job finishes, and the failures are counted.
    let (job, _cp) = declining_job(1000)?;
    let stats = job.checkpoint_stats_handle();
    assert_eq!(job.wait()?, JobOutcome::Finished);
    let s = stats();
    assert!(s.failed >= 3 && s.completed == 0, "{s:?}");

    // Not tolerated: the job fails, saying why.
    let (job, _cp) = declining_job(2)?;
    let msg = job
        .wait()
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("consecutive checkpoints failed"), "{msg}");
    Ok(())
}

/// An intermediate savepoint publishes no output (as in Flink): a failure after it goes
/// back to the latest checkpoint (here none, so the start), and the output still equals the
/// failure-free run record for record. The next checkpoint, or the end, publishes what the
/// savepoint staged.
#[test]
fn a_failure_after_an_intermediate_savepoint_repeats_nothing() -> Result<()> {
    let rows = 200_000;
    let (ref_w, ref_t) = reference(rows)?;
    let (cp, out, sp) = (tmp()?, tmp()?, tmp()?);
    let inject = Injector::none();
    let spec = restarting(rows, 50_000.0, cp.path(), 3);
    let job = start_job(&spec, out.path(), inject.clone())?;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while inject.seen.load(Ordering::SeqCst) < 40_000 {
        assert!(
            std::time::Instant::now() < until,
            "the job does not progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let savepoint = job.trigger_savepoint(Some(&sp.path().display().to_string()))?;
    assert!(savepoint.contains("savepoint-"), "{savepoint}");
    let seen = inject.seen.load(Ordering::SeqCst);
    if let Ok(mut p) = inject.points.lock() {
        p.push(seen + 20_000);
    }
    assert_eq!(job.wait()?, JobOutcome::Finished);
    assert_eq!(
        inject.fired.load(Ordering::SeqCst),
        1,
        "one failure injected"
    );
    let (w, t) = outputs(out.path());
    assert!(
        w == ref_w,
        "window output differs from the failure-free run"
    );
    assert!(t == ref_t, "keyed totals differ from the failure-free run");
    Ok(())
}

/// A task fails after the stop savepoint's commit published output and before the job
/// stopped: the stop is refused (the job did not stop), the job goes on from that savepoint,
/// not from an older checkpoint (which would repeat what the savepoint committed), and the
/// output equals the failure-free run record for record.
#[test]
fn a_failure_while_stopping_goes_on_from_the_stop_savepoint() -> Result<()> {
    let rows = 200_000;
    let (ref_w, ref_t) = reference(rows)?;
    let (cp, out, sp) = (tmp()?, tmp()?, tmp()?);
    let inject = Injector::none();
    let armed = Arc::new(AtomicBool::new(false));
    let mut spec = restarting(rows, 50_000.0, cp.path(), 3);
    spec.commit_fault = Some(armed.clone());
    let job = start_job(&spec, out.path(), inject.clone())?;
    common::wait_until("40 000 rows", Duration::from_secs(30), || {
        inject.seen.load(Ordering::SeqCst) >= 40_000
    });
    armed.store(true, Ordering::SeqCst);
    let stop = job.stop_with_savepoint(Some(&sp.path().display().to_string()));
    assert!(!armed.load(Ordering::SeqCst), "the fault fired");
    let err = stop
        .expect_err("the job failed before it stopped")
        .to_string();
    assert!(err.contains("did not stop"), "{err}");
    let (w, _) = outputs(out.path());
    assert!(
        !w.is_empty() && w.len() < ref_w.len(),
        "the stop savepoint committed part of the output ({} of {})",
        w.len(),
        ref_w.len()
    );
    assert_eq!(job.wait()?, JobOutcome::Finished);
    let (w, t) = outputs(out.path());
    assert!(
        w == ref_w,
        "window output differs from the failure-free run ({} lines against {})",
        w.len(),
        ref_w.len()
    );
    assert!(t == ref_t, "keyed totals differ from the failure-free run");
    Ok(())
}

/// One `#[test]` per backend (and the disk backend with incremental checkpoints) for each
/// test function taking a [`Backend`].
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod heap {
            $(#[test]
            fn $name() -> super::Result<()> {
                super::$name(super::Backend::Heap)
            })*
        }
        mod disk {
            $(#[test]
            fn $name() -> super::Result<()> {
                super::$name(super::Backend::Disk)
            })*
        }
        mod disk_incremental {
            $(#[test]
            fn $name() -> super::Result<()> {
                super::$name(super::Backend::DiskIncremental)
            })*
        }
    };
}

on_both_backends!(
    exactly_once_output_survives_twenty_failures,
    at_least_once_mode_loses_nothing,
    stop_with_savepoint_then_resume_at_one_and_four,
    new_process_resumes_from_latest_checkpoint_in_a_directory,
);
