//! `loss.png` of a run folder: training and held-out loss against step, drawn from
//! `metrics.jsonl` with `plotters`. The font is embedded (DejaVu Sans from the `dejavu`
//! crate) so labels render on machines without system fonts.

use super::metrics::{read_metrics, Metrics};
use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

pub const PLOT_FILE: &str = "loss.png";
const SIZE: (u32, u32) = (900, 560);

/// Redraws the loss plot of `run_dir` into `out` (default `run_dir/loss.png`).
pub fn plot_run(run_dir: &Path, out: Option<&Path>) -> Result<std::path::PathBuf> {
    let metrics = read_metrics(run_dir)?;
    if metrics.is_empty() {
        bail!(
            "{} holds no metrics yet: nothing to plot",
            run_dir.join(super::metrics::METRICS_FILE).display()
        );
    }
    let out = out.map_or_else(|| run_dir.join(PLOT_FILE), Path::to_path_buf);
    draw_png(&metrics, &out).with_context(|| format!("cannot draw {}", out.display()))?;
    Ok(out)
}

/// Draws to a temporary `.png` next to `out` (the encoder goes by the extension), then
/// writes the picture atomically, so a reader never sees half of it.
fn draw_png(metrics: &[Metrics], out: &Path) -> Result<()> {
    register_font();
    let name = out
        .file_name()
        .map_or("loss.png".into(), |n| n.to_string_lossy());
    let tmp = out.with_file_name(format!(".{name}.tmp.png"));
    {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        draw_chart(&root, metrics)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let png = std::fs::read(&tmp).with_context(|| format!("cannot read {}", tmp.display()));
    let _ = std::fs::remove_file(&tmp);
    crate::atomic_file::write_atomic(out, &png?)
}

/// Registers the embedded font once per process (plotters keeps a global table).
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; a failure would only
        // mean unlabelled axes, never a wrong plot.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The training loss as a line, the held-out loss as a line with points.
fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    metrics: &[Metrics],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let train: Vec<(f64, f64)> = metrics
        .iter()
        .filter(|m| m.loss.is_finite())
        .map(|m| (m.step as f64, m.loss))
        .collect();
    let eval: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| m.eval_loss.map(|l| (m.step as f64, l)))
        .filter(|(_, l)| l.is_finite())
        .collect();
    let (x_max, y_min, y_max) = ranges(&train, &eval);
    let mut chart = ChartBuilder::on(root)
        .caption("training and held-out loss", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, y_min..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss")
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if !eval.is_empty() {
        chart
            .draw_series(LineSeries::new(eval.clone(), RED.stroke_width(2)))
            .map_err(err)?
            .label("held-out")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The x extent and a padded y range that holds both series.
fn ranges(train: &[(f64, f64)], eval: &[(f64, f64)]) -> (f64, f64, f64) {
    let all = train.iter().chain(eval);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let lo = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (x_max, (lo - pad).max(0.0), hi + pad)
}
