//! Dynamic batching for ONNX models with a batch dimension, adaptive: a request that finds a replica free
//! runs at once (with whatever else is already waiting), so batching costs nothing at low load; requests
//! that arrive while every replica is busy gather for the next batch, up to `maxBatchSize` rows, or
//! `maxBatchDelayMicros`, or a replica coming free, whichever comes first. A queue actor runs each batch as
//! one call on a free replica and hands each request exactly its own rows back. A request that does not fit the model fails alone, before
//! batching; a request whose client has gone is dropped before the model runs. The batcher sits above
//! the version: it knows it only as a [`BatchTarget`]. Each request is recorded as one request, whatever
//! batch it ran in, and a failed batch hands every request the same error (status and kind kept).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use plinth_runtime::{Tensor, TensorData, TensorSpec, with_tensor_data};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Error, Result};

/// What the batcher needs of a version.
pub trait BatchTarget: Send + Sync + 'static {
    /// Runs one merged call on a free replica, waiting for a slot as a request does; records nothing.
    fn run_batch(&self, inputs: Vec<Tensor>) -> impl Future<Output = Result<Vec<Tensor>>> + Send;
    /// Records one request's outcome, timed from when it was queued.
    fn record_request(&self, queued: Instant, error: Option<&Error>);
    /// A batch's rows and how long its oldest request waited to be batched.
    fn observe_batch(&self, rows: usize, waited: Duration);
    /// Whether a call would start at once (a replica has a free slot).
    fn has_free_slot(&self) -> bool;
}

/// Requests waiting to be batched, per version.
pub const QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Rows per batch at most.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company when every replica is busy.
    pub max_delay: Duration,
}

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<Tensor>>>,
}

/// The sending side of a version's batching queue.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    specs: Vec<TensorSpec>,
    /// How long one request may wait for its answer: the batching delay, a slot, and the call.
    timeout: Duration,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Whether a model can be batched: every input and output has a dynamic first dimension, and no input
