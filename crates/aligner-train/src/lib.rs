//! Supervised fine-tuning of aligner models.
