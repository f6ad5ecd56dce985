//! Import of a GGUF model into a Hugging Face layout folder: `config.json`, `model.safetensors`
//! (f32, dequantised), `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`,
//! plus [`GGUF_BLOCKS_FILE`]: the file's own quantised blocks of every weight matrix held in a
//! format [`crate::qmatmul::QMatrix`] runs, for packing them code for code.
//!
//! The folder is written under a temporary name and renamed when complete, so an interrupted
//! import never leaves a folder that looks finished.

use aligner_data::file::WrapFileError as _;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use crate::gguf::{GgufFile, TensorInfo};
use crate::qmatmul::QMatrix;
use crate::tokenizer::{save_tokenizer, tokenizer_from_gguf};
use crate::{Error, Result};
use aligner_data::file;

/// The imported folder's file of GGUF blocks: one U8 tensor `(rows, bytes per row)` per weight
/// matrix under its Hugging Face name (q/k rows un-permuted like the f32 weights), its GGUF type
/// in the metadata under the same name.
pub const GGUF_BLOCKS_FILE: &str = "gguf_blocks.safetensors";

/// Progress of a long operation: `done` of `total` units of the named stage.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Architectures whose GGUF tensors are imported, and whether llama.cpp permuted their q/k rows.
fn architecture(arch: &str) -> Option<(&'static str, &'static str, bool)> {
    match arch {
        "llama" => Some(("LlamaForCausalLM", "llama", true)),
        "qwen2" => Some(("Qwen2ForCausalLM", "qwen2", false)),
        _ => None,
    }
}

/// Reads an f32 metadata value back to the decimal the original config most likely held
/// (`9.999999747378752e-06` -> `1e-05`).
fn shortest_f32(v: f64) -> f64 {
    format!("{}", v as f32).parse().unwrap_or(v)
}

