//! Reports for people and machines: a Markdown table, JSON (every report type is `Serialize`),
//! and PNG bar charts with confidence intervals, drawn on the shared chart setup of
//! [`aligner_data::chart`] (which also draws line charts such as loss curves).
//!
//! Charts need a TrueType font (`ALIGNER_FONT`, or a common system font); without one, writing
//! a chart is an [`Error::Chart`](crate::Error::Chart) that says so, and the JSON and Markdown reports are unaffected.

use std::path::Path;

use aligner_data::chart::{DrawResult, PALETTE, draw_png};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::stats::Interval;

/// One bar: a value in percent with its confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// The estimate and its interval, in percent.
    pub interval: Interval,
}

/// A bar chart of percentages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
    /// Lowest value of the y axis (e.g. -100 for win rates, 0 for accuracy).
    pub y_min: f64,
    /// Highest value of the y axis.
    pub y_max: f64,
}

/// A Markdown table with a header row.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    s
}

/// `12.3% [8.1, 16.0]`.
pub fn format_interval(i: &Interval) -> String {
    format!("{:.1}% [{:.1}, {:.1}]", i.estimate, i.lower, i.upper)
}

/// Draws `chart` as a PNG at `path`, which appears only once complete
/// ([`aligner_data::chart::draw_png`]).
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> Result<()> {
    Ok(draw_png(path, |tmp| draw(tmp, chart))?)
}

fn draw(path: &Path, chart: &BarChart) -> DrawResult {
    let width = (160 * chart.bars.len() as u32).max(480) + 120;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = chart.bars.len();
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0..n.saturating_sub(1)).into_segmented(),
            chart.y_min..chart.y_max,
        )?;
    let labels: Vec<String> = chart
        .bars
        .iter()
        .map(|b| format!("{} ({:.1})", b.label, b.interval.estimate))
        .collect();
    ctx.configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc(&chart.y_label)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, bar) in chart.bars.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let base = 0f64.clamp(chart.y_min, chart.y_max);
        ctx.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(i), base),
                (SegmentValue::Exact(i + 1), bar.interval.estimate),
            ],
            color.mix(0.8).filled(),
        )))?;
        ctx.draw_series(std::iter::once(ErrorBar::new_vertical(
            SegmentValue::CenterOf(i),
            bar.interval.lower,
            bar.interval.estimate,
            bar.interval.upper,
            BLACK.stroke_width(2),
            12,
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_have_a_separator_row() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}

/// Accuracy of one run of answers over a problem set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunAccuracy {
    /// The run's name (e.g. `upstream`, `stream-aligner`).
    pub name: String,
    /// Problems in the set; unanswered problems count as wrong.
    pub problems: usize,
    /// Problems with an answer in this run.
    pub answered: usize,
    /// Problems answered correctly.
    pub correct: usize,
    /// Accuracy with a Wilson 95% interval, in percent.
    pub accuracy: Interval,
    /// Percentile bootstrap 95% interval of the accuracy, in percent.
    pub bootstrap: Interval,
    /// Per problem id: answered correctly?
    pub outcomes: Vec<(String, bool)>,
}

/// Accuracy of one or more runs on the same problems, and the paired change of each run against
/// the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MathReport {
    /// Problems in the set.
    pub problems: usize,
    /// One entry per run, in the order given.
    pub runs: Vec<RunAccuracy>,
    /// Each later run against the first: `(baseline, candidate, comparison)`.
    pub paired: Vec<(String, String, crate::stats::PairedComparison)>,
}

/// Scores `runs` (name and answers) against `problems` with the automatic extraction strategy.
pub fn math_report(
    problems: &[crate::math::Problem],
    runs: &[(String, Vec<crate::math::Answer>)],
    bootstrap: &crate::stats::BootstrapConfig,
) -> Result<MathReport> {
    use crate::math::{Strategy, match_answers};
    use crate::stats::{Accuracy, bootstrap_accuracy, compare_paired};
    let mut out = Vec::with_capacity(runs.len());
    for (name, answers) in runs {
        let matching = match_answers(problems, answers);
        let mut correct_by_id = std::collections::HashMap::new();
        for pair in &matching.pairs {
            correct_by_id.insert(pair.problem.id.clone(), pair.judge(Strategy::Auto).correct);
        }
        let outcomes: Vec<(String, bool)> = problems
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    correct_by_id.get(&p.id).copied().unwrap_or(false),
                )
            })
            .collect();
        let flags: Vec<bool> = outcomes.iter().map(|(_, ok)| *ok).collect();
        let accuracy = Accuracy::from_outcomes(&flags);
        out.push(RunAccuracy {
            name: name.clone(),
            problems: problems.len(),
            answered: matching.pairs.len(),
            correct: accuracy.correct as usize,
            accuracy: accuracy.wilson(0.95)?,
            bootstrap: bootstrap_accuracy(&flags, bootstrap)?,
            outcomes,
        });
    }
    let mut paired = Vec::new();
    if let Some((first, rest)) = out.split_first() {
        for run in rest {
            paired.push((
                first.name.clone(),
                run.name.clone(),
                compare_paired(&first.outcomes, &run.outcomes)?,
            ));
        }
    }
    Ok(MathReport {
        problems: problems.len(),
        runs: out,
        paired,
    })
}

