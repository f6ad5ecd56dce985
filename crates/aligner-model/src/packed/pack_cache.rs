//! [`PackCache`]: packed models kept on disk under a content hash of what they were packed from,
//! so that a start maps a saved pack ([`PackedLlama::open`]) instead of loading the weights in
//! f32, merging an adapter and quantising again.
//!
//! The key is the SHA-256 of the pack version, the weight format, the activation dtype, the
//! dtype of the dense copies ([`PackedLlama::dense_kind`]: it depends on the CPU and
//! `ALIGNER_DENSE_COPY`) and the SHA-256 of every file the model is made from: `config.json`
//! and the safetensors files of the model folder, and for a PEFT adapter its two files plus
//! those of its base. Hashing a file is remembered in `sources.json` beside the packs, by path,
//! length and modification time, so a start hashes only files that changed. The cache keeps the
//! most recently used packs ([`PackCache::with_max_packs`]) and removes older ones when it
//! stores a new one.

use aligner_data::file::WrapFileError as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind};

use super::model::PackedLlama;
use super::saved::PACK_VERSION;
use super::weights::WeightFormat;
use crate::adapter::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter_dir};
use crate::{Error, Result};

/// The environment variable that moves the pack cache (a folder) or turns it off (`off`, `0`
/// or `none`): see [`PackCache::from_env`].
pub const PACK_CACHE_ENV: &str = "ALIGNER_PACK_CACHE";

/// Packs kept by default (each holds its model's dense copy beside the blocks: larger than the
/// model in f32).
pub const DEFAULT_MAX_PACKS: usize = 4;

const SOURCES: &str = "sources.json";

/// A folder of packed models, each under the content hash of its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackCache {
    dir: PathBuf,
    max_packs: usize,
}

/// What [`PackCache::load`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackOutcome {
    /// The pack was in the cache and is mapped.
    Hit,
    /// The model was packed and stored; the stored pack is mapped.
    Stored,
    /// A pack under the key could not be opened (the reason), so the model was packed again
    /// and the file replaced.
    Replaced(String),
    /// The model was packed but could not be stored (the reason); it runs from memory.
    NotStored(String),
}

/// A packed model from the cache.
#[derive(Debug)]
pub struct CachedPack {
    /// The model.
    pub model: PackedLlama,
    /// The folder of its tokenizer (the base model's, for an adapter).
    pub tokenizer_dir: PathBuf,
    /// The pack's file.
    pub path: PathBuf,
    /// Whether it was found, stored or neither.
    pub outcome: PackOutcome,
}

/// What the hash of one source file was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Memo {
    len: u64,
    modified_ns: u128,
    sha256: String,
}

