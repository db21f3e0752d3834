//! Request logs, and per-service logs kept in memory for `plinth service logs`: deployment events and every line an
//! entry script writes (its `log` calls, stdout and stderr), tagged with the request id.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::time::{format_timestamp, timestamp, unix_nanos};

/// Lines kept per service: this many event and script lines, and as many request lines (kept apart, so
/// heavy traffic never pushes a script's output or a scaling decision out of the log).
pub const LINES_KEPT: usize = 2000;

/// Request lines are kept in shards, one per thread seat, so two requests ending at once on two
/// threads never wait for each other.
const SHARDS: usize = 4;

#[derive(Default)]
pub struct LogHub {
    services: DashMap<String, ServiceLog>,
}

#[derive(Default)]
struct ServiceLog {
    text: Mutex<VecDeque<(u128, String)>>,
    requests: [Mutex<VecDeque<RequestLine>>; SHARDS],
}

/// A line on its way out of [`LogHub::lines`].
enum Kept {
    Text(String),
    Request(RequestLine),
}

/// A request, kept as its fields and written out only when somebody reads the log.
#[derive(Clone)]
struct RequestLine {
    at_ns: u128,
    request_id: String,
    version: Arc<str>,
    status: u16,
    latency_us: u64,
    /// What went wrong, for a request that failed (a script's exception and line, say).
    error: Option<Box<str>>,
}

impl RequestLine {
    fn render(&self) -> String {
        let mut line = format!(
            "{} REQ   [{}] version={} status={} latency_us={}",
            format_timestamp((self.at_ns / 1_000_000_000) as u64),
            self.request_id,
            self.version,
            self.status,
            self.latency_us
        );
        if let Some(e) = &self.error {
            line.push_str(&format!(" error={e:?}"));
        }
        line
    }
}

fn keep<T>(lines: &Mutex<VecDeque<T>>, cap: usize, line: T) {
    let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
    if lines.len() >= cap {
        lines.pop_front();
    }
    lines.push_back(line);
}

impl LogHub {
    pub fn new() -> Self {
        LogHub::default()
    }

    fn with_log(&self, service: &str, f: impl FnOnce(&ServiceLog)) {
        match self.services.get(service) {
            Some(log) => f(&log),
            None => f(&self.services.entry(service.to_string()).or_default()),
        }
    }

    pub fn push(&self, service: &str, line: String) {
        self.with_log(service, |log| keep(&log.text, LINES_KEPT, (unix_nanos(), line)));
    }

    /// One scoring request, kept cheaply (the line is written when read); `error` says what went wrong
    /// for one that failed.
    pub fn request(
        &self,
        service: &str,
        request_id: &str,
        version: &Arc<str>,
        status: u16,
        latency_us: u64,
        error: Option<&dyn std::fmt::Display>,
    ) {
        let line = RequestLine {
            at_ns: unix_nanos(),
            request_id: request_id.to_string(),
            version: version.clone(),
            status,
            latency_us,
            error: error.map(|e| e.to_string().into_boxed_str()),
        };
        let shard = plinth_runtime::thread_seat() % SHARDS;
        self.with_log(service, |log| keep(&log.requests[shard], LINES_KEPT / SHARDS, line));
    }

    /// An event line with a timestamp.
    pub fn event(&self, service: &str, level: &str, message: &str) {
        self.push(service, format!("{} {level:<5} {message}", timestamp()));
    }

    /// The last `tail` lines (all when `None`), oldest first.
    pub fn lines(&self, service: &str, tail: Option<usize>) -> Vec<String> {
        self.lines_after(service, None, tail).0
    }

    /// The lines kept after the `after` cursor (all when `None`), the last `tail` of them, oldest first;
    /// and the cursor of the last line kept (for the next call), when there is one.
    pub fn lines_after(&self, service: &str, after: Option<u128>, tail: Option<usize>) -> (Vec<String>, Option<u128>) {
        let Some(log) = self.services.get(service) else {
            return (Vec::new(), None);
        };
        // Requests are written out only for the lines that are returned (`--follow` asks for a short tail).
        let mut all: Vec<(u128, Kept)> = log
            .text
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(at, line)| (*at, Kept::Text(line.clone())))
            .collect();
        for shard in &log.requests {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(shard.iter().map(|r| (r.at_ns, Kept::Request(r.clone()))));
        }
        // Stable: lines from one writer with the same timestamp keep their order.
        all.sort_by_key(|(at, _)| *at);
        let cursor = all.last().map(|(at, _)| *at);
        if let Some(after) = after {
            all.retain(|(at, _)| *at > after);
        }
        let skip = tail.map(|t| all.len().saturating_sub(t)).unwrap_or(0);
        let lines = all
            .into_iter()
            .skip(skip)
            .map(|(_, kept)| match kept {
                Kept::Text(line) => line,
                Kept::Request(r) => r.render(),
            })
            .collect();
        (lines, cursor)
    }

    pub fn remove(&self, service: &str) {
        self.services.remove(service);
    }
}

/// Targets whose events belong in a service's log (the binary's log layer feeds them to [`LogHub::push`]).
pub fn is_service_event(target: &str) -> bool {
    target == "plinth::script" || target == "plinth::event"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail() {
        let hub = LogHub::new();
        for i in 0..LINES_KEPT + 5 {
            hub.push("s", format!("{i}"));
        }
        let all = hub.lines("s", None);
        assert_eq!(all.len(), LINES_KEPT);
        assert_eq!(all[0], "5");
        assert_eq!(
            hub.lines("s", Some(2)),
            vec![format!("{}", LINES_KEPT + 3), format!("{}", LINES_KEPT + 4)]
        );
        assert!(hub.lines("other", None).is_empty());
        hub.request("other", "abc", &Arc::from("blue"), 200, 42, None);
        let line = &hub.lines("other", None)[0];
        assert!(
            line.ends_with(" REQ   [abc] version=blue status=200 latency_us=42"),
            "{line}"
        );
        hub.request(
            "other",
            "def",
            &Arc::from("blue"),
            500,
            7,
            Some(&"KeyError: 'data' (at score.py:12)"),
        );
        // A cursor: only what was written after it, even when lines repeat word for word.
        let (_, cursor) = hub.lines_after("other", None, None);
        hub.event("other", "INFO", "deployed");
        hub.event("other", "INFO", "deployed");
        let (after, next) = hub.lines_after("other", cursor, None);
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(hub.lines_after("other", next, None).0.is_empty());
        let failed = hub
            .lines("other", None)
            .into_iter()
            .find(|l| l.contains("status=500"))
            .unwrap();
        assert!(
            failed.ends_with(r#"status=500 latency_us=7 error="KeyError: 'data' (at score.py:12)""#),
            "{failed}"
        );
    }
}
