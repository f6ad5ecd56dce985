//! Packed models on disk: [`PackedLlama::save`] writes one safetensors file, and
//! [`PackedLlama::open`] maps it and uses it in place, with no copy of the weights, no
//! dequantisation and no quantisation.
//!
//! The file holds every tensor the packed model reads: the embedding, the norms, and for each
//! fused projection its dense copy (in the activation dtype, or bf16 with f32 activations), its
//! bias and its blocks (`q4.d`, `q4.m`, `q4.qs` or `q8.d`, `q8.qs`, one entry per block). Its
//! metadata records the pack version, the weight format, the activation dtype, the model's
//! `config.json` and the norms' epsilon. Every tensor starts at a multiple of 64 bytes
//! ([`ALIGN`]), so the mapped bytes are used as they are.

use aligner_data::file::WrapFileError as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use super::model::{PackedLlama, Parts};
use super::weights::{Blocks, Layer, Norm, Proj, WeightFormat};
use crate::config::HfConfig;
use crate::qmatmul::{BLOCK, BlockMatrix, Plain, Q4Matrix, Q8Matrix, QMatrix, QuantError, Slab};
use crate::{Error, Result};

/// The version of the packed file format and of the packing it stores. Bump it whenever
/// either changes (the layout, quantisation, fusion or the dense copies): it is part of the
/// pack cache's key, so packs made by older code are not reused.
pub const PACK_VERSION: u32 = 2;

const META_VERSION: &str = "aligner.pack";
const META_FORMAT: &str = "format";
const META_KIND: &str = "kind";
const META_CONFIG: &str = "config";
const META_EPS: &str = "norm_eps";
const META_TIED: &str = "lm_head_is_embedding";

fn dtype_of(kind: Kind) -> Result<Dtype> {
    match kind {
        Kind::Float => Ok(Dtype::F32),
        Kind::BFloat16 => Ok(Dtype::BF16),
        Kind::Half => Ok(Dtype::F16),
        other => Err(Error::InvalidArgument(format!(
            "packed dtype {other:?} cannot be saved (f32, bf16, f16 can)"
        ))),
    }
}

pub(super) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        _ => "f32",
    }
}

fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "f32" => Some(Kind::Float),
        "bf16" => Some(Kind::BFloat16),
        "f16" => Some(Kind::Half),
        _ => None,
    }
}

/// The bytes of a contiguous CPU tensor.
fn tensor_bytes(t: &Tensor) -> &[u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    if len == 0 {
        return &[];
    }
    // SAFETY: callers pass contiguous CPU tensors (`Writer::tensor` makes them so), whose storage
    // holds `numel` initialised elements from `data_ptr`, alive as long as `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<u8>(), len) }
}

/// The tensors to write, in their save form: contiguous CPU tensors and byte slabs.
enum Entry<'a> {
    Tensor(Tensor),
    Bytes(Dtype, Vec<usize>, &'a [u8]),
}

struct Writer<'a> {
    entries: Vec<(String, Entry<'a>)>,
}

impl<'a> Writer<'a> {
    fn tensor(&mut self, name: String, t: &Tensor) {
        self.entries.push((
            name,
            Entry::Tensor(t.detach().to_device(Device::Cpu).contiguous()),
        ));
    }

    fn bytes(&mut self, name: String, dtype: Dtype, shape: Vec<usize>, bytes: &'a [u8]) {
        self.entries.push((name, Entry::Bytes(dtype, shape, bytes)));
    }

