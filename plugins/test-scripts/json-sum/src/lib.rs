//! Parses `{"values": [...]}`, sums the values and answers `{"sum": s, "count": n}`: the per-call
//! cost of an entry script that does real JSON work, without a model.

use plinth_plugin::{Error, Guest};

struct JsonSum;

#[derive(serde::Deserialize)]
struct Request {
    values: Vec<f64>,
}

impl Guest for JsonSum {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn run(raw_data: String) -> Result<String, Error> {
        let req: Request = serde_json::from_str(&raw_data).map_err(Error::bad_request)?;
        let sum: f64 = req.values.iter().sum();
        serde_json::to_string(&serde_json::json!({ "sum": sum, "count": req.values.len() })).map_err(Error::internal)
    }
}

plinth_plugin::export!(JsonSum);
