//! The packed weights: the weight format, fused projections with their dense and block copies,
//! norms and layers.

use std::str::FromStr;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::QUANT_MAX_ROWS;
use super::gguf_blocks::GgufBlocks;
use crate::cuda::{CudaMatrix, CudaQ4Matrix, CudaQ8Matrix, Kernels};
use crate::llama::{Linear, RmsNorm, dense_product};
use crate::qmatmul::{Activations, Q4Matrix, Q8Matrix, QMatrix, QuantError};
use crate::{Error, Result};

/// How a [`PackedLlama`](super::PackedLlama) stores its projection and LM-head weights for decoding.
///
/// The quantised formats run decoding steps of at most [`QUANT_MAX_ROWS`] rows and short passes
/// (a few new tokens of a prompt or a draft) through the block kernels of [`crate::qmatmul`],
/// and longer passes (prompts, long verifications) through a dense copy of the same weights in
/// the activation dtype, where a dense matrix product is faster than re-reading quantised blocks
/// once per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// The activation dtype only (projections fused, nothing quantised).
    #[default]
    Dense,
    /// Q8_0 blocks (8-bit codes, one scale per 32 inputs) everywhere.
    Int8,
    /// Q4_1 blocks (4-bit codes, a scale and a minimum per 32 inputs) for the decoder layers and
    /// Q8_0 for the LM head: the layout of the embedded default model's GGUF file, which this
    /// reproduces code for code.
    Int4,
    /// Each projection in its GGUF tensor's own blocks, code for code (Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q4_K, Q5_K or Q6_K; a model imported from GGUF keeps them beside its f32 weights,
    /// [`crate::import::GGUF_BLOCKS_FILE`]); Q8_0 for weights the folder has no blocks of
    /// (tensors stored in f16 or f32, a folder not imported from GGUF, an adapter's merged
    /// weights). The LM head likewise: the file's `output` (or tied embedding) blocks.
    Gguf,
}
impl FromStr for WeightFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dense" | "none" => Ok(Self::Dense),
            "int8" | "q8" | "q8_0" => Ok(Self::Int8),
            "int4" | "q4" | "q4_1" => Ok(Self::Int4),
            "gguf" | "own" => Ok(Self::Gguf),
            other => Err(Error::InvalidArgument(format!(
                "unknown weight format `{other}` (dense, int8, int4, gguf)"
            ))),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dense => "dense",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
            Self::Gguf => "gguf",
        })
    }
}

/// Block-quantised weights of one matrix.
#[derive(Debug)]
pub(super) enum Blocks {
    Q4(Q4Matrix),
    Q8(Q8Matrix),
    /// Parts in several formats, stacked along the output rows (a fused projection of GGUF
    /// tensors of different types).
    Parts(Vec<QMatrix>),
}

impl Blocks {
    /// `parts` stacked along the output rows: consecutive parts of the same format become one
    /// matrix, and a single Q4_1 or Q8_0 matrix is held as such.
    pub(super) fn stacked(parts: Vec<QMatrix>) -> std::result::Result<Self, QuantError> {
        let cols = parts.first().map_or(0, QMatrix::cols);
        if let Some(p) = parts.iter().find(|p| p.cols() != cols) {
            return Err(QuantError::Width(p.cols()));
        }
        let mut merged: Vec<QMatrix> = Vec::with_capacity(parts.len());
        for part in parts {
            if let Some(last) = merged.last_mut()
                && let Some(both) = last.stack(&part)
            {
                *last = both;
                continue;
            }
            merged.push(part);
        }
        Ok(match <[QMatrix; 1]>::try_from(merged) {
            Ok([QMatrix::Q4_1(m)]) => Self::Q4(m),
            Ok([QMatrix::Q8_0(m)]) => Self::Q8(m),
            Ok([other]) => Self::Parts(vec![other]),
            Err(merged) => Self::Parts(merged),
        })
    }

    /// `x` times the blocks, in `(rows, x.rows())` layout.
    fn matmul_t(&self, x: &Activations, out: &mut [f32]) -> std::result::Result<(), QuantError> {
        match self {
            Self::Q4(m) => m.matmul_t(x, out),
            Self::Q8(m) => m.matmul_t(x, out),
            Self::Parts(parts) => {
                let mut rest = out;
                for p in parts {
                    let (mine, next) = rest.split_at_mut((p.rows() * x.rows()).min(rest.len()));
                    p.matmul_t(x, mine)?;
                    rest = next;
                }
                Ok(())
            }
        }
    }

