//! PNG charts: the drawing setup every chart of the workspace shares (font, palette, atomic
//! writing) and line charts (loss curves). `aligner_eval::report` draws its bar charts with
//! intervals on the same setup.
//!
//! Charts need a TrueType font: `ALIGNER_FONT` names one, else common system locations are
//! searched (DejaVu Sans, Liberation Sans, Arial); without one, drawing is a
//! [`ChartError::NoFont`] that says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::file::WrapFileError as _;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// No usable TrueType font.
    #[error("{0}")]
    NoFont(String),
    /// Nothing to draw.
    #[error("{}: the chart has no finite point", path.display())]
    NoFinitePoint {
        /// The chart's file.
        path: PathBuf,
    },
    /// The drawing library failed.
    #[error("drawing {}: {reason}", path.display())]
    Draw {
        /// The chart's file.
        path: PathBuf,
        /// Its message.
        reason: String,
    },
    /// Writing the file failed (the destination is unchanged).
    #[error(transparent)]
    File(#[from] crate::FileError),
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
fn ensure_font() -> Result<(), ChartError> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
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
    .map_err(ChartError::NoFont)
}

/// The colours of successive bars or lines.
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(85, 168, 104),
    RGBColor(196, 78, 82),
];

/// Error type of a drawing closure (plotters' errors are generic over the backend).
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws a PNG at `path` with `draw`, which gets the temporary path to draw to: the font is
/// registered first, and the file appears at `path` only once complete
/// ([`crate::atomic::write_via_path`]).
///
/// # Errors
/// [`ChartError::NoFont`], [`ChartError::Draw`] with the drawing library's message, or
/// [`ChartError::File`].
pub fn draw_png(path: &Path, draw: impl FnOnce(&Path) -> DrawResult) -> Result<(), ChartError> {
    ensure_font()?;
    crate::atomic::write_via_path(
        path,
        |tmp| {
            draw(tmp).map_err(|e| ChartError::Draw {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        },
        |source| ChartError::io(path, source),
    )
}

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in drawing order; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more lines over a shared x axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineChart {
    /// Caption.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Draws `chart` as a PNG at `path`.
///
/// # Errors
/// A chart with no finite point is [`ChartError::NoFinitePoint`]; see [`draw_png`] for the rest.
pub fn write_line_chart(path: &Path, chart: &LineChart) -> Result<(), ChartError> {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| finite(p)))
    };
    let Some(first) = points().next() else {
        return Err(ChartError::NoFinitePoint {
            path: path.to_path_buf(),
        });
    };
    let (mut x0, mut x1, mut y0, mut y1) = (first.0, first.0, first.1, first.1);
    for &(x, y) in points() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    draw_png(path, |tmp| {
        draw_lines(tmp, chart, (x0, x1), (y0 - pad, y1 + pad))
    })
}

fn draw_lines(path: &Path, chart: &LineChart, x: (f64, f64), y: (f64, f64)) -> DrawResult {
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 16))
        .draw()?;
    for (i, series) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = series
            .points
            .iter()
            .copied()
            .filter(|(a, b)| a.is_finite() && b.is_finite());
        ctx.draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(series.name.as_str())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_without_finite_points_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, f64::NAN)],
            }],
        };
        let err = write_line_chart(&dir.path().join("never.png"), &chart).unwrap_err();
        assert!(matches!(err, ChartError::NoFinitePoint { .. }), "{err}");
    }

    /// Where a font is installed, a chart is drawn and nothing else is left in the folder.
    #[test]
    fn a_line_chart_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let chart = LineChart {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![Series {
                name: "train".into(),
                points: vec![(1.0, 2.0), (2.0, 1.5), (3.0, 1.2)],
            }],
        };
        match write_line_chart(&path, &chart) {
            Err(ChartError::NoFont(reason)) => eprintln!("skipped: {reason}"),
            other => {
                other.unwrap();
                let png = std::fs::read(&path).unwrap();
                assert_eq!(&png[1..4], b"PNG");
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
            }
        }
    }
}
