//! Llama-family causal language models on LibTorch.
