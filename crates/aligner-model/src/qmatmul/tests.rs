use super::*;

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
