//! Pictures next to the model: the precision-recall curve and the score
//! histogram by class, as SVG (plotters), so a person can look instead of read.

use crate::metrics::Curve;
use plotters::prelude::*;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("plotting {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Precision against recall, one line per candidate model.
pub fn pr_curves(path: &Path, curves: &[(String, Curve)]) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (720, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("precision-recall on validation", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("recall")
        .y_desc("precision")
        .draw()
        .map_err(err(path))?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, (name, curve)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                thin(curve).map(|&(_, p, r)| (r, p)),
                color.stroke_width(2),
            ))
            .map_err(err(path))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))
}

/// At most ~400 points of a curve (the SVG stays small), ends included.
fn thin(curve: &[(f64, f64, f64)]) -> impl Iterator<Item = &(f64, f64, f64)> {
    let step = (curve.len() / 400).max(1);
    curve
        .iter()
        .enumerate()
        .filter(move |(i, _)| i % step == 0 || *i + 1 == curve.len())
        .map(|(_, p)| p)
}

/// Histogram of model scores (probability, 20 bins) for legitimate and
/// fraudulent listings, as shares of each class.
pub fn score_histogram(
    path: &Path,
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
) -> Result<(), PlotError> {
    const BINS: usize = 20;
    let mut counts = [[0f64; BINS]; 2];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s * BINS as f64) as usize).min(BINS - 1);
        counts[usize::from(l)][b] += 1.0;
    }
    for c in &mut counts {
        let total: f64 = c.iter().sum::<f64>().max(1.0);
        c.iter_mut().for_each(|x| *x /= total);
    }
    let top = counts.iter().flatten().fold(0f64, |a, &b| a.max(b)) * 1.1;
    let root = SVGBackend::new(path, (720, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("model score by class (validation)", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..top.max(0.01))
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("fraud probability")
        .y_desc("share of class")
        .draw()
        .map_err(err(path))?;
    let w = 1.0 / BINS as f64;
    for (class, color, name) in [(0usize, BLUE, "legitimate"), (1, RED, "fraud")] {
        chart
            .draw_series(counts[class].iter().enumerate().map(|(b, &h)| {
                let x0 = b as f64 * w + if class == 0 { 0.0 } else { w / 2.0 };
                Rectangle::new([(x0, 0.0), (x0 + w / 2.0, h)], color.mix(0.7).filled())
            }))
            .map_err(err(path))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(threshold, 0.0), (threshold, top)],
            BLACK.stroke_width(1),
        )))
        .map_err(err(path))?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))
}
