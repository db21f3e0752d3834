//! The binary's log layer: script output and service events into each service's log.

use std::fmt::Write as _;
use std::sync::Arc;

use plinth_router::{LogHub, is_service_event};
use plinth_spec::time::timestamp;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Captures `plinth::script` events (fields `script` = service, `request_id`) and `plinth::event` events
/// (field `service`: scaling decisions and the like) into a [`LogHub`].
pub struct ScriptLogLayer(pub Arc<LogHub>);

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
