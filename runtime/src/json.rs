//! The JSON shapes of a no-code ONNX service: `{"data": [[...]]}` (or `{"<input>": ...}` per input) in,
//! `{"<output>": [[...]], ...}` out, nested arrays following each tensor's shape.

use serde_json::Value;

use crate::{DataType, Error, Result, Tensor, TensorData, TensorSpec, with_tensor_data};

/// Decodes a request body into one tensor per model input.
///
/// A model with one input takes `{"data": ...}` or `{"<input name>": ...}`; a model with several takes
/// one key per input. A row given without its batch dimension (`{"data": [1, 2, 3]}` for an input of
/// shape `[-1, 3]`) is taken as a batch of one.
pub fn decode_request(inputs: &[TensorSpec], body: &[u8]) -> Result<Vec<Tensor>> {
    // The common case (numbers in nested arrays) goes straight from the bytes into typed tensors; anything
    // else, and every mistake, takes the general path below, which names the problem.
    match fast::decode(inputs, body) {
        Some(tensors) => Ok(tensors),
        None => decode_general(inputs, body),
    }
}

fn decode_general(inputs: &[TensorSpec], body: &[u8]) -> Result<Vec<Tensor>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidInput(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(Error::InvalidInput(format!(
            "request body must be a JSON object like {{\"data\": [[...]]}} with {}",
            expected(inputs)
        )));
    };
    if let [spec] = inputs
        && !fields.contains_key(&spec.name)
        && let Some(data) = fields.remove("data")
    {
        if let Some(key) = fields.keys().next() {
            return Err(Error::InvalidInput(format!("unexpected field '{key}' beside 'data'")));
        }
        return Ok(vec![decode_tensor(spec, &data)?]);
    }
    if let Some(key) = fields.keys().find(|k| !inputs.iter().any(|s| &s.name == *k)) {
        return Err(Error::InvalidInput(format!(
            "unknown field '{key}': the request needs {}",
            expected(inputs)
        )));
    }
    inputs
        .iter()
        .map(|spec| match fields.get(&spec.name) {
            Some(v) => decode_tensor(spec, v),
            None => Err(Error::InvalidInput(format!(
                "missing field '{}': the request needs {}",
                spec.name,
                expected(inputs)
            ))),
        })
        .collect()
}

fn expected(inputs: &[TensorSpec]) -> String {
    let names: Vec<String> = inputs
        .iter()
        .map(|s| format!("'{}' ({} {:?})", s.name, s.datatype, s.shape))
        .collect();
    if inputs.len() == 1 {
        format!("'data' or {}", names[0])
    } else {
        names.join(", ")
    }
}

/// A JSON number as FP32, unless it is too large for one (it would become infinity).
fn fp32(x: f64) -> Option<f32> {
    let y = x as f32;
    y.is_finite().then_some(y)
}

/// A JSON number as FP16, unless it is too large for one.
fn fp16(x: f64) -> Option<half::f16> {
    let y = half::f16::from_f64(x);
    y.is_finite().then_some(y)
}

/// Elements reserved up front for a decoded tensor; more are added only as the body really holds them.
const PREALLOCATE_AT_MOST: usize = 1 << 16;

/// Turns nested JSON arrays into a tensor of the spec's datatype, checking rectangularity.
pub fn decode_tensor(spec: &TensorSpec, value: &Value) -> Result<Tensor> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    // The shape comes from the first element at each depth, so its product can be far larger than the
    // body: reserve at most a modest amount and let a ragged body fail before it grows.
    let mut flat = Vec::with_capacity(Tensor::element_count(&shape)?.min(PREALLOCATE_AT_MOST));
    walk(&spec.name, value, &shape, &mut Vec::new(), &mut flat)?;
    let data = flat_data(&spec.name, spec.datatype, &flat)?;
    // A single row for a batched input: add the batch dimension.
    if shape.len() + 1 == spec.shape.len() && spec.shape[0] < 0 {
        shape.insert(0, 1);
    }
    let tensor = Tensor {
        name: spec.name.clone(),
        shape,
        data,
    };
    spec.check(&tensor)?;
    Ok(tensor)
}

