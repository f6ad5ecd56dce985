//! The instructions the aligners were trained with, byte for byte.

/// The Stream Aligner instruction for one sentence.
///
/// ```
/// assert_eq!(
///     aligner_stream::prompt::stream_instruction("Q?", "A.", "B."),
///     "##Question: Q? | ##Answer_Prefix: A. | ##Answer_Last_Sentence: B. | ##Your_Revision: "
/// );
/// ```
#[must_use]
pub fn stream_instruction(question: &str, prefix: &str, last: &str) -> String {
    format!(
        "##Question: {question} | ##Answer_Prefix: {prefix} | ##Answer_Last_Sentence: {last} | ##Your_Revision: "
    )
}

/// The Aligner correction instruction for a whole answer.
///
/// ```
/// assert_eq!(
///     aligner_stream::prompt::correction_instruction("Q?", "A."),
///     "##Question: Q?\n##Answer: A.\n##Correction: "
/// );
/// ```
#[must_use]
pub fn correction_instruction(question: &str, answer: &str) -> String {
    format!("##Question: {question}\n##Answer: {answer}\n##Correction: ")
}
