//! The speed benchmarks that `cargo xtask bench` runs and renders into `docs/benchmarks.md`:
//! [`model`] (decode, prefill and quality of the model forms, beside transformers), [`stream`]
//! (wall time of the ways to answer) and [`overlap`] (the overlapped loop with a remote-like
//! upstream) and [`startup`] (the main command's start-up as a process, with and without
//! the pack cache) and [`versus`] (decoding against llama.cpp at batch 1 and batched, alternating). Each returns a [`Bench`]: the JSON results that xtask reads, and the table
//! printed to the console.

pub mod model;
pub mod overlap;
pub mod startup;
pub mod stream;
pub mod versus;

use crate::data::file::WrapFileError as _;
use std::path::Path;

use super::Result;
use crate::data::file::{create_dir, write_json};

/// Fixed questions: arithmetic word problems (the shipped aligner's domain) written for these
/// benchmarks, not taken from any training split.
pub const QUESTIONS: [&str; 5] = [
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?",
    "A baker makes 7 trays of 12 muffins and sells 50 of them. How many muffins are left?",
    "Omar saves $9 a week for 8 weeks, then spends $25 on a game. How many dollars does he have?",
    "A garden has 6 rows of 9 tulips. Half of the tulips are red. How many red tulips are there?",
    "A bus carries 38 people. At the first stop 11 get off and 7 get on. How many people are on the bus now?",
];

/// A benchmark's results.
#[derive(Debug, Clone, Default)]
pub struct Bench {
    /// The results as `cargo xtask bench` reads them (keys documented by each benchmark).
    pub json: serde_json::Map<String, serde_json::Value>,
    /// The table and ratios for the console.
    pub summary: String,
}

impl Bench {
    /// Writes the JSON results to `path` (its folder created if needed).
    ///
    /// # Errors
    /// Creating the folder or writing the file failed.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
        Ok(write_json(path, &self.json)?)
    }

    /// Replaces (or adds) the section under `heading` of the markdown document `doc` with the
    /// summary, for the benchmarks whose summary is that section.
    ///
    /// # Errors
    /// Reading or writing the document failed.
    pub fn save_section(&self, doc: &Path, heading: &str) -> Result<()> {
        aligner_serve::bench::replace_section(doc, heading, &self.summary)
            .map_err(|e| super::Error::io(doc, e))
    }

    /// What a benchmark's command line does with its result: prints the summary, writes the
    /// JSON to `json` and, with `section`, replaces that document's section under its heading
    /// with the summary (see [`save`](Self::save) and [`save_section`](Self::save_section)).
    ///
    /// # Errors
    /// Writing a file failed.
    pub fn publish(&self, json: Option<&Path>, section: Option<(&Path, &str)>) -> Result<()> {
        print!("{}", self.summary);
        if !self.summary.ends_with('\n') {
            println!();
        }
        if let Some(path) = json {
            self.save(path)?;
        }
        if let Some((doc, heading)) = section {
            self.save_section(doc, heading)?;
        }
        Ok(())
    }
}

/// `a / b`, with `b` kept off zero.
fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_creates_the_folder_and_writes_pretty_json() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| super::super::Error::io(Path::new("tmp"), e))?;
        let mut bench = Bench::default();
        bench.json.insert("questions".into(), 3.into());
        let path = dir.path().join("bench").join("a.json");
        bench.save(&path)?;
        let text = crate::data::file::read_text(&path)?;
        assert_eq!(text, "{\n  \"questions\": 3\n}\n");
        Ok(())
    }

    #[test]
    fn ratio_never_divides_by_zero() {
        assert_eq!(ratio(3.0, 1.5), 2.0);
        assert!(ratio(1.0, 0.0).is_finite());
    }
}
