//! Stream Aligner: correct an upstream model's answer one sentence at a time with a small
//! aligner model, as the upstream writes it.
//!
//! - [`segment`] (from `aligner-data`, where training rows are cut with it too) cuts answers
//!   into sentences losslessly, whole ([`split_sentences`]) or while
//!   they are generated ([`StreamingSegmenter`]), so that the upstream can stop right there.
//! - [`machine`] is the correction loop as an explicit state machine ([`StreamMachine`]) over two
//!   small traits, [`Upstream`] and [`Corrector`]; it knows nothing about models.
//! - [`local`] implements both traits with local LibTorch models ([`LocalUpstream`],
//!   [`LocalCorrector`]), keeping KV caches across rounds.
//! - [`remote`] implements [`Upstream`] over OpenAI-compatible endpoints, completions
//!   ([`remote::RemoteUpstream`]) and chat ([`remote::ChatUpstream`]), for upstreams served
//!   elsewhere.
//! - [`conversation`] is what is answered: a single question or a multi-turn
//!   [`Conversation`]; the upstream sees all of it, the aligners one question derived from it.
//! - [`batch`] answers many questions at once ([`StreamBatch`]), one machine each, sharing
//!   the upstream's decoding steps between them.
//! - [`modes`] has the baselines: the upstream alone, the whole-answer Aligner and the published
//!   loop; [`record`] the JSON Lines records of every run.
//! - [`rows`] makes Stream Aligner training rows from an upstream's real sentences after
//!   reference prefixes, resumably.
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//!
//! use aligner_stream::{
//!     Conversation, Correction, Corrector, Draft, DraftStop, MachineConfig, StreamMachine, Upstream,
//! };
//!
//! /// An upstream that writes a fixed answer, one sentence per call (a model would continue
//! /// `accepted`, which ends with the corrected sentence).
//! struct Fixed(std::vec::IntoIter<&'static str>);
//! impl Upstream for Fixed {
//!     fn draft_conversation(
//!         &mut self,
//!         _conversation: &Conversation,
//!         _accepted: &str,
//!         _max: usize,
//!         _cancel: Option<&AtomicBool>,
//!     ) -> aligner_stream::Result<Draft> {
//!         let text = self.0.next().unwrap_or_default().to_owned();
//!         let stop = if self.0.len() == 0 { DraftStop::Eos } else { DraftStop::Sentence };
//!         Ok(Draft { tokens: text.len(), text, stop })
//!     }
//! }
//! /// A corrector that softens one word.
//! struct Polite;
//! impl Corrector for Polite {
//!     fn correct(&mut self, _q: &str, _prefix: &str, last: &str) -> aligner_stream::Result<Correction> {
//!         Ok(Correction { text: last.replace("Obviously", "Yes"), tokens: 2 })
//!     }
//! }
//!
//! let mut upstream = Fixed(vec!["Obviously, water boils at 100 °C.\n", "- at sea level\n", "- in a pot"].into_iter());
//! let mut machine = StreamMachine::new("When does water boil?", MachineConfig::default())?;
//! let mut shown = String::new();
//! let record = machine.run(&mut upstream, &mut Polite, |event| {
//!     if let aligner_stream::Event::Committed(round) = event {
//!         shown.push_str(&round.committed); // final text, sentence by sentence
//!     }
//! })?;
//! assert_eq!(record.answer, "Yes, water boils at 100 °C.\n- at sea level\n- in a pot");
//! assert_eq!(shown, record.answer);
//! assert_eq!((record.summary.rounds, record.summary.changed), (3, 1));
//! # Ok::<(), aligner_stream::Error>(())
//! ```

pub mod batch;
pub mod conversation;
mod error;
pub mod local;
pub mod machine;
pub mod modes;
pub mod preference;
pub mod prompt;
pub mod record;
pub mod remote;
pub mod rows;
pub use aligner_data::segment;

pub use aligner_data::FileError;
pub use batch::StreamBatch;
pub use conversation::Conversation;
pub use error::{Error, Result};
pub use local::{
    CorrectRequest, CorrectionTask, CorrectorConfig, DraftRequest, LocalCorrector, LocalUpstream,
    UpstreamConfig, correct_batch, draft_batch, render_conversation,
};
pub use machine::{
    Correction, Corrector, DoneReason, Draft, DraftStop, Event, Identity, MachineConfig, State,
    StreamMachine, Upstream,
};
pub use record::{JsonlWriter, Mode, Record, RoundRecord, Summary};
pub use segment::{
    Completed, Sentences, StreamingSegmenter, first_sentence_end, sentences, split_sentences,
};
