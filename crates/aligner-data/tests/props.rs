//! Property tests of the invariants: masks, truncation, shuffling, sampling,
//! sentence splitting, batching and packing.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

mod common;

use aligner_data::batch::{collate, collate_packed, pack, shuffled_in_phases, shuffled_indices};
use aligner_data::{
    CorrectionRow, DatasetSpec, Encoded, Encoder, Example, IGNORE_INDEX, Proportion,
    split_sentences, stream_rows,
};
use proptest::prelude::*;

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(common::WORDS), 0..12).prop_map(|w| w.join(" "))
}

fn encoded() -> impl Strategy<Value = Encoded> {
    (prop::collection::vec(4i64..30, 1..20), 0usize..20).prop_map(|(ids, p)| {
        let prompt_len = p.min(ids.len() - 1);
        let mut labels = ids.clone();
        labels[..prompt_len].fill(IGNORE_INDEX);
        Encoded {
            input_ids: ids,
            labels,
            prompt_len,
            truncated_tokens: 0,
        }
    })
}

proptest! {
    #[test]
    fn labels_align_with_ids(prompt in words(), target in words(), max_length in 1usize..40, bos in any::<bool>()) {
        let enc = Encoder::new(common::word_level(common::WORDS), Some(1), 2, bos, max_length).unwrap();
        let e = enc.encode(&Example { prompt: prompt.clone(), target: target.clone() }).unwrap();
        let n = |s: &str| s.split_whitespace().count();
        let full = usize::from(bos) + n(&prompt) + n(&target) + 1;
        prop_assert_eq!(e.len(), full.min(max_length));
        prop_assert_eq!(e.truncated_tokens, full - e.len());
        prop_assert_eq!(e.labels.len(), e.input_ids.len());
        prop_assert!(e.labels[..e.prompt_len].iter().all(|&l| l == IGNORE_INDEX));
        prop_assert_eq!(&e.labels[e.prompt_len..], &e.input_ids[e.prompt_len..]);
        prop_assert!(e.labels[e.prompt_len..].iter().all(|&l| l != IGNORE_INDEX));
        if e.truncated_tokens == 0 {
            prop_assert_eq!(e.input_ids.last().copied(), Some(2));
            prop_assert_eq!(e.labels.last().copied(), Some(2));
            prop_assert_eq!(e.trained_tokens(), n(&target) + 1);
        }
        if bos {
            prop_assert_eq!(e.input_ids[0], 1);
        }
    }

    #[test]
    fn shuffling_is_a_permutation(n in 0usize..300, seed in any::<u64>()) {
        let mut p = shuffled_indices(n, seed);
        p.sort_unstable();
        prop_assert_eq!(p, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_warm_up_phase_is_a_permutation_of_its_rows(n in 0usize..300, warmup in 0usize..320, seed in any::<u64>()) {
        let p = shuffled_in_phases(n, warmup, seed);
        let w = warmup.min(n);
        prop_assert!(p[..w].iter().all(|&i| i < w));
        let mut sorted = p.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn sub_sampling_counts_follow_the_spec(n in 0usize..500, num in 0u64..10, extra in 0u64..10, frac in 0.0f64..=1.0, exact in 0usize..600, seed in any::<u64>()) {
        let den = num + extra + 1;
        let cases = [
            (format!("x:{num}/{den}:f.json"), (n as u128 * u128::from(num) / u128::from(den)) as usize),
            (format!("x:{frac}:f.json"), ((n as f64) * frac).floor() as usize),
            ("x::f.json".to_owned(), n),
        ];
        for (text, expected) in cases {
            let spec: DatasetSpec = text.parse().unwrap();
            let idx = spec.sample(n, seed).unwrap();
            prop_assert_eq!(idx.len(), expected, "{}", text);
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(idx.iter().all(|&i| i < n));
        }
        let spec = DatasetSpec::new("x", "f.json").with_proportion(Proportion::Exactly(exact));
        match spec.sample(n, seed) {
            Ok(idx) => prop_assert_eq!(idx.len(), exact),
            Err(_) => prop_assert!(exact > n),
        }
    }

    #[test]
    fn split_sentences_is_lossless(text in "[a-zA-Z0-9 .?!\n\"'()éü,]{0,80}") {
        let pieces: Vec<&str> = split_sentences(&text).into_iter().map(|r| &text[r]).collect();
        prop_assert_eq!(pieces.concat(), text.clone());
        prop_assert!(pieces.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn stream_rows_cover_both_texts(answer in "[a-z]{1,5}([.?!] [a-z]{1,5}){0,5}[.?!]?", correction in "[a-z]{1,5}([.?!] [a-z]{1,5}){0,5}[.?!]?") {
        let rows = stream_rows(&CorrectionRow::new("q", answer.clone(), correction.clone()));
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let lasts: Vec<&str> = rows.iter().map(|r| r.last.as_str()).collect();
        let corrs: Vec<&str> = rows.iter().map(|r| r.correction.as_str()).collect();
        prop_assert_eq!(squash(&lasts.join(" ")), squash(&answer));
        prop_assert_eq!(squash(&corrs.join(" ")), squash(&correction));
        for (i, r) in rows.iter().enumerate() {
            prop_assert_eq!(squash(&r.prefix), squash(&corrs[..i].join(" ")));
            prop_assert_eq!(r.eos(), Some(i + 1 == rows.len()));
        }
    }

    #[test]
    fn collate_keeps_rows_and_pads_right(rows in prop::collection::vec(encoded(), 1..6), pad in 0u32..5) {
        let refs: Vec<&Encoded> = rows.iter().collect();
        let b = collate(&refs, i64::from(pad), None, None).unwrap();
        let t = b.seq_len();
        for (i, r) in rows.iter().enumerate() {
            prop_assert_eq!(&b.input_ids[i * t..i * t + r.len()], r.input_ids.as_slice());
            prop_assert_eq!(&b.labels[i * t..i * t + r.len()], r.labels.as_slice());
            prop_assert!(b.labels[i * t + r.len()..(i + 1) * t].iter().all(|&l| l == IGNORE_INDEX));
            prop_assert_eq!(b.attention_mask[i * t..(i + 1) * t].iter().sum::<i64>(), r.len() as i64);
        }
    }

    #[test]
    fn packing_is_a_partition_within_length(rows in prop::collection::vec(encoded(), 1..12), max in 20usize..60) {
        let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
        let packs = pack(&lengths, max).unwrap();
        let mut all: Vec<usize> = packs.iter().flatten().copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
        prop_assert!(packs.iter().all(|p| p.iter().map(|&i| lengths[i]).sum::<usize>() <= max));
        let seqs: Vec<Vec<&Encoded>> = packs.iter().map(|p| p.iter().map(|&i| &rows[i]).collect()).collect();
        let b = collate_packed(&seqs, 0, None, None).unwrap();
        let (pos, seq) = (b.position_ids.clone().unwrap(), b.sequence_ids.clone().unwrap());
        let t = b.seq_len();
        for (s, p) in packs.iter().enumerate() {
            let mut at = s * t;
            for (k, &i) in p.iter().enumerate() {
                for j in 0..lengths[i] {
                    prop_assert_eq!(pos[at + j], j as i64);
                    prop_assert_eq!(seq[at + j], k as i64);
                    prop_assert_eq!(b.input_ids[at + j], rows[i].input_ids[j]);
                }
                prop_assert_eq!(&b.labels[at + 1..at + lengths[i]], &rows[i].labels[1..]);
                at += lengths[i];
            }
            prop_assert!(seq[at..(s + 1) * t].iter().all(|&x| x == -1));
        }
    }
}
