//! Token labels for the axes: a token's text with byte-level BPE markers and whitespace made
//! readable, and a subset of positions when there are too many tokens to label them all.

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

/// Positions to label among `n` tokens: all of them when `n <= max_labels`, else every
/// `ceil(n / max_labels)`-th starting at 0 (so at most `max_labels` labels).
pub fn label_positions(n: usize, max_labels: usize) -> Vec<usize> {
    let max_labels = max_labels.max(1);
    let stride = n.div_ceil(max_labels).max(1);
    (0..n).step_by(stride).collect()
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
    fn positions_are_a_bounded_subset() {
        assert_eq!(label_positions(5, 40), vec![0, 1, 2, 3, 4]);
        let p = label_positions(100, 40);
        assert!(p.len() <= 40 && p[0] == 0 && p.len() >= 30, "{p:?}");
        assert!(label_positions(0, 40).is_empty());
        assert_eq!(label_positions(1000, 40).len(), 40);
    }
}
