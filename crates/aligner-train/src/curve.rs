//! The loss curve of a run, read back from its `metrics.jsonl` and drawn as a PNG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aligner_data::chart::{LineChart, Series, write_line_chart};
use serde_json::Value;

use crate::{Error, Result};

/// File name of the loss curve in a run folder.
pub const LOSS_CURVE_FILE: &str = "loss.png";

/// `(step, loss)` points.
pub type Points = Vec<(f64, f64)>;

/// Train and eval loss per step from a metrics file. A step logged twice (a run resumed from a
/// checkpoint older than its last logged step) keeps its newest value.
pub fn read_losses(metrics: &Path) -> Result<(Points, Points)> {
    let text = aligner_data::file::read_text(metrics)?;
    let mut train = BTreeMap::new();
    let mut eval = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            Error::Data(format!(
                "{}:{}: not a JSON object: {e}",
                metrics.display(),
                i + 1
            ))
        })?;
        let Some(step) = value.get("step").and_then(Value::as_u64) else {
            continue;
        };
        if let Some(loss) = value.get("loss").and_then(Value::as_f64) {
            train.insert(step, loss);
        }
        if let Some(loss) = value.get("eval_loss").and_then(Value::as_f64) {
            eval.insert(step, loss);
        }
    }
    let points = |m: BTreeMap<u64, f64>| m.into_iter().map(|(s, l)| (s as f64, l)).collect();
    Ok((points(train), points(eval)))
}

/// Trailing mean over `window` points (fewer at the start).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// The chart of a run: train loss per step (with a moving average once there are enough steps)
/// and eval loss at each evaluation.
pub fn loss_chart(metrics: &Path) -> Result<LineChart> {
    let (train, eval) = read_losses(metrics)?;
    let mut series = Vec::new();
    let window = (train.len() / 20).max(1);
    if window > 1 {
        series.push(Series {
            name: format!("train loss (mean of {window} steps)"),
            points: moving_average(&train, window),
        });
    }
    series.push(Series {
        name: "train loss".into(),
        points: train,
    });
    if !eval.is_empty() {
        series.push(Series {
            name: "eval loss".into(),
            points: eval,
        });
    }
    Ok(LineChart {
        title: "Training loss".into(),
        x_label: "optimizer step".into(),
        y_label: "cross-entropy per target token".into(),
        series,
    })
}

/// Draws `run_dir/metrics.jsonl` to `run_dir/loss.png` and returns its path.
pub fn write_loss_curve(run_dir: &Path) -> Result<PathBuf> {
    let chart = loss_chart(&run_dir.join("metrics.jsonl"))?;
    let path = run_dir.join(LOSS_CURVE_FILE);
    write_line_chart(&path, &chart)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_keep_the_newest_value_per_step_and_skip_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"step\":1,\"loss\":3.0,\"lr\":0.1}\n",
                "{\"step\":2,\"loss\":2.5}\n",
                "{\"step\":2,\"eval_loss\":2.7,\"eval_accuracy\":0.1}\n",
                "{\"step\":2,\"loss\":2.4}\n",
                "{\"event\":\"resumed\"}\n",
                "\n",
            ),
        )
        .unwrap();
        let (train, eval) = read_losses(&path).unwrap();
        assert_eq!(train, vec![(1.0, 3.0), (2.0, 2.4)]);
        assert_eq!(eval, vec![(2.0, 2.7)]);
        std::fs::write(&path, "{\"step\":1,\"loss\":3.0}\nnot json\n").unwrap();
        let err = read_losses(&path).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:2"), "{err}");
    }

    #[test]
    fn moving_average_is_trailing() {
        let p = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(
            moving_average(&p, 2),
            vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
        );
    }
}
