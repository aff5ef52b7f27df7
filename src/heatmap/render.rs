//! PNG rendering with plotters' bitmap backend and the shipped DejaVu Sans font: the log-scale
//! attention heatmap of one layer and the heads x tokens picture of what each policy keeps (kept
//! tokens in the colour scale, evicted ones hatched grey, with a legend).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};

use super::error::{HeatmapError, Result};
use super::labels::{clean_label, AxisLabels};
use super::matrix::AttentionMatrix;
use crate::output::{Prepared, Target};
pub use crate::png::FONT_FAMILY;

/// Labels are cut to this many characters.
const LABEL_CHARS: usize = 14;

/// Registers the shipped font ([`crate::png::register_shipped_font`]).
pub fn register_shipped_font() -> Result<()> {
    crate::png::register_shipped_font().map_err(|_| HeatmapError::Font)
}

/// Side of the (square) heatmap image for `tokens` tokens: `300 + 14 * tokens`, within 900..=1600.
pub fn heatmap_image_size(tokens: usize) -> (u32, u32) {
    let side = scaled(tokens);
    (side, side)
}

/// Size of the kept-tokens picture for `heads` x `tokens` and `panels` policies (at least one panel).
pub fn kept_image_size(heads: usize, tokens: usize, panels: usize) -> (u32, u32) {
    let width = scaled(tokens);
    let ph = panel_height(heads);
    let panels = panels.max(1) as u32;
    (
        width,
        KEPT_TOP + panels * (ph + PANEL_TITLE + PANEL_GAP) + KEPT_BOTTOM,
    )
}

fn scaled(tokens: usize) -> u32 {
    let t = u32::try_from(tokens).unwrap_or(u32::MAX);
    t.saturating_mul(14).saturating_add(300).clamp(900, 1600)
}

fn panel_height(heads: usize) -> u32 {
    u32::try_from(heads)
        .unwrap_or(u32::MAX)
        .saturating_mul(10)
        .clamp(120, 360)
}

const KEPT_TOP: u32 = 110;
/// Top of the kept/evicted legend, between the subtitle and the first panel's title.
const KEPT_LEGEND_Y: i32 = 78;
const KEPT_BOTTOM: u32 = 190;
const PANEL_TITLE: u32 = 30;
const PANEL_GAP: u32 = 24;

/// Logarithmic colour normalisation between `floor` and `max`.
#[derive(Debug, Clone, Copy)]
struct LogNorm {
    floor: f64,
    max: f64,
}

impl LogNorm {
    fn new(floor: f64, max: f64) -> Self {
        // A range of at least one decade, so a matrix at the floor still maps cleanly.
        let max = if max > floor * 10.0 {
            max
        } else {
            floor * 10.0
        };
        Self { floor, max }
    }

    /// Position in [0, 1]; values below the floor clamp to 0.
    fn t(&self, v: f64) -> f64 {
        let v = v.clamp(self.floor, self.max);
        ((v.ln() - self.floor.ln()) / (self.max.ln() - self.floor.ln())).clamp(0.0, 1.0)
    }

    fn colour(&self, v: f64) -> RGBColor {
        ViridisRGB::get_color(self.t(v) as f32)
    }
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::Name(FONT_FAMILY),
        size,
        FontStyle::Normal,
    ))
    .color(&BLACK)
}

