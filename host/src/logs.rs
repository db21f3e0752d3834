//! Per-service logs kept in memory for `plinth service logs`: deployment events and every line an
//! entry script writes (its `log` calls, stdout and stderr), tagged with the request id.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use dashmap::DashMap;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept per service.
pub const LINES_KEPT: usize = 2000;

#[derive(Default)]
pub struct LogHub {
    services: DashMap<String, Mutex<VecDeque<String>>>,
}

impl LogHub {
    pub fn new() -> Self {
        LogHub::default()
    }

    pub fn push(&self, service: &str, line: String) {
        let entry = self.services.entry(service.to_string()).or_default();
        let mut lines = entry.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == LINES_KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// An event line with a timestamp.
    pub fn event(&self, service: &str, level: &str, message: &str) {
        self.push(service, format!("{} {level:<5} {message}", timestamp()));
    }

    /// The last `tail` lines (all when `None`).
    pub fn lines(&self, service: &str, tail: Option<usize>) -> Vec<String> {
        let Some(entry) = self.services.get(service) else {
            return Vec::new();
        };
        let lines = entry.lock().unwrap_or_else(|p| p.into_inner());
        let skip = tail.map(|t| lines.len().saturating_sub(t)).unwrap_or(0);
        lines.iter().skip(skip).cloned().collect()
    }

    pub fn remove(&self, service: &str) {
        self.services.remove(service);
    }
}

/// Captures `plinth::script` events (fields `script` = service, `request_id`) and `plinth::event` events
/// (field `service`: scaling decisions and the like) into a [`LogHub`].
pub struct ScriptLogLayer(pub std::sync::Arc<LogHub>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ScriptLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !is_service_event(event.metadata().target()) {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        if let Some(service) = v.script {
            let level = event.metadata().level().as_str();
            let rid = v.request_id.as_deref().unwrap_or("-");
            self.0
                .push(&service, format!("{} {level:<5} [{rid}] {}", timestamp(), v.message));
        }
    }
}

/// Targets whose events belong in a service's log.
pub fn is_service_event(target: &str) -> bool {
    target == "plinth::script" || target == "plinth::event"
}

#[derive(Default)]
struct Fields {
    script: Option<String>,
    request_id: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "script" | "service" => self.script = Some(value.to_string()),
            "request_id" => self.request_id = Some(value.to_string()),
            "message" => self.message.push_str(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "script" | "service" => self.script = Some(format!("{value:?}").trim_matches('"').to_string()),
            "request_id" => self.request_id = Some(format!("{value:?}").trim_matches('"').to_string()),
            _ => {}
        }
    }
}

/// RFC 3339 UTC with seconds, without pulling in a date crate.
pub fn timestamp() -> String {
    let secs = crate::auth::now();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
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
    }

    #[test]
    fn timestamps_look_right() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