    /// Output rows and input columns.
    fn shape(&self) -> (usize, usize) {
        match self {
            Self::Q4(m) => (m.rows(), m.cols()),
            Self::Q8(m) => (m.rows(), m.cols()),
            Self::Parts(parts) => (
                parts.iter().map(QMatrix::rows).sum(),
                parts.first().map_or(0, QMatrix::cols),
            ),
        }
    }

    /// Bytes of weight data.
    fn bytes(&self) -> usize {
        match self {
            Self::Q4(m) => m.bytes(),
            Self::Q8(m) => m.bytes(),
            Self::Parts(parts) => parts.iter().map(QMatrix::bytes).sum(),
        }
    }
}

/// One packed weight matrix `(out, in)` and its bias; `forward` maps `(.., in)` to `(.., out)`.
#[derive(Debug)]
pub(super) struct Proj {
    /// In the activation dtype, or bf16 with f32 activations ([`crate::cpu::bf16_dense_copies`]);
    /// used for passes longer than [`QUANT_MAX_ROWS`] (and all of them when `blocks` is `None`).
    pub(super) dense: Tensor,
    pub(super) bias: Option<Tensor>,
    /// The bias in f32 on the host, for the block kernels.
    pub(super) bias_host: Option<Vec<f32>>,
    pub(super) blocks: Option<Blocks>,
    /// The blocks on a CUDA device, for a model packed there (`blocks` is then `None`).
    pub(super) cuda: Option<Box<CudaProj>>,
    /// Longest pass on `blocks` (or `cuda`); longer ones use `dense`.
    pub(super) max_quant_rows: i64,
}

/// A projection's blocks on a CUDA device and the kernels that multiply with them.
#[derive(Debug)]
pub(super) struct CudaProj {
    pub(super) matrix: CudaMatrix,
    pub(super) kernels: Arc<Kernels>,
}

