//! GGUF tensors as block matrices, code for code: [`QMatrix::from_ggml`] re-lays the blocks
//! of a quantised GGUF tensor into a [`BlockMatrix`] without going through f32, and the
//! matrix dequantises to exactly the values of [`crate::gguf`]'s reference dequantisation.

use half::f16;

use super::activations::Activations;
use super::blocks::{BLOCK, QuantError};
use super::format::{Q4_1, Q4_K, Q5_1, Q5_K, Q5Codes, Q6_K, Q6Codes, Q8_0};
use super::matrix::BlockMatrix;
use super::slab::Slab;
use crate::gguf::GgmlType;
use crate::gguf::dequant::scale_min_k4;

/// A matrix in the block format its GGUF tensor came in.
#[derive(Debug, Clone, PartialEq)]
#[allow(non_camel_case_types)]
pub enum QMatrix {
    /// From Q4_1, or Q4_0 (whose blocks are Q4_1 blocks with the minimum `-8 d`).
    Q4_1(BlockMatrix<Q4_1>),
    /// From Q8_0.
    Q8_0(BlockMatrix<Q8_0>),
    /// From Q4_K.
    Q4_K(BlockMatrix<Q4_K>),
    /// From Q5_1, or Q5_0 (the minimum `-16 d`).
    Q5_1(BlockMatrix<Q5_1>),
    /// From Q5_K.
    Q5_K(BlockMatrix<Q5_K>),
    /// From Q6_K.
    Q6_K(BlockMatrix<Q6_K>),
}

/// Applies `$f` to the matrix inside any variant.
macro_rules! each {
    ($self:expr, $m:ident => $f:expr) => {
        match $self {
            QMatrix::Q4_1($m) => $f,
            QMatrix::Q8_0($m) => $f,
            QMatrix::Q4_K($m) => $f,
            QMatrix::Q5_1($m) => $f,
            QMatrix::Q5_K($m) => $f,
            QMatrix::Q6_K($m) => $f,
        }
    };
}

impl QMatrix {
    /// Whether tensors of type `ty` can be held without dequantising them.
    pub fn supports(ty: GgmlType) -> bool {
        matches!(
            ty,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q5_K
                | GgmlType::Q6_K
        )
    }

