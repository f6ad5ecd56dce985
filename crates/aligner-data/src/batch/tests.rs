use super::*;
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
    let batch = collate(&[&a, &b], 2, None);
    assert_eq!(batch.shape, [2, 4]);
    assert_eq!(batch.input_ids, vec![1, 5, 6, 2, 1, 7, 2, 2]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 0]);
    assert_eq!(batch.labels, vec![-100, -100, 6, 2, -100, 7, 2, -100]);
    assert_eq!(batch.trained_tokens(), 4);
    assert!(batch.position_ids.is_none());
    assert_eq!(collate(&[&a, &b], 0, Some(8)).shape, [2, 8]);
    assert_eq!(collate(&[], 0, None).shape, [0, 0]);
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
    let batch = collate_packed(&seqs, 0, None);
    assert_eq!(batch.shape, [2, 5]);
    assert_eq!(batch.input_ids, vec![1, 5, 2, 7, 8, 1, 9, 9, 9, 2]);
    assert_eq!(
        batch.position_ids.unwrap(),
        vec![0, 1, 2, 0, 1, 0, 1, 2, 3, 4]
    );
    assert_eq!(
        batch.sequence_ids.unwrap(),
        vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    );
    // Row b has an empty prompt: its first label is masked in the pack.
    assert_eq!(batch.labels, vec![-100, 5, 2, -100, 8, -100, -100, 9, 9, 2]);
    assert!(pack(&[7], 6).is_err());
}

#[test]
fn bucketed_batches_partition() {
    let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 50).collect();
    let batches = bucketed_batches(&lengths, 8, 4, 42);
    let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    assert!(batches[..batches.len() - 1].iter().all(|b| b.len() == 8));
    assert_eq!(batches.last().map(Vec::len), Some(103 % 8));
    assert_eq!(batches, bucketed_batches(&lengths, 8, 4, 42));
    assert_ne!(batches, bucketed_batches(&lengths, 8, 4, 7));
    // Within a batch lengths come from one sorted bucket: spread is small.
    let spread: usize = batches
        .iter()
        .map(|b| {
            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        })
        .sum();
    let plain: usize = bucketed_batches(&lengths, 8, 1, 42)
        .iter()
        .map(|b| {
            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        })
        .sum();
    assert!(spread < plain, "{spread} vs {plain}");
}
