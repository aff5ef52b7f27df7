//! The default text to analyse: short and punctuation-heavy, so heavy-hitter stripes can show.

/// A short, punctuation-heavy English paragraph (about 80 Pythia tokens), written for this
/// project. Punctuation and function words are where heavy hitters usually appear.
pub const DEFAULT_TEXT: &str = "Wait, what? The cat (a grey, stubborn one) sat on the mat; \
then, quite suddenly, it left. Why? Nobody knows: hunger, boredom, or both! \"Come back,\" \
she said, \"please.\" It did not. Later, at 9:30 p.m., it returned: wet, tired, hungry... \
and, of course, very pleased with itself.";

/// Refuses empty (or all-whitespace) text with [`HeatmapError::EmptyText`]; returns it unchanged
/// otherwise.
///
/// [`HeatmapError::EmptyText`]: super::HeatmapError::EmptyText
pub fn require_text(text: &str) -> super::Result<&str> {
    if text.trim().is_empty() {
        Err(super::HeatmapError::EmptyText)
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_is_punctuation_heavy() {
        let punct = DEFAULT_TEXT
            .chars()
            .filter(|c| c.is_ascii_punctuation())
            .count();
        let words = DEFAULT_TEXT.split_whitespace().count();
        assert!(punct >= 25, "{punct}");
        assert!((35..=70).contains(&words), "{words}");
    }

    #[test]
    fn empty_text_is_refused() {
        assert!(require_text("  \n").is_err());
        assert_eq!(require_text("hi").unwrap(), "hi");
    }
}
