//! Chat templates: a model's own Jinja template from `tokenizer_config.json`, rendered as
//! transformers' `apply_chat_template` renders it. The implementation lives in
//! [`aligner_data::template`]; it is re-exported here beside the tokenizer that carries it.
//!
//! ```
//! use aligner_model::chat::{ChatMessage, ChatTemplate};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
//!     None,
//!     None,
//! )?;
//! assert_eq!(t.render(&[ChatMessage::user(" Hi ")], true)?, "<user>Hi\n<assistant>");
//! # Ok::<(), aligner_data::Error>(())
//! ```

pub use aligner_data::template::{ChatTemplate, Message as ChatMessage};
