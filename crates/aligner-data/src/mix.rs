//! Loading several dataset specs into one mixed set of examples.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::{Example, Registry};
use crate::read::{ReadOptions, SkippedRow, read_with};
use crate::rng::{DEFAULT_SEED, SplitMix64, derive_seed};
use crate::spec::DatasetSpec;
use crate::warmup::{IdentityPlacement, pick_with_cycles};

/// How to build a mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixOptions {
    /// Seed for sub-sampling and identity rows (default 42).
    pub seed: u64,
    /// Skip (and list) bad rows instead of failing.
    pub skip_bad_rows: bool,
    /// Share of identity (Q-A-A) rows in the final mix; `None` adds none.
    pub identity_share: Option<f64>,
    /// Where identity rows go.
    pub identity_placement: IdentityPlacement,
}

impl Default for MixOptions {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            skip_bad_rows: false,
            identity_share: None,
            identity_placement: IdentityPlacement::First,
        }
    }
}

/// One example of a mix with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixedExample {
    /// Index of the spec it came from.
    pub source: usize,
    /// 1-based row number in that spec's file.
    pub row: usize,
    /// Whether this is an identity (warm-up) example.
    pub identity: bool,
    /// The pair itself.
    pub example: Example,
}

/// What one spec contributed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The spec as written.
    pub spec: String,
    /// Its format.
    pub format: String,
    /// The file read.
    pub path: PathBuf,
    /// Records in the file.
    pub records: usize,
    /// Records that passed validation.
    pub usable: usize,
    /// Records kept after sub-sampling.
    pub selected: usize,
    /// Bad records left out (only with `skip_bad_rows`).
    pub skipped: Vec<SkippedRow>,
}

/// A mixed set of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// The examples: identity rows first with [`IdentityPlacement::First`],
    /// then each spec's rows in spec order and file order.
    pub examples: Vec<MixedExample>,
    /// One report per spec.
    pub sources: Vec<SourceReport>,
    /// Number of identity examples.
    pub identity_rows: usize,
}

