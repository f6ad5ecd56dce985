//! Evaluation of aligned answers: math accuracy and pairwise helpful/harmless judging.
