//! The command line of `stream_align`, and what its options mean for the library.

use std::path::PathBuf;

use aligner::app::stream_align::{AnswerOptions, Mode};
use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::DType;
use aligner::model::generate::SamplingConfig;
use aligner::model::remote::CompletionParams;
use aligner::stream::preference::PreferenceStyle;
use clap::{Parser, ValueEnum};

use crate::common;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Sentence by sentence: the upstream continues from each corrected sentence.
    Stream,
    /// The upstream writes the whole answer, the aligner rewrites it once.
    Aligner,
    /// The upstream alone (baseline).
    Upstream,
    /// The published loop: 16 rounds, whole continuations, single-space joins, EOS ignored.
    Reference,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Stream => Mode::Stream,
            ModeArg::Aligner => Mode::Aligner,
            ModeArg::Upstream => Mode::Upstream,
            ModeArg::Reference => Mode::Reference,
        }
    }
}

#[derive(Parser)]
#[command(
    about = "Answer a question with an upstream model, corrected sentence by sentence by an aligner (Stream Aligner)",
    after_help = "The default aligner (assets/stream-aligner) was trained to correct \
SmolLM2-135M-Instruct's arithmetic word problems under the math system prompt (--math) and to \
keep the sentences of its everyday answers as they are (docs/experiments.md). Point \
--aligner-dir at another aligner (a model folder, a PEFT LoRA adapter folder or a GGUF file) \
for other domains."
)]
pub struct Args {
    /// The question.
    pub question: Option<String>,
    /// Questions to answer one after another: a text file with one question per line, or JSON
    /// Lines with a `question` field.
    #[arg(long, conflicts_with = "question")]
    pub questions: Option<PathBuf>,
    /// Give the upstream the math system prompt of the papers' math experiments.
    #[arg(long)]
    pub math: bool,
    /// Upstream system prompt (default: the chat template's own).
    #[arg(long, conflicts_with = "math")]
    pub system: Option<String>,
    /// Upstream model: a Hugging Face layout folder or a GGUF file (imported into the cache once) (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub upstream_dir: Option<PathBuf>,
    /// Aligner: a model folder or a PEFT LoRA adapter folder, prompted as its
    /// aligner_config.json records (default: the shipped assets/stream-aligner, or
    /// assets/aligner with --mode aligner; else the embedded SmolLM2-135M-Instruct prompted
    /// with the instructions, which is not a trained aligner).
    #[arg(long)]
    pub aligner_dir: Option<PathBuf>,
    /// How to answer.
    #[arg(long, value_enum, default_value_t = ModeArg::Stream)]
    pub mode: ModeArg,
    /// In stream mode, run the upstream and the aligner at the same time on two threads
    /// (`StreamMachine::run_overlapped`): the aligner prepares its prompt while the upstream
    /// writes a sentence, and the upstream writes the next sentence while the aligner checks
    /// one. It pays when the two do not share the same few cores (an upstream on a GPU or on
    /// other machines); with both on a small CPU it is slower (docs/benchmarks.md).
    #[arg(long)]
    pub overlap: bool,
    /// Activations (and dense weights): f32, bf16 or f16 (default: f32 on the CPU, bf16 on a
    /// GPU).
    #[arg(long, value_parser = common::dtype)]
    pub dtype: Option<DType>,
    /// Upstream weights: dense, int8, int4 or gguf blocks (default: on the CPU a GGUF model's
    /// own blocks, which keeps the embedded model's Q4_1 codes, int4 for other folders; dense
    /// elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    pub weights: common::Weights,
    /// Aligner weights (default: int8 on the CPU, close to the merged LoRA weights; dense
    /// elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    pub aligner_weights: common::Weights,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    pub device: tch::Device,
    /// Most rounds (default: 64; 16 in reference mode).
    #[arg(long)]
    pub max_rounds: Option<usize>,
    /// Most upstream tokens per sentence.
    #[arg(long, default_value_t = 96)]
    pub max_sentence_tokens: usize,
    /// Most upstream tokens for the whole answer.
    #[arg(long, default_value_t = 384)]
    pub max_tokens: usize,
    /// In stream mode, end the answer after the first committed sentence that holds this text
    /// (repeatable; `MachineConfig::stop_after`). Default with `--math`: `The answer is`, once
    /// the final answer has been given (a small upstream goes on with unrelated text until a
    /// limit otherwise).
    #[arg(long)]
    pub stop_after: Vec<String>,
    /// With `--math`, do not end the answer at `The answer is`.
    #[arg(long)]
    pub no_stop: bool,
    /// Seed of the upstream's sampler.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Greedy upstream decoding (the aligner always decodes greedily).
    #[arg(long)]
    pub greedy: bool,
    /// Upstream sampling temperature (the reference mode uses the published settings instead).
    #[arg(long, default_value_t = SamplingConfig::CHAT_TEMPERATURE)]
    pub temperature: f64,
    #[command(flatten)]
    pub aligner_prompt: common::aligner_prompt::AlignerPromptArgs,
    /// Write each question's record to this JSON Lines file.
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// Write (prompt, chosen = aligned answer, rejected = upstream's answer) pairs for DPO-style
    /// trainers (TRL's DPOTrainer reads both styles) to this JSON Lines file.
    #[arg(long)]
    pub preference_out: Option<PathBuf>,
    /// Layout of the preference pairs: standard (`{"prompt", "chosen", "rejected"}` strings) or
    /// conversational (the same keys holding chat message lists).
    #[arg(long, default_value = "standard")]
    pub preference_style: PreferenceStyle,
    /// Also write pairs whose two answers are equal.
    #[arg(long)]
    pub keep_ties: bool,
    /// Print the answer only: no markers, no summary.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub remote: common::upstream::RemoteArgs,
}

impl Args {
    /// The upstream's sampling: greedy, the published settings in reference mode, else
    /// temperature and nucleus sampling with a light repetition penalty.
    pub fn sampling(&self, mode: Mode) -> SamplingConfig {
        if self.greedy {
            SamplingConfig::greedy()
        } else if mode == Mode::Reference {
            SamplingConfig::reference_upstream(self.seed)
        } else {
            SamplingConfig::chat(self.temperature, self.seed)
        }
    }

    /// The same settings for a remote upstream.
    pub fn remote_params(&self) -> CompletionParams {
        CompletionParams {
            temperature: Some(if self.greedy { 0.0 } else { self.temperature }),
            top_p: (!self.greedy).then_some(0.9),
            seed: Some(self.seed),
            ..CompletionParams::default()
        }
    }

    /// The upstream's system message.
    pub fn system(&self) -> Option<String> {
        if self.math {
            Some(MATH_SYSTEM_PROMPT.to_owned())
        } else {
            self.system.clone()
        }
    }

    /// The limits of each answer; with `--math`, stream mode ends at `The answer is`.
    pub fn answer_options(&self, mode: Mode) -> AnswerOptions {
        AnswerOptions {
            mode,
            overlap: self.overlap,
            max_rounds: self.max_rounds,
            max_sentence_tokens: self.max_sentence_tokens,
            max_tokens: self.max_tokens,
            stop_after: if !self.stop_after.is_empty() {
                self.stop_after.clone()
            } else if self.math && !self.no_stop {
                vec!["The answer is".to_owned()]
            } else {
                Vec::new()
            },
        }
    }
}
