//! A model folder's own GGUF blocks ([`crate::import::GGUF_BLOCKS_FILE`], written by the
//! import), which [`WeightFormat::Gguf`](super::WeightFormat::Gguf) packs code for code.

use aligner_data::file::WrapFileError as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use crate::gguf::GgmlType;
use crate::import::GGUF_BLOCKS_FILE;
use crate::qmatmul::QMatrix;
use crate::{Error, Result};

/// The block matrices of a folder's weights, by Hugging Face tensor name.
#[derive(Debug, Default)]
pub(crate) struct GgufBlocks {
    matrices: HashMap<String, QMatrix>,
}

impl GgufBlocks {
    /// The blocks of the model folder `dir`; empty where it has no blocks file (a folder not
    /// imported from GGUF, or an adapter, whose merged weights are not the file's).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(GGUF_BLOCKS_FILE);
        if !path.is_file() {
            return Ok(Self::default());
        }
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: a read-only private mapping of a file the import wrote and nothing rewrites in
        // place (a new import replaces the folder); the blocks are copied out before it is
        // unmapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        Self::parse(&path, &map)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let err = |reason: String| Error::Safetensors {
            path: PathBuf::from(path),
            reason,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| err(e.to_string()))?;
        let types = meta.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
        let mut matrices = HashMap::new();
        for (name, view) in file.tensors() {
            let ty = types
                .get(&name)
                .and_then(|t| GgmlType::from_name(t))
                .ok_or_else(|| err(format!("`{name}`: no known GGUF type in the metadata")))?;
            let &[rows, row_bytes] = view.shape() else {
                return Err(err(format!(
                    "`{name}`: shape {:?} is not 2-D",
                    view.shape()
                )));
            };
            if !row_bytes.is_multiple_of(ty.block_bytes()) {
                return Err(err(format!(
                    "`{name}`: rows of {row_bytes} bytes are not whole {} blocks",
                    ty.name()
                )));
            }
            let cols = row_bytes / ty.block_bytes() * ty.block_size();
            let m = QMatrix::from_ggml(ty, view.data(), rows, cols)
                .map_err(|e| err(format!("`{name}`: {e}")))?;
            matrices.insert(name, m);
        }
        Ok(Self { matrices })
    }

    /// The blocks of the weight `name` (`model.layers.0.self_attn.q_proj.weight`), if the file
    /// holds them.
    pub(crate) fn get(&self, name: &str) -> Option<&QMatrix> {
        self.matrices.get(name)
    }
}