fn anchored(style: TextStyle<'static>, h: HPos, v: VPos) -> TextStyle<'static> {
    style.pos(Pos::new(h, v))
}

type Area<'a> = crate::png::Canvas<'a>;

/// Converts a plotters error into ours, naming the picture.
fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> HeatmapError + '_ {
    move |e| HeatmapError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Draws a white picture of `(width, height)` pixels with `draw`, then writes it as PNG to the
/// checked output `out` by the output rules ([`crate::png`], [`crate::output`]).
fn draw_png(
    size: (u32, u32),
    out: &Prepared,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    let path = out.path();
    crate::png::write_png(
        out,
        size,
        |message| HeatmapError::Draw {
            path: path.to_path_buf(),
            message,
        },
        draw,
    )
}

/// Refuses a colour floor outside (0, 1): attention probabilities are at most 1, so a floor of 1
/// or more draws every cell at the floor (a blank picture), and the log scale needs a floor > 0.
pub fn check_floor(floor: f32) -> Result<()> {
    if floor > 0.0 && floor < 1.0 {
        Ok(())
    } else {
        Err(HeatmapError::Floor(floor))
    }
}

/// Labels for `n` tokens: the given ones cleaned, or the positions when `labels` is empty.
fn axis_labels(labels: &[String], n: usize) -> Result<Vec<String>> {
    if labels.is_empty() {
        return Ok((0..n).map(|i| i.to_string()).collect());
    }
    if labels.len() != n {
        return Err(HeatmapError::BadInput(format!(
            "{} token labels for {n} tokens",
            labels.len()
        )));
    }
    Ok(labels.iter().map(|l| clean_label(l, LABEL_CHARS)).collect())
}

/// Short tick text: decades as `1e-3`, `0.01`, `0.1`, `1`, `10`, `100`; other values with
/// two or three significant digits.
fn fmt_value(v: f64) -> String {
    let e = v.log10();
    let decade = (e - e.round()).abs() < 1e-5;
    let e = e.round() as i32;
    if decade {
        return match e {
            -2..=-1 => format!("{:.*}", (-e) as usize, 10f64.powi(e)),
            0..=2 => format!("{}", 10i32.pow(e as u32)),
            _ => format!("1e{e}"),
        };
    }
    if (100.0..1e4).contains(&v) {
        format!("{v:.0}")
    } else if (1.0..100.0).contains(&v) {
        format!("{v:.1}")
    } else if (0.01..1.0).contains(&v) {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

/// Vertical colour bar at `(x, y)` of size `w` x `h`, with log ticks at the decades and the ends.
fn draw_colour_bar(
    area: &Area<'_>,
    path: &Path,
    norm: &LogNorm,
    (x, y, w, h): (i32, i32, i32, i32),
    caption: &str,
) -> Result<()> {
    let err = draw_err(path);
    for py in 0..h {
        let t = 1.0 - f64::from(py) / f64::from((h - 1).max(1));
        let c = ViridisRGB::get_color(t as f32);
        area.draw(&PathElement::new(vec![(x, y + py), (x + w - 1, y + py)], c))
            .map_err(&err)?;
    }
    area.draw(&Rectangle::new([(x, y), (x + w, y + h)], BLACK))
        .map_err(&err)?;
    let y_of = |v: f64| y + ((1.0 - norm.t(v)) * f64::from(h - 1)).round() as i32;
    let mut ticks: Vec<(i32, f64)> =
        vec![(y_of(norm.max), norm.max), (y_of(norm.floor), norm.floor)];
    let lo = norm.floor.log10().ceil() as i32;
    let hi = norm.max.log10().floor() as i32;
    for e in lo..=hi {
        let v = 10f64.powi(e);
        let ty = y_of(v);
        if ticks.iter().all(|(yy, _)| (yy - ty).abs() >= 18) {
            ticks.push((ty, v));
        }
    }
    let style = anchored(font(13.0), HPos::Left, VPos::Center);
    for (ty, v) in ticks {
        area.draw(&PathElement::new(vec![(x + w, ty), (x + w + 5, ty)], BLACK))
            .map_err(&err)?;
        area.draw(&Text::new(fmt_value(v), (x + w + 8, ty), style.clone()))
            .map_err(&err)?;
    }
    let cap = anchored(font(13.0), HPos::Center, VPos::Top);
    for (k, line) in caption.lines().enumerate() {
        area.draw(&Text::new(
            line.to_string(),
            (x + w / 2, y + h + 10 + 16 * k as i32),
            cap.clone(),
        ))
        .map_err(&err)?;
    }
    Ok(())
}

/// Token labels under a plot spanning `x0..x0+width` (rotated, reading downwards) at `y`, placed
/// by [`AxisLabels::place`]; returns the placement.
fn draw_x_labels(
    area: &Area<'_>,
    path: &Path,
    labels: &[String],
    (x0, y, width): (i32, i32, u32),
) -> Result<AxisLabels> {
    let err = draw_err(path);
    let n = labels.len();
    let placed = AxisLabels::place(n, width);
    let style =
        anchored(font(placed.font_px), HPos::Left, VPos::Center).transform(FontTransform::Rotate90);
    for &j in &placed.positions {
        let x = x0 + ((j as f64 + 0.5) * f64::from(width) / n as f64) as i32;
        area.draw(&PathElement::new(vec![(x, y), (x, y + 4)], BLACK))
            .map_err(&err)?;
        area.draw(&Text::new(labels[j].clone(), (x, y + 7), style.clone()))
            .map_err(&err)?;
    }
    Ok(placed)
}

/// Labels left of a plot spanning `y0..y0+height`, right-aligned at `x`, placed by
/// [`AxisLabels::place`].
fn draw_y_labels(
    area: &Area<'_>,
    path: &Path,
    labels: &[String],
    (x, y0, height): (i32, i32, u32),
) -> Result<()> {
    let err = draw_err(path);
    let n = labels.len();
    let placed = AxisLabels::place(n, height);
    let style = anchored(font(placed.font_px), HPos::Right, VPos::Center);
    for &i in &placed.positions {
        let y = y0 + ((i as f64 + 0.5) * f64::from(height) / n as f64) as i32;
        area.draw(&PathElement::new(vec![(x - 4, y), (x, y)], BLACK))
            .map_err(&err)?;
        area.draw(&Text::new(labels[i].clone(), (x - 7, y), style.clone()))
            .map_err(&err)?;
    }
    Ok(())
}

fn draw_titles(area: &Area<'_>, path: &Path, width: u32, title: &str, sub: &str) -> Result<()> {
    let err = draw_err(path);
    let cx = (width / 2) as i32;
    area.draw(&Text::new(
        title.to_string(),
        (cx, 18),
        anchored(font(24.0), HPos::Center, VPos::Top),
    ))
    .map_err(&err)?;
    area.draw(&Text::new(
        sub.to_string(),
        (cx, 54),
        anchored(font(15.0), HPos::Center, VPos::Top),
    ))
    .map_err(&err)?;
    Ok(())
}

/// Renders the lower-triangular attention `matrix` of one layer as a log-scale heatmap PNG.
///
/// Colour is logarithmic between `floor` and the matrix maximum (viridis); values below `floor`
/// clamp to it; the upper triangle (future keys) stays white. `labels` are the tokens (one per
/// row; empty means "label by position"); every token is labelled where a readable label fits,
/// else every 2nd (3rd, ...) one, and the axis title says so ([`AxisLabels`]). `title`
/// should name model, layer and head. The image is square, [`heatmap_image_size`] pixels. It is
/// written to `out`: a path, checked (naming it) before anything is drawn, or an output prepared
/// before the run.
pub fn render_attention_heatmap<'a>(
    matrix: &AttentionMatrix,
    labels: &[String],
    title: &str,
    floor: f32,
    out: impl Into<Target<'a>>,
) -> Result<()> {
    if matrix.is_empty() {
        return Err(HeatmapError::EmptyMatrix);
    }
    check_floor(floor)?;
    let n = matrix.len();
    let labels = axis_labels(labels, n)?;
    register_shipped_font()?;
    let out = out.into().prepare()?;
    let path = out.path();

    let (side, _) = heatmap_image_size(n);
    let (left, top) = (170u32, 100u32);
    let plot = side - 340;
    let norm = LogNorm::new(
        f64::from(floor),
        f64::from(matrix.max_value().unwrap_or(floor)),
    );
    let err = draw_err(path);
    draw_png((side, side), &out, |area| {
        draw_titles(
            area,
            path,
            side,
            title,
            &format!(
                "{n} tokens; log colour scale, floor {} (smaller values clamped); upper triangle = future keys",
                fmt_value(f64::from(floor))
            ),
        )?;
        let (l, t, p) = (left as i32, top as i32, plot as i32);
        draw_matrix(area, path, matrix, &norm, (l, t, plot))?;
        area.draw(&Rectangle::new([(l, t), (l + p, t + p)], BLACK))
            .map_err(&err)?;
        draw_y_labels(area, path, &labels, (l, t, plot))?;
        let placed = draw_x_labels(area, path, &labels, (l, t + p, plot))?;
        area.draw(&Text::new(
            axis_title("key (token attended to)", &placed, n),
            (l + p / 2, side as i32 - 12),
            anchored(font(16.0), HPos::Center, VPos::Bottom),
        ))
        .map_err(&err)?;
        area.draw(&Text::new(
            "query (token attending)".to_string(),
            (14, t + p / 2),
            anchored(font(16.0), HPos::Center, VPos::Center).transform(FontTransform::Rotate270),
        ))
        .map_err(&err)?;
        draw_colour_bar(
            area,
            path,
            &norm,
            (l + p + 30, t, 24, p),
            "attention\n(log scale)",
        )
    })
}

/// The matrix's cells, `plot` x `plot` pixels from `(l, t)`, query rows down, key columns across.
fn draw_matrix(
    area: &Area<'_>,
    path: &Path,
    matrix: &AttentionMatrix,
    norm: &LogNorm,
    (l, t, plot): (i32, i32, u32),
) -> Result<()> {
    let n = matrix.len();
    for py in 0..plot {
        let q = (py as usize * n) / plot as usize;
        let row = matrix.row(q).unwrap_or(&[]);
        for px in 0..plot {
            let k = (px as usize * n) / plot as usize;
            if let Some(&v) = row.get(k) {
                area.draw_pixel((l + px as i32, t + py as i32), &norm.colour(f64::from(v)))
                    .map_err(draw_err(path))?;
            }
        }
    }
    Ok(())
}

/// Checks the heads x tokens score table; returns (heads, tokens).
fn check_scores(scores: &[Vec<f32>]) -> Result<(usize, usize)> {
    let heads = scores.len();
    let tokens = scores.first().map_or(0, Vec::len);
    if heads == 0 || tokens == 0 {
        return Err(HeatmapError::EmptyMatrix);
    }
    for (h, row) in scores.iter().enumerate() {
        if row.len() != tokens {
            return Err(HeatmapError::BadInput(format!(
                "head {h} has {} scores, head 0 has {tokens}",
                row.len()
            )));
        }
        if let Some((k, v)) = row
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(HeatmapError::BadInput(format!(
                "head {h}, token {k}: score {v}; scores must be finite and >= 0"
            )));
        }
    }
    Ok((heads, tokens))
}

/// Renders the heads x tokens accumulated attention of one layer (what H2O ranks by), one panel
/// per policy: the tokens each policy keeps at the end in the colour scale, the evicted ones
/// hatched grey ([`kept_cell_colour`]), with a legend above the panels.
///
/// `scores[h][t]` is head `h`'s accumulated attention to token `t`; `kept` is a list of
/// (policy spec, `[heads][tokens]` kept mask); with an empty list one unmarked panel is drawn.
/// Colour is logarithmic from `max * 1e-4` (or the smallest positive score, if larger) to the
/// maximum. The image is [`kept_image_size`] pixels, written to `out` as
/// [`render_attention_heatmap`] writes.
pub fn render_kept_tokens<'a>(
    scores: &[Vec<f32>],
    labels: &[String],
    kept: &[(String, Vec<Vec<bool>>)],
    title: &str,
    out: impl Into<Target<'a>>,
) -> Result<()> {
    let (heads, n) = check_scores(scores)?;
    let labels = axis_labels(labels, n)?;
    for (spec, mask) in kept {
        if mask.len() != heads || mask.iter().any(|m| m.len() != n) {
            return Err(HeatmapError::BadInput(format!(
                "kept mask of policy {spec:?} is not {heads} heads x {n} tokens"
            )));
        }
    }
    register_shipped_font()?;
    let out = out.into().prepare()?;
    let path = out.path();

    let norm = score_norm(scores);
    let panels = kept.len().max(1);
    let (width, height) = kept_image_size(heads, n, panels);
    let (left, right) = (110u32, 170u32);
    let pw = width - left - right;
    let ph = panel_height(heads);
    let err = draw_err(path);
    draw_png((width, height), &out, |area| {
        draw_titles(area, path, width, title, &kept_subtitle(kept, heads, n))?;
        let (l, pwi) = (left as i32, pw as i32);
        if !kept.is_empty() {
            draw_kept_legend(area, path, (l, KEPT_LEGEND_Y))?;
        }
        let mut y = KEPT_TOP as i32;
        let mut last_bottom = y;
        for p in 0..panels {
            let panel = match kept.get(p) {
                Some((s, m)) => (s.as_str(), Some(m)),
                None => ("no policy", None),
            };
            last_bottom = draw_kept_panel(area, path, scores, panel, &norm, (l, y, pw, ph))?;
            y = last_bottom + PANEL_GAP as i32;
        }
        let placed = draw_x_labels(area, path, &labels, (l, last_bottom, pw))?;
        area.draw(&Text::new(
            axis_title("token", &placed, n),
            (l + pwi / 2, height as i32 - 10),
            anchored(font(16.0), HPos::Center, VPos::Bottom),
        ))
        .map_err(&err)?;
        area.draw(&Text::new(
            "head".to_string(),
            (14, (KEPT_TOP as i32 + last_bottom) / 2),
            anchored(font(16.0), HPos::Center, VPos::Center).transform(FontTransform::Rotate270),
        ))
        .map_err(&err)?;
        let bar_top = KEPT_TOP as i32 + PANEL_TITLE as i32;
        draw_colour_bar(
            area,
            path,
            &norm,
            (l + pwi + 30, bar_top, 24, last_bottom - bar_top),
            "accumulated\nattention (log)",
        )
    })
}