impl Proj {
    /// Packs `weight` `(out, in)` as `blocks` (`None`, Q4 or Q8) for activations of `kind`, its
    /// dense copy in `dense_kind`. Quantisation is computed from the weights in f32, except with
    /// [`WeightFormat::Gguf`], whose blocks are `own` (each part's own blocks, or Q8_0 of it, in
    /// the order of the rows). `name` goes into errors. A weight on a CUDA device is quantised on
    /// the CPU and its blocks go back to the device, for `kernels`.
    pub(super) fn pack(
        name: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        (blocks, own): (WeightFormat, Vec<QMatrix>),
        (kind, dense_kind): (Kind, Kind),
        kernels: Option<&Arc<Kernels>>,
    ) -> Result<Self> {
        let (rows, cols) = weight.size2()?;
        let bias = bias.map(|b| b.to_kind(kind));
        let w32 = weight.detach().to_kind(Kind::Float).contiguous();
        let quantised = match blocks {
            WeightFormat::Dense => None,
            format => {
                if weight.device() != Device::Cpu && kernels.is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: quantised weights run on the CPU or, with the CUDA kernels, on a \
                         CUDA device; the model is on {:?}",
                        weight.device()
                    )));
                }
                let values = || Vec::<f32>::try_from(w32.view([-1]).to_device(Device::Cpu));
                let (rows, cols) = (rows as usize, cols as usize);
                let err = |e: QuantError| {
                    Error::InvalidArgument(format!("{name}: cannot quantise as {format}: {e}"))
                };
                Some(match format {
                    WeightFormat::Int4 => {
                        Blocks::Q4(Q4Matrix::from_f32(&values()?, rows, cols).map_err(err)?)
                    }
                    WeightFormat::Gguf if !own.is_empty() => {
                        let blocks = Blocks::stacked(own).map_err(err)?;
                        if blocks.shape() != (rows, cols) {
                            return Err(Error::InvalidArgument(format!(
                                "{name}: its GGUF blocks are not a {rows} x {cols} matrix"
                            )));
                        }
                        blocks
                    }
                    _ => Blocks::Q8(Q8Matrix::from_f32(&values()?, rows, cols).map_err(err)?),
                })
            }
        };
        let bias_host = match &bias {
            Some(b) => Some(Vec::<f32>::try_from(
                b.to_kind(Kind::Float).to_device(Device::Cpu),
            )?),
            None => None,
        };
        let (blocks, cuda) = match (quantised, kernels) {
            (Some(b), Some(kernels)) if weight.device() != Device::Cpu => {
                let device = weight.device();
                let matrix = match &b {
                    Blocks::Q4(m) => CudaMatrix::Q4(CudaQ4Matrix::upload(m, device)),
                    Blocks::Q8(m) => CudaMatrix::Q8(CudaQ8Matrix::upload(m, device)),
                    Blocks::Parts(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "{name}: GGUF blocks other than Q4_1 and Q8_0 run on the CPU only"
                        )));
                    }
                };
                let kernels = Arc::clone(kernels);
                (None, Some(Box::new(CudaProj { matrix, kernels })))
            }
            (b, _) => (b, None),
        };
        Ok(Self {
            dense: w32.to_kind(dense_kind),
            bias,
            bias_host,
            blocks,
            cuda,
            max_quant_rows: QUANT_MAX_ROWS,
        })
    }

    /// Output width.
    pub(super) fn out_dim(&self) -> usize {
        self.dense.size()[0] as usize
    }

    /// `x` (`rows` rows, row-major, f32) times the block matrix, plus the bias: `(rows, out)`
    /// row-major. Only for packs with blocks.
    pub(super) fn matmul_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let err = |e: QuantError| Error::InvalidArgument(e.to_string());
        let n = self.out_dim();
        let xq = Activations::quantize(x, x.len() / rows.max(1)).map_err(err)?;
        let mut t = vec![0f32; n * rows];
        match &self.blocks {
            Some(b) => b.matmul_t(&xq, &mut t),
            None => {
                return Err(Error::InvalidArgument(
                    "a dense projection has no block kernel".into(),
                ));
            }
        }
        .map_err(err)?;
        // `(out, rows)` to `(rows, out)`.
        let mut out = if rows == 1 {
            t
        } else {
            let mut out = vec![0f32; n * rows];
            for (j, col) in t.chunks_exact(rows).enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    out[i * n + j] = v;
                }
            }
            out
        };
        if let Some(b) = &self.bias_host {
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        }
        Ok(out)
    }

    /// Whether a pass of `rows` rows runs on the block kernels.
    pub(super) fn uses_blocks(&self, rows: i64) -> bool {
        (self.blocks.is_some() || self.cuda.is_some()) && rows <= self.max_quant_rows
    }

    /// `blocks`: whether the pass may run on the block kernels (it does if it is short enough
    /// for this matrix too).
    pub(super) fn forward(&self, xs: &Tensor, blocks: bool) -> Result<Tensor> {
        let in_dim = self.dense.size()[1];
        let rows = xs.numel() as i64 / in_dim.max(1);
        if !(blocks && self.uses_blocks(rows)) {
            return Ok(self.dense_forward(xs));
        }
        let mut shape = xs.size();
        shape.pop();
        shape.push(self.out_dim() as i64);
        if let Some(cuda) = self.cuda.as_ref().filter(|_| rows > 0) {
            let x = xs.to_kind(Kind::Float).reshape([rows, in_dim]).contiguous();
            let mut ys = cuda.kernels.matvec(&cuda.matrix, &x)?;
            if let Some(b) = &self.bias {
                ys += b.to_kind(Kind::Float);
            }
            return Ok(ys.view(shape.as_slice()).to_kind(xs.kind()));
        }
        let x = Vec::<f32>::try_from(xs.to_kind(Kind::Float).reshape([-1]))?;
        let ys = self.matmul_rows(&x, rows as usize)?;
        Ok(Tensor::from_slice(&ys)
            .view(shape.as_slice())
            .to_kind(xs.kind()))
    }

    /// `xs` times the dense copy, plus the bias. A copy in another dtype than `xs` (bf16 with
    /// f32 activations) multiplies `xs` cast to it, and the product comes back in `xs`'s dtype
    /// before the bias is added.
    fn dense_forward(&self, xs: &Tensor) -> Tensor {
        let kind = self.dense.kind();
        if xs.kind() == kind {
            return dense_product(xs, &self.dense, self.bias.as_ref());
        }
        let ys = dense_product(&xs.to_kind(kind), &self.dense, None).to_kind(xs.kind());
        match &self.bias {
            Some(b) => ys + b,
            None => ys,
        }
    }

    /// Bytes of weight data a quantised-kernel pass reads (the dense copy where there are no
    /// blocks).
    pub(super) fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        self.bias.as_ref().map_or(0, size)
            + match (&self.blocks, &self.cuda) {
                (Some(b), _) => b.bytes(),
                (None, Some(c)) => c.matrix.bytes(),
                (None, None) => size(&self.dense),
            }
    }
}

