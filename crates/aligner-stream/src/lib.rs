//! Stream Aligner: sentence segmentation and the sentence-level correction loop.
