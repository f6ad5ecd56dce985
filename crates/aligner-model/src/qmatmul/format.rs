//! The block formats a [`BlockMatrix`](super::BlockMatrix) can hold: what a block's scale is
//! stored in, whether it has a minimum, and how its 32 codes are laid out.
//!
//! Every format computes a block's product as `scale * sum_j v_j x_j (+ min * sum_j x_j)`,
//! where `v_j` are the block's integer code values ([`Codes::values`]); a block dequantises to
//! `scale * v_j (+ min)`. The GGUF types map onto them exactly ([`super::ggml`]):
//!
//! | format | scale | minimum | code values | from GGUF |
//! |---|---|---|---|---|
//! | [`Q4_1`] | f16 | f16 | `0..16` | Q4_1, Q4_0 (minimum `-8 d`) |
//! | [`Q8_0`] | f16 | none | `-127..=127` | Q8_0 |
//! | [`Q4_K`] | f32 | f32 | `0..16` | Q4_K (scale `d * sc`, minimum `-dmin * m`) |
//! | [`Q5_1`] | f16 | f16 | `0..32` | Q5_1, Q5_0 (minimum `-16 d`) |
//! | [`Q5_K`] | f32 | f32 | `0..32` | Q5_K |
//! | [`Q6_K`] | f16 | none | `sc * (q - 32)`, `sc` per 16 inputs | Q6_K |
//!
//! Codes keep their GGUF width: a block of Q4 codes is 16 bytes, of Q5 codes 20, of Q6 codes 24
//! (plus Q6_K's two scales), in layouts that unpack to one byte per input in a few SIMD
//! operations.
//!
//! The K-quant scales are products of an f16 and a 6- or 8-bit integer, exact in f32; Q6_K's
//! two 8-bit sub-block scales per block stay integers and are applied in the integer sum.

use half::f16;

use super::BLOCK;
#[cfg(target_arch = "x86_64")]
use super::avx2::{Lanes as ScaleSimd, SimdCodes as CodesSimd};
use super::slab::Plain;

/// Where there are no SIMD kernels, nothing more is asked of scales and codes.
#[cfg(not(target_arch = "x86_64"))]
pub trait ScaleSimd {}
#[cfg(not(target_arch = "x86_64"))]
impl<T> ScaleSimd for T {}
#[cfg(not(target_arch = "x86_64"))]
pub trait CodesSimd {}
#[cfg(not(target_arch = "x86_64"))]
impl<T> CodesSimd for T {}

/// A block scale or minimum as stored.
pub trait Scale:
    Plain + ScaleSimd + PartialEq + std::fmt::Debug + Send + Sync + sealed::Sealed
{
    /// The value in f32 (exact).
    fn to_f32(self) -> f32;
}

impl Scale for f16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Scale for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

/// The codes of one block.
pub trait Codes:
    Plain + CodesSimd + PartialEq + std::fmt::Debug + Send + Sync + sealed::Sealed
{
    /// The integer value of each of the block's 32 inputs.
    fn values(&self) -> [i32; BLOCK];

    /// `sum_j values[j] * x[j]` (the portable kernels).
    #[inline]
    fn dot(&self, x: &[i8; BLOCK]) -> i32 {
        self.values()
            .iter()
            .zip(x)
            .map(|(&v, &x)| v * i32::from(x))
            .sum()
    }
}

/// Q4_1's codes: byte `j` holds input `j` in its low nibble and input `j + 16` in its high one.
impl Codes for [u8; BLOCK / 2] {
    #[inline]
    fn values(&self) -> [i32; BLOCK] {
        std::array::from_fn(|e| i32::from(nibble(self, e)))
    }

    #[inline]
    fn dot(&self, x: &[i8; BLOCK]) -> i32 {
        let mut sum = 0i32;
        for j in 0..BLOCK / 2 {
            sum += i32::from(self[j] & 0x0F) * i32::from(x[j]);
            sum += i32::from(self[j] >> 4) * i32::from(x[j + BLOCK / 2]);
        }
        sum
    }
}

/// Q8_0's signed codes.
impl Codes for [i8; BLOCK] {
    #[inline]
    fn values(&self) -> [i32; BLOCK] {
        self.map(i32::from)
    }
}

/// The low four bits of input `e` of a block whose byte `j` holds input `j` in its low nibble
/// and input `j + 16` in its high one.
#[inline]
fn nibble(qs: &[u8; BLOCK / 2], e: usize) -> u8 {
    let b = qs[e % (BLOCK / 2)];
    if e < BLOCK / 2 { b & 0x0F } else { b >> 4 }
}

