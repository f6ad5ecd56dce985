use half::f16;

use super::*;
use crate::gguf::GgmlType;

fn values(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
    // A small LCG: deterministic, spread over about [-1, 1].
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..rows * cols)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let m = x.len() / cols;
    let mut out = vec![0f32; rows * m];
    for r in 0..rows {
        for i in 0..m {
            out[r * m + i] = (0..cols)
                .map(|c| f64::from(w[r * cols + c]) * f64::from(x[i * cols + c]))
                .sum::<f64>() as f32;
        }
    }
    out
}

#[test]
fn requantising_dequantised_weights_is_lossless() {
    let q = Q4Matrix::from_f32(&values(8, 64, 1), 8, 64).unwrap();
    let again = Q4Matrix::from_f32(&q.dequantize(), 8, 64).unwrap();
    assert_eq!(q, again);
    assert_eq!(Q4Matrix::from_blocks(&q.blocks(), 8, 64).unwrap(), q);
    let q8 = Q8Matrix::from_f32(&values(8, 64, 2), 8, 64).unwrap();
    assert_eq!(q8, Q8Matrix::from_f32(&q8.dequantize(), 8, 64).unwrap());
    assert_eq!(Q8Matrix::from_blocks(&q8.blocks(), 8, 64).unwrap(), q8);
}

/// Checks the kernel (SIMD where available) against the scalar loop and a dense f64 product,
/// on widths with and without a tail of fewer than 8 blocks.
fn check(rows: usize, cols: usize, m: usize) {
    let x = values(m, cols, 7);
    let xq = Activations::quantize(&x, cols).unwrap();
    let q4 = Q4Matrix::from_f32(&values(rows, cols, 3), rows, cols).unwrap();
    let q8 = Q8Matrix::from_f32(&values(rows, cols, 4), rows, cols).unwrap();
    let mut o4 = vec![0f32; rows * m];
    q4.matmul_t(&xq, &mut o4).unwrap();
    let mut o8 = vec![0f32; rows * m];
    q8.matmul_t(&xq, &mut o8).unwrap();
    let s4: Vec<f32> = (0..rows)
        .flat_map(|r| (0..m).map(move |i| (r, i)))
        .map(|(r, i)| q4.dot_scalar(r, xq.row(i)))
        .collect();
    let s8: Vec<f32> = (0..rows)
        .flat_map(|r| (0..m).map(move |i| (r, i)))
        .map(|(r, i)| q8.dot_scalar(r, xq.row(i)))
        .collect();
    for (dense, out, scalar) in [(q4.dequantize(), &o4, &s4), (q8.dequantize(), &o8, &s8)] {
        let want = reference(&dense, &x, rows, cols);
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (j, (&got, &scalar)) in out.iter().zip(scalar).enumerate() {
            // Same integers, summed in another order: equal up to f32 rounding.
            assert!(
                (got - scalar).abs() <= 1e-5 * scalar.abs().max(1.0),
                "{rows}x{cols} output {j}: {got} vs {scalar}"
            );
            // Against the dense product only the 8-bit activations differ.
            let err = (got - want[j]).abs();
            assert!(err <= 0.02 * scale, "{rows}x{cols}: error {err} of {scale}");
        }
    }
}

/// A row's product is the same bits whether it is computed alone or with other rows (so
/// that batching never changes a sequence's tokens).
#[test]
fn rows_in_a_tile_equal_rows_alone() {
    for (rows, cols, m) in [(70, 576, 7), (9, 96, 3), (3, 1536, 5)] {
        let x = values(m, cols, 11);
        let q4 = Q4Matrix::from_f32(&values(rows, cols, 5), rows, cols).unwrap();
        let q8 = Q8Matrix::from_f32(&values(rows, cols, 6), rows, cols).unwrap();
        let xq = Activations::quantize(&x, cols).unwrap();
        let (mut t4, mut t8) = (vec![0f32; rows * m], vec![0f32; rows * m]);
        q4.matmul_t(&xq, &mut t4).unwrap();
        q8.matmul_t(&xq, &mut t8).unwrap();
        for i in 0..m {
            let one = Activations::quantize(&x[i * cols..(i + 1) * cols], cols).unwrap();
            let (mut o4, mut o8) = (vec![0f32; rows], vec![0f32; rows]);
            q4.matmul_t(&one, &mut o4).unwrap();
            q8.matmul_t(&one, &mut o8).unwrap();
            for r in 0..rows {
                assert_eq!(
                    t4[r * m + i].to_bits(),
                    o4[r].to_bits(),
                    "q4 {rows}x{cols} [{r}, {i}]"
                );
                assert_eq!(
                    t8[r * m + i].to_bits(),
                    o8[r].to_bits(),
                    "q8 {rows}x{cols} [{r}, {i}]"
                );
            }
        }
    }
}

