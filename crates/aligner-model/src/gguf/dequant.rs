//! Storage types of GGUF tensors and their dequantisation to f32.
//!
//! Block layouts follow the GGML file format. Each quantised type stores blocks of
//! [`GgmlType::block_size`] values in [`GgmlType::block_bytes`] bytes.

use half::{bf16, f16};
use rayon::prelude::*;

/// The storage types this crate can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 4-bit, 32 values per block, one f16 scale, offset -8.
    Q4_0,
    /// 4-bit, 32 values per block, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32 values per block, one f16 scale, offset -16.
    Q5_0,
    /// 5-bit, 32 values per block, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32 values per block, one f16 scale.
    Q8_0,
    /// 4-bit k-quant, 256 values per super-block with 6-bit sub-block scales and minima.
    Q4_K,
    /// 5-bit k-quant, 256 values per super-block.
    Q5_K,
    /// 6-bit k-quant, 256 values per super-block with 8-bit sub-block scales.
    Q6_K,
}

impl GgmlType {
    /// The type with GGML id `id`, if this crate supports it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            28 => Self::F64,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Every supported type.
    pub const ALL: [Self; 15] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::F64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
    ];

    /// GGML's name of the type (`Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F64 => "F64",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }

    /// The type named `name` ([`name`](Self::name)), if this crate supports it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Number of values in one block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 | Self::F64 | Self::I8 | Self::I16 | Self::I32 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => 256,
        }
    }

    /// Number of bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 => 8,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
        }
    }
}

/// A readable name for a GGML type id, supported or not (for error messages).
pub(crate) fn type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` of type `ty` into `out`, or says why their sizes do not match: `out`
/// must be a whole number of blocks and `bytes` exactly their encoding (otherwise part of
/// `out` would be left unwritten).
pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    if !out.len().is_multiple_of(bs) || bytes.len() != out.len() / bs * bb {
        return Err(format!(
            "{} bytes of {ty:?} for {} values (blocks of {bs} values in {bb} bytes)",
            bytes.len(),
            out.len()
        ));
    }
    // Work in chunks of many blocks so that small tensors do not pay for rayon's scheduling.
    let blocks_per_task = (16384 / bs).max(1);
    out.par_chunks_mut(bs * blocks_per_task)
        .zip(bytes.par_chunks(bb * blocks_per_task))
        .for_each(|(out, bytes)| {
            for (y, b) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(bb)) {
                dequantize_block(ty, b, y);
            }
        });
    Ok(())
}

fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => y[0] = f16_at(b, 0),
        GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::F64 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            y[0] = f64::from_le_bytes(a) as f32;
        }
        GgmlType::I8 => y[0] = f32::from(b[0] as i8),
        GgmlType::I16 => y[0] = f32::from(i16::from_le_bytes([b[0], b[1]])),
        GgmlType::I32 => y[0] = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = f32::from((qs[j] & 0x0F) as i8 - 8) * d;
                y[j + 16] = f32::from((qs[j] >> 4) as i8 - 8) * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            for j in 0..16 {
                y[j] = f32::from(qs[j] & 0x0F) * d + m;
                y[j + 16] = f32::from(qs[j] >> 4) * d + m;
            }
        }
        GgmlType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                y[j] = f32::from(((qs[j] & 0x0F) | h0) as i8 - 16) * d;
                y[j + 16] = f32::from(((qs[j] >> 4) | h1) as i8 - 16) * d;
            }
        }
        GgmlType::Q5_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..24];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                y[j] = f32::from((qs[j] & 0x0F) | h0) * d + m;
                y[j + 16] = f32::from((qs[j] >> 4) | h1) * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                *y = f32::from(q as i8) * d;
            }
        }
        GgmlType::Q4_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let qs = &b[16..144];
            for (i, (y, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * i, scales);
                let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
                for l in 0..32 {
                    y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
                    y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
                }
            }
        }
        GgmlType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let qh = &b[16..48];
            let qs = &b[48..176];
            for (i, (y, ql)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * i, scales);
                let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
                let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
                for l in 0..32 {
                    let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    y[l] = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
                    y[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
                }
            }
        }
        GgmlType::Q6_K => {
            let ql = &b[0..128];
            let qh = &b[128..192];
            let sc = &b[192..208];
            let d = f16_at(b, 208);
            for n in 0..2 {
                let (y, ql, qh, sc) = (
                    &mut y[128 * n..],
                    &ql[64 * n..],
                    &qh[32 * n..],
                    &sc[8 * n..],
                );
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                    let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    let s = |k: usize| d * f32::from(sc[is + k] as i8);
                    y[l] = s(0) * f32::from(q1);
                    y[l + 32] = s(2) * f32::from(q2);
                    y[l + 64] = s(4) * f32::from(q3);
                    y[l + 96] = s(6) * f32::from(q4);
                }
            }
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K / Q5_K super-block.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_sizes_are_errors_not_unwritten_values() {
        let mut y = vec![0f32; 64];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut y).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 68], &mut y[..40]).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 68], &mut y).is_ok());
    }

    #[test]
    fn q8_0_block_scales_signed_values() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for (i, q) in b[2..].iter_mut().enumerate() {
            *q = (i as i8 - 16) as u8;
        }
        let mut y = vec![0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y).unwrap();
        let expected: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(y, expected);
    }

    #[test]
    fn q4_1_block_uses_low_then_high_nibbles() {
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for (j, q) in b[4..].iter_mut().enumerate() {
            *q = (j as u8) | (((15 - j) as u8) << 4);
        }
        let mut y = vec![0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 2.0 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 2.0 - 1.0);
        }
    }

    #[test]
    fn unsupported_ids_have_names() {
        assert_eq!(GgmlType::from_id(10), None);
        assert_eq!(type_name(10), "Q2_K");
        assert_eq!(GgmlType::from_id(30), Some(GgmlType::BF16));
    }
}
