//! A script's kept interpreters, each on a thread of its own (the guest needs an 8 MiB wasm stack, more
//! than a caller's thread may have): a call takes an idle one, or starts one while fewer than `max_idle`
//! exist, or waits for the next one freed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

use super::driver::ScienceResponse;
use super::instance::Recipe;
use crate::wasm::call::CallContext;
use crate::{Error, Result};

/// The native stack of an instance's thread: the wasm stack plus room for the host's frames.
const THREAD_STACK: usize = 32 << 20;

struct Job {
    body: Vec<u8>,
    ctx: CallContext,
    reply: mpsc::SyncSender<Result<ScienceResponse>>,
}

pub(super) struct Pool {
    pub(super) recipe: Recipe,
    /// Idle instance threads, each holding its interpreter; a call takes one and gives it back.
    idle: Mutex<Vec<mpsc::Sender<Job>>>,
    freed: Condvar,
    threads: AtomicUsize,
    /// Set when the script is dropped: instance threads then end (and free their interpreters).
    closed: AtomicBool,
}

impl Pool {
    /// A pool with its first interpreter started (so that a failing `init()` fails here), and the schema
    /// the script sent.
    pub(super) fn start(recipe: Recipe) -> Result<(Arc<Pool>, Option<Value>)> {
        let pool = Arc::new(Pool {
            recipe,
            idle: Mutex::new(Vec::new()),
            freed: Condvar::new(),
            threads: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        pool.threads.fetch_add(1, Ordering::Relaxed);
        let (sender, schema) = Pool::spawn(&pool)?;
        pool.give_back(sender);
        Ok((pool, schema))
    }

    /// One request, on a kept interpreter.
    pub(super) fn run(self: &Arc<Self>, body: &[u8], ctx: &CallContext) -> Result<ScienceResponse> {
        let sender = self.take()?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = Job {
            body: body.to_vec(),
            ctx: ctx.clone(),
            reply: tx,
        };
        if sender.send(job).is_err() {
            self.thread_gone();
            return Err(self.recipe.failed("its interpreter thread has gone"));
        }
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err(self.recipe.failed("its interpreter thread has gone")));
        self.give_back(sender);
        result
    }

    /// Ends the instance threads: they hold the script's state, and dropping their job senders ends
    /// them, and with them their interpreters (a replica removed or a version replaced frees its memory).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// An idle instance, a new one, or (at the limit) the next one freed.
    fn take(self: &Arc<Self>) -> Result<mpsc::Sender<Job>> {
        let max = self.recipe.limits.max_idle.max(1);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = idle.pop() {
                return Ok(s);
            }
            if self.threads.load(Ordering::Relaxed) < max {
                // Counted under the lock, so concurrent callers never start more than `max`.
                self.threads.fetch_add(1, Ordering::Relaxed);
                drop(idle);
                return Pool::spawn(self).map(|(s, _)| s);
            }
            idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One instance thread fewer: under the lock, so a caller about to wait cannot miss the wake-up.
    fn thread_gone(&self) {
        let _idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.threads.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_all();
    }

    fn give_back(&self, sender: mpsc::Sender<Job>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Once closed, a sender given back is dropped, which ends its thread.
        if !self.closed.load(Ordering::Acquire) {
            idle.push(sender);
        }
        drop(idle);
        self.freed.notify_one();
    }

    /// Starts an instance thread and waits for its interpreter to be ready (script imported, `init()`
    /// run); returns its job channel and the schema the script sent.
    /// The caller has counted the thread in `threads`; a failed start takes it back out.
    fn spawn(self: &Arc<Self>) -> Result<(mpsc::Sender<Job>, Option<Value>)> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plinth-py-{}", self.recipe.name))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let recipe = &me.recipe;
                let mut live = match recipe.instantiate() {
                    Ok((live, schema)) => {
                        let _ = ready_tx.send(Ok(schema));
                        Some(live)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = inbox.recv() {
                    if live.is_none() {
                        match recipe.instantiate() {
                            Ok((l, _)) => live = Some(l),
                            Err(e) => {
                                let _ = job.reply.send(Err(e));
                                continue;
                            }
                        }
                    }
                    let (result, keep) = recipe.call(live.as_mut().expect("instantiated above"), &job.body, &job.ctx);
                    if !keep {
                        live = None; // a trapped interpreter is not reused
                    }
                    let _ = job.reply.send(result);
                }
            });
        let failed = |e: Error| {
            self.thread_gone();
            e
        };
        if let Err(e) = spawned {
            return Err(failed(Error::Engine {
                what: "starting an interpreter thread",
                source: e.into(),
            }));
        }
        match ready_rx.recv() {
            Ok(Ok(schema)) => Ok((jobs, schema)),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(
                self.recipe.failed("its interpreter thread ended while starting"),
            )),
        }
    }
}