impl MathReport {
    /// The report as Markdown: an accuracy table and the paired changes.
    pub fn to_markdown(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    format!("{}/{}", r.correct, r.problems),
                    format_interval(&r.accuracy),
                    format!("[{:.1}, {:.1}]", r.bootstrap.lower, r.bootstrap.upper),
                    format!("{}", r.problems - r.answered),
                ]
            })
            .collect();
        let mut s = markdown_table(
            &[
                "run",
                "correct",
                "accuracy (Wilson 95%)",
                "bootstrap 95%",
                "unanswered",
            ],
            &rows,
        );
        if !self.paired.is_empty() {
            let rows: Vec<Vec<String>> = self
                .paired
                .iter()
                .map(|(a, b, p)| {
                    vec![
                        format!("{a} → {b}"),
                        p.accuracy_gain()
                            .map(|g| format!("{g:+.1} pts"))
                            .unwrap_or_default(),
                        p.wrong_to_right.len().to_string(),
                        p.right_to_wrong.len().to_string(),
                        format!("{:.3}", p.p_value),
                    ]
                })
                .collect();
            s.push('\n');
            s.push_str(&markdown_table(
                &[
                    "change",
                    "accuracy",
                    "wrong→right",
                    "right→wrong",
                    "McNemar p",
                ],
                &rows,
            ));
        }
        s
    }

    /// Accuracy per run as a bar chart.
    pub fn chart(&self) -> BarChart {
        BarChart {
            title: "Math accuracy".into(),
            y_label: "accuracy (%)".into(),
            bars: self
                .runs
                .iter()
                .map(|r| Bar {
                    label: r.name.clone(),
                    interval: r.accuracy,
                })
                .collect(),
            y_min: 0.0,
            y_max: 100.0,
        }
    }
}

/// The result of one judged dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DimensionResult {
    /// The dimension.
    pub dimension: crate::judge::Dimension,
    /// The judge prompt's version.
    pub prompt_version: String,
    /// W, L, E and invalid counts.
    pub tally: crate::judge::Tally,
    /// Win rate with a bootstrap 95% interval, in percent; `None` without valid pairs.
    pub win_rate: Option<Interval>,
}

/// Win rates of aligned over original answers, per dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReport {
    /// The judge's name.
    pub judge: String,
    /// Pairs judged.
    pub pairs: usize,
    /// One result per dimension.
    pub dimensions: Vec<DimensionResult>,
    /// Win rate over every valid judgement of all dimensions, with a bootstrap 95% interval.
    pub overall: Option<Interval>,
    /// Every judgement with both raw replies.
    pub judgements: Vec<crate::judge::PairJudgement>,
}

/// Summarises `judgements` of `pairs` pairs.
pub fn judge_report(
    judge: &str,
    pairs: usize,
    judgements: Vec<crate::judge::PairJudgement>,
    bootstrap: &crate::stats::BootstrapConfig,
) -> Result<JudgeReport> {
    use crate::judge::{Dimension, Tally, verdicts};
    let mut dimensions = Vec::new();
    for d in Dimension::ALL {
        if !judgements.iter().any(|j| j.dimension == d) {
            continue;
        }
        let v = verdicts(&judgements, d);
        let win_rate = if v.is_empty() {
            None
        } else {
            Some(crate::stats::bootstrap_win_rate(&v, bootstrap)?)
        };
        dimensions.push(DimensionResult {
            dimension: d,
            prompt_version: d.prompt().version.to_owned(),
            tally: Tally::of(&judgements, d),
            win_rate,
        });
    }
    let all: Vec<_> = Dimension::ALL
        .iter()
        .flat_map(|&d| verdicts(&judgements, d))
        .collect();
    let overall = if all.is_empty() {
        None
    } else {
        Some(crate::stats::bootstrap_win_rate(&all, bootstrap)?)
    };
    Ok(JudgeReport {
        judge: judge.to_owned(),
        pairs,
        dimensions,
        overall,
        judgements,
    })
}

impl JudgeReport {
    /// The report as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .dimensions
            .iter()
            .map(|d| {
                let c = d.tally.counts;
                vec![
                    d.dimension.to_string(),
                    d.win_rate
                        .as_ref()
                        .map(format_interval)
                        .unwrap_or_else(|| "–".into()),
                    c.wins.to_string(),
                    c.losses.to_string(),
                    c.equal.to_string(),
                    d.tally.invalid.to_string(),
                    d.prompt_version.clone(),
                ]
            })
            .chain(self.overall.iter().map(|o| {
                let mut row = vec!["overall".to_owned(), format_interval(o)];
                row.resize(7, String::new());
                row
            }))
            .collect();
        format!(
            "Judge: {}, {} pairs, each judged in both A/B orders.\n\n{}",
            self.judge,
            self.pairs,
            markdown_table(
                &[
                    "dimension",
                    "win rate (bootstrap 95%)",
                    "W",
                    "L",
                    "E",
                    "invalid",
                    "prompt"
                ],
                &rows
            )
        )
    }

    /// Win rate per dimension as a bar chart.
    pub fn chart(&self) -> BarChart {
        BarChart {
            title: "Win rate of aligned over original answers".into(),
            y_label: "win rate (%)".into(),
            bars: self
                .dimensions
                .iter()
                .filter_map(|d| {
                    d.win_rate.map(|interval| Bar {
                        label: d.dimension.to_string(),
                        interval,
                    })
                })
                .collect(),
            y_min: -100.0,
            y_max: 100.0,
        }
    }
}
