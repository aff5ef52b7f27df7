//! Token labels for the axes: a token's text with byte-level BPE markers and whitespace made
//! readable, and which tokens get a label at what font size: every token when a readable label
//! fits each token's share of the axis, else every second (third, ...) one.

/// Makes a token readable as an axis label.
///
/// GPT-NeoX/GPT-2 byte-level markers are decoded (`Ġ` space, `Ċ` newline, `ĉ` tab); newlines,
/// tabs and other control characters are shown escaped (`\n`, `\t`, `\r`, `\u{..}`); surrounding
/// spaces are trimmed; a token of only spaces is shown as `␣`; labels longer than `max_chars`
/// characters are cut with `…`.
pub fn clean_label(token: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(token.len());
    for c in token.chars() {
        let c = match c {
            '\u{0120}' => ' ',
            '\u{010A}' => '\n',
            '\u{0109}' => '\t',
            '\u{010D}' => '\r',
            other => other,
        };
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    let trimmed = out.trim();
    if trimmed.is_empty() {
        return "\u{2423}".to_string();
    }
    let max_chars = max_chars.max(2);
    if trimmed.chars().count() > max_chars {
        let mut cut: String = trimmed.chars().take(max_chars - 1).collect();
        cut.push('\u{2026}');
        cut
    } else {
        trimmed.to_string()
    }
}

/// Axis labels of `tokens`: each token's text ([`clean_label`], cut to 14 characters), so a
/// declared BOS at position 0 shows as itself (`<|endoftext|>` for Pythia's id 0).
pub fn token_labels(tok: &tokenizers::Tokenizer, tokens: &[u32]) -> Vec<String> {
    tokens
        .iter()
        .map(|&t| clean_label(&tok.id_to_token(t).unwrap_or_else(|| format!("<{t}>")), 14))
        .collect()
}

/// The smallest label font, pixels: below it a token cannot be read.
pub const MIN_LABEL_PX: f64 = 8.0;

/// The largest label font, pixels.
pub const MAX_LABEL_PX: f64 = 15.0;

/// Pixels of axis a label needs per pixel of font size (the glyphs' height and a gap).
const PITCH_PER_PX: f64 = 1.15;

/// Which tokens of an axis get a label, and at what font size.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisLabels {
    /// The labelled tokens: every `stride`-th from 0.
    pub positions: Vec<usize>,
    /// 1 when every token is labelled.
    pub stride: usize,
    /// Font size of the labels, pixels.
    pub font_px: f64,
}

impl AxisLabels {
    /// Labels for `n` tokens along `extent` pixels. Every token gets one when a label of
    /// [`MIN_LABEL_PX`] fits each token's share of the axis, at the largest font that fits (at
    /// most [`MAX_LABEL_PX`]); only when it does not are they thinned, to every `stride`-th token
    /// with the smallest stride whose labels fit.
    pub fn place(n: usize, extent: u32) -> AxisLabels {
        if n == 0 {
            return AxisLabels {
                positions: Vec::new(),
                stride: 1,
                font_px: MAX_LABEL_PX,
            };
        }
        let share = f64::from(extent) / n as f64;
        let least = MIN_LABEL_PX * PITCH_PER_PX;
        let mut stride = 1;
        while share * (stride as f64) < least && stride < n {
            stride += 1;
        }
        AxisLabels {
            positions: (0..n).step_by(stride).collect(),
            stride,
            font_px: (share * stride as f64 / PITCH_PER_PX).clamp(MIN_LABEL_PX, MAX_LABEL_PX),
        }
    }

    /// Whether every token is labelled.
    pub fn all(&self) -> bool {
        self.stride == 1
    }

    /// What the picture says when the labels were thinned, e.g. `every 2nd of 200 tokens
    /// labelled (too many to fit)`; `None` when every token is labelled.
    pub fn thinned_note(&self, n: usize) -> Option<String> {
        let nth = match self.stride {
            1 => return None,
            2 => "2nd".to_string(),
            3 => "3rd".to_string(),
            k => format!("{k}th"),
        };
        Some(format!(
            "every {nth} of {n} tokens labelled (too many to fit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_markers_are_decoded() {
        assert_eq!(clean_label("Ġthe", 12), "the");
        assert_eq!(clean_label("Ċ", 12), "\\n");
        assert_eq!(clean_label("ĊĊ", 12), "\\n\\n");
        assert_eq!(clean_label("Ġ", 12), "\u{2423}");
        assert_eq!(clean_label("  ", 12), "\u{2423}");
        assert_eq!(clean_label("a\tb\n", 12), "a\\tb\\n");
        assert_eq!(clean_label("\u{1}", 12), "\\u{1}");
        assert_eq!(clean_label(",", 12), ",");
    }

    #[test]
    fn long_labels_are_cut() {
        let l = clean_label("Ġextraordinarily", 8);
        assert_eq!(l.chars().count(), 8);
        assert!(l.ends_with('\u{2026}'));
    }

    #[test]
    fn every_token_is_labelled_when_a_readable_label_fits_its_share() {
        // the default text (85 tokens) on the heatmap's 1150-pixel axis: 13.53 px a token
        let a = AxisLabels::place(85, 1150);
        assert_eq!(a.positions, (0..85).collect::<Vec<_>>());
        assert_eq!(a.stride, 1);
        assert!(
            (a.font_px - 1150.0 / 85.0 / 1.15).abs() < 1e-12,
            "{}",
            a.font_px
        );
        assert!(a.all() && a.thinned_note(85).is_none());
        // few tokens: the largest font
        assert_eq!(AxisLabels::place(5, 560).font_px, MAX_LABEL_PX);
        // exactly 9.2 px a token (8 px font x 1.15) still fits
        let edge = AxisLabels::place(100, 920);
        assert_eq!((edge.stride, edge.positions.len()), (1, 100));
        assert!(
            (edge.font_px - MIN_LABEL_PX).abs() < 1e-9,
            "{}",
            edge.font_px
        );
        assert!(AxisLabels::place(0, 900).positions.is_empty());
    }

    #[test]
    fn labels_are_thinned_only_when_they_cannot_fit() {
        // 101 tokens on 920 px: 9.11 px each, under 9.2; every 2nd token, 18.2 px apart
        let a = AxisLabels::place(101, 920);
        assert_eq!(a.stride, 2);
        assert_eq!(a.positions, (0..101).step_by(2).collect::<Vec<_>>());
        assert_eq!(a.positions.len(), 51);
        assert_eq!(
            a.thinned_note(101).as_deref(),
            Some("every 2nd of 101 tokens labelled (too many to fit)")
        );
        // 400 tokens on 1260 px: 3.15 px each; 3 x 3.15 = 9.45 fits
        let b = AxisLabels::place(400, 1260);
        assert_eq!((b.stride, b.positions[..3].to_vec()), (3, vec![0, 3, 6]));
        assert_eq!(b.positions.len(), 134);
        assert!(b.thinned_note(400).unwrap().starts_with("every 3rd of 400"));
        // 1000 tokens on 1260 px: 1.26 px each; 8 x 1.26 = 10.08
        let c = AxisLabels::place(1000, 1260);
        assert_eq!(c.stride, 8);
        assert_eq!(
            c.thinned_note(1000).unwrap(),
            "every 8th of 1000 tokens labelled (too many to fit)"
        );
    }
}
