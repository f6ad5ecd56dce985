//! The upstream chat formats of the reference generation code.

use serde::{Deserialize, Serialize};

/// A hard-coded upstream chat format, byte-exact with the reference.
///
/// `render(system, user, content)` gives the text the upstream model
/// continues; `content` is the answer text so far (empty to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UpstreamChat {
    /// `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n...`
    Llama3,
    /// `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]\n{content}`
    Llama2,
    /// `<|im_start|>system\n{system}<|im_end|><|im_start|>user\n...`
    Qwen,
    /// `<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model{content}`.
    /// Gemma has no system turn; `system` is not used.
    Gemma,
}

impl UpstreamChat {
    /// The text the upstream model is asked to continue.
    pub fn render(self, system: &str, user: &str, content: &str) -> String {
        match self {
            UpstreamChat::Llama3 => format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>{content}"
            ),
            UpstreamChat::Llama2 => {
                format!("<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]\n{content}")
            }
            UpstreamChat::Qwen => format!(
                "<|im_start|>system\n{system}<|im_end|><|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant{content}"
            ),
            UpstreamChat::Gemma => format!(
                "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model{content}"
            ),
        }
    }
}