/// is a string tensor.
pub fn batchable(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> bool {
    !inputs.is_empty()
        && inputs
            .iter()
            .chain(outputs)
            .all(|s| s.shape.first().is_some_and(|&d| d < 0))
        && inputs.iter().all(|s| s.datatype != plinth_runtime::DataType::Bytes)
}

impl Batcher {
    /// Starts the queue actor for `version`; it ends when the version is dropped.
    pub fn start<T: BatchTarget>(
        version: Weak<T>,
        specs: Vec<TensorSpec>,
        config: BatchConfig,
        timeout: Duration,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(actor(version, rx, config));
        Batcher { tx, specs, timeout }
    }

    /// Runs `inputs` as part of a batch; the answer holds exactly this request's rows. The request is
    /// recorded on `version` as one request. A request that finds nothing queued and a replica free runs
    /// at once on its own task, without passing through the queue.
    pub async fn infer(&self, version: &impl BatchTarget, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let queued = Instant::now();
        let result = match self.check(&inputs) {
            Err(e) => Err(e),
            Ok(rows) if self.tx.capacity() == self.tx.max_capacity() && version.has_free_slot() => {
                version.observe_batch(rows, Duration::ZERO);
                // Bounded as every call is (the queue wait, then the scoring timeout); as a batch of one,
                // outputs without the request's rows are refused the same way.
                version.run_batch(inputs).await.and_then(|outputs| {
                    split(outputs, &[rows])
                        .map_err(Error::Internal)
                        .map(|mut parts| parts.pop().unwrap_or_default())
                })
            }
            Ok(rows) => self.queue(inputs, rows).await,
        };
        version.record_request(queued, result.as_ref().err());
        result
    }

    /// The request's rows, once its inputs are checked alone (so a bad request never spoils a batch).
    fn check(&self, inputs: &[Tensor]) -> Result<usize> {
        for t in inputs {
            let spec = self.specs.iter().find(|s| s.name == t.name).ok_or_else(|| {
                Error::BadRequest(format!("unknown input '{}' (inputs: {})", t.name, names(&self.specs)))
            })?;
            spec.check(t)?;
        }
        if let Some(missing) = self.specs.iter().find(|s| !inputs.iter().any(|t| t.name == s.name)) {
            return Err(Error::BadRequest(format!("missing input '{}'", missing.name)));
        }
        let rows = inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(0) as usize;
        if inputs
            .iter()
            .any(|t| t.shape.first().copied().unwrap_or(-1) as usize != rows)
        {
            return Err(Error::BadRequest(
                "every input must have the same number of rows (first dimension)".into(),
            ));
        }
        Ok(rows)
    }

    /// Through the queue: the actor runs it with whatever gathers.
    async fn queue(&self, inputs: Vec<Tensor>, rows: usize) -> Result<Vec<Tensor>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job {
                inputs,
                rows,
                queued: Instant::now(),
                reply,
            })
            .map_err(|_| Error::Overloaded("the batching queue is full".into()))?;
        // On timeout the receiver is dropped: if the batch has not run yet, this request is left out of it.
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => answer.unwrap_or_else(|_| Err(Error::Internal("the batching queue stopped".into()))),
            Err(_) => Err(Error::Timeout(format!(
                "no answer from the batching queue within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// Runs the first model once per power-of-two batch size up to `max_rows`, with zeros.
pub fn warm(package: &plinth_runtime::Package, max_rows: usize) {
    let Some(model) = package.models().iter().next() else {
        return;
    };
    if !batchable(model.inputs(), model.outputs()) {
        return;
    }
    let mut rows = 1;
    while rows <= max_rows {
        let inputs: Vec<Tensor> = model
            .inputs()
            .iter()
            .map(|s| {
                let mut shape: Vec<i64> = s.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
                shape[0] = rows as i64;
                let n = shape.iter().product::<i64>().max(0) as usize;
                Tensor {
                    name: s.name.clone(),
                    shape,
                    data: zeros(s.datatype, n),
                }
            })
            .collect();
        let _ = model.infer(&inputs);
        rows *= 2;
    }
}

fn zeros(dt: plinth_runtime::DataType, n: usize) -> TensorData {
    use plinth_runtime::DataType as D;
    match dt {
        D::Bool => TensorData::Bool(vec![false; n]),
        D::Uint8 => TensorData::Uint8(vec![0; n]),
        D::Uint16 => TensorData::Uint16(vec![0; n]),
        D::Uint32 => TensorData::Uint32(vec![0; n]),
        D::Uint64 => TensorData::Uint64(vec![0; n]),
        D::Int8 => TensorData::Int8(vec![0; n]),
        D::Int16 => TensorData::Int16(vec![0; n]),
        D::Int32 => TensorData::Int32(vec![0; n]),
        D::Int64 => TensorData::Int64(vec![0; n]),
        D::Fp16 => TensorData::Fp16(vec![half::f16::ZERO; n]),
        D::Fp32 => TensorData::Fp32(vec![0.0; n]),
        D::Fp64 => TensorData::Fp64(vec![0.0; n]),
        D::Bytes => TensorData::Bytes(vec![String::new(); n]),
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

async fn actor<T: BatchTarget>(version: Weak<T>, mut rx: mpsc::Receiver<Job>, config: BatchConfig) {
    // Told when a batch's call ends, so that a gathering batch can go as soon as a replica is free.
    let finished = Arc::new(Notify::new());
    while let Some(first) = rx.recv().await {
        let mut rows = first.rows;
        let mut batch = vec![first];
        // What is already waiting joins at once.
        while rows < config.max_batch_size {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.rows;
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let Some(v) = version.upgrade() else { return };
        if rows < config.max_batch_size && !v.has_free_slot() {
            // Every replica is busy, so this batch would wait anyway: it gathers company meanwhile.
            let deadline = tokio::time::Instant::now() + config.max_delay;
            loop {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => {
                            rows += job.rows;
                            batch.push(job);
                            if rows >= config.max_batch_size {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = finished.notified() => {
                        if v.has_free_slot() {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        // Clients that have gone get nothing computed for them.
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Requests whose non-batch dimensions differ cannot share a call: one group per shape.
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for job in batch {
            match groups.iter_mut().find(|g| same_shape(&g[0].inputs, &job.inputs)) {
                Some(g) => g.push(job),
                None => groups.push(vec![job]),
            }
        }
        for group in groups {
            let (v, finished) = (v.clone(), finished.clone());
            tokio::spawn(async move {
                run_group(v, group).await;
                finished.notify_one();
            });
        }
    }
}

fn same_shape(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter()
                .any(|y| y.name == x.name && y.datatype() == x.datatype() && y.shape[1..] == x.shape[1..])
        })
}

async fn run_group<T: BatchTarget>(v: Arc<T>, group: Vec<Job>) {
    let rows: Vec<usize> = group.iter().map(|j| j.rows).collect();
    let total: usize = rows.iter().sum();
    v.observe_batch(
        total,
        group.iter().map(|j| j.queued.elapsed()).max().unwrap_or_default(),
    );
    let (jobs_inputs, replies): (Vec<Vec<Tensor>>, Vec<_>) = group.into_iter().map(|j| (j.inputs, j.reply)).unzip();
    let merged = concat(jobs_inputs);
    match v.run_batch(merged).await {
        Ok(outputs) => match split(outputs, &rows) {
            Ok(parts) => {
                for (reply, part) in replies.into_iter().zip(parts) {
                    let _ = reply.send(Ok(part));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::Internal(e.clone())));
                }
            }
        },
        Err(e) => {
            // Every request of the batch gets the batch's error as it is: a full queue stays a 503, a
            // deadline a 504, an input the model refuses a 400.
            let shared = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(Error::Shared(shared.clone())));
            }
        }
    }
}

/// Concatenates each input across requests along the first dimension, in request order.
fn concat(mut jobs: Vec<Vec<Tensor>>) -> Vec<Tensor> {
    if jobs.len() == 1 {
        return jobs.pop().unwrap_or_default();
    }
    let first = &jobs[0];
    let mut merged: Vec<Tensor> = first
        .iter()
        .map(|t| {
            let mut shape = t.shape.clone();
            shape[0] = 0;
            Tensor {
                name: t.name.clone(),
                shape,
                data: empty_like(&t.data),
            }
        })
        .collect();
    for inputs in jobs {
        for t in inputs {
            if let Some(m) = merged.iter_mut().find(|m| m.name == t.name) {
                m.shape[0] += t.shape[0];
                append(&mut m.data, t.data);
            }
        }
    }
    merged
}

fn empty_like(d: &TensorData) -> TensorData {
    let mut d = d.clone();
    with_tensor_data!(&mut d, v => v.clear());
    d
}

fn append(into: &mut TensorData, from: TensorData) {
    macro_rules! ext {
        ($($v:ident),*) => {
            match (into, from) {
                $((TensorData::$v(a), TensorData::$v(b)) => a.extend(b),)*
                _ => {}
            }
        };
    }
    ext!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
    );
}

/// Splits each output along the first dimension into the requests' row counts.
fn split(outputs: Vec<Tensor>, rows: &[usize]) -> std::result::Result<Vec<Vec<Tensor>>, String> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(format!(
                "output '{}' has shape {:?}, not {total} rows: the model cannot be batched",
                out.name, out.shape
            ));
        }
        let per_row = out.data.len() / total.max(1);
        let mut start = 0;
        for (i, &r) in rows.iter().enumerate() {
            let mut shape = out.shape.clone();
            shape[0] = r as i64;
            let range = start * per_row..(start + r) * per_row;
            let data = with_tensor_data!(&out.data, v => slice(v, range.clone()));
            parts[i].push(Tensor {
                name: out.name.clone(),
                shape,
                data,
            });
            start += r;
        }
    }
    Ok(parts)
}

fn slice<T: Clone>(v: &[T], range: std::ops::Range<usize>) -> TensorData
where
    Vec<T>: Into<TensorData>,
{
    v[range].to_vec().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: i64, base: f32) -> Tensor {
        Tensor {
            name: name.into(),
            shape: vec![rows, 2],
            data: TensorData::Fp32((0..rows * 2).map(|i| base + i as f32).collect()),
        }
    }

    #[test]
    fn concat_then_split_gives_each_request_its_rows() {
        let merged = concat(vec![vec![t("x", 1, 0.0)], vec![t("x", 2, 10.0)]]);
        assert_eq!(merged[0].shape, vec![3, 2]);
        assert_eq!(merged[0].data, TensorData::Fp32(vec![0.0, 1.0, 10.0, 11.0, 12.0, 13.0]));
        let parts = split(merged, &[1, 2]).unwrap();
        assert_eq!(parts[0][0], t("x", 1, 0.0));
        assert_eq!(parts[1][0], t("x", 2, 10.0));
    }

    #[test]
    fn outputs_without_the_batch_rows_are_refused() {
        let out = Tensor {
            name: "y".into(),
            shape: vec![1],
            data: TensorData::Fp32(vec![1.0]),
        };
        assert!(split(vec![out], &[1, 1]).unwrap_err().contains("cannot be batched"));
    }

    /// A model that answers its inputs, records each batch's rows, and is busy when told.
    #[derive(Default)]
    struct Echo {
        busy: std::sync::atomic::AtomicBool,
        batches: std::sync::Mutex<Vec<usize>>,
    }

    impl BatchTarget for Echo {
        async fn run_batch(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
            self.batches.lock().unwrap().push(inputs[0].shape[0] as usize);
            Ok(inputs)
        }
        fn record_request(&self, _: Instant, _: Option<&Error>) {}
        fn observe_batch(&self, _: usize, _: Duration) {}
        fn has_free_slot(&self) -> bool {
            !self.busy.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    fn spec() -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: "x".into(),
            datatype: plinth_runtime::DataType::Fp32,
            shape: vec![-1, 2],
        }]
    }

    #[tokio::test]
    async fn a_request_that_finds_a_replica_free_runs_at_once() {
        let echo = Arc::new(Echo::default());
        let config = BatchConfig {
            max_batch_size: 32,
            max_delay: Duration::from_secs(2),
        };
        let b = Batcher::start(Arc::downgrade(&echo), spec(), config, Duration::from_secs(10));
        for _ in 0..3 {
            let started = Instant::now();
            let out = b.infer(&*echo, vec![t("x", 1, 0.0)]).await.unwrap();
            assert_eq!(out[0], t("x", 1, 0.0));
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}: it waited",
                started.elapsed()
            );
        }
        assert_eq!(*echo.batches.lock().unwrap(), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn requests_gather_while_every_replica_is_busy() {
        let echo = Arc::new(Echo::default());
        echo.busy.store(true, std::sync::atomic::Ordering::Relaxed);
        let config = BatchConfig {
            max_batch_size: 4,
            max_delay: Duration::from_secs(5),
        };
        let b = Arc::new(Batcher::start(
            Arc::downgrade(&echo),
            spec(),
            config,
            Duration::from_secs(10),
        ));
        // Four one-row requests while busy: one batch of four, sent when full (long before the delay).
        let started = Instant::now();
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let (b, echo) = (b.clone(), echo.clone());
                tokio::spawn(async move { b.infer(&*echo, vec![t("x", 1, i as f32)]).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let out = call.await.unwrap().unwrap();
            assert_eq!(out[0], t("x", 1, i as f32), "each gets its own row back");
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(*echo.batches.lock().unwrap(), vec![4]);
        // A lone request while busy waits for company up to the delay (here shortened by nothing).
        let config = BatchConfig {
            max_batch_size: 4,
            max_delay: Duration::from_millis(300),
        };
        let b = Batcher::start(Arc::downgrade(&echo), spec(), config, Duration::from_secs(10));
        let started = Instant::now();
        b.infer(&*echo, vec![t("x", 1, 0.0)]).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
    }
}