    /// The `(rows, cols)` matrix whose rows are the GGUF tensor data `bytes` of type `ty`
    /// (GGUF shape `[cols, rows]`).
    pub fn from_ggml(
        ty: GgmlType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        if !Self::supports(ty) {
            return Err(QuantError::Type(format!("{ty:?}")));
        }
        let (bs, bb) = (ty.block_size(), ty.block_bytes());
        if cols == 0 || !cols.is_multiple_of(bs) {
            return Err(QuantError::Width(cols));
        }
        let expected = rows * cols / bs * bb;
        if bytes.len() != expected {
            return Err(QuantError::Bytes {
                len: bytes.len(),
                expected,
            });
        }
        let blocks = bytes.chunks_exact(bb);
        let n = rows * cols / BLOCK;
        Ok(match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let (mut d, mut m, mut qs) = parts(n);
                for b in blocks {
                    let (scale, min, codes) = scale_min(b, ty == GgmlType::Q4_1, 8.0)?;
                    d.push(scale);
                    m.push(min);
                    qs.push(std::array::from_fn(|j| codes[j]));
                }
                Self::Q4_1(BlockMatrix::from_parts(
                    rows,
                    cols,
                    d.into(),
                    m.into(),
                    qs.into(),
                )?)
            }
            GgmlType::Q8_0 => {
                let (mut d, _, mut qs) = parts(n);
                for b in blocks {
                    d.push(f16_at(b, 0));
                    qs.push(std::array::from_fn(|j| b[2 + j] as i8));
                }
                Self::Q8_0(BlockMatrix::from_parts(
                    rows,
                    cols,
                    d.into(),
                    Slab::Owned(Vec::new()),
                    qs.into(),
                )?)
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let five = ty == GgmlType::Q5_K;
                let (mut d, mut m) = (Vec::with_capacity(n), Vec::with_capacity(n));
                let (mut q4, mut q5) = (Vec::new(), Vec::new());
                for b in blocks {
                    let (sd, dmin) = (f16_at(b, 0).to_f32(), f16_at(b, 2).to_f32());
                    let scales = &b[4..16];
                    let (qh, ql) = if five {
                        (&b[16..48], &b[48..176])
                    } else {
                        (&[][..], &b[16..144])
                    };
                    for j in 0..8 {
                        let (sc, mn) = scale_min_k4(j, scales);
                        // Exact: an f16 times a 6-bit integer.
                        d.push(sd * f32::from(sc));
                        m.push(-(dmin * f32::from(mn)));
                        // Sub-block `j` is the low (even `j`) or high nibbles of 32 bytes,
                        // plus, for Q5_K, bit `j` of each of the 32 `qh` bytes.
                        let q = &ql[32 * (j / 2)..32 * (j / 2) + 32];
                        let code = |l: usize| {
                            let nibble = if j % 2 == 0 { q[l] & 0x0F } else { q[l] >> 4 };
                            let high = if five && qh[l] & (1 << j) != 0 { 16 } else { 0 };
                            nibble | high
                        };
                        if five {
                            q5.push(Q5Codes::new(&std::array::from_fn(code)));
                        } else {
                            q4.push(std::array::from_fn(|t| code(t) | (code(t + 16) << 4)));
                        }
                    }
                }
                if five {
                    Self::Q5_K(BlockMatrix::from_parts(
                        rows,
                        cols,
                        d.into(),
                        m.into(),
                        q5.into(),
                    )?)
                } else {
                    Self::Q4_K(BlockMatrix::from_parts(
                        rows,
                        cols,
                        d.into(),
                        m.into(),
                        q4.into(),
                    )?)
                }
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (mut d, mut m, mut qs) = parts(n);
                for b in blocks {
                    let (scale, min, rest) = scale_min(b, ty == GgmlType::Q5_1, 16.0)?;
                    // Bit `e` of `qh` is the high bit of input `e`.
                    let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                    let ql = &rest[4..20];
                    d.push(scale);
                    m.push(min);
                    qs.push(Q5Codes::new(&std::array::from_fn(|e| {
                        let nibble = if e < 16 {
                            ql[e] & 0x0F
                        } else {
                            ql[e - 16] >> 4
                        };
                        nibble | ((((qh >> e) & 1) as u8) << 4)
                    })));
                }
                Self::Q5_1(BlockMatrix::from_parts(
                    rows,
                    cols,
                    d.into(),
                    m.into(),
                    qs.into(),
                )?)
            }
            GgmlType::Q6_K => {
                let (mut d, mut qs) = (Vec::with_capacity(n), Vec::with_capacity(n));
                for b in blocks {
                    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                    let scale = f16_at(b, 208);
                    // Input `e` of the super-block: half `e / 128`, quarter `(e / 32) % 4`,
                    // position `e % 32`; its scale is `sc[e / 16]`.
                    let code = |e: usize| {
                        let (n, w, l) = (e / 128, (e / 32) % 4, e % 32);
                        let low = ql[64 * n + l + 32 * (w % 2)];
                        let low = if w < 2 { low & 0x0F } else { low >> 4 };
                        let high = (qh[32 * n + l] >> (2 * w)) & 3;
                        low | (high << 4)
                    };
                    for k in 0..8 {
                        d.push(scale);
                        qs.push(Q6Codes::new(
                            &std::array::from_fn(|t| code(32 * k + t)),
                            [sc[2 * k] as i8, sc[2 * k + 1] as i8],
                        ));
                    }
                }
                Self::Q6_K(BlockMatrix::from_parts(
                    rows,
                    cols,
                    d.into(),
                    Slab::Owned(Vec::new()),
                    qs.into(),
                )?)
            }
            other => return Err(QuantError::Type(format!("{other:?}"))),
        })
    }

    /// `self`'s rows followed by `other`'s, where both have the same format and width (`None`
    /// where they do not).
    pub fn stack(&self, other: &Self) -> Option<Self> {
        Some(match (self, other) {
            (Self::Q4_1(a), Self::Q4_1(b)) => Self::Q4_1(a.stack(b).ok()?),
            (Self::Q8_0(a), Self::Q8_0(b)) => Self::Q8_0(a.stack(b).ok()?),
            (Self::Q4_K(a), Self::Q4_K(b)) => Self::Q4_K(a.stack(b).ok()?),
            (Self::Q5_1(a), Self::Q5_1(b)) => Self::Q5_1(a.stack(b).ok()?),
            (Self::Q5_K(a), Self::Q5_K(b)) => Self::Q5_K(a.stack(b).ok()?),
            (Self::Q6_K(a), Self::Q6_K(b)) => Self::Q6_K(a.stack(b).ok()?),
            _ => return None,
        })
    }

    /// The GGUF name of the format.
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::Q4_1(_) => "Q4_1",
            Self::Q8_0(_) => "Q8_0",
            Self::Q4_K(_) => "Q4_K",
            Self::Q5_1(_) => "Q5_1",
            Self::Q5_K(_) => "Q5_K",
            Self::Q6_K(_) => "Q6_K",
        }
    }

    /// The bytes of its scales, minima (empty where the format has none) and codes, for saving.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(crate) fn array_bytes(&self) -> [&[u8]; 3] {
        each!(self, m => m.array_bytes())
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        each!(self, m => m.rows())
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        each!(self, m => m.cols())
    }

    /// Bytes of weight data.
    pub fn bytes(&self) -> usize {
        each!(self, m => m.bytes())
    }

    /// The weights back in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        each!(self, m => m.dequantize())
    }

    /// The product with activation rows `x`, in `(rows, x.rows())` layout.
    pub fn matmul_t(&self, x: &Activations, out: &mut [f32]) -> Result<(), QuantError> {
        each!(self, m => m.matmul_t(x, out))
    }
}

/// A 32-input block's f16 scale and minimum, and the rest of its bytes. Blocks without a
/// minimum (`has_min` false: Q4_0, Q5_0) stand for `(q - offset) d = d q + (-offset d)`, and
/// `-offset d` is exact in f16 (a power of two times an f16) unless it overflows.
fn scale_min(b: &[u8], has_min: bool, offset: f32) -> Result<(f16, f16, &[u8]), QuantError> {
    let scale = f16_at(b, 0);
    if has_min {
        return Ok((scale, f16_at(b, 2), &b[4..]));
    }
    let min = f16::from_f32(-offset * scale.to_f32());
    if min.is_finite() || !scale.is_finite() {
        Ok((scale, min, &b[2..]))
    } else {
        Err(QuantError::Type(format!(
            "a block of scale {scale} (its minimum -{offset} d overflows f16)"
        )))
    }
}

fn f16_at(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

/// Empty scale, minimum and code arrays with room for `n` blocks.
fn parts<S, C>(n: usize) -> (Vec<S>, Vec<S>, Vec<C>) {
    (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    )
}