/// Writes the Hugging Face `config.json` equivalent of a GGUF file's metadata.
fn hf_config(gguf: &GgufFile) -> Result<serde_json::Value> {
    let arch = gguf
        .get_str("general.architecture")
        .ok_or_else(|| gguf.metadata_error("general.architecture", "missing"))?;
    let (class, model_type, _) = architecture(arch).ok_or_else(|| {
        gguf.metadata_error(
            "general.architecture",
            format!("architecture `{arch}` is not supported (llama, qwen2 are)"),
        )
    })?;
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = gguf.require_u64(&key("embedding_length"))?;
    let heads = gguf.require_u64(&key("attention.head_count"))?;
    let kv_heads = gguf
        .get(&key("attention.head_count_kv"))
        .and_then(|v| v.as_u64())
        .unwrap_or(heads);
    let head_dim = gguf
        .get(&key("attention.key_length"))
        .or_else(|| gguf.get(&key("rope.dimension_count")))
        .and_then(|v| v.as_u64())
        .unwrap_or(hidden / heads.max(1));
    let embd = gguf
        .tensor_info("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            path: gguf.path().to_path_buf(),
            tensor: "token_embd.weight".into(),
        })?;
    let vocab = embd.dims.get(1).copied().unwrap_or(0);
    let tied = gguf.tensor_info("output.weight").is_none();
    let token = |k: &str| gguf.get(k).and_then(|v| v.as_u64());
    Ok(json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": gguf.require_u64(&key("feed_forward_length"))?,
        "num_hidden_layers": gguf.require_u64(&key("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": shortest_f32(gguf.require_f64(&key("attention.layer_norm_rms_epsilon"))?),
        "rope_theta": gguf.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).map(shortest_f32).unwrap_or(10_000.0),
        "max_position_embeddings": gguf.get(&key("context_length")).and_then(|v| v.as_u64()).unwrap_or(4096),
        "tie_word_embeddings": tied,
        "attention_bias": false,
        "mlp_bias": false,
        "hidden_act": "silu",
        "bos_token_id": token("tokenizer.ggml.bos_token_id"),
        "eos_token_id": token("tokenizer.ggml.eos_token_id"),
        "pad_token_id": token("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }))
}

/// The Hugging Face name of a GGUF tensor name, if it is one the model uses.
fn hf_name(gguf_name: &str) -> Option<String> {
    let direct = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = direct {
        return Some(name.to_owned());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's interleaving of the rotary halves in q/k projection rows.
///
/// GGUF row `h*d + 2*i + j` holds Hugging Face row `h*d + j*d/2 + i` (head `h`, pair `i`,
/// half `j`). `values` is row-major with `row_len` columns (one column for a bias).
fn unpermute_rows<T: Copy + Default>(values: &[T], heads: usize, row_len: usize) -> Vec<T> {
    let rows = values.len() / row_len;
    let d = rows / heads;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let src = (h * d + 2 * i + j) * row_len;
                let dst = (h * d + j * (d / 2) + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&values[src..src + row_len]);
            }
        }
    }
    out
}

/// Imports `gguf_path` into the folder `out_dir` (created; replaced if it exists).
pub fn import_gguf(gguf_path: &Path, out_dir: &Path, progress: ProgressFn<'_>) -> Result<()> {
    let gguf = GgufFile::open(gguf_path)?;
    let config = hf_config(&gguf)?;
    let arch = gguf.get_str("general.architecture").unwrap_or_default();
    let permuted = architecture(arch).is_some_and(|(_, _, p)| p);
    let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let (tokenizer, tokenizer_config) = tokenizer_from_gguf(&gguf)?;

    let tmp = aligner_data::atomic::temp_sibling(out_dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    file::create_dir(&tmp)?;

    let wanted: Vec<(&TensorInfo, String)> = gguf
        .tensors()
        .iter()
        .filter_map(|t| hf_name(&t.name).map(|n| (t, n)))
        .collect();
    let total = wanted.len() as u64;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(wanted.len());
    let mut blocks: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut block_types = std::collections::HashMap::new();
    for (i, (info, name)) in wanted.into_iter().enumerate() {
        progress("dequantize", i as u64, total);
        let shape: Vec<usize> = info.shape().iter().map(|&d| d as usize).collect();
        // q/k rows back in Hugging Face order, for values of `row_len` elements a row.
        let unpermute = |values: &[u8], row_len: usize| -> Option<Vec<u8>> {
            let heads = if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                heads
            } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                kv_heads
            } else {
                return None;
            };
            permuted.then(|| unpermute_rows(values, heads, row_len))
        };
        let row_len = if shape.len() == 2 { shape[1] } else { 1 };
        let values: Vec<u8> = gguf
            .dequantize_info(info)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let values = unpermute(&values, 4 * row_len).unwrap_or(values);
        if shape.len() == 2 && name.ends_with(".weight") && QMatrix::supports(info.ggml_type) {
            let raw = gguf.tensor_bytes(info)?;
            let row_bytes = raw.len() / shape[0].max(1);
            let raw = unpermute(raw, row_bytes).unwrap_or_else(|| raw.to_vec());
            block_types.insert(name.clone(), info.ggml_type.name().to_owned());
            blocks.push((name.clone(), vec![shape[0], row_bytes], raw));
        }
        tensors.push((name, shape, values));
    }
    progress("dequantize", total, total);

    let mut metadata = std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]);
    write_safetensors(
        &tmp.join("model.safetensors"),
        Dtype::F32,
        &tensors,
        metadata.clone(),
    )?;
    metadata.extend(block_types);
    write_safetensors(&tmp.join(GGUF_BLOCKS_FILE), Dtype::U8, &blocks, metadata)?;

    file::write_json(&tmp.join("config.json"), &config)?;
    save_tokenizer(&tokenizer, &tokenizer_config, &tmp)?;
    let generation = json!({
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
    });
    file::write_json(&tmp.join("generation_config.json"), &generation)?;
    file::write_json(
        &tmp.join("aligner_import.json"),
        &json!({ "source": gguf_path.file_name().map(|n| n.to_string_lossy().into_owned()), "importer": env!("CARGO_PKG_VERSION") }),
    )?;

    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    }
    std::fs::rename(&tmp, out_dir).map_err(|e| Error::io(out_dir, e))
}

/// Writes `tensors` (name, shape, little-endian data) of `dtype` to the safetensors file `path`.
fn write_safetensors(
    path: &Path,
    dtype: Dtype,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: std::collections::HashMap<String, String>,
) -> Result<()> {
    let err = |reason: String| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(format!("`{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_interleaving() {
        // One head of 4 rows, 1 column: HF rows [a0, a1, b0, b1] are stored as [a0, b0, a1, b1].
        let stored = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(unpermute_rows(&stored, 1, 1), vec![0.0, 1.0, 2.0, 3.0]);
        // Two heads, two columns each row.
        let stored: Vec<f32> = [0, 2, 1, 3, 4, 6, 5, 7]
            .iter()
            .flat_map(|&r| [r as f32, r as f32 + 0.5])
            .collect();
        let expected: Vec<f32> = (0..8).flat_map(|r| [r as f32, r as f32 + 0.5]).collect();
        assert_eq!(unpermute_rows(&stored, 2, 2), expected);
    }

    #[test]
    fn names_map_to_hugging_face_keys() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn f32_metadata_reads_back_as_its_decimal() {
        assert_eq!(shortest_f32(f64::from(1e-5f32)), 1e-5);
        assert_eq!(shortest_f32(100000.0), 100000.0);
    }
}
