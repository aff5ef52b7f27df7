//! Throughput plot (`h2o speed --batch ... --plot`): decode tokens/s of all rows against batch, a line
//! per policy with the batch under the K/V cap marked; beside it, the best throughput under the cap
//! per policy as bars. plotters with the shipped font, written atomically (a hidden sibling, then a
//! rename).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::{draw_err, draw_legend, font, write_png};
use super::ReportError;
use crate::output::Target;
use crate::png::register_shipped_font;

/// One measured batch of one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPoint {
    pub policy: String,
    pub batch: usize,
    /// Decode tokens of all rows per second.
    pub tokens_per_s: f64,
    /// The largest batch whose K/V fits under the cap.
    pub at_cap: bool,
}

/// A policy's best throughput under the cap, and the batch it was measured at.
#[derive(Debug, Clone, PartialEq)]
pub struct CapBar {
    pub policy: String,
    pub batch: usize,
    pub tokens_per_s: f64,
}

fn policies_of(points: &[BatchPoint]) -> Vec<&str> {
    let mut policies: Vec<&str> = Vec::new();
    for p in points {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    policies
}

/// Color of a policy: by its place among the line panel's policies.
fn color_of(policies: &[&str], policy: &str) -> RGBAColor {
    let i = policies.iter().position(|p| *p == policy).unwrap_or(0);
    Palette99::pick(i).to_rgba()
}

/// Tokens/s against batch (log2 axis), a line per policy; the cap batches as large triangles.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[BatchPoint],
    policies: &[&str],
    path: &Path,
) -> Result<(), ReportError> {
    let max_batch = points.iter().map(|p| p.batch).max().unwrap_or(1).max(2) as f64;
    let max_tps = points
        .iter()
        .map(|p| p.tokens_per_s)
        .fold(0.0, f64::max)
        .max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_batch * 1.2).log_scale(), 0.0..max_tps * 1.1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(if points.iter().any(|p| p.at_cap) {
            "batch (sequences decoded together); triangle: the largest batch under the K/V cap"
        } else {
            "batch (sequences decoded together)"
        })
        .y_desc("decode tokens/s (all rows)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for pol in policies {
        let color = color_of(policies, pol);
        let mut pts: Vec<(f64, f64, bool)> = points
            .iter()
            .filter(|p| p.policy == *pol && p.tokens_per_s.is_finite())
            .map(|p| (p.batch as f64, p.tokens_per_s, p.at_cap))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<(f64, f64)> = pts.iter().map(|&(x, y, _)| (x, y)).collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label(*pol)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        let marks = pts.iter().map(|&(x, y, cap)| {
            let size = if cap { 9 } else { 4 };
            EmptyElement::at((x, y))
                + TriangleMarker::new((0, 0), if cap { size } else { 0 }, color.filled())
                + Circle::new((0, 0), if cap { 0 } else { size }, color.filled())
        });
        chart.draw_series(marks).map_err(|e| draw_err(path, e))?;
    }
    draw_legend(&mut chart, path)
}

/// The best throughput under the cap per policy, as bars labelled with the batch and the value.
fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    bars: &[CapBar],
    policies: &[&str],
    cap: &str,
    path: &Path,
) -> Result<(), ReportError> {
    let max_tps = bars
        .iter()
        .map(|b| b.tokens_per_s)
        .fold(0.0, f64::max)
        .max(1e-3);
    let n = bars.len() as f64;
    let names: Vec<String> = bars.iter().map(|b| b.policy.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .caption(format!("best under a K/V cap of {cap}"), font(16.0))
        .build_cartesian_2d(0.0..n, 0.0..max_tps * 1.2)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            let centred = (x - x.floor() - 0.5).abs() < 1e-6;
            names
                .get(i)
                .filter(|_| centred)
                .cloned()
                .unwrap_or_default()
        })
        .y_desc("decode tokens/s (all rows)")
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for (i, b) in bars.iter().enumerate() {
        let color = color_of(policies, &b.policy);
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.2, 0.0), (x + 0.8, b.tokens_per_s)],
                color.filled(),
            )))
            .map_err(|e| draw_err(path, e))?;
        let label = format!("{:.1} T/s @ batch {}", b.tokens_per_s, b.batch);
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (x + 0.2, b.tokens_per_s + max_tps * 0.03),
                font(13.0),
            )))
            .map_err(|e| draw_err(path, e))?;
    }
    Ok(())
}

/// Draws the throughput lines (and, with `cap` and `bars`, the best-under-cap bars) and writes
/// the PNG to `out` (a path, checked before anything is drawn, or an output prepared before the
/// run) by the output rules ([`crate::output`]).
pub fn render_throughput<'a>(
    points: &[BatchPoint],
    cap: Option<(&str, &[CapBar])>,
    title: &str,
    out: impl Into<Target<'a>>,
) -> Result<(), ReportError> {
    let out = out.into();
    if points.is_empty() {
        return Err(draw_err(out.path(), "no throughput points to plot"));
    }
    let out = out.prepare()?;
    let path = out.path();
    register_shipped_font().map_err(|e| draw_err(path, e))?;
    let policies = policies_of(points);
    write_png(&out, (1400, 560), title, |root| match cap {
        Some((cap, bars)) if !bars.is_empty() => {
            let (left, right) = root.split_horizontally(840);
            draw_lines(&left, points, &policies, path)?;
            draw_bars(&right, bars, &policies, cap, path)
        }
        _ => draw_lines(root, points, &policies, path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(policy: &str, batch: usize, tokens_per_s: f64, at_cap: bool) -> BatchPoint {
        BatchPoint {
            policy: policy.into(),
            batch,
            tokens_per_s,
            at_cap,
        }
    }

    #[test]
    fn writes_a_png_with_and_without_the_cap_panel() {
        let d = tempfile::tempdir().unwrap();
        let points = vec![
            point("full", 1, 10.0, false),
            point("full", 4, 30.0, false),
            point("full", 9, 40.0, true),
            point("h2o:192+64", 1, 11.0, false),
            point("h2o:192+64", 4, 33.0, false),
            point("h2o:192+64", 22, 70.0, true),
        ];
        let bars = [
            CapBar {
                policy: "full".into(),
                batch: 9,
                tokens_per_s: 40.0,
            },
            CapBar {
                policy: "h2o:192+64".into(),
                batch: 22,
                tokens_per_s: 70.0,
            },
        ];
        for (name, cap) in [
            ("cap.png", Some(("4.00 GiB", &bars[..]))),
            ("lines.png", None),
        ] {
            let p = d.path().join(name);
            render_throughput(&points, cap, "throughput", &p).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
        assert!(render_throughput(&[], None, "x", &d.path().join("none.png")).is_err());
        assert!(!d.path().join("none.png").exists());
    }
}
