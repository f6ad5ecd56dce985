//! Reader for GGUF model files: header, metadata, tensor table and dequantised tensor data.
//!
//! The file is memory-mapped; every offset and size read from it is checked against the file's
//! length before use, so a truncated or corrupt file gives an [`Error::Gguf`] naming the file (and
//! the tensor where one is concerned), never a panic.
//!
//! ```no_run
//! use aligner_model::gguf::GgufFile;
//! let file = GgufFile::open("model.gguf")?;
//! println!("{} tensors, architecture {:?}", file.tensors().len(), file.get_str("general.architecture"));
//! let embeddings = file.dequantize("token_embd.weight")?; // row-major f32
//! # Ok::<(), aligner_model::Error>(())
//! ```

pub(crate) mod dequant;

use aligner_data::file::WrapFileError as _;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use dequant::GgmlType;

use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Guards against absurd counts in corrupt headers before anything is allocated for them.
const MAX_COUNT: u64 = 1 << 28;

/// A metadata value of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float32`
    F32(f32),
    /// `float64`
    F64(f64),
    /// `bool`
    Bool(bool),
    /// `string` (UTF-8)
    String(String),
    /// `array` of any of the above.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of a GGUF file's tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the file, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in row-major (PyTorch) order: outermost first.
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
}

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses `path`: header, metadata and tensor table. Tensor data is read lazily.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only and private to this value. A file truncated by another
        // process while mapped can still fault; model files are not expected to change under us.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let mut cursor = Cursor {
            data: &mmap,
            pos: 0,
            path: &path,
        };
        let magic = cursor.array::<4>()?;
        if &magic != MAGIC {
            return Err(cursor.error(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
        }
        let version = cursor.u32()?;
        if !(2..=3).contains(&version) {
            return Err(cursor.error(format!("unsupported GGUF version {version} (2 and 3 are)")));
        }
        let tensor_count = cursor.count("tensor count")?;
        let kv_count = cursor.count("metadata count")?;
        let mut metadata = HashMap::with_capacity(kv_count);
        for _ in 0..kv_count {
            let key = cursor.string()?;
            let type_id = cursor.u32()?;
            let value = cursor.value(type_id, &key)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = cursor.string()?;
            let n_dims = cursor.u32()?;
            if n_dims > 8 {
                return Err(cursor.error(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| cursor.u64())
                .collect::<Result<Vec<_>>>()?;
            let type_id = cursor.u32()?;
            let offset = cursor.u64()?;
            let ggml_type =
                GgmlType::from_id(type_id).ok_or_else(|| Error::UnsupportedGgufType {
                    path: path.clone(),
                    tensor: name.clone(),
                    type_id,
                    type_name: dequant::type_name(type_id),
                })?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(cursor.error(format!("invalid general.alignment {v:?}"))),
            },
        };
        let data_start = (cursor.pos as u64).div_ceil(alignment) * alignment;
        let gguf = Self {
            path,
            mmap,
            version,
            metadata,
            tensors,
            data_start,
        };
        for t in &gguf.tensors {
            gguf.tensor_bytes(t)?;
        }
        Ok(gguf)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A required metadata value, or an [`Error::Metadata`] naming the key.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.metadata_error(key, "missing"))
    }

    /// A required unsigned integer metadata value.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?
            .as_u64()
            .ok_or_else(|| self.metadata_error(key, "not an unsigned integer"))
    }

    /// A required float metadata value.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.require(key)?
            .as_f64()
            .ok_or_else(|| self.metadata_error(key, "not a number"))
    }

    /// A required array of strings (tokenizer vocabularies, merges).
    pub fn require_strings(&self, key: &str) -> Result<Vec<&str>> {
        let array = self
            .require(key)?
            .as_array()
            .ok_or_else(|| self.metadata_error(key, "not an array"))?;
        array
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.metadata_error(key, "array element is not a string"))
            })
            .collect()
    }

    pub(crate) fn metadata_error(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The raw (possibly quantised) bytes of a tensor, bounds-checked against the file.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let err = |reason: String| Error::Gguf {
            path: self.path.clone(),
            reason: format!("tensor `{}`: {reason}", info.name),
        };
        let n = info.element_count();
        let block = info.ggml_type.block_size() as u64;
        if info.dims.first().is_some_and(|&d| d % block != 0) {
            return Err(err(format!(
                "row length {} is not a multiple of the {:?} block size {block}",
                info.dims[0], info.ggml_type
            )));
        }
        let size = info
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(info.ggml_type.block_bytes() as u64))
            .ok_or_else(|| err(format!("size of {n} elements overflows")))?;
        let start = self
            .data_start
            .checked_add(info.offset)
            .ok_or_else(|| err("offset overflows".into()))?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| err("offset overflows".into()))?;
        if end > self.mmap.len() as u64 {
            return Err(err(format!(
                "data [{start}, {end}) lies beyond the end of the file ({} bytes): truncated?",
                self.mmap.len()
            )));
        }
        Ok(&self.mmap[start as usize..end as usize])
    }

    /// Dequantises the tensor called `name` to f32 values in row-major order
    /// (shape [`TensorInfo::shape`]).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_owned(),
        })?;
        self.dequantize_info(info)
    }

    /// Dequantises a tensor of this file's table to f32 values in row-major order.
    pub fn dequantize_info(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.tensor_bytes(info)?;
        let mut out = vec![0f32; info.element_count() as usize];
        dequant::dequantize(info.ggml_type, bytes, &mut out).map_err(|reason| Error::Gguf {
            path: self.path.clone(),
            reason: format!("tensor `{}`: {reason}", info.name),
        })?;
        Ok(out)
    }
}

/// Dequantises raw GGML blocks of type `ty` to f32.
///
/// Errors if `bytes` is not a whole number of blocks.
pub fn dequantize_bytes(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    if !bytes.len().is_multiple_of(bb) {
        return Err(Error::InvalidArgument(format!(
            "{} bytes are not a whole number of {ty:?} blocks of {bb} bytes",
            bytes.len()
        )));
    }
    let mut out = vec![0f32; bytes.len() / bb * bs];
    dequant::dequantize(ty, bytes, &mut out).map_err(Error::InvalidArgument)?;
    Ok(out)
}

/// A bounds-checked little-endian reader over the file's header.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn error(&self, reason: String) -> Error {
        Error::Gguf {
            path: self.path.to_path_buf(),
            reason: format!("at byte {}: {reason}", self.pos),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.error(format!(
                    "needs {n} more bytes but the file has {} bytes: truncated?",
                    self.data.len()
                ))
            })?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(self.error(format!("{what} {n} is implausibly large")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > self.data.len() as u64 {
            return Err(self.error(format!("string length {len} exceeds the file size")));
        }
        let bytes = self.bytes(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.error(format!("string is not UTF-8: {e}")))
    }

    fn value(&mut self, type_id: u32, key: &str) -> Result<Value> {
        Ok(match type_id {
            0 => Value::U8(u8::from_le_bytes(self.array()?)),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.error(format!("metadata `{key}`: invalid bool byte {b}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                let elem_type = self.u32()?;
                if elem_type == 9 {
                    // Nested arrays are legal but unused by any model we load; refuse rather than recurse deeply.
                    return Err(
                        self.error(format!("metadata `{key}`: nested arrays are not supported"))
                    );
                }
                let n = self.count("array length")?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(elem_type, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(self.error(format!("metadata `{key}`: unknown value type {t}"))),
        })
    }
}
