use super::*;
use crate::error::Error;
use crate::tokenize::{Encoded, IGNORE_INDEX};

fn enc(ids: &[i64], prompt_len: usize) -> Encoded {
    let mut labels = ids.to_vec();
    labels[..prompt_len].fill(IGNORE_INDEX);
    Encoded {
        input_ids: ids.to_vec(),
        labels,
        prompt_len,
        truncated_tokens: 0,
    }
}

#[test]
fn right_padding_with_pad_equal_to_eos() {
    // EOS = pad = 2.
    let a = enc(&[1, 5, 6, 2], 2);
    let b = enc(&[1, 7, 2], 1);
    let batch = collate(&[&a, &b], 2, None, None).unwrap();
    assert_eq!(batch.shape, [2, 4]);
    assert_eq!(batch.input_ids, vec![1, 5, 6, 2, 1, 7, 2, 2]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 0]);
    assert_eq!(batch.labels, vec![-100, -100, 6, 2, -100, 7, 2, -100]);
    assert_eq!(batch.target_tokens(), 4);
    assert_eq!(batch.real_tokens(), 7);
    assert!(batch.position_ids.is_none());
    assert_eq!(collate(&[&a, &b], 0, None, Some(8)).unwrap().shape, [2, 8]);
    assert_eq!(
        collate::<Encoded>(&[], 0, None, None).unwrap().shape,
        [0, 0]
    );
}

#[test]
fn collate_truncates_and_counts_shifted_targets() {
    let a = TokenizedRow {
        input_ids: vec![5, 6, 7],
        labels: vec![IGNORE_INDEX, 6, 7],
    };
    let b = TokenizedRow {
        input_ids: vec![8, 9],
        labels: vec![IGNORE_INDEX, 9],
    };
    let batch = collate(&[&a, &b], 0, Some(16), None).unwrap();
    assert_eq!(batch.seq_len(), 3);
    assert_eq!(batch.input_ids, vec![5, 6, 7, 8, 9, 0]);
    assert_eq!(batch.labels, vec![-100, 6, 7, -100, 9, -100]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 0]);
    assert_eq!(batch.target_tokens(), 3);
    let (index, target) = batch.targets();
    assert_eq!(index, vec![0, 1, 2]);
    assert_eq!(target, vec![6, 7, 9]);
    let truncated = collate(&[&a], 0, Some(2), None).unwrap();
    assert_eq!((truncated.seq_len(), truncated.target_tokens()), (2, 1));
}

#[test]
fn a_row_without_one_label_per_token_is_an_error() {
    let good = TokenizedRow {
        input_ids: vec![1, 2],
        labels: vec![1, 2],
    };
    let bad = TokenizedRow {
        input_ids: vec![1, 2],
        labels: vec![1],
    };
    let err = collate(&[&good, &bad], 0, Some(8), None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RowLengths {
                row: 1,
                input_ids: 2,
                labels: 1
            }
        ),
        "{err}"
    );
    assert!(collate_packed(&[vec![&good], vec![&bad]], 0, None, None).is_err());
}

#[test]
fn packing_restarts_positions() {
    let a = enc(&[1, 5, 2], 1);
    let b = enc(&[7, 8], 0);
    let c = enc(&[1, 9, 9, 9, 2], 2);
    let packs = pack(&[a.len(), b.len(), c.len()], 6).unwrap();
    assert_eq!(packs, vec![vec![0, 1], vec![2]]);
    let rows = [&a, &b, &c];
    let seqs: Vec<Vec<&Encoded>> = packs
        .iter()
        .map(|p| p.iter().map(|&i| rows[i]).collect())
        .collect();
    let batch = collate_packed(&seqs, 0, None, None).unwrap();
    assert_eq!(batch.shape, [2, 5]);
    assert_eq!(batch.input_ids, vec![1, 5, 2, 7, 8, 1, 9, 9, 9, 2]);
    assert_eq!(
        batch.position_ids.clone().unwrap(),
        vec![0, 1, 2, 0, 1, 0, 1, 2, 3, 4]
    );
    assert_eq!(
        batch.sequence_ids.clone().unwrap(),
        vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    );
    // Row b has an empty prompt: its first label is masked in the pack.
    assert_eq!(batch.labels, vec![-100, 5, 2, -100, 8, -100, -100, 9, 9, 2]);
    // The targets are those of the rows collated alone.
    let alone: usize = rows
        .iter()
        .map(|r| collate(&[*r], 0, None, None).unwrap().target_tokens())
        .sum();
    assert_eq!(batch.target_tokens(), alone);
    assert!(pack(&[7], 6).is_err());
    // Rows cut to `max_length` as `collate` cuts them.
    let cut = collate_packed(&[vec![&c, &a]], 0, Some(4), None).unwrap();
    assert_eq!(cut.input_ids, vec![1, 9, 9, 9, 1, 5, 2]);
    assert_eq!(cut.position_ids.unwrap(), vec![0, 1, 2, 3, 0, 1, 2]);
}

#[test]
fn a_warm_up_phase_comes_first() {
    let order = shuffled_in_phases(20, 6, 42);
    let mut first: Vec<usize> = order[..6].to_vec();
    first.sort_unstable();
    assert_eq!(first, (0..6).collect::<Vec<_>>());
    let mut all = order.clone();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    assert_ne!(order[..6], [0, 1, 2, 3, 4, 5], "the phase is shuffled");
    assert_eq!(shuffled_in_phases(20, 0, 42), shuffled_indices(20, 42));
    assert_eq!(shuffled_in_phases(5, 9, 1).len(), 5);
}
