//! Math word problems with step-by-step reference solutions: a seeded generator of multi-step
//! arithmetic problems ([`generate_splits`]) and a reader for problem sets, generated or
//! GSM8K-style ([`read_problems`]).
//!
//! A [`MathProblem`] carries its reference solution twice: as `steps`, one sentence per step
//! (what the Stream Aligner corrects sentence by sentence), and as a GSM8K-compatible `answer`
//! (the steps joined with single spaces, then `\n#### N`), so every GSM8K tool reads the
//! generated files. Each step shows its computation and result (`"Mia buys 3 boxes of 12
//! pencils, so she has 3 * 12 = 36 pencils."`), and the last step states the final number
//! (`"The answer is 36."`). Steps end with a word before their period (never a digit) and
//! contain no other terminator, so any sentence splitter of this workspace cuts the joined
//! solution back into exactly the steps.
//!
//! ```
//! use aligner_data::math::{GenerateConfig, generate_splits, split_steps};
//!
//! let splits = generate_splits(&GenerateConfig { train: 20, validation: 5, test: 5, seed: 42 })?;
//! let p = &splits.test[0];
//! assert_eq!(p.id, "test-00000");
//! assert!(p.steps.last().is_some_and(|s| s.starts_with("The answer is ")));
//! assert_eq!(p.answer, format!("{}\n#### {}", p.steps.join(" "), p.final_answer().unwrap_or_default()));
//! // The solution splits back into its steps.
//! assert_eq!(split_steps(&p.solution()), p.steps);
//! # Ok::<(), aligner_data::Error>(())
//! ```

mod generate;
mod problem;
mod scenarios;

pub use generate::{GENERATOR_VERSION, GenerateConfig, Split, Splits, generate_splits};
pub use problem::{
    MathProblem, final_answer, read_problems, read_problems_with, solution_steps, split_steps,
    write_problems,
};

#[cfg(test)]
mod tests;
