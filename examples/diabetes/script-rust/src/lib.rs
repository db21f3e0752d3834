//! `score.py` for the diabetes Ridge model, in Rust: `{"data": [[10 features], ...]}` in,
//! `{"predictions": [...]}` out.

use plinth_plugin::{Error, Guest, Tensor, infer};

struct Diabetes;

#[derive(serde::Deserialize)]
struct Request {
    data: Vec<Vec<f32>>,
}

impl Guest for Diabetes {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn run(raw_data: String) -> Result<String, Error> {
        let req: Request = serde_json::from_str(&raw_data).map_err(Error::bad_request)?;
        if let Some(i) = req.data.iter().position(|row| row.len() != 10) {
            return Err(Error::bad_request(format!("row {i} has {} features, the model takes 10", req.data[i].len())));
        }
        let rows = req.data.len() as i64;
        let x = Tensor::fp32("X", vec![rows, 10], req.data.concat());
        let out = infer("diabetes", &[x]).map_err(Error::internal)?;
        let predictions = out[0].as_fp32().ok_or_else(|| Error::internal("model returned a non-FP32 output"))?;
        serde_json::to_string(&serde_json::json!({ "predictions": predictions })).map_err(Error::internal)
    }
}

plinth_plugin::export!(Diabetes);
