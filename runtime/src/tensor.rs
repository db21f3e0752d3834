//! Tensors as the runtime exchanges them: a name, a shape and flat row-major data.

use serde::Serialize;

use crate::{Error, Result};

/// Element types, named as the Open Inference Protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "UINT16")]
    Uint16,
    #[serde(rename = "UINT32")]
    Uint32,
    #[serde(rename = "UINT64")]
    Uint64,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT16")]
    Int16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses an OIP datatype name (`"FP32"`); also accepts ONNX-style names (`"float"`).
    pub fn parse(name: &str) -> Option<DataType> {
        let upper = name.to_ascii_uppercase();
        Some(match upper.as_str() {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::Uint8,
            "UINT16" => DataType::Uint16,
            "UINT32" => DataType::Uint32,
            "UINT64" => DataType::Uint64,
            "INT8" => DataType::Int8,
            "INT16" => DataType::Int16,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "FP16" | "FLOAT16" => DataType::Fp16,
            "FP32" | "FLOAT" | "FLOAT32" => DataType::Fp32,
            "FP64" | "DOUBLE" | "FLOAT64" => DataType::Fp64,
            "BYTES" | "STRING" => DataType::Bytes,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flat, row-major tensor elements; the variant is the datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<half::f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    /// Strings: ONNX `tensor(string)`, OIP `BYTES`.
    Bytes(Vec<String>),
}

/// Calls `$body` with `$v` bound to the inner `Vec` of any [`TensorData`] variant.
#[macro_export]
#[doc(hidden)]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Uint16($v) => $body,
            $crate::TensorData::Uint32($v) => $body,
            $crate::TensorData::Uint64($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp16($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
            $crate::TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! from_vec {
    ($($t:ty => $v:ident),*) => {
        $(impl From<Vec<$t>> for TensorData {
            fn from(v: Vec<$t>) -> Self {
                TensorData::$v(v)
            }
        })*
    };
}

from_vec!(bool => Bool, u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64, i8 => Int8, i16 => Int16,
    i32 => Int32, i64 => Int64, half::f16 => Fp16, f32 => Fp32, f64 => Fp64, String => Bytes);

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: TensorData) -> Result<Self> {
        let t = Tensor {
            name: name.into(),
            shape,
            data,
        };
        t.check_len()?;
        Ok(t)
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Number of elements the shape calls for, or an error for negative or overflowing dims.
    pub fn element_count(shape: &[i64]) -> Result<usize> {
        shape.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d)
                .ok()
                .and_then(|d| acc.checked_mul(d))
                .ok_or_else(|| Error::InvalidInput(format!("invalid shape {shape:?}: dimensions must be non-negative")))
        })
    }

    /// Checks that the data holds exactly as many elements as the shape calls for.
    pub fn check_len(&self) -> Result<()> {
        let want = Self::element_count(&self.shape)?;
        let have = self.data.len();
        if want != have {
            return Err(Error::InvalidInput(format!(
                "input '{}': shape {:?} needs {want} elements but data has {have}",
                self.name, self.shape
            )));
        }
        Ok(())
    }
}

/// What a model input or output looks like: its name, datatype and shape (`-1` for dynamic dims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Checks a tensor against this spec: datatype, rank and every fixed dimension.
    pub fn check(&self, t: &Tensor) -> Result<()> {
        if t.datatype() != self.datatype {
            return Err(Error::InvalidInput(format!(
                "input '{}': expected datatype {}, got {}",
                self.name,
                self.datatype,
                t.datatype()
            )));
        }
        let fits = t.shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(&t.shape)
                .all(|(&want, &have)| want < 0 || want == have);
        if !fits {
            return Err(Error::InvalidInput(format!(
                "input '{}': expected shape {:?} (-1 is any size), got {:?}",
                self.name, self.shape, t.shape
            )));
        }
        t.check_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_checks_dtype_rank_dims_and_length() {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 3],
        };
        let ok = Tensor {
            name: "x".into(),
            shape: vec![2, 3],
            data: TensorData::Fp32(vec![0.0; 6]),
        };
        assert!(spec.check(&ok).is_ok());
        let wrong_type = Tensor {
            data: TensorData::Fp64(vec![0.0; 6]),
            ..ok.clone()
        };
        assert!(
            spec.check(&wrong_type)
                .unwrap_err()
                .to_string()
                .contains("expected datatype FP32, got FP64")
        );
        let wrong_dim = Tensor {
            shape: vec![2, 4],
            data: TensorData::Fp32(vec![0.0; 8]),
            ..ok.clone()
        };
        assert!(
            spec.check(&wrong_dim)
                .unwrap_err()
                .to_string()
                .contains("expected shape")
        );
        let short = Tensor {
            data: TensorData::Fp32(vec![0.0; 5]),
            ..ok
        };
        assert!(
            spec.check(&short)
                .unwrap_err()
                .to_string()
                .contains("needs 6 elements but data has 5")
        );
    }

    #[test]
    fn negative_dims_are_rejected() {
        assert!(Tensor::element_count(&[2, -1]).is_err());
        assert_eq!(Tensor::element_count(&[]).unwrap(), 1);
    }

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("float"), Some(DataType::Fp32));
        assert_eq!(DataType::parse("COMPLEX"), None);
    }
}
