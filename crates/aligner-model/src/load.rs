//! Loading safetensors checkpoints (single file or sharded) into a `VarStore` by name, with
//! typed errors naming the file and tensor for anything missing, misshapen or corrupt.

use aligner_data::file::WrapFileError as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor, nn};

use crate::{Error, Result};

/// Which file holds each tensor, for sharded checkpoints.
type WeightMap = HashMap<String, PathBuf>;

/// The checkpoint files of a Hugging Face layout folder, with the tensor names each holds when
/// the checkpoint is sharded.
pub(crate) fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single], None));
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        let bins = pytorch_bin_files(dir);
        if !bins.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} holds PyTorch checkpoint files only ({}), which are never unpickled here: \
                 convert them to safetensors with `cargo xtask convert {}`",
                dir.display(),
                bins.join(", "),
                dir.display()
            )));
        }
        return Err(Error::MissingTensor {
            path: dir.to_path_buf(),
            tensor: "model.safetensors (or model.safetensors.index.json)".into(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let parsed: Index = aligner_data::file::read_json(&index)?;
    let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    let map = parsed
        .weight_map
        .into_iter()
        .map(|(k, f)| (k, dir.join(f)))
        .collect();
    Ok((files, Some(map)))
}

/// Names of the PyTorch pickle checkpoints (`*.bin`, `*.pt`, `*.pth`) in `dir`, sorted.
fn pytorch_bin_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| {
            [".bin", ".pt", ".pth"]
                .iter()
                .any(|ext| name.ends_with(ext))
                && !name.starts_with("training_args")
        })
        .collect();
    names.sort();
    names
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        _ => return None,
    })
}

/// Copies every variable of `vs` from the safetensors checkpoint in `dir` (matched by name).
///
/// Tensors in the files that the model does not use are ignored; a variable missing from the
/// files, a shape mismatch, an unsupported dtype or a truncated file is an error.
pub fn load_safetensors_dir(vs: &mut nn::VarStore, dir: &Path) -> Result<()> {
    let (files, index) = checkpoint_files(dir)?;
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut remaining: HashMap<String, Tensor> = variables.into_iter().collect();
    for file in &files {
        let handle = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        // SAFETY: read-only private map of a checkpoint file, dropped at the end of this loop.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| Error::io(file, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let names: Vec<String> = remaining
            .keys()
            .filter(|n| index.as_ref().is_none_or(|m| m.get(*n) == Some(file)))
            .cloned()
            .collect();
        for name in names {
            let Ok(view) = st.tensor(&name) else { continue };
            let mut var = remaining.remove(&name).expect("name taken from the map");
            let expected = var.size();
            let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if found != expected {
                return Err(Error::ShapeMismatch {
                    path: file.clone(),
                    tensor: name,
                    expected,
                    found,
                });
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| Error::UnsupportedDtype {
                path: file.clone(),
                tensor: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let src = Tensor::f_from_data_size(view.data(), &found, kind)?;
            tch::no_grad(|| var.f_copy_(&src.to_kind(var.kind())))?;
        }
    }
    if let Some(name) = remaining.keys().min() {
        let path = if files.len() == 1 {
            files[0].clone()
        } else {
            dir.to_path_buf()
        };
        return Err(Error::MissingTensor {
            path,
            tensor: name.clone(),
        });
    }
    Ok(())
}
