//! Datasets, prompt templates and tokenisation for Aligner and Stream Aligner training.
