//! Connection hygiene: every open connection is registered, and a reaper closes the ones that hold a
//! descriptor without using it. A connection with no request in flight is closed when a request's head
//! has not arrived within the header-read timeout (counted from the connection's first byte, or from the
//! first byte after the last response), or when nothing at all has arrived for the idle timeout. When
//! the connection cap is reached, the oldest idle connections are shed so that a new one (a health
//! check, say) gets in; when none is idle, the new one gets a 503.
//!
//! The hot path pays one relaxed atomic add per read or write and a few per request: the reaper, not
//! the connection, keeps the clock. Bytes going out count as activity, so a large answer read slowly
//! is not idleness; a request in flight is the deadline's business, never the reaper's.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::observe::Metrics;

/// What one connection shares with the registry.
pub(crate) struct Conn {
    /// Reads that returned bytes.
    reads: AtomicU64,
    /// Writes that took bytes (a large answer going out slowly is not idleness).
    writes: AtomicU64,
    /// Requests whose head has been read and whose response is not yet made.
    in_flight: AtomicU32,
    /// `reads` when the last request ended (`u64::MAX` before the first: a new connection owes a head).
    reads_when_idle: AtomicU64,
    /// Told when the connection is to be closed.
    pub(crate) close: Notify,
}

impl Conn {
    /// Marks a request in flight until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Relaxed);
        RequestGuard(self.clone())
    }
}

pub(crate) struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.reads_when_idle.store(self.0.reads.load(Relaxed), Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The reaper's view of one connection.
struct Entry {
    conn: Arc<Conn>,
    seen_activity: u64,
    /// When `reads` or `writes` last changed (as seen by the reaper).
    quiet_since: Instant,
    /// When a request's head began to arrive without being complete.
    partial_since: Option<Instant>,
    closing: bool,
}

impl Entry {
    fn idle(&self) -> bool {
        !self.closing && self.conn.in_flight.load(Relaxed) == 0
    }
}

/// The timeouts and cap (see `ServeOptions`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

/// Every open connection.
pub(crate) struct Conns {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Told when a connection goes while the cap is reached.
    freed: Notify,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// Why an accepted connection is not served.
pub(crate) struct Full;

impl Conns {
    pub(crate) fn new(limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Conns {
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
            limits,
            metrics,
        })
    }

    fn closed(&self, reason: &str, n: usize) {
        if n > 0 {
            self.metrics
                .connections_closed
                .with_label_values(&[reason])
                .inc_by(n as u64);
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Waits, before the next accept, until a connection fits under the cap: at the cap the oldest
    /// idle connections are told to close (a batch, 1/64 of the cap, so that a flood of new connections
    /// does not scan the table once each) and this waits for them to go, since their descriptors count
    /// until then. Returns at once when nothing is idle: the next connection is then turned away.
    pub(crate) async fn make_room(&self) {
        let cap = self.limits.max_connections.max(1);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.open.load(Relaxed) < cap {
                return;
            }
            if !self.shed(cap) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
        }
    }

    /// Tells the oldest idle connections to close until those not closing are below the cap; false when
    /// none is idle or closing (no room will come).
    fn shed(&self, cap: usize) -> bool {
        let mut entries = self.entries();
        let closing = entries.values().filter(|e| e.closing).count();
        let live = entries.len() - closing;
        if live < cap {
            return closing > 0;
        }
        let want = (live + 1 - cap).max(cap / 64).max(1);
        let mut idle: Vec<(Instant, u64)> = entries
            .iter()
            .filter(|(_, e)| e.idle())
            .map(|(id, e)| (e.quiet_since, *id))
            .collect();
        if idle.is_empty() {
            return closing > 0;
        }
        let n = want.min(idle.len());
        if n < idle.len() {
            idle.select_nth_unstable(n);
        }
        for (_, id) in &idle[..n] {
            if let Some(e) = entries.get_mut(id) {
                e.closing = true;
                e.conn.close.notify_one();
            }
        }
        self.closed("shed", n);
        tracing::debug!(
            shed = n,
            open = live,
            "connection cap reached: oldest idle connections closed"
        );
        true
    }

    /// Registers a new connection; `Full` (and the caller turns it away) when the cap is reached and
    /// [`Conns::make_room`] found nothing idle to close.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Registered, Full> {
        if self.open.load(Relaxed) >= self.limits.max_connections.max(1) {
            self.closed("turned_away", 1);
            return Err(Full);
        }
        let now = Instant::now();
        let conn = Arc::new(Conn {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            reads_when_idle: AtomicU64::new(u64::MAX),
            close: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Relaxed);
        // The table and the count change under one lock, so that `shed` never sees a connection in one
        // and not the other (and takes a cap it could make room under for one with no room).
        let mut entries = self.entries();
        entries.insert(
            id,
            Entry {
                conn: conn.clone(),
                seen_activity: 0,
                quiet_since: now,
                partial_since: Some(now),
                closing: false,
            },
        );
        self.open.fetch_add(1, Relaxed);
        drop(entries);
        self.metrics.open_connections.inc();
        Ok(Registered {
            conns: self.clone(),
            id,
            conn,
        })
    }

    /// Closes what the timeouts say to close; returns how many were told to close.
    fn reap(&self, now: Instant) -> usize {
        let Limits { header_read, idle, .. } = self.limits;
        let (mut slow, mut quiet) = (0, 0);
        for e in self.entries().values_mut() {
            if e.closing {
                continue;
            }
            let reads = e.conn.reads.load(Relaxed);
            let activity = reads.wrapping_add(e.conn.writes.load(Relaxed));
            if activity != e.seen_activity {
                e.seen_activity = activity;
                e.quiet_since = now;
            }
            if e.conn.in_flight.load(Relaxed) > 0 {
                e.partial_since = None;
                continue;
            }
            let partial = reads != e.conn.reads_when_idle.load(Relaxed);
            let since = match (partial, e.partial_since) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
            };
            e.partial_since = since;
            let slow_head = since.is_some_and(|t| now.duration_since(t) >= header_read);
            let idle_too_long = now.duration_since(e.quiet_since) >= idle;
            if slow_head || idle_too_long {
                e.closing = true;
                e.conn.close.notify_one();
                if slow_head { slow += 1 } else { quiet += 1 }
            }
        }
        self.closed("header_timeout", slow);
        self.closed("idle", quiet);
        slow + quiet
    }

    /// Runs the reaper until the registry is dropped.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tick = (self.limits.header_read.min(self.limits.idle) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(conns) = weak.upgrade() else { return };
                let closed = conns.reap(Instant::now());
                if closed > 0 {
                    tracing::debug!(closed, "closed connections past the header-read or idle timeout");
                }
            }
        })
    }
}

