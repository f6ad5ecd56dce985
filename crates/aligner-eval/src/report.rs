//! Reports for people and machines: a Markdown table, JSON (every report type is `Serialize`),
//! and PNG bar charts with confidence intervals.
//!
//! Charts need a TrueType font: `ALIGNER_FONT` names one, else common system locations are
//! searched (DejaVu Sans, Liberation Sans, Arial); without one, writing a chart is an
//! [`Error::InvalidArgument`] that says so, and the JSON and Markdown reports are unaffected.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::stats::Interval;
use crate::{Error, Result};

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

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font with plotters once per process; the result of the first attempt is kept.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("ALIGNER_FONT")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            "no TrueType font found for charts: set ALIGNER_FONT to a .ttf file".to_owned()
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process; one font is leaked once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
    })
    .clone()
    .map_err(Error::InvalidArgument)
}

/// Draws `chart` as a PNG at `path` (written under a temporary name, then renamed).
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> Result<()> {
    ensure_font()?;
    let tmp = path.with_extension("tmp.png");
    draw(&tmp, chart)
        .map_err(|e| Error::InvalidArgument(format!("drawing {}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        source: e,
    })
}

fn draw(path: &Path, chart: &BarChart) -> std::result::Result<(), Box<dyn std::error::Error>> {
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
    let colors = [
        RGBColor(76, 114, 176),
        RGBColor(221, 132, 82),
        RGBColor(85, 168, 104),
        RGBColor(196, 78, 82),
    ];
    for (i, bar) in chart.bars.iter().enumerate() {
        let color = colors[i % colors.len()];
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