/// Logarithmic colour from `max * 1e-4` (or the smallest positive score, if larger) to the
/// largest score.
fn score_norm(scores: &[Vec<f32>]) -> LogNorm {
    let max = scores.iter().flatten().copied().fold(0f32, f32::max);
    let min_pos = scores
        .iter()
        .flatten()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    let floor = if max > 0.0 {
        (f64::from(max) * 1e-4).max(f64::from(min_pos))
    } else {
        1e-6
    };
    LogNorm::new(floor, f64::from(max))
}

/// The kept-tokens picture's subtitle: what it shows and the policies.
fn kept_subtitle(kept: &[(String, Vec<Vec<bool>>)], heads: usize, n: usize) -> String {
    let names: Vec<&str> = kept.iter().map(|(s, _)| s.as_str()).collect();
    if names.is_empty() {
        format!("accumulated attention per head and token ({heads} heads x {n} tokens), log colour")
    } else {
        format!(
            "accumulated attention per head and token ({heads} heads x {n} tokens) at the end; policies: {}",
            names.join(", ")
        )
    }
}

/// The two greys of an evicted cell's hatching: its diagonal lines and the ground between them.
/// Viridis, the colour scale of kept cells, holds no grey, so the two never read alike.
const EVICTED_LINE: RGBColor = RGBColor(150, 150, 150);
const EVICTED_GROUND: RGBColor = RGBColor(228, 228, 228);