impl PackCache {
    /// A cache in `dir` (created when a pack is first stored), keeping
    /// [`DEFAULT_MAX_PACKS`] packs.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_packs: DEFAULT_MAX_PACKS,
        }
    }

    /// The same cache keeping at most `n` packs (at least one).
    #[must_use]
    pub fn with_max_packs(mut self, n: usize) -> Self {
        self.max_packs = n.max(1);
        self
    }

    /// The cache the applications use: `$ALIGNER_PACK_CACHE` when it names a folder, none when
    /// it is `off`, `0` or `none`, else `packed` in the cache root ([`crate::hub::cache_dir`]).
    pub fn from_env() -> Option<Self> {
        match std::env::var_os(PACK_CACHE_ENV) {
            None => Some(Self::new(crate::hub::cache_dir().join("packed"))),
            Some(v) => {
                let s = v.to_string_lossy();
                if s.is_empty() || ["off", "0", "none"].contains(&s.to_ascii_lowercase().as_str()) {
                    None
                } else {
                    Some(Self::new(PathBuf::from(v)))
                }
            }
        }
    }

    /// The cache's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files `dir` (a model or adapter folder) is made from, each with a role, and the
    /// folder of its base model (itself for a model).
    fn sources(dir: &Path) -> Result<(Vec<(&'static str, PathBuf)>, PathBuf)> {
        let model_files = |dir: &Path| -> Result<Vec<(&'static str, PathBuf)>> {
            let mut files = vec![("config", dir.join("config.json"))];
            let (weights, sharded) = crate::load::checkpoint_files(dir)?;
            if sharded.is_some() {
                files.push(("index", dir.join("model.safetensors.index.json")));
            }
            files.extend(weights.into_iter().map(|f| ("weights", f)));
            Ok(files)
        };
        let base = crate::adapter::base_of(dir)?;
        let mut files = if is_adapter_dir(dir) {
            vec![
                ("adapter config", dir.join(ADAPTER_CONFIG)),
                ("adapter weights", dir.join(ADAPTER_WEIGHTS)),
            ]
        } else {
            Vec::new()
        };
        files.extend(model_files(&base)?);
        Ok((files, base))
    }

    /// The key of `dir` packed as `format` for activations of `kind`: a hex SHA-256 (see the
    /// module documentation), and the folder of the model's tokenizer.
    ///
    /// # Errors
    /// A source file that cannot be read, named.
    pub fn key(&self, dir: &Path, kind: Kind, format: WeightFormat) -> Result<(String, PathBuf)> {
        let (files, base) = Self::sources(dir)?;
        let index_path = self.dir.join(SOURCES);
        let mut memo: BTreeMap<String, Memo> = std::fs::read_to_string(&index_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut changed = false;
        let dense_kind = PackedLlama::dense_kind(Device::Cpu, kind, format);
        let mut text = format!(
            "aligner-pack {PACK_VERSION}\nformat {format}\nkind {}\ndense {}\n",
            super::saved::kind_name(kind),
            super::saved::kind_name(dense_kind)
        );
        for (role, file) in files {
            let meta = std::fs::metadata(&file).map_err(|e| Error::io(&file, e))?;
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let name = std::fs::canonicalize(&file)
                .unwrap_or_else(|_| file.clone())
                .to_string_lossy()
                .into_owned();
            let sha = match memo.get(&name) {
                Some(m)
                    if m.len == meta.len() && m.modified_ns == modified_ns && modified_ns > 0 =>
                {
                    m.sha256.clone()
                }
                _ => {
                    let sha256 = crate::hub::sha256_file(&file)?;
                    memo.insert(
                        name,
                        Memo {
                            len: meta.len(),
                            modified_ns,
                            sha256: sha256.clone(),
                        },
                    );
                    changed = true;
                    sha256
                }
            };
            let file_name = file.file_name().unwrap_or_default().to_string_lossy();
            text.push_str(&format!("{role} {file_name} {sha}\n"));
        }
        // Only a memo: when it cannot be written, the next start hashes again.
        if changed && std::fs::create_dir_all(&self.dir).is_ok() {
            // Forget files that are gone (temporary folders), so the memo does not grow.
            memo.retain(|path, _| Path::new(path).exists());
            let _ = aligner_data::file::write_json(&index_path, &memo);
        }
        let key = crate::hub::hex(&Sha256::digest(text.as_bytes()));
        Ok((key, base))
    }

    /// The file of the pack with `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// The packed model of `dir` (a model or adapter folder) in `format` for activations of
    /// `kind`, on the CPU: mapped from the cache when it holds it, else loaded in f32, packed
    /// ([`PackedLlama::from_model`]), stored and mapped. A pack that cannot be stored is
    /// returned from memory ([`PackOutcome::NotStored`]).
    ///
    /// # Errors
    /// Those of reading the sources, loading and packing the model.
    pub fn load(&self, dir: &Path, kind: Kind, format: WeightFormat) -> Result<CachedPack> {
        let (key, tokenizer_dir) = self.key(dir, kind, format)?;
        let path = self.path(&key);
        let mut replaced = None;
        if path.is_file() {
            match PackedLlama::open(&path) {
                Ok(model) => {
                    // The modification time orders packs for eviction.
                    if let Ok(f) = std::fs::File::open(&path) {
                        let _ = f.set_modified(SystemTime::now());
                    }
                    return Ok(CachedPack {
                        model,
                        tokenizer_dir,
                        path,
                        outcome: PackOutcome::Hit,
                    });
                }
                Err(e) => replaced = Some(e.to_string()),
            }
        }
        let packed = {
            let (model, _vs, _) = crate::adapter::load_any(dir, Kind::Float, Device::Cpu)?;
            PackedLlama::from_model_in(&model, dir, kind, format)?
        };
        let stored = std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))
            .and_then(|()| packed.save(&path))
            .and_then(|()| PackedLlama::open(&path));
        let (model, outcome) = match stored {
            Ok(mapped) => {
                drop(packed);
                self.evict(&path);
                let outcome = replaced.map_or(PackOutcome::Stored, PackOutcome::Replaced);
                (mapped, outcome)
            }
            Err(e) => (packed, PackOutcome::NotStored(e.to_string())),
        };
        Ok(CachedPack {
            model,
            tokenizer_dir,
            path,
            outcome,
        })
    }

    /// Removes the least recently used packs beyond the limit, never `keep`. A pack another
    /// process has mapped stays readable to it (the file is unlinked, not changed).
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut packs: Vec<(SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p != keep)
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        packs.sort_by_key(|p| std::cmp::Reverse(p.0));
        for (_, old) in packs.into_iter().skip(self.max_packs.saturating_sub(1)) {
            let _ = std::fs::remove_file(old);
        }
    }
}
