//! Stream Aligner: sentence segmentation and the sentence-level correction loop.
//!
//! The Stream Aligner corrects an upstream model's answer one sentence at a time. This crate
//! cuts answers into sentences losslessly ([`segment`]): whole texts with [`split_sentences`],
//! and text being generated with [`StreamingSegmenter`], which hands a sentence out as soon as
//! its end is certain, so that the upstream can be stopped right there.
//!
//! ```
//! use aligner_stream::{StreamingSegmenter, split_sentences};
//!
//! let answer = "First, preheat the oven to 180 °C. Then:\n- mix\n- bake";
//! assert_eq!(split_sentences(answer).len(), 4);
//!
//! let mut segmenter = StreamingSegmenter::new();
//! let first: Vec<&str> = segmenter.push("First, preheat the oven to 180 °C. Th").collect();
//! assert_eq!(first, ["First, preheat the oven to 180 °C. "]);
//! ```

pub mod segment;

pub use segment::{
    Completed, Sentences, StreamingSegmenter, first_sentence_end, sentences, split_sentences,
};
