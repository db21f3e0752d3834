//! Model data collection: inputs and predictions written as JSON Lines under
//! `<workspace>/modeldata/<service>/<model>/<version>/{inputs,predictions}/<yyyy>/<mm>/<dd>/data.jsonl`,
//! by one writer thread behind a bounded queue. Scoring never waits for the disk: when the queue is full
//! a record is dropped, counted and logged. On shutdown every accepted record is written.
//!
//! A record is whole or absent: its input line and its prediction line are written together, and a write
//! that fails (a full disk) is cut back to where the files ended before it, so no torn line is ever left
//! and an input never lacks its prediction. Every record not written is counted in
//! `plinth_collection_dropped_total{reason="write_failed"}` (`"queue_full"` for the queue) and logged at
//! most once per 10 s per reason. Files and folders are the host's alone (0600 and 0700).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::metrics::Metrics;

/// Records held in memory while the writer catches up.
pub const QUEUE: usize = 10_000;

/// One scored request.
pub struct Record {
    pub service: String,
    pub model: String,
    pub model_version: String,
    /// The endpoint version that served it.
    pub version: String,
    pub request_id: String,
    pub input: Bytes,
    pub output: Vec<u8>,
}

pub struct Collector {
    tx: Mutex<Option<SyncSender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// Why a record was not written: the `reason` label.
const QUEUE_FULL: &str = "queue_full";
const WRITE_FAILED: &str = "write_failed";

/// Whether a warning may be logged now: at most one per 10 s for each `last`.
fn time_to_warn(last: &mut Option<Instant>) -> bool {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        *last = Some(Instant::now());
        true
    } else {
        false
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Starts the writer thread for `root` (`<workspace>/modeldata`).
    pub fn start(root: PathBuf, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let m = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("plinth-collect".into())
            .spawn(move || write_loop(&root, rx, &m))?;
        Ok(Collector {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            metrics,
            dropped: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// Queues a record; never blocks. Returns whether it was accepted.
    pub fn submit(&self, record: Record) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else { return false };
        let service = record.service.clone();
        match tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics
                    .collection_dropped
                    .with_label_values(&[&service, QUEUE_FULL])
                    .inc();
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
                if time_to_warn(&mut last) {
                    tracing::warn!(
                        service,
                        dropped_total = n,
                        "model data collection cannot keep up: records dropped"
                    );
                }
                false
            }
        }
    }

    /// Stops accepting, writes everything accepted, and waits for the writer.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// An open `data.jsonl` and where it ends: what a failed write is cut back to.
struct Open {
    file: File,
    len: u64,
}

fn write_loop(root: &Path, rx: Receiver<Record>, metrics: &Metrics) {
    let mut files: HashMap<PathBuf, Open> = HashMap::new();
    let mut failed = 0u64;
    let mut last_warning = None;
    let mut line = Vec::with_capacity(4096);
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(record) => match write(root, &mut files, &record, &mut line) {
                Ok(()) => metrics.collected_records.with_label_values(&[&record.service]).inc(),
                Err(e) => {
                    metrics
                        .collection_dropped
                        .with_label_values(&[&record.service, WRITE_FAILED])
                        .inc();
                    failed += 1;
                    if time_to_warn(&mut last_warning) {
                        tracing::error!(
                            service = %record.service,
                            error = %e,
                            failed_total = failed,
                            "model data collection: a record could not be written and was dropped (whole)"
                        );
                    }
                }
            },
            // Keep only the files of the day in use open.
            Err(RecvTimeoutError::Timeout) => files.clear(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Writes a record's input and prediction lines, each whole, or neither: a failed write cuts every file
/// it touched back to its length before.
fn write(root: &Path, files: &mut HashMap<PathBuf, Open>, r: &Record, line: &mut Vec<u8>) -> std::io::Result<()> {
    let now = crate::time::timestamp();
    let (y, m, d) = (&now[0..4], &now[5..7], &now[8..10]);
    let mut written: Vec<PathBuf> = Vec::with_capacity(2);
    let mut result = Ok(());
    for (kind, payload) in [("inputs", &r.input[..]), ("predictions", &r.output[..])] {
        let dir = root
            .join(&r.service)
            .join(&r.model)
            .join(&r.model_version)
            .join(kind)
            .join(y)
            .join(m)
            .join(d);
        let path = dir.join("data.jsonl");
        let data: Value = serde_json::from_slice(payload).unwrap_or_else(|_| json!(String::from_utf8_lossy(payload)));
        line.clear();
        serde_json::to_writer(
            &mut *line,
            &json!({
                "request_id": r.request_id,
                "time": now,
                "service": r.service,
                "model": r.model,
                "model_version": r.model_version,
                "version": r.version,
                "data": data,
            }),
        )?;
        line.push(b'\n');
        if !files.contains_key(&path) {
            if files.len() >= 64 {
                // Yesterday's files (and other services' idle ones) close.
                files.clear();
            }
            match open(&dir, &path) {
                Ok(f) => {
                    files.insert(path.clone(), f);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let Some(f) = files.get_mut(&path) else { break };
        match f.file.write_all(line) {
            Ok(()) => {
                f.len += line.len() as u64;
                written.push(path);
            }
            Err(e) => {
                written.push(path);
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        // Cut back what this record wrote, whole lines before it stay; a file that cannot be cut back is
        // reopened (and measured) next time.
        for path in written {
            if let Some(f) = files.get(&path)
                && f.file.set_len(f.len).is_err()
            {
                files.remove(&path);
            }
        }
    }
    result
}

/// Opens (or creates) a day's file for appending, with its folders, the host's alone.
fn open(dir: &Path, path: &Path) -> std::io::Result<Open> {
    let mut folders = std::fs::DirBuilder::new();
    folders.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folders, 0o700);
    folders.create(dir)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(path)?;
    let len = file.metadata()?.len();
    Ok(Open { file, len })
}

/// Which requests of a version are collected, and under which model name.
#[derive(Debug)]
pub struct Sampling {
    pub model: String,
    pub model_version: String,
    /// 0..1; spread evenly (every request at 1.0, every other at 0.5).
    pub rate: f64,
    counter: AtomicU64,
}

impl Sampling {
    pub fn new(model: String, model_version: String, rate: f64) -> Self {
        Sampling {
            model,
            model_version,
            rate: rate.clamp(0.0, 1.0),
            counter: AtomicU64::new(0),
        }
    }

    pub fn take(&self) -> bool {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_exact() {
        let all = Sampling::new("m".into(), "1".into(), 1.0);
        assert!((0..100).all(|_| all.take()));
        let half = Sampling::new("m".into(), "1".into(), 0.5);
        assert_eq!((0..100).filter(|_| half.take()).count(), 50);
        let none = Sampling::new("m".into(), "1".into(), 0.0);
        assert_eq!((0..100).filter(|_| none.take()).count(), 0);
    }

    #[test]
    fn writes_inputs_and_predictions_and_flushes_on_shutdown() {
        let root = std::env::temp_dir().join(format!("plinth-collect-{}", crate::auth::generate_key()));
        let c = Collector::start(root.clone(), Arc::new(Metrics::new())).unwrap();
        for i in 0..25 {
            let accepted = c.submit(Record {
                service: "s".into(),
                model: "m".into(),
                model_version: "1".into(),
                version: "v1".into(),
                request_id: format!("r{i}"),
                input: Bytes::from_static(br#"{"data": [[1, 2]]}"#),
                output: b"[3.5]".to_vec(),
            });
            assert!(accepted);
        }
        c.shutdown();
        let now = crate::time::timestamp();
        let day = root
            .join("s/m/1/inputs")
            .join(&now[0..4])
            .join(&now[5..7])
            .join(&now[8..10])
            .join("data.jsonl");
        let lines = std::fs::read_to_string(&day).unwrap();
        assert_eq!(lines.lines().count(), 25);
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["data"]["data"][0][1], 2);
        assert_eq!(first["request_id"], "r0");
        let preds = std::fs::read_to_string(day.to_string_lossy().replace("/inputs/", "/predictions/")).unwrap();
        assert_eq!(preds.lines().count(), 25);
        assert!(!c.submit(Record {
            service: "s".into(),
            model: "m".into(),
            model_version: "1".into(),
            version: "v1".into(),
            request_id: "late".into(),
            input: Bytes::new(),
            output: Vec::new(),
        }));
        std::fs::remove_dir_all(root).unwrap();
    }
}