/// The hatching's period in pixels; its lines are 2 pixels wide.
const HATCH_PERIOD: i32 = 6;

/// The colour of the kept-tokens picture's pixel `(x, y)` on a cell of accumulated attention
/// `score`: kept, the score in the colour scale; evicted, hatched grey (diagonal lines
/// [`EVICTED_LINE`] on [`EVICTED_GROUND`]) whatever the score.
fn kept_cell_colour(norm: &LogNorm, score: f64, kept: bool, (x, y): (i32, i32)) -> RGBColor {
    if kept {
        norm.colour(score)
    } else if (x + y).rem_euclid(HATCH_PERIOD) < 2 {
        EVICTED_LINE
    } else {
        EVICTED_GROUND
    }
}

/// An axis title, with what the labels leave out when they were thinned.
fn axis_title(title: &str, placed: &AxisLabels, n: usize) -> String {
    match placed.thinned_note(n) {
        Some(note) => format!("{title}; {note}"),
        None => title.to_string(),
    }
}

/// The legend of the kept-tokens picture at `(x, y)`: a swatch of the colour scale for kept
/// tokens, a hatched one for evicted tokens, each with its words.
fn draw_kept_legend(area: &Area<'_>, path: &Path, (x, y): (i32, i32)) -> Result<()> {
    let err = draw_err(path);
    let (sw, sh) = (40, 16);
    let style = anchored(font(14.0), HPos::Left, VPos::Center);
    let swatch = |x0: i32, kept: bool| -> Result<()> {
        let norm = LogNorm::new(1e-2, 1.0);
        for px in 0..sw {
            for py in 0..sh {
                let score = 10f64.powf(-2.0 + 2.0 * f64::from(px) / f64::from(sw - 1));
                let c = kept_cell_colour(&norm, score, kept, (x0 + px, y + py));
                area.draw_pixel((x0 + px, y + py), &c).map_err(&err)?;
            }
        }
        area.draw(&Rectangle::new([(x0, y), (x0 + sw, y + sh)], BLACK))
            .map_err(&err)?;
        Ok(())
    };
    let kept_words = "kept at the end (colour: accumulated attention)";
    swatch(x, true)?;
    area.draw(&Text::new(
        kept_words,
        (x + sw + 8, y + sh / 2),
        style.clone(),
    ))
    .map_err(&err)?;
    let (tw, _) = area.estimate_text_size(kept_words, &style).map_err(&err)?;
    let x2 = x + sw + 8 + tw as i32 + 30;
    swatch(x2, false)?;
    area.draw(&Text::new("evicted", (x2 + sw + 8, y + sh / 2), style))
        .map_err(&err)?;
    Ok(())
}

