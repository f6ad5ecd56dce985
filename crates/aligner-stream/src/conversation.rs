//! What is being answered: a [`Conversation`] — an optional system message, earlier turns, and
//! the user message the answer replies to.
//!
//! # Who sees what
//!
//! The design keeps one value, passed explicitly, and derives each component's view from it:
//!
//! - **The upstream sees the whole conversation.** [`StreamMachine`](crate::StreamMachine) and
//!   the [`modes`](crate::modes) carry a `Conversation` and hand it to
//!   [`Upstream::draft_conversation`](crate::Upstream::draft_conversation); a local upstream
//!   renders it with its chat template, a remote one sends it as `messages` (chat API) or
//!   renders it locally (completions API). Its system message, if any, replaces the upstream's
//!   configured one.
//! - **The aligners see one question**, because both instruction formats they were trained on
//!   have a single question slot (`##Question: {q} | ##Answer_Prefix: ...` and
//!   `##Question: {q}\n##Answer: ...`). [`Conversation::aligner_question`] is the last user
//!   message alone for a single turn — byte for byte what the aligner saw before conversations
//!   existed — and for several turns the earlier user and assistant turns as a short transcript
//!   (`User: ...` / `Assistant: ...` lines) followed by `User: {last message}`, so that a
//!   follow-up question ("and in Celsius?") keeps the context it needs. The system message is
//!   the upstream's instruction, not part of the question, and the aligner does not see it (as
//!   in the papers' pipelines, where only the upstream gets the math system prompt).
//!
//! Single questions keep working everywhere: `StreamMachine::new(question, ..)` and every
//! function taking `impl Into<Conversation>` accept a `&str` or `String`, and an
//! [`Upstream`](crate::Upstream) that only knows questions answers single questions through
//! [`Conversation::require_single`], which refuses conversations of several turns with
//! [`Error::Unsupported`] instead of silently dropping the history.
//!
//! ```
//! use aligner_model::chat::ChatMessage;
//! use aligner_stream::Conversation;
//!
//! let single = Conversation::from("Why is the sky blue?");
//! assert_eq!(single.aligner_question(), "Why is the sky blue?");
//! assert_eq!(single.single_question(), Some("Why is the sky blue?"));
//!
//! let chat = Conversation::new(vec![
//!     ChatMessage::system("Be brief."),
//!     ChatMessage::user("How hot is boiling water?"),
//!     ChatMessage::assistant("100 degrees Celsius at sea level."),
//!     ChatMessage::user("And in Fahrenheit?"),
//! ])?;
//! assert_eq!(
//!     chat.aligner_question(),
//!     "User: How hot is boiling water?\nAssistant: 100 degrees Celsius at sea level.\nUser: And in Fahrenheit?"
//! );
//! assert_eq!(chat.last_user(), "And in Fahrenheit?");
//! assert_eq!(chat.single_question(), None);
//! assert!(Conversation::new(vec![ChatMessage::assistant("Hi")]).is_err());
//! # Ok::<(), aligner_stream::Error>(())
//! ```

use aligner_model::chat::ChatMessage;

use crate::{Error, Result};

/// A conversation to answer; see the [module docs](self).
///
/// Invariants (checked by [`Conversation::new`]): at least one message; roles are `system`,
/// `user` or `assistant`; a `system` message can only come first; the last message is a
/// `user` message. [`Conversation::single`] builds a one-question conversation without checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    messages: Vec<ChatMessage>,
}

impl Conversation {
    /// A conversation of one user message.
    pub fn single(question: impl Into<String>) -> Self {
        Self {
            messages: vec![ChatMessage::user(question)],
        }
    }

    /// A conversation of `messages`; errors if they break the invariants of [`Conversation`].
    pub fn new(messages: Vec<ChatMessage>) -> Result<Self> {
        let invalid = |reason: String| Err(Error::Conversation { reason });
        let Some(last) = messages.last() else {
            return invalid("it has no messages".into());
        };
        for (i, m) in messages.iter().enumerate() {
            match m.role.as_str() {
                "user" | "assistant" => {}
                "system" if i == 0 => {}
                "system" => {
                    return invalid(format!("message {i}: a system message must come first"));
                }
                other => {
                    return invalid(format!(
                        "message {i}: unknown role `{other}` (system, user or assistant)"
                    ));
                }
            }
        }
        if last.role != "user" {
            return invalid(format!(
                "the last message is from `{}`; it must be the user's message to answer",
                last.role
            ));
        }
        Ok(Self { messages })
    }

