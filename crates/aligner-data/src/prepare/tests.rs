use super::manifest::histogram;
use super::*;

#[test]
fn histogram_bins_are_powers_of_two() {
    let h = histogram([1, 2, 3, 4, 7, 8, 100].into_iter());
    let bins: Vec<(usize, usize, usize)> = h.iter().map(|b| (b.min, b.max, b.count)).collect();
    assert_eq!(
        bins,
        vec![(1, 1, 1), (2, 3, 2), (4, 7, 2), (8, 15, 1), (64, 127, 1)]
    );
    assert!(histogram(std::iter::empty()).is_empty());
}

#[test]
fn inputs_parse_as_spec_or_path() {
    let r = Registry::with_builtins();
    assert_eq!(
        DatasetInput::parse("correction-json:0.5:/d/x.json", &r).unwrap(),
        DatasetInput::Spec(
            DatasetSpec::new("correction-json", "/d/x.json")
                .with_proportion(crate::Proportion::Fraction(0.5))
        )
    );
    assert_eq!(
        DatasetInput::parse("/d/x.json", &r).unwrap(),
        DatasetInput::Path("/d/x.json".into())
    );
    assert!(DatasetInput::parse("correction-json:2.5:/d/x.json", &r).is_err());
}

#[test]
fn zero_rows_per_shard_is_rejected() {
    let tok = crate::tokenize::test_tokenizer::word_level(&[], false);
    let enc = Encoder::new(tok, None, 2, false, 8).unwrap();
    let opts = PrepareOptions {
        rows_per_shard: 0,
        ..Default::default()
    };
    let dir = std::env::temp_dir();
    assert!(matches!(
        prepare(&[], &dir, &enc, &Registry::with_builtins(), &opts, &|_| {}),
        Err(Error::InvalidOption {
            name: "rows_per_shard",
            ..
        })
    ));
}
