//! Sweep plot: TPOT and KV bytes against context length, one line per policy (plotters, shipped font).

use std::path::Path;

use plotters::prelude::*;

use crate::output::{Prepared, Target};
use crate::png::{register_shipped_font, FONT_FAMILY};

use super::ReportError;

/// One point of a sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    pub policy: String,
    pub context: usize,
    pub tpot_ms: f64,
    pub kv_bytes: u64,
}

/// A panel: y-axis label, y maximum, and how to read y from a point.
type Panel = (&'static str, f64, fn(&SweepPoint) -> f64);

fn kv_mib(p: &SweepPoint) -> f64 {
    p.kv_bytes as f64 / (1u64 << 20) as f64
}

fn tpot(p: &SweepPoint) -> f64 {
    p.tpot_ms
}

pub(super) fn draw_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

pub(super) fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), size, FontStyle::Normal)
}

/// One panel: `panel`'s y against context, a line per policy (in `policies` order).
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    (ylabel, ymax, get): Panel,
    points: &[SweepPoint],
    policies: &[&str],
    path: &Path,
) -> Result<(), ReportError> {
    let max_ctx = points.iter().map(|p| p.context).max().unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_ctx * 1.05, 0.0..ymax * 1.1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("context length (tokens)")
        .y_desc(ylabel)
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for (i, pol) in policies.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.policy == *pol)
            .map(|p| (p.context as f64, get(p)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label(*pol)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                pts.into_iter()
                    .map(|(x, y)| Circle::new((x, y), 4, color.filled())),
            )
            .map_err(|e| draw_err(path, e))?;
    }
    draw_legend(&mut chart, path)
}

/// The series' legend, boxed, in the upper left of `chart`.
pub(super) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    path: &Path,
) -> Result<(), ReportError>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .label_font(font(14.0))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_err(path, e))
}

/// Two panels side by side: TPOT median (ms) and KV MiB against context, per policy, written to
/// `out` (a path, checked before anything is drawn, or an output prepared before the run).
pub fn render_sweep<'a>(
    points: &[SweepPoint],
    title: &str,
    out: impl Into<Target<'a>>,
) -> Result<(), ReportError> {
    let out = out.into();
    if points.is_empty() {
        return Err(draw_err(out.path(), "no sweep points to plot"));
    }
    let out = out.prepare()?;
    let path = out.path();
    register_shipped_font().map_err(|e| draw_err(path, e))?;
    let mut policies: Vec<&str> = Vec::new();
    for p in points {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    let max_of = |get: fn(&SweepPoint) -> f64| points.iter().map(get).fold(0.0, f64::max).max(1e-3);
    let panels: [Panel; 2] = [
        ("TPOT median (ms)", max_of(tpot), tpot),
        ("KV held (MiB)", max_of(kv_mib), kv_mib),
    ];
    write_png(&out, (1400, 560), title, |root| {
        for (area, panel) in root.split_evenly((1, 2)).iter().zip(panels) {
            draw_panel(area, panel, points, &policies, path)?;
        }
        Ok(())
    })
}

/// A picture drawn into a buffer.
pub(super) type Canvas<'a> = crate::png::Canvas<'a>;

/// Draws a white `(width, height)` picture under `title` with `draw`, then writes it as PNG to
/// the checked output `out` by the output rules ([`crate::png`], [`crate::output`]).
pub(super) fn write_png(
    out: &Prepared,
    size: (u32, u32),
    title: &str,
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let path = out.path();
    crate::png::write_png(
        out,
        size,
        |e| draw_err(path, e),
        |root| {
            let root = root
                .titled(title, font(22.0))
                .map_err(|e| draw_err(path, e))?;
            draw(&root)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_and_refuses_nothing_to_plot() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sweep.png");
        let pts = vec![
            SweepPoint {
                policy: "full".into(),
                context: 256,
                tpot_ms: 10.0,
                kv_bytes: 1 << 20,
            },
            SweepPoint {
                policy: "full".into(),
                context: 1024,
                tpot_ms: 20.0,
                kv_bytes: 4 << 20,
            },
            SweepPoint {
                policy: "local:256".into(),
                context: 256,
                tpot_ms: 9.0,
                kv_bytes: 1 << 20,
            },
            SweepPoint {
                policy: "local:256".into(),
                context: 1024,
                tpot_ms: 9.5,
                kv_bytes: 1 << 20,
            },
        ];
        render_sweep(&pts, "test sweep", &p).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        assert!(render_sweep(&[], "x", &d.path().join("none.png")).is_err());
    }
}
