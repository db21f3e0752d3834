//! The bounds on every call into an entry script: a wall-clock deadline (epoch interruption: the engine's
//! ticker advances the epoch every [`EPOCH_TICK`], a store traps once its deadline in ticks has passed),
//! a linear-memory cap ([`MemoryCap`]), a response cap and a log budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

/// How often the epoch advances; deadlines are whole multiples of it, so a runaway script is
/// stopped at most one tick after its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bounds on every call into one entry script.
#[derive(Debug, Clone)]
pub struct ScriptLimits {
    /// Wall-clock budget of one `run` call (Azure's `scoringTimeoutMs`). Default 60 s.
    pub deadline: Duration,
    /// Budget of `init()` on a fresh instance. Default 120 s: loading a model can be slow.
    pub init_deadline: Duration,
    /// Linear memory cap per instance (at most the engine's `max_memory_bytes`). Default 256 MiB.
    pub memory_bytes: usize,
    /// Largest response a `run` call may return. Default 64 MiB.
    pub max_response_bytes: usize,
    /// Log output (stdout, stderr and `log`) kept per call; the rest is dropped. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Initialised instances kept idle for reuse. Default 4.
    pub max_idle: usize,
    /// What a scientific interpreter may write into its private `/` and `/tmp` (`scriptTmpMb`); writes
    /// beyond it fail in the script with ENOSPC. Default 128 MiB.
    pub tmp_bytes: u64,
    /// Raised by the owner when the instances are no longer wanted (their service deleted while it
    /// loads): an `init()` that runs stops within [`STOP_CHECK`].
    pub stop: Arc<AtomicBool>,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            deadline: Duration::from_secs(60),
            init_deadline: Duration::from_secs(120),
            memory_bytes: 256 << 20,
            max_response_bytes: 64 << 20,
            max_log_bytes: 64 << 10,
            max_idle: 4,
            tmp_bytes: 128 << 20,
            stop: Arc::default(),
        }
    }
}

/// Caps linear memory growth and remembers whether the cap was hit, so a trap can be reported as
/// "memory limit exceeded" rather than whatever the guest did when its allocation failed.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = Some(desired);
            wasmtime::bail!(
                "memory limit of {} MiB exceeded (asked for {} MiB)",
                self.limit >> 20,
                desired >> 20
            );
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// How often a running `init()` looks at [`ScriptLimits::stop`].
pub const STOP_CHECK: Duration = Duration::from_millis(200);

/// An `init()` stopped because its instances are no longer wanted.
#[derive(Debug)]
pub(crate) struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("init() stopped: the service was deleted while it loaded")
    }
}

impl std::error::Error for Stopped {}

/// Bounds the `init()` about to run in `store`: it traps at `limits.init_deadline` (as a deadline), or
/// with [`Stopped`] within [`STOP_CHECK`] of `limits.stop` being raised. [`end_init`] puts the plain
/// deadline back.
pub(crate) fn bound_init<T: 'static>(store: &mut Store<T>, limits: &ScriptLimits) {
    let step = ticks(STOP_CHECK);
    let mut left = ticks(limits.init_deadline);
    let stop = limits.stop.clone();
    let first = step.min(left);
    left -= first;
    store.set_epoch_deadline(first);
    store.epoch_deadline_callback(move |_| {
        if stop.load(Ordering::Relaxed) {
            return Err(Stopped.into());
        }
        if left == 0 {
            return Err(Trap::Interrupt.into());
        }
        let next = step.min(left);
        left -= next;
        Ok(UpdateDeadline::Continue(next))
    });
}

/// After `init()`: a deadline traps again, with no look at the stop flag.
pub(crate) fn end_init<T>(store: &mut Store<T>) {
    store.epoch_deadline_trap();
}

/// Epoch ticks that cover `d`, plus one so a deadline is never shorter than asked.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] on a thread named `name`, until the returned flag is
/// cleared or the engine is gone.
pub(crate) fn start_epoch_ticker(engine: &wasmtime::Engine, name: &str) -> std::io::Result<Arc<AtomicBool>> {
    let ticker = Arc::new(AtomicBool::new(true));
    let running = ticker.clone();
    let weak = engine.weak();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        while running.load(Ordering::Relaxed) {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })?;
    Ok(ticker)
}

/// Which call into a script stopped: `init()` on a fresh instance (bounded by `init_deadline`) or a
/// scoring call (bounded by `deadline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Init,
    Run,
}

/// A failed `init()` as the caller is told: [`trap_error`]'s words as [`crate::Error::ScriptInit`]
/// (a stopped init already is one).
pub(crate) fn init_error(
    script: &str,
    limits: &ScriptLimits,
    e: &wasmtime::Error,
    memory_hit: Option<usize>,
    output: &str,
) -> crate::Error {
    match trap_error(script, limits, Phase::Init, e, memory_hit, output) {
        stopped @ crate::Error::ScriptInit { .. } => stopped,
        trap => crate::Error::ScriptInit {
            script: script.to_string(),
            message: trap.to_string(),
        },
    }
}

/// A call stopped by the host, as the caller is told: the deadline of the phase it was in (named), the
/// memory cap (`memory_hit`, the size asked for), or the script's own trap, with the last useful line it
/// printed.
pub(crate) fn trap_error(
    script: &str,
    limits: &ScriptLimits,
    phase: Phase,
    e: &wasmtime::Error,
    memory_hit: Option<usize>,
    output: &str,
) -> crate::Error {
    use crate::TrapKind;
    if let Some(stopped) = e.downcast_ref::<Stopped>() {
        return crate::Error::ScriptInit {
            script: script.to_string(),
            message: stopped.to_string(),
        };
    }
    let kind = if memory_hit.is_some() {
        TrapKind::Memory
    } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        TrapKind::Deadline
    } else {
        TrapKind::Trap
    };
    let mut message = match kind {
        TrapKind::Deadline => match phase {
            Phase::Init => format!(
                "init() stopped after {} s (initTimeoutSeconds)",
                limits.init_deadline.as_secs_f64()
            ),
            Phase::Run => format!("stopped after {} ms (scoringTimeoutMs)", limits.deadline.as_millis()),
        },
        TrapKind::Memory => format!(
            "the script asked for {} MiB, the cap is {} MiB",
            memory_hit.unwrap_or(0) >> 20,
            limits.memory_bytes >> 20
        ),
        TrapKind::Trap => match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{e}"),
        },
    };
    // A Rust panic or a Python traceback ends up on stderr; its last line is the useful part.
    let useful = |l: &&str| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE");
    if let Some(last) = output.lines().rev().find(useful) {
        message.push_str(&format!(" (script output: {})", last.trim()));
    }
    crate::Error::ScriptTrap {
        script: script.to_string(),
        kind,
        message,
    }
}