    /// All messages, the system message (if any) first, the user message to answer last.
    #[must_use]
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The system message, if the conversation has one.
    #[must_use]
    pub fn system(&self) -> Option<&str> {
        self.messages
            .first()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
    }

    /// The user message the answer replies to.
    #[must_use]
    pub fn last_user(&self) -> &str {
        self.messages.last().map_or("", |m| m.content.as_str())
    }

    /// The messages before the system-less last user message: earlier user and assistant turns.
    fn history(&self) -> &[ChatMessage] {
        let start = usize::from(self.system().is_some());
        let end = self.messages.len().saturating_sub(1);
        self.messages.get(start..end).unwrap_or_default()
    }

    /// The question when the conversation is one user message and nothing else (no system
    /// message, no earlier turns): what a single-question upstream can answer as it is.
    #[must_use]
    pub fn single_question(&self) -> Option<&str> {
        match self.messages.as_slice() {
            [only] if only.role == "user" => Some(&only.content),
            _ => None,
        }
    }

    /// [`single_question`](Self::single_question), or [`Error::Unsupported`] for any other
    /// conversation: how an upstream that answers single questions only refuses a conversation
    /// rather than drop its history.
    pub fn require_single(&self) -> Result<&str> {
        self.single_question().ok_or_else(|| {
            Error::Unsupported(
                "this upstream answers single questions only, not a conversation with a system \
                 message or earlier turns"
                    .into(),
            )
        })
    }

    /// Whether there are earlier turns before the last user message.
    #[must_use]
    pub fn is_multi_turn(&self) -> bool {
        !self.history().is_empty()
    }

    /// The text of the aligners' question slot: the last user message for a single turn, else
    /// the earlier turns as `User: ...` / `Assistant: ...` lines followed by `User: {last}`.
    /// The system message is left out (see the [module docs](self)).
    #[must_use]
    pub fn aligner_question(&self) -> String {
        let history = self.history();
        if history.is_empty() {
            return self.last_user().to_owned();
        }
        let mut out = String::new();
        for m in history {
            let who = if m.role == "user" {
                "User"
            } else {
                "Assistant"
            };
            out.push_str(who);
            out.push_str(": ");
            out.push_str(m.content.trim());
            out.push('\n');
        }
        out.push_str("User: ");
        out.push_str(self.last_user().trim());
        out
    }

    /// The messages with `system` put first when the conversation has no system message of
    /// its own (a conversation's system message wins over a configured one).
    #[must_use]
    pub fn with_default_system(&self, system: Option<&str>) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.messages.len() + 1);
        if let (None, Some(system)) = (self.system(), system) {
            out.push(ChatMessage::system(system));
        }
        out.extend(self.messages.iter().cloned());
        out
    }
}

/// A single question from any reference to text (`&str`, `&String`, `&&str`, ...).
impl<T: AsRef<str> + ?Sized> From<&T> for Conversation {
    fn from(question: &T) -> Self {
        Self::single(question.as_ref())
    }
}

impl From<String> for Conversation {
    fn from(question: String) -> Self {
        Self::single(question)
    }
}

impl From<&Conversation> for Conversation {
    fn from(conversation: &Conversation) -> Self {
        conversation.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariants_are_checked() {
        let bad = [
            vec![],
            vec![ChatMessage::user("a"), ChatMessage::system("s")],
            vec![ChatMessage::new("tool", "x"), ChatMessage::user("a")],
            vec![ChatMessage::user("a"), ChatMessage::assistant("b")],
        ];
        for messages in bad {
            assert!(Conversation::new(messages.clone()).is_err(), "{messages:?}");
        }
        let ok = Conversation::new(vec![ChatMessage::system("s"), ChatMessage::user("q")])
            .expect("valid");
        assert_eq!(ok.aligner_question(), "q");
        assert_eq!(ok.single_question(), None);
        assert!(!ok.is_multi_turn());
        assert_eq!(ok.with_default_system(Some("other"))[0].content, "s");
        let single = Conversation::single("q");
        assert_eq!(single.with_default_system(Some("d"))[0].content, "d");
        assert_eq!(single.with_default_system(None).len(), 1);
    }
}
