//! Streaming perplexity per window (`h2o ppl --windows N --plot FILE.png`): PPL of each window of
//! predictions against the tokens streamed, a line per policy, the model's positions marked (the
//! StreamingLLM paper's figure). plotters with the shipped font, written by the output rules.

use plotters::prelude::*;

use super::plot::{draw_err, draw_legend, font, write_png};
use super::ReportError;
use crate::output::Target;
use crate::png::register_shipped_font;

/// One policy's line: its label and (tokens streamed at the window's end, the window's PPL).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSeries {
    pub policy: String,
    pub points: Vec<(usize, f64)>,
}

/// Draws PPL per window against tokens streamed, a line per series, a dashed vertical line at
/// `max_positions` (the model's positions), and writes the PNG to `out`.
pub fn render_windows<'a>(
    series: &[WindowSeries],
    max_positions: Option<usize>,
    title: &str,
    out: impl Into<Target<'a>>,
) -> Result<(), ReportError> {
    let out = out.into();
    let finite = |s: &WindowSeries| s.points.iter().filter(|p| p.1.is_finite()).count();
    if series.iter().map(finite).sum::<usize>() == 0 {
        return Err(draw_err(out.path(), "no windows to plot"));
    }
    let out = out.prepare()?;
    let path = out.path();
    register_shipped_font().map_err(|e| draw_err(path, e))?;
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let max_x = points().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let max_y = points()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max)
        .max(1e-3);
    write_png(&out, (1200, 600), title, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_x * 1.02, 0.0..max_y * 1.15)
            .map_err(|e| draw_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("tokens streamed (end of each window)")
            .y_desc("perplexity of the window")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(font(14.0))
            .axis_desc_style(font(16.0))
            .draw()
            .map_err(|e| draw_err(path, e))?;
        if let Some(m) = max_positions.filter(|&m| (m as f64) < max_x) {
            let x = m as f64;
            let dashes = (0..40).map(|i| {
                let (a, b) = (i as f64 / 40.0, (i as f64 + 0.5) / 40.0);
                PathElement::new(vec![(x, a * max_y * 1.15), (x, b * max_y * 1.15)], BLACK)
            });
            chart.draw_series(dashes).map_err(|e| draw_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" the model's {m} positions"),
                    // at the foot of the line: the legend sits in the upper left corner
                    (x, max_y * 0.06),
                    font(13.0),
                )))
                .map_err(|e| draw_err(path, e))?;
        }
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let line: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|&(x, y)| (x as f64, y))
                .collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?
                .label(s.policy.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        draw_legend(&mut chart, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_and_refuses_nothing_to_plot() {
        let d = tempfile::tempdir().unwrap();
        let series = vec![
            WindowSeries {
                policy: "sink:4+252@rolling".into(),
                points: vec![(1025, 30.0), (2049, 28.0), (3073, 29.0)],
            },
            WindowSeries {
                policy: "local:256@rolling".into(),
                points: vec![(1025, 40.0), (2049, 45.0), (3073, f64::NAN)],
            },
        ];
        let p = d.path().join("w.png");
        render_windows(&series, Some(2048), "windows", &p).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        let none = d.path().join("none.png");
        assert!(render_windows(&[], None, "x", &none).is_err());
        assert!(!none.exists());
    }
}