    fn proj(&mut self, name: &str, p: &'a Proj, skip_dense: bool) {
        if !skip_dense {
            self.tensor(format!("{name}.dense"), &p.dense);
        }
        if let Some(b) = &p.bias {
            self.tensor(format!("{name}.bias"), b);
        }
        match &p.blocks {
            None => {}
            Some(Blocks::Q4(m)) => {
                let [d, mins, qs] = m.array_bytes();
                let n = m.codes().len();
                self.bytes(format!("{name}.q4.d"), Dtype::F16, vec![n], d);
                self.bytes(format!("{name}.q4.m"), Dtype::F16, vec![n], mins);
                self.bytes(format!("{name}.q4.qs"), Dtype::U8, vec![n, BLOCK / 2], qs);
            }
            Some(Blocks::Q8(m)) => {
                let [d, _, qs] = m.array_bytes();
                let n = m.codes().len();
                self.bytes(format!("{name}.q8.d"), Dtype::F16, vec![n], d);
                self.bytes(format!("{name}.q8.qs"), Dtype::I8, vec![n, BLOCK], qs);
            }
            Some(Blocks::Parts(parts)) => {
                for (i, part) in parts.iter().enumerate() {
                    let tag = part_tag(part);
                    let [d, mins, qs] = part.array_bytes();
                    for (array, bytes) in [("d", d), ("m", mins), ("qs", qs)] {
                        if !bytes.is_empty() {
                            let name = format!("{name}.part{i}.{tag}.{array}");
                            self.bytes(name, Dtype::U8, vec![bytes.len()], bytes);
                        }
                    }
                }
            }
        }
    }
}

/// The name of a part's format in a pack file.
fn part_tag(part: &QMatrix) -> &'static str {
    match part {
        QMatrix::Q4_1(_) => "q4_1",
        QMatrix::Q8_0(_) => "q8_0",
        QMatrix::Q4_K(_) => "q4_k",
        QMatrix::Q5_1(_) => "q5_1",
        QMatrix::Q5_K(_) => "q5_k",
        QMatrix::Q6_K(_) => "q6_k",
    }
}

/// Alignment of every tensor's data in a pack file, as LibTorch aligns its own allocations: a
/// mapped tensor then takes the same kernel paths, with the same results, as an allocated one.
const ALIGN: usize = 64;

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "F32",
        Dtype::BF16 => "BF16",
        Dtype::F16 => "F16",
        Dtype::I8 => "I8",
        _ => "U8",
    }
}

/// Writes a safetensors file (atomically) whose tensors all start at multiples of [`ALIGN`]
/// bytes: the header is padded with spaces, and the gaps between tensors are filled by `U8`
/// tensors named `__pad.N` (the format allows no holes).
fn write_aligned(
    path: &Path,
    metadata: &[(&str, String)],
    entries: &[(&str, Dtype, Vec<usize>, &[u8])],
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    // Each entry after the gap (zero bytes) that aligns it.
    let mut offset = 0usize;
    let mut gaps = Vec::with_capacity(entries.len());
    for (i, (name, dtype, shape, bytes)) in entries.iter().enumerate() {
        let gap = offset.next_multiple_of(ALIGN) - offset;
        if gap > 0 {
            header.insert(
                format!("__pad.{i}"),
                serde_json::json!({"dtype": "U8", "shape": [gap], "data_offsets": [offset, offset + gap]}),
            );
            offset += gap;
        }
        gaps.push(gap);
        header.insert(
            (*name).to_owned(),
            serde_json::json!({
                "dtype": dtype_name(*dtype),
                "shape": shape,
                "data_offsets": [offset, offset + bytes.len()],
            }),
        );
        offset += bytes.len();
    }
    let mut text = serde_json::to_string(&header).map_err(|e| Error::json(path, e))?;
    let padded = (8 + text.len()).next_multiple_of(ALIGN) - 8;
    text.push_str(&" ".repeat(padded - text.len()));
    aligner_data::atomic::write_with(path, |out| -> std::io::Result<()> {
        out.write_all(&(text.len() as u64).to_le_bytes())?;
        out.write_all(text.as_bytes())?;
        for ((_, _, _, bytes), gap) in entries.iter().zip(gaps) {
            out.write_all(&[0u8; ALIGN][..gap])?;
            out.write_all(bytes)?;
        }
        Ok(())
    })
    .map_err(|e| Error::io(path, e))
}

fn layer_name(i: usize, part: &str) -> String {
    format!("layers.{i}.{part}")
}

