//! Streams a model's answer to a prompt and reports prefill and decode speed.
//!
//! Run: `cargo run --release --example generate -- "What is the capital of France?"`
//! (defaults to the embedded SmolLM2-135M-Instruct; `--help` lists the options).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;

use aligner::model::chat::ChatMessage;
use aligner::model::generate::{GenerationConfig, SamplingConfig, generate};
use aligner::model::{CausalLm, DType, ModelTokenizer, WeightFormat};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Generate text with a Llama-family model, streaming it as it is written")]
struct Args {
    /// The prompt (the user message when the chat template is on).
    prompt: String,
    /// The model: a Hugging Face layout folder, a PEFT adapter folder or a GGUF file (default:
    /// the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Activations (and dense weights): f32, bf16 or f16 (default: f32 on the CPU, bf16 on a
    /// GPU).
    #[arg(long, value_parser = common::dtype)]
    dtype: Option<DType>,
    /// Weights: dense, int8, int4 or gguf blocks (default: as the main job's upstream, a GGUF
    /// model's own blocks on the CPU, int4 for other folders; dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    weights: common::Weights,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// Greedy decoding (overrides the sampling options).
    #[arg(long)]
    greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.2)]
    temperature: f64,
    /// Keep the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// Repetition penalty (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Frequency penalty (0.0 = off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f64,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Feed the prompt as plain text instead of through the model's chat template.
    #[arg(long)]
    no_chat_template: bool,
    /// System message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print the generated text only.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = common::model_dir(args.model_dir.as_deref())?;
    let (model, tokenizer_dir) = common::load_for_inference(
        &dir,
        args.device,
        args.dtype,
        args.weights,
        WeightFormat::Int4,
    )?;
    let tokenizer = ModelTokenizer::from_dir(&tokenizer_dir)?;

    let text = match tokenizer.chat_template()? {
        Some(template) if !args.no_chat_template => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(ChatMessage::system(system));
            }
            messages.push(ChatMessage::user(&args.prompt));
            template.render(&messages, true)?
        }
        _ => args.prompt.clone(),
    };
    let prompt = tokenizer.encode_prompt(&text)?;
    let sampling = if args.greedy {
        SamplingConfig {
            repetition_penalty: args.repetition_penalty,
            frequency_penalty: args.frequency_penalty,
            ..SamplingConfig::greedy()
        }
    } else {
        SamplingConfig {
            temperature: Some(args.temperature),
            top_k: args.top_k,
            top_p: Some(args.top_p),
            repetition_penalty: args.repetition_penalty,
            frequency_penalty: args.frequency_penalty,
            seed: args.seed,
        }
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_strings: args.stop.clone(),
        ..GenerationConfig::default()
    };
    let mut stdout = std::io::stdout().lock();
    let out = generate(&model, &tokenizer, &[prompt], &config, |_, delta| {
        let _ = stdout.write_all(delta.as_bytes());
        let _ = stdout.flush();
    })?;
    writeln!(stdout)?;
    if !args.quiet {
        let s = out.stats;
        eprintln!(
            "[{:?} {:?}, {} weights] prefill {} tokens at {:.1} tok/s, decode {} tokens at {:.1} tok/s ({:?})",
            model.kind(),
            model.device(),
            aligner::app::weights_name(&model),
            s.prefill_tokens,
            s.prefill_tokens_per_second(),
            s.decode_tokens,
            s.decode_tokens_per_second(),
            out.generations[0].finish_reason,
        );
    }
    Ok(())
}
