//! The instructions the aligners were trained with, byte for byte. They are aligner-data's
//! templates (the one copy of each, shared with training), re-exported here for the loop.
//!
//! ```
//! assert_eq!(
//!     aligner_stream::prompt::stream_instruction("Q?", "A.", "B."),
//!     "##Question: Q? | ##Answer_Prefix: A. | ##Answer_Last_Sentence: B. | ##Your_Revision: "
//! );
//! assert_eq!(
//!     aligner_stream::prompt::correction_instruction("Q?", "A."),
//!     "##Question: Q?\n##Answer: A.\n##Correction: "
//! );
//! ```

pub use aligner_data::template::{correction_instruction, stream_instruction};