/// Concatenates the weights (and biases) of `linears` along the output dimension and packs them;
/// with [`WeightFormat::Gguf`], each part's blocks are `own`'s under its name in `names`
/// (Hugging Face weight names, one per linear), or Q8_0 of its weights where `own` has none.
pub(super) fn pack_fused(
    (name, names): (&str, &[String]),
    linears: &[&Linear],
    (format, own): (WeightFormat, &GgufBlocks),
    kinds: (Kind, Kind),
    kernels: Option<&Arc<Kernels>>,
) -> Result<Proj> {
    if linears.iter().any(|l| l.lora.is_some()) {
        return Err(Error::InvalidArgument(format!(
            "{name}: has a LoRA adapter; merge it (adapter::load_adapted) before packing"
        )));
    }
    let weights: Vec<&Tensor> = linears.iter().map(|l| &l.weight).collect();
    let weight = Tensor::f_cat(&weights, 0)?;
    // A part without bias gets zeros where another part has one.
    let bias = if linears.iter().any(|l| l.bias.is_some()) {
        let biases = linears
            .iter()
            .map(|l| match &l.bias {
                Some(b) => b.to_kind(Kind::Float),
                None => Tensor::zeros([l.weight.size()[0]], (Kind::Float, l.weight.device())),
            })
            .collect::<Vec<_>>();
        Some(Tensor::f_cat(&biases, 0)?)
    } else {
        None
    };
    let own = if format == WeightFormat::Gguf {
        own_parts(name, names, &weights, own)?
    } else {
        Vec::new()
    };
    Proj::pack(name, &weight, bias.as_ref(), (format, own), kinds, kernels)
}

/// The blocks of the weights `parts`, named `names`: `own`'s, or Q8_0 of the weights.
pub(super) fn own_parts(
    name: &str,
    names: &[String],
    parts: &[&Tensor],
    own: &GgufBlocks,
) -> Result<Vec<QMatrix>> {
    parts
        .iter()
        .zip(names)
        .map(|(w, part)| match own.get(part) {
            Some(m) => Ok(m.clone()),
            None => {
                let (rows, cols) = w.size2()?;
                let values = Vec::<f32>::try_from(
                    w.detach()
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu)
                        .view([-1]),
                )?;
                Q8Matrix::from_f32(&values, rows as usize, cols as usize)
                    .map(QMatrix::Q8_0)
                    .map_err(|e| {
                        Error::InvalidArgument(format!("{name}: cannot quantise {part}: {e}"))
                    })
            }
        })
        .collect()
}

#[derive(Debug)]
pub(super) struct Norm {
    pub(super) weight: Tensor,
    /// The weight in f32 on the host, for the host decoding step.
    pub(super) host: Vec<f32>,
    pub(super) eps: f64,
}

impl Norm {
    pub(super) fn from(norm: &RmsNorm, kind: Kind) -> Result<Self> {
        let weight = norm.weight.detach();
        Ok(Self {
            host: Vec::<f32>::try_from(weight.to_kind(Kind::Float).to_device(Device::Cpu))?,
            weight: weight.to_kind(kind),
            eps: norm.eps,
        })
    }

    pub(super) fn forward(&self, xs: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        xs.rms_norm([width], Some(&self.weight), Some(self.eps))
    }

    /// [`forward`](Self::forward) by the CUDA kernel when `kernels` is given and `xs` is f32.
    pub(super) fn forward_on(&self, xs: &Tensor, kernels: Option<&Kernels>) -> Result<Tensor> {
        match kernels {
            Some(k) if xs.kind() == Kind::Float => {
                k.rms_norm(&xs.contiguous(), None, &self.weight, self.eps)
            }
            _ => Ok(self.forward(xs)),
        }
    }

    /// `(norm(x + residual), x + residual)`: the residual stream's sum and its norm, in one
    /// CUDA kernel when `kernels` is given and the tensors are f32 (`x` is then overwritten
    /// with the sum and returned as it).
    pub(super) fn add_forward(
        &self,
        x: Tensor,
        residual: &Tensor,
        kernels: Option<&Kernels>,
    ) -> Result<(Tensor, Tensor)> {
        match kernels {
            Some(k) if x.kind() == Kind::Float && x.is_contiguous() => {
                let mut sum = x;
                let normed = k.rms_norm(
                    &residual.contiguous(),
                    Some(&mut sum),
                    &self.weight,
                    self.eps,
                )?;
                Ok((normed, sum))
            }
            _ => {
                let sum = residual + x;
                Ok((self.forward(&sum), sum))
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Layer {
    pub(super) input_norm: Norm,
    pub(super) qkv: Proj,
    pub(super) o: Proj,
    pub(super) post_norm: Norm,
    pub(super) gate_up: Proj,
    pub(super) down: Proj,
}
