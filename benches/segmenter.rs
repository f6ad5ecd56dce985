//! Sentence segmentation throughput on a few hundred KB of answer-like text (prose with
//! abbreviations and numbers, Markdown lists and headings, code, tables, CJK), whole and streamed
//! in small deltas as a model would write it.
//!
//! Run: `cargo bench -p aligner-data --bench segmenter`
#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;

use aligner_data::segment::{StreamingSegmenter, split_sentences};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Answer fragments in the styles an upstream model writes; `{n}` is replaced by a number that
/// changes with every copy.
const FRAGMENTS: &[&str] = &[
    "Dr. Smith arrived at 9 a.m. and met Mrs. Jones, who said the budget was $1,250.75 this year. \
     That is about {n}.5% more than in 2019, i.e. a modest rise. Is that enough? Probably not... \
     but it helps!\n\n",
    "Here are the steps:\n\n1. Preheat the oven to 180 °C.\n2. Mix {n} g of flour with the eggs, \
     e.g. by hand.\n3. Bake for 25 min. Check it at the 20-minute mark.\n\n",
    "## Option {n}: use the cache\n\nThe cache keeps the keys and values of past tokens. It grows \
     with the sequence, so memory is O(n) per layer (see Fig. 3 on p. 12).\n\n",
    "- Visit https://example.com/docs/v1.2.3 for details.\n- Write to help@example.org if it \
     fails.\n  - Include the log.\n  - Include the version (`aligner --version`).\n\n",
    "To install it, run:\n\n```bash\npip install aligner=={n}.0.1\npython -c \"import aligner; \
     print(aligner.__version__)\"\n```\n\nThen call `model.generate()`. It returns a list.\n\n",
    "| Model | Params | Win rate |\n|---|---|---|\n| Aligner-7B | 7B | {n}.9% |\n| Stream \
     Aligner-2B | 2B | 76.1% |\n\n",
    "He said \"It works.\" Then he left (quietly). \"Really?!\" she asked. The U.S. team agreed, \
     vs. the U.K. team, which did not; cf. the notes from Jan. {n}.\n\n",
    "首先，我们需要理解问题。答案是{n}。这是因为每一步都正确！你明白了吗？\n\n",
];

/// About `len` bytes of text made of [`FRAGMENTS`] in turn.
fn corpus(len: usize) -> String {
    let mut text = String::with_capacity(len + 1024);
    for n in 0.. {
        if text.len() >= len {
            break;
        }
        let fragment = FRAGMENTS[n % FRAGMENTS.len()];
        text.push_str(&fragment.replace("{n}", &(n % 97).to_string()));
    }
    text
}

/// `text` cut into deltas of about `size` bytes, on character boundaries.
fn deltas(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn segmenter(c: &mut Criterion) {
    let text = corpus(300 * 1024);
    let mut group = c.benchmark_group("segmenter");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("whole_text", |b| {
        b.iter(|| split_sentences(black_box(&text)).len())
    });
    for size in [4, 64] {
        let deltas = deltas(&text, size);
        group.bench_function(format!("streaming_{size}_byte_deltas"), |b| {
            b.iter(|| {
                let mut segmenter = StreamingSegmenter::new();
                let mut sentences = 0;
                for delta in &deltas {
                    sentences += segmenter.push(black_box(delta)).count();
                }
                sentences + segmenter.finish().count()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Numbers only: plotting needs system fonts, which servers often lack (criterion panics).
    config = Criterion::default().without_plots();
    targets = segmenter
}
criterion_main!(benches);