/// Converts JSON elements (already flattened) to tensor data of `datatype`, naming the first bad element.
pub fn flat_data(name: &str, datatype: DataType, flat: &[&Value]) -> Result<TensorData> {
    fn all<T>(name: &str, dt: DataType, flat: &[&Value], convert: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>> {
        flat.iter()
            .enumerate()
            .map(|(i, v)| {
                convert(v).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "input '{name}': element {i} is {v}, which is not a valid {dt} value"
                    ))
                })
            })
            .collect()
    }
    fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
        v.as_i64().and_then(|x| x.try_into().ok())
    }
    fn uint<T: TryFrom<u64>>(v: &Value) -> Option<T> {
        v.as_u64().and_then(|x| x.try_into().ok())
    }
    let dt = datatype;
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(all(name, dt, flat, Value::as_bool)?),
        DataType::Uint8 => TensorData::Uint8(all(name, dt, flat, uint)?),
        DataType::Uint16 => TensorData::Uint16(all(name, dt, flat, uint)?),
        DataType::Uint32 => TensorData::Uint32(all(name, dt, flat, uint)?),
        DataType::Uint64 => TensorData::Uint64(all(name, dt, flat, Value::as_u64)?),
        DataType::Int8 => TensorData::Int8(all(name, dt, flat, int)?),
        DataType::Int16 => TensorData::Int16(all(name, dt, flat, int)?),
        DataType::Int32 => TensorData::Int32(all(name, dt, flat, int)?),
        DataType::Int64 => TensorData::Int64(all(name, dt, flat, Value::as_i64)?),
        DataType::Fp16 => TensorData::Fp16(all(name, dt, flat, |v| v.as_f64().and_then(fp16))?),
        DataType::Fp32 => TensorData::Fp32(all(name, dt, flat, |v| v.as_f64().and_then(fp32))?),
        DataType::Fp64 => TensorData::Fp64(all(name, dt, flat, Value::as_f64)?),
        DataType::Bytes => TensorData::Bytes(all(name, dt, flat, |v| v.as_str().map(str::to_string))?),
    })
}

/// Flattens `value` (nested or flat arrays of any depth) into its leaves.
pub fn flatten<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        leaf => out.push(leaf),
    }
}