/// A registered connection; unregisters when dropped.
pub(crate) struct Registered {
    conns: Arc<Conns>,
    id: u64,
    pub(crate) conn: Arc<Conn>,
}

impl Registered {
    /// The stream, counting its reads for the reaper.
    pub(crate) fn wrap<S>(&self, stream: S) -> CountingIo<S> {
        CountingIo {
            inner: stream,
            conn: self.conn.clone(),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut entries = self.conns.entries();
        entries.remove(&self.id);
        let was = self.conns.open.fetch_sub(1, Relaxed);
        drop(entries);
        self.conns.metrics.open_connections.dec();
        if was >= self.conns.limits.max_connections {
            self.conns.freed.notify_waiters();
        }
    }
}

/// A stream that counts its reads.
pub(crate) struct CountingIo<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.reads.fetch_add(1, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.writes.fetch_add(1, Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.writes.fetch_add(1, Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(max: usize) -> Arc<Conns> {
        let limits = Limits {
            header_read: Duration::from_secs(2),
            idle: Duration::from_secs(10),
            max_connections: max,
        };
        Conns::new(limits, Arc::new(Metrics::new()))
    }

    fn closing(c: &Conns, r: &Registered) -> bool {
        c.entries()[&r.id].closing
    }

    #[test]
    fn a_head_that_does_not_arrive_in_time_is_closed() {
        let c = conns(10);
        let t0 = Instant::now();
        let silent = c.admit().ok().unwrap();
        let served = c.admit().ok().unwrap();
        // `served` gets a request through, then goes quiet between requests.
        served.conn.reads.fetch_add(1, Relaxed);
        drop(served.conn.request());
        assert_eq!(c.reap(t0 + Duration::from_secs(1)), 0);
        assert_eq!(c.reap(t0 + Duration::from_secs(3)), 1, "no head within 2 s");
        assert!(closing(&c, &silent) && !closing(&c, &served));
        // A second request's head starts to trickle in and stalls.
        served.conn.reads.fetch_add(1, Relaxed);
        assert_eq!(c.reap(t0 + Duration::from_secs(4)), 0);
        assert_eq!(c.reap(t0 + Duration::from_secs(6)), 1);
        assert!(closing(&c, &served));
    }

    #[test]
    fn idle_connections_close_after_the_idle_timeout_and_busy_ones_never() {
        let c = conns(10);
        let t0 = Instant::now();
        let idle = c.admit().ok().unwrap();
        let busy = c.admit().ok().unwrap();
        for r in [&idle, &busy] {
            r.conn.reads.fetch_add(1, Relaxed);
        }
        drop(idle.conn.request());
        let _in_flight = busy.conn.request();
        assert_eq!(c.reap(t0 + Duration::from_secs(5)), 0);
        assert_eq!(c.reap(t0 + Duration::from_secs(16)), 1);
        assert!(
            closing(&c, &idle) && !closing(&c, &busy),
            "a request in flight is the deadline's"
        );
        drop(idle);
        assert_eq!(c.open(), 1);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_are_shed_and_busy_ones_kept() {
        let c = conns(3);
        let old = c.admit().ok().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let newer = c.admit().ok().unwrap();
        let busy = c.admit().ok().unwrap();
        let _req = busy.conn.request();
        assert!(c.admit().is_err(), "at the cap without making room: turned away");
        // Making room tells the oldest idle connection to close, and waits until it has gone.
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.make_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(closing(&c, &old) && !closing(&c, &newer) && !closing(&c, &busy));
        assert!(!waiting.is_finished(), "its descriptor is still open");
        drop(old);
        waiting.await.unwrap();
        let fresh = c.admit().ok().unwrap();
        let _reqs = [newer.conn.request(), fresh.conn.request()];
        c.make_room().await;
        assert!(c.admit().is_err(), "every connection busy: no room");
        let closed = |r: &str| c.metrics.connections_closed.with_label_values(&[r]).get();
        assert_eq!((closed("shed"), closed("turned_away")), (1, 2));
        assert_eq!(c.metrics.open_connections.get(), 3);
    }
    /// Connections closing on other threads while the accept loop makes room: however their drops
    /// interleave with it, an idle connection is always shed before a new one is turned away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_closing_on_other_threads_never_turn_a_new_one_away() {
        let c = conns(4);
        let mut tasks = Vec::new();
        for _ in 0..3000 {
            c.make_room().await;
            let registered = c.admit().ok().expect("an idle connection could have been shed");
            tasks.push(tokio::spawn(async move {
                registered.conn.close.notified().await;
                drop(registered);
            }));
        }
        let closed = |r: &str| c.metrics.connections_closed.with_label_values(&[r]).get();
        assert_eq!(closed("turned_away"), 0);
        assert!(closed("shed") >= 2996);
        drop(tasks);
    }
}
