//! The aligner's prompt options, shared by the examples that run an aligner: by default the
//! aligner folder's own record (`aligner_config.json`) decides; an option given here must agree
//! with it, and replaces the default where a folder has no record.

use std::path::Path;

use aligner::data::aligner_config::{AlignerConfig, PromptOverrides};

/// Prompt options of a local aligner.
#[derive(Debug, Clone, clap::Args)]
pub struct AlignerPromptArgs {
    /// The aligner's prompt format, a training data format (repeatable, one per task):
    /// `correction-v1` (aligner-7b-v1.0), `empathy-json`, `correction-json`,
    /// `correction-instruction`, `correction-plus` (Stream Aligner, Gemma chat format) or
    /// `stream-instruction`. Default: the aligner folder's aligner_config.json, else
    /// `correction-instruction` and `stream-instruction`.
    #[arg(long = "aligner-format")]
    pub formats: Vec<String>,
    /// Feed the aligner its prompt without wrapping it in its chat template.
    #[arg(long)]
    pub raw_aligner_prompt: bool,
    /// System message of the aligner's chat template (default: the template's own).
    #[arg(long)]
    pub aligner_system: Option<String>,
}

impl AlignerPromptArgs {
    /// The prompt settings for the aligner in `dir`; says on stderr where they came from
    /// unless `quiet`.
    pub fn resolve(&self, dir: &Path, quiet: bool) -> anyhow::Result<AlignerConfig> {
        let overrides = PromptOverrides {
            formats: self.formats.clone(),
            chat_template: self.raw_aligner_prompt.then_some(false),
            system: self.aligner_system.clone(),
        };
        let (config, recorded) = AlignerConfig::resolve(dir, &overrides)?;
        if !quiet {
            let wrap = if config.chat_template {
                " in its chat template"
            } else {
                ""
            };
            let from = if recorded {
                "as recorded in its aligner_config.json"
            } else {
                "(no aligner_config.json in its folder)"
            };
            eprintln!(
                "aligner prompt: {}{wrap}, {from}",
                config.formats.join(" + ")
            );
        }
        Ok(config)
    }
}