impl PackedLlama {
    /// Writes the packed model to `path` (atomically: a reader never sees half a file), for
    /// [`open`](Self::open). The model must be on the CPU.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.device != Device::Cpu {
            return Err(Error::InvalidArgument(format!(
                "only a packed model on the CPU can be saved, this one is on {:?}",
                self.device
            )));
        }
        dtype_of(self.kind)?;
        let mut w = Writer {
            entries: Vec::new(),
        };
        w.tensor("embed_tokens".into(), &self.embed_tokens);
        w.tensor("norm".into(), &self.norm.weight);
        let mut eps = vec![self.norm.eps];
        for (i, l) in self.layers.iter().enumerate() {
            w.tensor(layer_name(i, "input_norm"), &l.input_norm.weight);
            w.tensor(layer_name(i, "post_norm"), &l.post_norm.weight);
            eps.extend([l.input_norm.eps, l.post_norm.eps]);
            for (part, p) in [
                ("qkv", &l.qkv),
                ("o", &l.o),
                ("gate_up", &l.gate_up),
                ("down", &l.down),
            ] {
                w.proj(&layer_name(i, part), p, false);
            }
        }
        // A tied head packed as the embedding itself (same storage) is written once.
        let tied = self.lm_head.dense.data_ptr() == self.embed_tokens.data_ptr()
            && self.lm_head.dense.size() == self.embed_tokens.size()
            && self.lm_head.dense.kind() == self.embed_tokens.kind();
        w.proj("lm_head", &self.lm_head, tied);

        let metadata = [
            (META_VERSION, PACK_VERSION.to_string()),
            (META_FORMAT, self.format.to_string()),
            (META_KIND, kind_name(self.kind).to_owned()),
            (
                META_CONFIG,
                serde_json::to_string(&self.config.to_hf()).map_err(|e| Error::json(path, e))?,
            ),
            (
                META_EPS,
                serde_json::to_string(&eps).map_err(|e| Error::json(path, e))?,
            ),
            (META_TIED, tied.to_string()),
        ];
        let entries = w
            .entries
            .iter()
            .map(|(name, e)| match e {
                Entry::Tensor(t) => {
                    let shape = t.size().iter().map(|&s| s as usize).collect();
                    Ok((name.as_str(), dtype_of(t.kind())?, shape, tensor_bytes(t)))
                }
                Entry::Bytes(dtype, shape, bytes) => {
                    Ok((name.as_str(), *dtype, shape.clone(), *bytes))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        write_aligned(path, &metadata, &entries)
    }

    /// Maps a file written by [`save`](Self::save) and builds the packed model on it in place,
    /// on the CPU. The file must not change while the model lives (the pack cache never
    /// rewrites a file: a new pack gets a new name).
    ///
    /// # Errors
    /// [`Error::Safetensors`] naming the file and what is wrong (another pack version, a missing
    /// or misshapen tensor, bad metadata, a truncated file); I/O errors name the file.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private; packs are written once under a fresh name
        // (atomically) and never modified in place, which is what mapping them relies on.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        // The header is parsed (and its offsets checked against the file's length) once.
        let (header_len, header) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            meta.get(key)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("no `{key}` in the metadata: not a packed model")))
        };
        let version = get(META_VERSION)?;
        if version != PACK_VERSION.to_string() {
            return Err(bad(format!(
                "pack version {version}, this build reads version {PACK_VERSION}"
            )));
        }
        let format: WeightFormat = get(META_FORMAT)?.parse()?;
        let kind = kind_of(get(META_KIND)?)
            .ok_or_else(|| bad(format!("unknown dtype `{}`", meta[META_KIND])))?;
        let hf: HfConfig =
            serde_json::from_str(get(META_CONFIG)?).map_err(|e| bad(format!("config: {e}")))?;
        let config = hf.into_config(path)?;
        let eps: Vec<f64> =
            serde_json::from_str(get(META_EPS)?).map_err(|e| bad(format!("norm_eps: {e}")))?;
        let tied = get(META_TIED)? == "true";
        if eps.len() != 1 + 2 * config.num_layers {
            return Err(bad(format!(
                "{} norm epsilons for {} layers",
                eps.len(),
                config.num_layers
            )));
        }

        let reader = Reader {
            header: &header,
            data_start: 8 + header_len,
            map: &map,
            path,
        };
        let tensor = |name: &str| reader.tensor(name, kind);
        let norm = |name: &str, eps: f64| -> Result<Norm> {
            let weight = tensor(name)?;
            Ok(Norm {
                host: Vec::<f32>::try_from(weight.to_kind(Kind::Float))?,
                weight,
                eps,
            })
        };
        let proj = |name: &str, dense: Option<Tensor>, max_quant_rows: i64| -> Result<Proj> {
            let dense = match dense {
                Some(t) => t,
                None => {
                    // With f32 activations the dense copy may be bf16 (`PackedLlama::dense_kind`).
                    let name = format!("{name}.dense");
                    let stored = header.info(&name).map(|info| info.dtype);
                    let dense_kind = match stored {
                        Some(Dtype::BF16) if kind == Kind::Float => Kind::BFloat16,
                        _ => kind,
                    };
                    reader.tensor(&name, dense_kind)?
                }
            };
            let (rows, cols) = dense.size2()?;
            let (rows, cols) = (rows as usize, cols as usize);
            let bias_name = format!("{name}.bias");
            let bias = header
                .info(&bias_name)
                .is_some()
                .then(|| tensor(&bias_name))
                .transpose()?;
            let bias_host = bias
                .as_ref()
                .map(|b| Vec::<f32>::try_from(b.to_kind(Kind::Float)))
                .transpose()?;
            let shape_err = |e: QuantError| bad(format!("`{name}` blocks: {e}"));
            let has = |suffix: &str| header.info(&format!("{name}.{suffix}")).is_some();
            let blocks = match format {
                WeightFormat::Dense => None,
                WeightFormat::Gguf if !has("q4.d") && !has("q8.d") => {
                    Some(Blocks::Parts(reader.parts(name, cols)?))
                }
                _ if name == "lm_head" || format == WeightFormat::Int8 || has("q8.d") => {
                    Some(Blocks::Q8(
                        Q8Matrix::from_parts(
                            rows,
                            cols,
                            reader.slab(&format!("{name}.q8.d"), Dtype::F16)?,
                            Slab::Owned(Vec::new()),
                            reader.slab(&format!("{name}.q8.qs"), Dtype::I8)?,
                        )
                        .map_err(shape_err)?,
                    ))
                }
                _ => Some(Blocks::Q4(
                    Q4Matrix::from_parts(
                        rows,
                        cols,
                        reader.slab(&format!("{name}.q4.d"), Dtype::F16)?,
                        reader.slab(&format!("{name}.q4.m"), Dtype::F16)?,
                        reader.slab(&format!("{name}.q4.qs"), Dtype::U8)?,
                    )
                    .map_err(shape_err)?,
                )),
            };
            Ok(Proj {
                dense,
                bias,
                bias_host,
                blocks,
                cuda: None,
                max_quant_rows,
            })
        };

        let embed_tokens = tensor("embed_tokens")?;
        let layers = (0..config.num_layers)
            .map(|i| {
                let rows = super::QUANT_MAX_ROWS;
                Ok(Layer {
                    input_norm: norm(&layer_name(i, "input_norm"), eps[1 + 2 * i])?,
                    qkv: proj(&layer_name(i, "qkv"), None, rows)?,
                    o: proj(&layer_name(i, "o"), None, rows)?,
                    post_norm: norm(&layer_name(i, "post_norm"), eps[2 + 2 * i])?,
                    gate_up: proj(&layer_name(i, "gate_up"), None, rows)?,
                    down: proj(&layer_name(i, "down"), None, rows)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = proj(
            "lm_head",
            tied.then(|| embed_tokens.shallow_clone()),
            crate::cpu::tuning().head_quant_max_rows,
        )?;
        let norm = norm("norm", eps[0])?;
        Ok(Self::assemble(
            Parts {
                embed_tokens,
                layers,
                norm,
                lm_head,
            },
            config,
            Device::Cpu,
            kind,
            format,
            Some(map),
        ))
    }
}

/// Views of a mapped pack's tensors, checked for dtype and place.
struct Reader<'a> {
    header: &'a Metadata,
    /// Where the data (offset 0 of the header's offsets) starts in the file.
    data_start: usize,
    map: &'a Arc<memmap2::Mmap>,
    path: &'a Path,
}

impl Reader<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::Safetensors {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// The shape and byte range in the file of the tensor `name`, which must be `dtype`.
    fn view(&self, name: &str, dtype: Dtype) -> Result<(&[usize], std::ops::Range<usize>)> {
        let info = self
            .header
            .info(name)
            .ok_or_else(|| self.bad(format!("no tensor `{name}`")))?;
        if info.dtype != dtype {
            return Err(self.bad(format!("`{name}` is {:?}, expected {dtype:?}", info.dtype)));
        }
        let (start, end) = info.data_offsets;
        Ok((&info.shape, self.data_start + start..self.data_start + end))
    }

    /// A tensor of `kind` on the mapped bytes (no copy).
    fn tensor(&self, name: &str, kind: Kind) -> Result<Tensor> {
        let (shape, range) = self.view(name, dtype_of(kind)?)?;
        let shape: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
        if !range.start.is_multiple_of(kind.elt_size_in_bytes()) {
            return Err(self.bad(format!("`{name}` is not aligned")));
        }
        // SAFETY: `range` lies inside the map (safetensors checked the offsets against the
        // file's length) and holds `shape`'s elements of `kind`, aligned for it. The tensor
        // does not own the memory: `PackedLlama` keeps the map alive as long as its tensors,
        // and never writes to them (the map is read-only, so a write would fault, not corrupt).
        let t = unsafe {
            Tensor::f_from_blob(
                self.map.as_ptr().add(range.start),
                &shape,
                &[],
                kind,
                Device::Cpu,
            )
        }?;
        Ok(t)
    }

    /// The parts of the projection `name` (`cols` inputs) saved from [`Blocks::Parts`].
    fn parts(&self, name: &str, cols: usize) -> Result<Vec<QMatrix>> {
        let mut parts = Vec::new();
        loop {
            let i = parts.len();
            let prefix = format!("{name}.part{i}.");
            let Some(tag) = ["q4_1", "q8_0", "q4_k", "q5_1", "q5_k", "q6_k"]
                .into_iter()
                .find(|t| self.header.info(&format!("{prefix}{t}.d")).is_some())
            else {
                break;
            };
            let array = |a: &str| format!("{prefix}{tag}.{a}");
            let err = |e: QuantError| self.bad(format!("`{prefix}{tag}`: {e}"));
            macro_rules! part {
                ($variant:ident) => {{
                    let qs: Slab<_> = self.slab(&array("qs"), Dtype::U8)?;
                    let rows = qs.len() * BLOCK / cols.max(1);
                    let m = if self.header.info(&array("m")).is_some() {
                        self.slab(&array("m"), Dtype::U8)?
                    } else {
                        Slab::Owned(Vec::new())
                    };
                    let d = self.slab(&array("d"), Dtype::U8)?;
                    QMatrix::$variant(BlockMatrix::from_parts(rows, cols, d, m, qs).map_err(err)?)
                }};
            }
            parts.push(match tag {
                "q4_1" => part!(Q4_1),
                "q8_0" => part!(Q8_0),
                "q4_k" => part!(Q4_K),
                "q5_1" => part!(Q5_1),
                "q5_k" => part!(Q5_K),
                _ => part!(Q6_K),
            });
        }
        if parts.is_empty() {
            return Err(self.bad(format!("no blocks of `{name}`")));
        }
        Ok(parts)
    }

    /// An array of blocks' parts on the mapped bytes (no copy).
    fn slab<T: Plain>(&self, name: &str, dtype: Dtype) -> Result<Slab<T>> {
        let (_, range) = self.view(name, dtype)?;
        Slab::mapped(self.map, range).map_err(|e| self.bad(format!("`{name}`: {e}")))
    }
}