/// `dot_block` over several weight rows from an offset, with more than a tile of activation
/// rows and a last partial tile, writes every output, each the same bits as its pair alone,
/// in release builds as in debug ones.
#[test]
fn blocks_of_rows_equal_each_row_alone() {
    let (rows, cols, m) = (5, 96, 2 * TILE + 1);
    let x = values(m, cols, 13);
    let xq = Activations::quantize(&x, cols).unwrap();
    let xs: Vec<ActRow<'_>> = (0..m).map(|i| xq.row(i)).collect();
    let q4 = Q4Matrix::from_f32(&values(rows, cols, 14), rows, cols).unwrap();
    let q8 = Q8Matrix::from_f32(&values(rows, cols, 15), rows, cols).unwrap();
    let mut scratch = vec![0f32; cols / BLOCK];
    for first in 0..rows {
        let n = rows - first;
        let (mut all4, mut all8) = (vec![f32::NAN; n * m], vec![f32::NAN; n * m]);
        q4.dot_block(first, &xs, &mut all4, &mut scratch);
        q8.dot_block(first, &xs, &mut all8, &mut scratch);
        for r in 0..n {
            for (i, x) in xs.iter().enumerate() {
                let (mut one4, mut one8) = ([0f32], [0f32]);
                q4.dot_block(first + r, std::slice::from_ref(x), &mut one4, &mut scratch);
                q8.dot_block(first + r, std::slice::from_ref(x), &mut one8, &mut scratch);
                let at = r * m + i;
                assert_eq!(
                    all4[at].to_bits(),
                    one4[0].to_bits(),
                    "q4 [{first}+{r}, {i}]"
                );
                assert_eq!(
                    all8[at].to_bits(),
                    one8[0].to_bits(),
                    "q8 [{first}+{r}, {i}]"
                );
            }
        }
    }
}

#[test]
fn kernels_agree_with_the_scalar_loop_and_the_dense_product() {
    check(130, 96, 3); // 3 blocks per row: scalar tail only
    check(70, 576, 1); // 18 blocks: two groups of 8 and a tail of 2
    check(9, 512, 2); // 16 blocks: no tail
    check(33, 576, 6); // a tile of four activation rows and one of two
    check(5, 96, 4);
}

#[test]
fn bad_shapes_and_values_are_errors() {
    assert_eq!(
        Q4Matrix::from_f32(&[0.0; 40], 1, 40),
        Err(QuantError::Width(40))
    );
    assert!(matches!(
        Q8Matrix::from_f32(&[0.0; 63], 2, 32),
        Err(QuantError::Length { .. })
    ));
    let mut w = vec![0.5; 64];
    w[40] = f32::NAN;
    assert_eq!(Q4Matrix::from_f32(&w, 2, 32), Err(QuantError::NonFinite(1)));
    let q = Q4Matrix::from_f32(&[0.25; 64], 2, 32).unwrap();
    let x = Activations::quantize(&[1.0; 64], 64).unwrap();
    assert!(matches!(
        q.matmul_t(&x, &mut [0f32; 2]),
        Err(QuantError::Mismatch { .. })
    ));
    assert!(Activations::quantize(&[1.0; 40], 32).is_err());
}

#[test]
fn constant_blocks_are_exact() {
    let q = Q4Matrix::from_f32(&[0.25; 32], 1, 32).unwrap();
    assert!(q.dequantize().iter().all(|&v| v == 0.25));
    let xq = Activations::quantize(&[1.0; 32], 32).unwrap();
    let mut out = [0f32];
    q.matmul_t(&xq, &mut out).unwrap();
    assert!((out[0] - 8.0).abs() < 1e-4, "{}", out[0]);
}

/// `rows` rows of random GGUF blocks of type `ty`, `cols` inputs each: random code and
/// sub-scale bytes, and f16 scales of either sign around 0.01 (as in real files; Q4_K and Q5_K
/// super-block scales are positive).
fn ggml_bytes(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        state >> 8
    };
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    let mut out = Vec::with_capacity(rows * cols / bs * bb);
    for _ in 0..rows * cols / bs {
        let mut b: Vec<u8> = (0..bb).map(|_| next() as u8).collect();
        let mut scale = |signed: bool| {
            let v = 0.001 + (next() % 1000) as f32 * 2e-5;
            let v = if signed && next() % 2 == 0 { -v } else { v };
            f16::from_f32(v).to_le_bytes()
        };
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                b[0..2].copy_from_slice(&scale(true))
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                b[0..2].copy_from_slice(&scale(false));
                b[2..4].copy_from_slice(&scale(true));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                b[0..2].copy_from_slice(&scale(false));
                b[2..4].copy_from_slice(&scale(false));
            }
            GgmlType::Q6_K => b[208..210].copy_from_slice(&scale(true)),
            _ => unreachable!("a test of the block types"),
        }
        out.extend(b);
    }
    out
}