/// Collects the leaves of `value`, which must have exactly `shape`.
fn walk<'v>(name: &str, value: &'v Value, shape: &[i64], at: &mut Vec<usize>, out: &mut Vec<&'v Value>) -> Result<()> {
    match shape.split_first() {
        None => {
            if value.is_array() {
                return Err(Error::InvalidInput(format!(
                    "input '{name}': ragged array at {at:?}: too deeply nested"
                )));
            }
            out.push(value);
            Ok(())
        }
        Some((&len, rest)) => {
            let Value::Array(items) = value else {
                return Err(Error::InvalidInput(format!(
                    "input '{name}': ragged array at {at:?}: expected a list of {len}"
                )));
            };
            if items.len() as i64 != len {
                return Err(Error::InvalidInput(format!(
                    "input '{name}': ragged array at {at:?}: {} items where {len} were expected",
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                walk(name, item, rest, at, out)?;
                at.pop();
            }
            Ok(())
        }
    }
}

/// A single pass from JSON bytes to typed tensor data: no `Value` tree, no per-element boxing. It gives up
/// (returns `None`) on anything unusual, so it never needs an error message of its own.
mod fast {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{fp16, fp32};
    use crate::{DataType, Tensor, TensorData, TensorSpec};

    pub(super) fn decode(inputs: &[TensorSpec], body: &[u8]) -> Option<Vec<Tensor>> {
        if inputs.is_empty() || inputs.iter().any(|s| s.datatype == DataType::Bytes) {
            return None;
        }
        let mut found: Vec<Option<Nested>> = inputs.iter().map(|_| None).collect();
        let mut de = serde_json::Deserializer::from_slice(body);
        Request {
            inputs,
            found: &mut found,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        let mut tensors = Vec::with_capacity(inputs.len());
        for (spec, nested) in inputs.iter().zip(found) {
            let nested = nested?;
            let mut shape = nested.shape()?;
            if shape.len() + 1 == spec.shape.len() && spec.shape[0] < 0 {
                shape.insert(0, 1);
            }
            let tensor = Tensor {
                name: spec.name.clone(),
                shape,
                data: nested.data,
            };
            spec.check(&tensor).ok()?;
            tensors.push(tensor);
        }
        Some(tensors)
    }

    /// Gives up: the general path will say what is wrong.
    fn give_up<E: de::Error>() -> E {
        E::custom("not the simple case")
    }

    struct Request<'a> {
        inputs: &'a [TensorSpec],
        found: &'a mut [Option<Nested>],
    }

    impl<'de> DeserializeSeed<'de> for Request<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Request<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of tensors")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<&'de str>()? {
                let at = match self.inputs.iter().position(|s| s.name == key) {
                    Some(i) => i,
                    None if key == "data" && self.inputs.len() == 1 => 0,
                    None => return Err(give_up()),
                };
                if self.found[at].is_some() {
                    return Err(give_up());
                }
                let mut nested = Nested::new(self.inputs[at].datatype);
                map.next_value_seed(Level {
                    nested: &mut nested,
                    depth: 0,
                })?;
                self.found[at] = Some(nested);
            }
            Ok(())
        }
    }

    /// Elements in order, the length seen at each depth, and the depth of the leaves.
    struct Nested {
        data: TensorData,
        dims: Vec<i64>,
        leaf_depth: Option<usize>,
    }

    impl Nested {
        fn new(datatype: DataType) -> Self {
            let data = match datatype {
                DataType::Bool => TensorData::Bool(Vec::new()),
                DataType::Uint8 => TensorData::Uint8(Vec::new()),
                DataType::Uint16 => TensorData::Uint16(Vec::new()),
                DataType::Uint32 => TensorData::Uint32(Vec::new()),
                DataType::Uint64 => TensorData::Uint64(Vec::new()),
                DataType::Int8 => TensorData::Int8(Vec::new()),
                DataType::Int16 => TensorData::Int16(Vec::new()),
                DataType::Int32 => TensorData::Int32(Vec::new()),
                DataType::Int64 => TensorData::Int64(Vec::new()),
                DataType::Fp16 => TensorData::Fp16(Vec::new()),
                DataType::Fp32 => TensorData::Fp32(Vec::new()),
                DataType::Fp64 => TensorData::Fp64(Vec::new()),
                DataType::Bytes => TensorData::Bytes(Vec::new()),
            };
            Nested {
                data,
                dims: Vec::new(),
                leaf_depth: None,
            }
        }

        /// The shape, when every leaf sits at the same depth under non-empty arrays.
        fn shape(&self) -> Option<Vec<i64>> {
            (self.leaf_depth? == self.dims.len() && self.dims.iter().all(|&d| d > 0)).then(|| self.dims.clone())
        }

        fn leaf(&mut self, depth: usize) -> bool {
            match self.leaf_depth {
                None => {
                    self.leaf_depth = Some(depth);
                    true
                }
                Some(d) => d == depth,
            }
        }

        /// One number, as the general path converts it (`as_f64`/`as_i64`/`as_u64` then a cast).
        fn number(&mut self, n: Number) -> bool {
            fn int<T: TryFrom<i64> + TryFrom<u64>>(n: Number) -> Option<T> {
                match n {
                    Number::I(i) => i.try_into().ok(),
                    Number::U(u) => u.try_into().ok(),
                    Number::F(_) => None,
                }
            }
            let f = match n {
                Number::I(i) => i as f64,
                Number::U(u) => u as f64,
                Number::F(f) => f,
            };
            match &mut self.data {
                // Out of range: the general path names the element.
                TensorData::Fp32(v) => return fp32(f).map(|x| v.push(x)).is_some(),
                TensorData::Fp64(v) => v.push(f),
                TensorData::Fp16(v) => return fp16(f).map(|x| v.push(x)).is_some(),
                TensorData::Int64(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Int32(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Int16(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Int8(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Uint64(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Uint32(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Uint16(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Uint8(v) => return int(n).map(|x| v.push(x)).is_some(),
                TensorData::Bool(_) | TensorData::Bytes(_) => return false,
            }
            true
        }
    }

    #[derive(Clone, Copy)]
    enum Number {
        I(i64),
        U(u64),
        F(f64),
    }

    struct Level<'a> {
        nested: &'a mut Nested,
        depth: usize,
    }

    impl<'de> DeserializeSeed<'de> for Level<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl Level<'_> {
        fn number<E: de::Error>(self, n: Number) -> Result<(), E> {
            if self.nested.leaf(self.depth) && self.nested.number(n) {
                Ok(())
            } else {
                Err(give_up())
            }
        }
    }

    impl<'de> Visitor<'de> for Level<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("numbers in nested arrays")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.number(Number::I(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.number(Number::U(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.number(Number::F(v))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            match &mut self.nested.data {
                TensorData::Bool(out) if self.nested.leaf_depth.is_none_or(|d| d == self.depth) => {
                    self.nested.leaf_depth = Some(self.depth);
                    out.push(v);
                    Ok(())
                }
                _ => Err(give_up()),
            }
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let depth = self.depth;
            if self.nested.leaf_depth.is_some_and(|d| d <= depth) {
                return Err(give_up());
            }
            let mut len = 0i64;
            while seq
                .next_element_seed(Level {
                    nested: &mut *self.nested,
                    depth: depth + 1,
                })?
                .is_some()
            {
                len += 1;
            }
            let dims = &mut self.nested.dims;
            if dims.len() <= depth {
                dims.resize(depth + 1, -1);
            }
            match dims[depth] {
                -1 => dims[depth] = len,
                seen if seen == len => {}
                _ => return Err(give_up()),
            }
            Ok(())
        }
    }
}

/// Encodes outputs as `{"<name>": nested arrays, ...}`.
pub fn encode_outputs(outputs: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + outputs.iter().map(|t| t.data.len() * 12).sum::<usize>());
    out.push(b'{');
    for (i, t) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &t.name);
        out.push(b':');
        write_nested(&mut out, t);
    }
    out.push(b'}');
    out
}

/// Writes a tensor's elements as nested JSON arrays following its shape.
pub fn write_nested(out: &mut Vec<u8>, t: &Tensor) {
    match &t.data {
        // `half` serialises f16 as its bits; JSON wants the number.
        TensorData::Fp16(v) => nest(out, &t.shape, &v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
        data => with_tensor_data!(data, v => nest(out, &t.shape, v)),
    }
}

fn nest<T: serde::Serialize>(out: &mut Vec<u8>, shape: &[i64], data: &[T]) {
    match shape.split_first() {
        None => {
            if let Some(x) = data.first() {
                let _ = serde_json::to_writer(&mut *out, x);
            }
        }
        Some((&len, rest)) => {
            let len = len.max(0) as usize;
            let stride = data.len().checked_div(len).unwrap_or(0);
            out.push(b'[');
            for i in 0..len {
                if i > 0 {
                    out.push(b',');
                }
                nest(out, rest, &data[i * stride..(i + 1) * stride]);
            }
            out.push(b']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn data_field_feeds_the_single_input() {
        let inputs = [spec("x", DataType::Fp32, &[-1, 2])];
        let t = decode_request(&inputs, br#"{"data": [[1, 2], [3.5, 4]]}"#).unwrap();
        assert_eq!(t[0].shape, vec![2, 2]);
        assert_eq!(t[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.5, 4.0]));
        let row = decode_request(&inputs, br#"{"x": [1, 2]}"#).unwrap();
        assert_eq!(row[0].shape, vec![1, 2]);
    }

    #[test]
    fn mistakes_name_the_problem() {
        let inputs = [spec("x", DataType::Int64, &[-1, 2])];
        let err = |body: &[u8]| decode_request(&inputs, body).unwrap_err().to_string();
        assert!(err(b"{nope").contains("not valid JSON"));
        assert!(err(b"[1,2]").contains("must be a JSON object"));
        assert!(err(br#"{"data": [[1, 2], [3]]}"#).contains("ragged"));
        assert!(err(br#"{"data": [[1, "a"]]}"#).contains("element 1 is \"a\", which is not a valid INT64 value"));
        assert!(err(br#"{"data": [[1.5, 2]]}"#).contains("not a valid INT64"));
        assert!(err(br#"{"data": [[1, 2, 3]]}"#).contains("expected shape"));
        assert!(err(br#"{"y": [[1, 2]]}"#).contains("unknown field 'y'"));
        // A number too large for the input's type is refused, not turned into infinity.
        for (datatype, body) in [
            (DataType::Fp32, &br#"{"data": [[1, 3.4e39]]}"#[..]),
            (DataType::Fp16, &br#"{"data": [[1, 70000]]}"#[..]),
        ] {
            let inputs = [spec("x", datatype, &[-1, 2])];
            let e = decode_request(&inputs, body).unwrap_err().to_string();
            assert!(
                e.contains("input 'x': element 1 is") && e.contains(&format!("not a valid {datatype}")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let cases: &[(&[TensorSpec], &[u8])] = &[
            (
                &[spec("x", DataType::Fp32, &[-1, 3])],
                br#"{"data": [[1, -2.5, 3e-3], [4, 5, 6]]}"#,
            ),
            (
                &[spec("x", DataType::Fp32, &[-1, 3])],
                br#"{"x": [0.1, 0.2, 0.30000001]}"#,
            ),
            (
                &[spec("x", DataType::Fp64, &[2, 2])],
                br#"{"x": [[1e300, -0.0], [2, 18446744073709551615]]}"#,
            ),
            (&[spec("x", DataType::Fp16, &[-1, 1])], br#"{"data": [[65504], [0.1]]}"#),
            (
                &[spec("x", DataType::Int64, &[-1])],
                br#"{"data": [-9223372036854775808, 9223372036854775807]}"#,
            ),
            (&[spec("x", DataType::Uint8, &[2])], br#"{"data": [0, 255]}"#),
            (&[spec("x", DataType::Bool, &[-1, 2])], br#"{"data": [[true, false]]}"#),
            (&[spec("x", DataType::Fp32, &[])], br#"{"x": 7}"#),
            (
                &[spec("a", DataType::Int32, &[-1, 1]), spec("b", DataType::Fp32, &[-1])],
                br#" { "b" : [ 1.5 ] , "a" : [[ -3 ]] } "#,
            ),
        ];
        for (inputs, body) in cases {
            let fast = fast::decode(inputs, body).unwrap_or_else(|| panic!("fast path gave up on {body:?}"));
            assert_eq!(
                fast,
                decode_general(inputs, body).unwrap(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Everything unusual or wrong is left to the general path (which names the problem).
        let one = [spec("x", DataType::Int64, &[-1, 2])];
        let left: &[&[u8]] = &[
            b"{nope",
            b"[1,2]",
            br#"{"data": [[1, 2], [3]]}"#,
            br#"{"data": [[1, 2], 3]}"#,
            br#"{"data": [1, [2, 3]]}"#,
            br#"{"data": [[1, "a"]]}"#,
            br#"{"data": [[1.5, 2]]}"#,
            br#"{"data": [[1, 2, 3]]}"#,
            br#"{"data": [[1, 2]], "x": [[1, 2]]}"#,
            br#"{"y": [[1, 2]]}"#,
            br#"{"data": []}"#,
            br#"{"data": [[1, null]]}"#,
            br#"{"data": [[1, 2]]} trailing"#,
            br#"{}"#,
        ];
        for body in left {
            assert!(fast::decode(&one, body).is_none(), "{}", String::from_utf8_lossy(body));
            assert!(decode_request(&one, body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let words = [spec("s", DataType::Bytes, &[-1])];
        assert!(fast::decode(&words, br#"{"data": ["a"]}"#).is_none());
        assert_eq!(
            decode_request(&words, br#"{"data": ["a"]}"#).unwrap()[0].data,
            TensorData::Bytes(vec!["a".into()])
        );
    }

    #[test]
    fn outputs_nest_by_shape() {
        let t = Tensor {
            name: "y".into(),
            shape: vec![2, 1],
            data: TensorData::Fp32(vec![1.5, -2.0]),
        };
        let s = Tensor {
            name: "label".into(),
            shape: vec![2],
            data: TensorData::Bytes(vec!["a".into(), "b".into()]),
        };
        assert_eq!(
            String::from_utf8(encode_outputs(&[t, s])).unwrap(),
            r#"{"y":[[1.5],[-2.0]],"label":["a","b"]}"#
        );
    }
}
