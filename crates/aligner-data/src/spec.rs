//! Dataset specs `NAME[:PROPORTION[:PATH]]` and seeded sub-sampling.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// How much of a data set to use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proportion {
    /// Every row (an empty proportion).
    All,
    /// A fraction in `[0, 1]` (`0.5`); `floor(fraction * rows)` rows.
    Fraction(f64),
    /// `a/b` with `0 <= a <= b`; `floor(rows * a / b)` rows.
    Ratio {
        /// Numerator.
        num: u64,
        /// Denominator (> 0).
        den: u64,
    },
    /// `n/-1`: exactly `n` rows (an error if fewer are available).
    Exactly(usize),
}

impl Proportion {
    /// The number of rows to draw from `available`, or `None` when an exact
    /// count exceeds what is available.
    pub fn count(&self, available: usize) -> Option<usize> {
        match *self {
            Proportion::All => Some(available),
            Proportion::Fraction(p) => Some(((available as f64) * p).floor() as usize),
            Proportion::Ratio { num, den } => {
                Some((u128::from(available as u64) * u128::from(num) / u128::from(den)) as usize)
            }
            Proportion::Exactly(n) => (n <= available).then_some(n),
        }
    }

    fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Proportion::All);
        }
        if let Some((a, b)) = s.split_once('/') {
            let (a, b) = (a.trim(), b.trim());
            if b == "-1" {
                return a
                    .parse::<usize>()
                    .map(Proportion::Exactly)
                    .map_err(|_| format!("`{a}` is not a row count"));
            }
            let num = a
                .parse::<u64>()
                .map_err(|_| format!("`{a}` is not a non-negative integer"))?;
            let den = b
                .parse::<u64>()
                .map_err(|_| format!("`{b}` is not a positive integer or -1"))?;
            if den == 0 {
                return Err("denominator is 0".into());
            }
            if num > den {
                return Err(format!(
                    "{num}/{den} is more than 1 (use n/-1 for an exact row count)"
                ));
            }
            return Ok(Proportion::Ratio { num, den });
        }
        let p = s
            .parse::<f64>()
            .map_err(|_| format!("`{s}` is not a proportion (0.5, a/b or n/-1)"))?;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "{p} is outside [0, 1] (use n/-1 for an exact row count)"
            ));
        }
        Ok(Proportion::Fraction(p))
    }
}

impl fmt::Display for Proportion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proportion::All => Ok(()),
            Proportion::Fraction(p) => write!(f, "{p}"),
            Proportion::Ratio { num, den } => write!(f, "{num}/{den}"),
            Proportion::Exactly(n) => write!(f, "{n}/-1"),
        }
    }
}

/// A parsed `NAME[:PROPORTION[:PATH]]`: a registered format name, how much
/// of the data to use, and where it is. The path keeps any further colons.
///
/// ```
/// use aligner_data::{DatasetSpec, Proportion};
/// let s: DatasetSpec = "correction-json::/data/train.json".parse()?;
/// assert_eq!(s.name, "correction-json");
/// assert_eq!(s.proportion, Proportion::All);
/// assert_eq!(s.path.as_deref(), Some(std::path::Path::new("/data/train.json")));
/// assert_eq!("empathy-json:1000/-1".parse::<DatasetSpec>()?.proportion, Proportion::Exactly(1000));
/// # Ok::<(), aligner_data::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// The format's registered name.
    pub name: String,
    /// How much to use.
    pub proportion: Proportion,
    /// The data file; `None` uses the format's default path.
    pub path: Option<PathBuf>,
}

impl DatasetSpec {
    /// All rows of `path`, read with format `name`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            proportion: Proportion::All,
            path: Some(path.into()),
        }
    }

    /// The same spec with another proportion.
    pub fn with_proportion(mut self, proportion: Proportion) -> Self {
        self.proportion = proportion;
        self
    }

    /// Sorted indices of the rows to keep out of `available`, drawn with
    /// `seed` (uniform, without replacement; file order is kept).
    pub fn sample(&self, available: usize, seed: u64) -> Result<Vec<usize>> {
        let k = self
            .proportion
            .count(available)
            .ok_or_else(|| Error::NotEnoughRows {
                spec: self.to_string(),
                path: self.path.clone().unwrap_or_default(),
                requested: match self.proportion {
                    Proportion::Exactly(n) => n,
                    _ => available,
                },
                available,
            })?;
        if k == available {
            return Ok((0..available).collect());
        }
        Ok(SplitMix64::new(seed).sample_indices(available, k))
    }
}

impl FromStr for DatasetSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::Spec {
            spec: s.to_owned(),
            reason,
        };
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            return Err(bad("empty dataset name".into()));
        }
        let proportion = Proportion::parse(parts.next().unwrap_or_default()).map_err(bad)?;
        let path = parts.next().filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(Self {
            name: name.to_owned(),
            proportion,
            path,
        })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        match (&self.proportion, &self.path) {
            (Proportion::All, None) => Ok(()),
            (p, None) => write!(f, ":{p}"),
            (p, Some(path)) => write!(f, ":{p}:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let s: DatasetSpec = "correction-json".parse().unwrap();
        assert_eq!((s.proportion, s.path), (Proportion::All, None));
        let s: DatasetSpec = "x:0.5".parse().unwrap();
        assert_eq!(s.proportion, Proportion::Fraction(0.5));
        let s: DatasetSpec = "x:1/3:rel/p.jsonl".parse().unwrap();
        assert_eq!(s.proportion, Proportion::Ratio { num: 1, den: 3 });
        assert_eq!(s.path, Some(PathBuf::from("rel/p.jsonl")));
        let s: DatasetSpec = "x:10/-1:C:/odd:name.json".parse().unwrap();
        assert_eq!(s.proportion, Proportion::Exactly(10));
        assert_eq!(s.path, Some(PathBuf::from("C:/odd:name.json")));
        assert_eq!(s.to_string(), "x:10/-1:C:/odd:name.json");
    }

    #[test]
    fn parse_errors_are_typed() {
        for bad in [
            "", ":0.5", "x:1.5", "x:-0.1", "x:3/2", "x:1/0", "x:a/b", "x:abc", "x:-5/-1",
        ] {
            match bad.parse::<DatasetSpec>() {
                Err(Error::Spec { spec, .. }) => assert_eq!(spec, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn counts() {
        assert_eq!(Proportion::Fraction(0.5).count(11), Some(5));
        assert_eq!(Proportion::Ratio { num: 2, den: 3 }.count(10), Some(6));
        assert_eq!(Proportion::Exactly(4).count(3), None);
        let spec: DatasetSpec = "x:4/-1:f.json".parse().unwrap();
        assert!(matches!(
            spec.sample(3, 42),
            Err(Error::NotEnoughRows {
                requested: 4,
                available: 3,
                ..
            })
        ));
        assert_eq!(spec.sample(10, 42).unwrap(), spec.sample(10, 42).unwrap());
        assert_ne!(
            spec.sample(1000, 42).unwrap(),
            spec.sample(1000, 43).unwrap()
        );
    }
}