const GGML_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Every supported GGUF type becomes blocks that dequantise to exactly the reference
/// dequantisation's values, bit for bit, but for the sign of a zero: Q4_0's `(q - 8) d` is
/// `-0` for `q = 8` and a negative `d`, where the blocks' `d q + (-8 d)` is `+0`.
#[test]
fn gguf_blocks_dequantise_bit_for_bit_like_the_reference() {
    for ty in GGML_TYPES {
        for (rows, seed) in [(3, 1), (5, 2)] {
            let cols = 512;
            let bytes = ggml_bytes(ty, rows, cols, seed);
            let m = QMatrix::from_ggml(ty, &bytes, rows, cols).unwrap();
            let ours = m.dequantize();
            let reference = crate::gguf::dequantize_bytes(ty, &bytes).unwrap();
            assert_eq!(ours.len(), reference.len());
            for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                let same = a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0);
                assert!(same, "{ty:?} value {i}: {a} vs {b}");
            }
        }
    }
}

/// The products of matrices from GGUF blocks: the kernel agrees with the scalar loop and the
/// dense product, and a row's result is the same bits alone or with other rows.
#[test]
fn gguf_block_kernels_agree_with_the_scalar_loop_and_the_dense_product() {
    for ty in GGML_TYPES {
        // 1280 inputs: 40 blocks (five groups of eight); 768: 24 blocks; with 1, 3 and 6
        // activation rows (alone, one tile of three, a tile of four and one of two).
        for (rows, cols, m) in [(67, 1280, 1), (9, 768, 3), (13, 768, 6)] {
            let w = QMatrix::from_ggml(ty, &ggml_bytes(ty, rows, cols, 9), rows, cols).unwrap();
            let dense = w.dequantize();
            let x = values(m, cols, 21);
            let xq = Activations::quantize(&x, cols).unwrap();
            let mut out = vec![0f32; rows * m];
            w.matmul_t(&xq, &mut out).unwrap();
            let scalar: Vec<f32> = (0..rows)
                .flat_map(|r| (0..m).map(move |i| (r, i)))
                .map(|(r, i)| match &w {
                    QMatrix::Q4_1(q) => q.dot_scalar(r, xq.row(i)),
                    QMatrix::Q8_0(q) => q.dot_scalar(r, xq.row(i)),
                    QMatrix::Q4_K(q) => q.dot_scalar(r, xq.row(i)),
                    QMatrix::Q5_1(q) => q.dot_scalar(r, xq.row(i)),
                    QMatrix::Q5_K(q) => q.dot_scalar(r, xq.row(i)),
                    QMatrix::Q6_K(q) => q.dot_scalar(r, xq.row(i)),
                })
                .collect();
            let want = reference(&dense, &x, rows, cols);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (j, (&got, &s)) in out.iter().zip(&scalar).enumerate() {
                assert!(
                    (got - s).abs() <= 1e-5 * s.abs().max(scale),
                    "{ty:?} {rows}x{cols} output {j}: {got} vs {s}"
                );
                let err = (got - want[j]).abs();
                assert!(
                    err <= 0.02 * scale,
                    "{ty:?} {rows}x{cols}: error {err} of {scale}"
                );
            }
            for i in 0..m {
                let one = Activations::quantize(&x[i * cols..(i + 1) * cols], cols).unwrap();
                let mut alone = vec![0f32; rows];
                w.matmul_t(&one, &mut alone).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        out[r * m + i].to_bits(),
                        alone[r].to_bits(),
                        "{ty:?} {rows}x{cols} [{r}, {i}]"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_gguf_tensors_are_errors() {
    let bytes = ggml_bytes(GgmlType::Q4_K, 2, 256, 3);
    assert!(matches!(
        QMatrix::from_ggml(GgmlType::Q4_K, &bytes[1..], 2, 256),
        Err(QuantError::Bytes { .. })
    ));
    assert_eq!(
        QMatrix::from_ggml(GgmlType::Q4_K, &bytes, 4, 128),
        Err(QuantError::Width(128))
    );
    assert!(matches!(
        QMatrix::from_ggml(GgmlType::F16, &[0; 128], 2, 32),
        Err(QuantError::Type(_))
    ));
}

/// Stacking two matrices of one format puts the second's rows after the first's; matrices of
/// different formats or widths do not stack.
#[test]
fn matrices_of_one_format_stack_by_rows() {
    let a = QMatrix::from_ggml(GgmlType::Q5_0, &ggml_bytes(GgmlType::Q5_0, 3, 64, 1), 3, 64);
    let b = QMatrix::from_ggml(GgmlType::Q5_1, &ggml_bytes(GgmlType::Q5_1, 2, 64, 2), 2, 64);
    let (a, b) = (a.unwrap(), b.unwrap());
    let both = a.stack(&b).unwrap();
    assert_eq!(both.rows(), 5);
    assert_eq!(both.dequantize(), [a.dequantize(), b.dequantize()].concat());
    let q8 = QMatrix::from_ggml(GgmlType::Q8_0, &ggml_bytes(GgmlType::Q8_0, 1, 64, 3), 1, 64);
    assert_eq!(a.stack(&q8.unwrap()), None);
    let wide = QMatrix::from_ggml(GgmlType::Q5_1, &ggml_bytes(GgmlType::Q5_1, 1, 96, 4), 1, 96);
    assert_eq!(a.stack(&wide.unwrap()), None);
}
