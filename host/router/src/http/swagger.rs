//! Each service's OpenAPI document (`GET /api/v1/service/{name}/swagger.json`), as Azure ML serves one.

use serde_json::json;

use crate::service::Service;

/// OpenAPI 3 for one service: its scoring route, and its inputs when it serves an ONNX model directly.
pub(crate) fn swagger(service: &Service) -> serde_json::Value {
    let info = service.default_version().info();
    let request_schema = match info.has_script {
        false => {
            let inputs = &info.inputs;
            let mut props = serde_json::Map::new();
            for spec in inputs {
                props.insert(
                    spec.name.clone(),
                    json!({"type": "array", "description": format!("{} tensor of shape {:?} (-1: any size)", spec.datatype, spec.shape)}),
                );
            }
            if inputs.len() == 1 {
                props.insert(
                    "data".into(),
                    json!({"type": "array", "description": "the single input, by another name"}),
                );
            }
            json!({"type": "object", "properties": props})
        }
        _ => match info
            .schema
            .as_ref()
            .and_then(|s| s.get("input"))
            .filter(|s| !s.is_null())
        {
            Some(schema) => schema.clone(),
            None => json!({"type": "object", "description": "passed as it is to the entry script's run(raw_data)"}),
        },
    };
    let output = info
        .schema
        .as_ref()
        .and_then(|s| s.get("output"))
        .filter(|s| !s.is_null());
    let ok = match output {
        Some(schema) => json!({"description": "The prediction", "content": {"application/json": {"schema": schema}}}),
        None => json!({"description": "The prediction"}),
    };
    json!({
        "openapi": "3.0.1",
        "info": {"title": format!("Plinth service {}", service.name()), "version": "1.0"},
        "paths": {
            format!("/api/v1/service/{}/score", service.name()): {
                "post": {
                    "summary": "Score",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": request_schema}}},
                    "responses": {
                        "200": ok,
                        "400": {"description": "The request does not fit the model"},
                        "401": {"description": "Missing or invalid key or token"},
                        "503": {"description": "No free replica within maxQueueWaitMs"},
                        "504": {"description": "No answer within scoringTimeoutMs"}
                    }
                }
            }
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    })
}