/// Reads, validates and sub-samples every spec and mixes the results.
///
/// Each spec is sampled with its own seed derived from `options.seed` and
/// its position. Identity rows are drawn from the selected rows of formats
/// that define [`crate::Format::identity`], in proportion so that they make
/// `identity_share` of the whole mix.
pub fn load_mix(specs: &[DatasetSpec], registry: &Registry, options: &MixOptions) -> Result<Mix> {
    let mut examples = Vec::new();
    let mut identity_pool = Vec::new();
    let mut sources = Vec::with_capacity(specs.len());
    for (si, spec) in specs.iter().enumerate() {
        let format = registry.get(&spec.name)?;
        let path = match (&spec.path, format.default_path()) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p.to_owned(),
            (None, None) => {
                return Err(Error::MissingPath {
                    spec: spec.to_string(),
                    format: spec.name.clone(),
                });
            }
        };
        let read_opts = ReadOptions {
            kind: None,
            skip_bad_rows: options.skip_bad_rows,
        };
        let loaded = read_with(&path, &read_opts, |row, record| {
            let example = format.example(&record).map_err(|e| e.at(&path, row))?;
            let identity = match format
                .identity(&record)
                .filter(|_| options.identity_share.is_some())
            {
                Some(r) => Some(
                    format
                        .example(&r.map_err(|e| e.at(&path, row))?)
                        .map_err(|e| e.at(&path, row))?,
                ),
                None => None,
            };
            Ok((example, identity))
        })?;
        let usable = loaded.rows.len();
        let keep = spec
            .sample(usable, derive_seed(options.seed, si as u64))
            .map_err(|e| match e {
                Error::NotEnoughRows {
                    spec,
                    requested,
                    available,
                    ..
                } => Error::NotEnoughRows {
                    spec,
                    path: path.clone(),
                    requested,
                    available,
                },
                other => other,
            })?;
        let mut rows: Vec<Option<(Example, Option<Example>)>> =
            loaded.rows.into_iter().map(Some).collect();
        for &i in &keep {
            let Some((example, identity)) = rows[i].take() else {
                continue;
            };
            let row = loaded.row_numbers[i];
            examples.push(MixedExample {
                source: si,
                row,
                identity: false,
                example,
            });
            if let Some(id) = identity {
                identity_pool.push(MixedExample {
                    source: si,
                    row,
                    identity: true,
                    example: id,
                });
            }
        }
        sources.push(SourceReport {
            spec: spec.to_string(),
            format: spec.name.clone(),
            path,
            records: usable + loaded.skipped.len(),
            usable,
            selected: keep.len(),
            skipped: loaded.skipped,
        });
    }

    let mut identity = Vec::new();
    if let Some(share) = options.identity_share {
        // Identity rows are a share of the whole mix; drawn from rows that have one.
        let wanted = crate::warmup::identity_count(examples.len(), share)?;
        if wanted > 0 && identity_pool.is_empty() {
            return Err(Error::InvalidOption {
                name: "identity_share",
                reason: "no selected format defines identity rows".into(),
            });
        }
        for i in pick_with_cycles(
            identity_pool.len(),
            wanted,
            derive_seed(options.seed, u64::MAX),
        )? {
            identity.push(identity_pool[i].clone());
        }
    }
    let identity_rows = identity.len();
    let examples = match options.identity_placement {
        IdentityPlacement::First => identity.into_iter().chain(examples).collect(),
        IdentityPlacement::Mixed => {
            let mut all: Vec<_> = examples.into_iter().chain(identity).collect();
            SplitMix64::new(derive_seed(options.seed, u64::MAX - 1)).shuffle(&mut all);
            all
        }
    };
    Ok(Mix {
        examples,
        sources,
        identity_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_rows(dir: &std::path::Path, n: usize) -> PathBuf {
        let p = dir.join("rows.jsonl");
        let text: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"question\": \"q{i}\", \"answer\": \"a{i}\", \"correction\": \"c{i}\"}}\n"
                )
            })
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn sampling_is_seeded_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_rows(dir.path(), 50);
        let reg = Registry::with_builtins();
        let spec = |s: &str| {
            format!("correction-json:{s}:{}", p.display())
                .parse::<DatasetSpec>()
                .unwrap()
        };
        let specs = [spec("0.5"), spec("1/10"), spec("7/-1")];
        let a = load_mix(&specs, &reg, &MixOptions::default()).unwrap();
        let counts: Vec<usize> = a.sources.iter().map(|s| s.selected).collect();
        assert_eq!(counts, [25, 5, 7]);
        assert_eq!(a.examples.len(), 37);
        assert_eq!(a, load_mix(&specs, &reg, &MixOptions::default()).unwrap());
        let b = load_mix(
            &specs,
            &reg,
            &MixOptions {
                seed: 7,
                ..Default::default()
            },
        )
        .unwrap();
        assert_ne!(a.examples, b.examples);
        // Within a spec, file order is kept.
        let rows: Vec<usize> = a
            .examples
            .iter()
            .filter(|e| e.source == 0)
            .map(|e| e.row)
            .collect();
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn identity_rows_take_their_share() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_rows(dir.path(), 40);
        let reg = Registry::with_builtins();
        let specs = [DatasetSpec::new("correction-json", &p)];
        let opts = MixOptions {
            identity_share: Some(0.2),
            ..Default::default()
        };
        let m = load_mix(&specs, &reg, &opts).unwrap();
        assert_eq!(m.identity_rows, 10);
        assert_eq!(m.examples.len(), 50);
        assert!(m.examples[..10].iter().all(|e| e.identity));
        assert!(m.examples[10..].iter().all(|e| !e.identity));
        for e in &m.examples[..10] {
            // Q-A-A: the target is the answer of the same row.
            assert_eq!(e.example.target, format!("a{}", e.row - 1));
        }
        let mixed = MixOptions {
            identity_placement: IdentityPlacement::Mixed,
            ..opts
        };
        let m2 = load_mix(&specs, &reg, &mixed).unwrap();
        assert_eq!(m2.examples.iter().filter(|e| e.identity).count(), 10);
        assert!(!m2.examples[..10].iter().all(|e| e.identity));

        let pc = dir.path().join("pc.jsonl");
        std::fs::write(
            &pc,
            "{\"prompt\": \"p\", \"completion\": \"c\"}\n".repeat(8),
        )
        .unwrap();
        let err = load_mix(&[DatasetSpec::new("prompt-completion", &pc)], &reg, &opts).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidOption {
                name: "identity_share",
                ..
            }
        ));
    }

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
        check::<Registry>();
        check::<crate::Encoder>();
    }
}