/// One policy's panel of the kept-tokens picture, its title at `y`: heads x tokens, kept tokens
/// in the colour scale, evicted ones hatched grey. Returns the panel's bottom edge.
fn draw_kept_panel(
    area: &Area<'_>,
    path: &Path,
    scores: &[Vec<f32>],
    (spec, mask): (&str, Option<&Vec<Vec<bool>>>),
    norm: &LogNorm,
    (l, y, pw, ph): (i32, i32, u32, u32),
) -> Result<i32> {
    let err = draw_err(path);
    let (heads, n) = (scores.len(), scores[0].len());
    let panel_title = match mask {
        Some(m) => {
            let total: usize = m.iter().map(|r| r.iter().filter(|&&b| b).count()).sum();
            format!(
                "{spec}: keeps {:.1} of {n} tokens per head (mean)",
                total as f64 / heads as f64
            )
        }
        None => spec.to_string(),
    };
    area.draw(&Text::new(
        panel_title,
        (l, y + PANEL_TITLE as i32 - 8),
        anchored(font(16.0), HPos::Left, VPos::Bottom),
    ))
    .map_err(&err)?;
    let top = y + PANEL_TITLE as i32;
    for py in 0..ph {
        let h = (py as usize * heads) / ph as usize;
        for px in 0..pw {
            let t = (px as usize * n) / pw as usize;
            let keep = mask.is_none_or(|m| m[h][t]);
            let at = (l + px as i32, top + py as i32);
            let c = kept_cell_colour(norm, f64::from(scores[h][t]), keep, at);
            area.draw_pixel(at, &c).map_err(&err)?;
        }
    }
    let (pwi, phi) = (pw as i32, ph as i32);
    area.draw(&Rectangle::new([(l, top), (l + pwi, top + phi)], BLACK))
        .map_err(&err)?;
    let head_labels: Vec<String> = (0..heads).map(|h| format!("h{h}")).collect();
    draw_y_labels(area, path, &head_labels, (l, top, ph))?;
    Ok(top + phi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_text() {
        assert_eq!(fmt_value(f64::from(1e-4f32)), "1e-4");
        assert_eq!(fmt_value(0.01), "0.01");
        assert_eq!(fmt_value(0.1), "0.1");
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(100.0), "100");
        assert_eq!(fmt_value(97.3), "97.3");
        assert_eq!(fmt_value(0.082), "0.082");
        assert_eq!(fmt_value(2.5e-5), "2.5e-5");
    }

    #[test]
    fn log_norm_clamps_and_orders() {
        let n = LogNorm::new(1e-4, 1.0);
        assert_eq!(n.t(0.0), 0.0);
        assert_eq!(n.t(1e-9), 0.0);
        assert!((n.t(1e-2) - 0.5).abs() < 1e-9);
        assert_eq!(n.t(5.0), 1.0);
        let flat = LogNorm::new(1e-3, 1e-3);
        assert!(flat.max > flat.floor);
    }

    #[test]
    fn sizes_stay_in_bounds() {
        assert_eq!(heatmap_image_size(0), (900, 900));
        assert_eq!(heatmap_image_size(usize::MAX), (1600, 1600));
        let (w, h) = kept_image_size(32, 80, 2);
        assert!((900..=1600).contains(&w) && h > 600);
    }

    #[test]
    fn kept_cells_take_the_colour_scale_and_evicted_cells_a_grey_hatching() {
        let norm = LogNorm::new(1e-4, 1.0);
        // kept: viridis (plotters' table), from its dark purple at the floor (68, 1, 84) to its
        // yellow at the top (254, 232, 37), whatever the pixel
        assert_eq!(
            kept_cell_colour(&norm, 1e-4, true, (0, 0)),
            RGBColor(68, 1, 84)
        );
        assert_eq!(
            kept_cell_colour(&norm, 1e-9, true, (5, 1)),
            RGBColor(68, 1, 84)
        );
        assert_eq!(
            kept_cell_colour(&norm, 1.0, true, (3, 4)),
            RGBColor(254, 232, 37)
        );
        // evicted: the same grey hatching whatever the score; lines where (x + y) mod 6 < 2
        for score in [1e-4, 1e-2, 1.0] {
            let at = |x, y| kept_cell_colour(&norm, score, false, (x, y));
            assert_eq!(at(0, 0), RGBColor(150, 150, 150));
            assert_eq!(at(1, 0), RGBColor(150, 150, 150));
            assert_eq!(at(0, 1), RGBColor(150, 150, 150));
            assert_eq!(at(2, 0), RGBColor(228, 228, 228));
            assert_eq!(at(5, 0), RGBColor(228, 228, 228));
            assert_eq!(at(3, 3), RGBColor(150, 150, 150));
            assert_eq!(at(3, 4), RGBColor(150, 150, 150));
            assert_eq!(at(4, 4), RGBColor(228, 228, 228));
        }
        // no colour of the scale is a grey: kept never reads as evicted
        for k in 0..=1000 {
            let c = norm.colour(10f64.powf(-4.0 + 4.0 * f64::from(k) / 1000.0));
            let spread = c.0.max(c.1).max(c.2) - c.0.min(c.1).min(c.2);
            assert!(spread >= 30, "{c:?} is near grey");
        }
    }

    #[test]
    fn thinned_axes_say_so_in_their_title() {
        assert_eq!(
            axis_title("token", &AxisLabels::place(85, 1150), 85),
            "token"
        );
        assert_eq!(
            axis_title("token", &AxisLabels::place(400, 1260), 400),
            "token; every 3rd of 400 tokens labelled (too many to fit)"
        );
    }

    #[test]
    fn font_registers_twice() {
        register_shipped_font().unwrap();
        register_shipped_font().unwrap();
    }
}
