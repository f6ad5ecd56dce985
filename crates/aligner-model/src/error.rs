//! The error type of `aligner-model`.

use std::path::PathBuf;

/// Everything that can go wrong while reading, importing or running a model.
///
/// Variants that concern a file carry its path; variants that concern a tensor carry its name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or parsing a file (a config, a JSON record, a cache entry) failed; the
    /// error names it.
    #[error(transparent)]
    File(#[from] aligner_data::FileError),
    /// A GGUF file is malformed (bad magic, truncated, an offset out of bounds, ...).
    #[error("{}: malformed GGUF: {reason}", path.display())]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A GGUF tensor uses a storage type this crate cannot dequantise.
    #[error("{}: tensor `{tensor}` has GGUF type {type_id} ({type_name}), which is not supported", path.display())]
    UnsupportedGgufType {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The numeric ggml type id.
        type_id: u32,
        /// Its name where known.
        type_name: &'static str,
    },
    /// A metadata key the model needs is missing or has the wrong type.
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    Metadata {
        /// The file the metadata came from.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{}: malformed safetensors: {reason}", path.display())]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the model needs is absent from its checkpoint.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The checkpoint (file or folder).
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor has the wrong shape or an unusable dtype.
    #[error("{}: tensor `{tensor}`: expected shape {expected:?}, found {found:?}", path.display())]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<i64>,
        /// The shape in the file.
        found: Vec<i64>,
    },
    /// A tensor of a checkpoint has a dtype the loader cannot convert.
    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// A model configuration is missing a field or holds an impossible value.
    #[error("{}: invalid model config: {reason}", path.display())]
    Config {
        /// The `config.json` (or GGUF) it came from.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tokenizer could not be loaded, built or run.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file (or GGUF) concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A downloaded or cached file does not have the expected checksum.
    #[error("{}: sha256 {found} differs from the expected {expected}", path.display())]
    Checksum {
        /// The file checked.
        path: PathBuf,
        /// The expected hex digest.
        expected: String,
        /// The digest found.
        found: String,
    },
    /// An external command (python, pip) failed or could not be started.
    #[error("`{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the end of its output, or why it could not start.
        reason: String,
    },
    /// An HTTP endpoint could not be reached, timed out, or broke the connection.
    #[error("{url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An HTTP endpoint answered with an error status (for `429` and `5xx`, on every attempt).
    #[error("{url}: HTTP {status} ({attempts} attempt(s)): {body}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status of the last answer.
        status: u16,
        /// The start of the last answer's body (see `remote::BODY_EXCERPT_CHARS`).
        body: String,
        /// Attempts made.
        attempts: u32,
    },
    /// An HTTP endpoint's answer is not what the API promises: a malformed server-sent event
    /// stream, a chunk that is not the expected JSON, an error event, or a stream cut short.
    #[error("{url}: malformed answer: {reason}")]
    Stream {
        /// The URL requested.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// Data handling (chat templates, tokenizer configs) failed.
    #[error(transparent)]
    Data(#[from] aligner_data::Error),
    /// A caller passed an argument that cannot work (empty batch, bad option, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The CUDA kernels could not run: no driver, no device, NVRTC missing or failing, or a
    /// launch that failed.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// A LibTorch operation failed.
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
