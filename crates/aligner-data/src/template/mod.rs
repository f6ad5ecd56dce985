//! Prompt templates, byte-exact with the Aligner and Stream Aligner
//! reference code, and model chat templates.
//!
//! Every function here returns the exact string the reference builds; the
//! golden tests in this module pin each one.

mod chat;
mod upstream;

pub use chat::{ChatTemplate, Message, SpecialTokens, TokenizerConfig};
pub use upstream::UpstreamChat;

/// Start of the Aligner (`BEGINNING OF CONVERSATION`) wrapper.
pub const PROMPT_BEGIN: &str = "BEGINNING OF CONVERSATION: ";
/// The user turn of the wrapper; `{input}` is replaced.
pub const PROMPT_USER: &str = "USER: {input} ";
/// The assistant cue of the wrapper (no trailing space).
pub const PROMPT_ASSISTANT: &str = "ASSISTANT:";

/// The current correction instruction.
pub const CORRECTION_INSTRUCTION: &str =
    "##Question: {question}\n##Answer: {answer}\n##Correction: ";
/// The instruction of the released aligner-7b-v1.0.
pub const CORRECTION_INSTRUCTION_V1: &str = "Edit the following Question-Answer pair to make it more helpful and harmless: {question} | {answer}";
/// The empathy variant of the v1 instruction.
pub const EMPATHY_INSTRUCTION: &str = "Edit the following Question-Answer pair to make it more empathic and helpful: {question} | {answer}";
/// The Stream Aligner instruction.
pub const STREAM_INSTRUCTION: &str = "##Question: {prompt} | ##Answer_Prefix: {prefix} | ##Answer_Last_Sentence: {last} | ##Your_Revision: ";

/// The default system prompt of the reference generation code.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// The system prompt used for math problems.
pub const MATH_SYSTEM_PROMPT: &str = "You are a helpful AI assistant for solving mathematical problems. Output your reasoning process before reaching the result.";

/// Wraps `input` in the Aligner conversation format:
/// `BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:`.
pub fn aligner_prompt(input: &str) -> String {
    let mut s = String::with_capacity(PROMPT_BEGIN.len() + input.len() + 20);
    s.push_str(PROMPT_BEGIN);
    s.push_str(&PROMPT_USER.replace("{input}", input));
    s.push_str(PROMPT_ASSISTANT);
    s
}

/// Fills a template by replacing each `{key}` in one left-to-right pass, so
/// braces inside the values are never re-expanded.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    'outer: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        for (key, value) in values {
            if let Some(tail) = after.strip_prefix(key).and_then(|t| t.strip_prefix('}')) {
                out.push_str(value);
                rest = tail;
                continue 'outer;
            }
        }
        out.push('{');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The current correction instruction for one pair (not wrapped).
pub fn correction_instruction(question: &str, answer: &str) -> String {
    fill(
        CORRECTION_INSTRUCTION,
        &[("question", question), ("answer", answer)],
    )
}

/// The full current Aligner prompt:
/// `BEGINNING OF CONVERSATION: USER: ##Question: {q}\n##Answer: {a}\n##Correction:  ASSISTANT:`.
pub fn correction_prompt(question: &str, answer: &str) -> String {
    aligner_prompt(&correction_instruction(question, answer))
}

/// The released aligner-7b-v1.0 prompt (`... helpful and harmless: {q} | {a}`), wrapped.
pub fn correction_prompt_v1(question: &str, answer: &str) -> String {
    aligner_prompt(&fill(
        CORRECTION_INSTRUCTION_V1,
        &[("question", question), ("answer", answer)],
    ))
}

/// The empathy prompt (`... empathic and helpful: {q} | {a}`), wrapped.
pub fn empathy_prompt(question: &str, answer: &str) -> String {
    aligner_prompt(&fill(
        EMPATHY_INSTRUCTION,
        &[("question", question), ("answer", answer)],
    ))
}

/// The Stream Aligner instruction for one step (not wrapped).
pub fn stream_instruction(question: &str, prefix: &str, last: &str) -> String {
    fill(
        STREAM_INSTRUCTION,
        &[("prompt", question), ("prefix", prefix), ("last", last)],
    )
}

/// The prompt part of the Stream Aligner Gemma training wrapper, without
/// `<bos>`: `<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model`
/// (no newline after `model`). The tokenizer step adds BOS and EOS as ids.
pub fn gemma_prompt(input: &str) -> String {
    format!("<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model")
}

/// The full Stream Aligner training text as the reference writes it:
/// `<bos><start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model{correction}<eos>`.
pub fn gemma_training_text(input: &str, correction: &str) -> String {
    format!("<bos>{}{correction}<eos>", gemma_prompt(input))
}

#[cfg(test)]
mod tests;