/// 5-bit codes, `0..32`: the low four bits as Q4_1's codes, and bit `e` of `qh` (little-endian)
/// the fifth bit of input `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Q5Codes {
    /// Low nibbles.
    pub qs: [u8; BLOCK / 2],
    /// Fifth bits.
    pub qh: [u8; 4],
}
const _: () = assert!(size_of::<Q5Codes>() == 20 && align_of::<Q5Codes>() == 1);

impl Q5Codes {
    /// The codes `0..32` of the 32 inputs.
    pub fn new(codes: &[u8; BLOCK]) -> Self {
        let mut qh = 0u32;
        for (e, &c) in codes.iter().enumerate() {
            qh |= u32::from((c >> 4) & 1) << e;
        }
        Self {
            qs: std::array::from_fn(|t| (codes[t] & 0x0F) | ((codes[t + 16] & 0x0F) << 4)),
            qh: qh.to_le_bytes(),
        }
    }
}

impl Codes for Q5Codes {
    #[inline]
    fn values(&self) -> [i32; BLOCK] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|e| i32::from(nibble(&self.qs, e)) | ((((qh >> e) & 1) as i32) << 4))
    }
}

/// Q6_K's codes of one block: 6-bit codes `q` (the low four bits as Q4_1's codes; the high two
/// bits of input `j + 8 g` in bits `2 g, 2 g + 1` of `qh[j]`) standing for `q - 32`, and the
/// 8-bit scales of inputs `0..16` and `16..32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Q6Codes {
    /// Low nibbles.
    pub ql: [u8; BLOCK / 2],
    /// High bit pairs.
    pub qh: [u8; 8],
    /// The scales of the two halves.
    pub sc: [i8; 2],
}
const _: () = assert!(size_of::<Q6Codes>() == 26 && align_of::<Q6Codes>() == 1);

impl Q6Codes {
    /// The codes `0..64` of the 32 inputs, and the halves' scales.
    pub fn new(codes: &[u8; BLOCK], sc: [i8; 2]) -> Self {
        let mut qh = [0u8; 8];
        for (e, &c) in codes.iter().enumerate() {
            qh[e % 8] |= ((c >> 4) & 3) << (2 * (e / 8));
        }
        Self {
            ql: std::array::from_fn(|t| (codes[t] & 0x0F) | ((codes[t + 16] & 0x0F) << 4)),
            qh,
            sc,
        }
    }
}

impl Codes for Q6Codes {
    #[inline]
    fn values(&self) -> [i32; BLOCK] {
        std::array::from_fn(|e| {
            let high = (self.qh[e % 8] >> (2 * (e / 8))) & 3;
            let q = i32::from(nibble(&self.ql, e) | (high << 4)) - 32;
            i32::from(self.sc[e / 16]) * q
        })
    }
}

/// A block format: its scale type, whether it has a minimum, and its codes.
pub trait Format: Send + Sync + 'static + sealed::Sealed {
    /// How the scale (and the minimum) of a block is stored.
    type Scale: Scale;
    /// A block's codes.
    type Codes: Codes;
    /// Whether blocks have a minimum (`w = scale * v + min`).
    const MIN: bool;
    /// The GGUF name.
    const NAME: &'static str;
}

macro_rules! format {
    ($(#[$doc:meta])* $name:ident, $scale:ty, $codes:ty, $min:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub struct $name;
        impl sealed::Sealed for $name {}
        impl Format for $name {
            type Scale = $scale;
            type Codes = $codes;
            const MIN: bool = $min;
            const NAME: &'static str = stringify!($name);
        }
    };
}

format!(
    /// 4-bit codes with an f16 scale and minimum per block (GGUF's Q4_1).
    Q4_1, f16, [u8; BLOCK / 2], true
);
format!(
    /// Signed 8-bit codes with an f16 scale per block (GGUF's Q8_0).
    Q8_0, f16, [i8; BLOCK], false
);
format!(
    /// 4-bit codes with an f32 scale and minimum per block (GGUF's Q4_K, its sub-block scales
    /// multiplied out).
    Q4_K, f32, [u8; BLOCK / 2], true
);
format!(
    /// 5-bit codes with an f16 scale and minimum per block (GGUF's Q5_1, and Q5_0).
    Q5_1, f16, Q5Codes, true
);
format!(
    /// 5-bit codes with an f32 scale and minimum per block (GGUF's Q5_K, its sub-block scales
    /// multiplied out).
    Q5_K, f32, Q5Codes, true
);
format!(
    /// Signed 6-bit codes with the super-block's f16 scale per block and 8-bit scales per half
    /// block (GGUF's Q6_K).
    Q6_K, f16, Q6Codes, false
);

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for f32 {}
    impl Sealed for [u8; super::BLOCK / 2] {}
    impl Sealed for super::Q5Codes {}
    impl Sealed for [i8; super::BLOCK] {}
    impl Sealed for super::Q6Codes {}
}
