//! The declared BOS (manifest `prepend_bos_token_id`; docs/architecture.md, "Declared BOS"): a
//! model trained with a BOS at position 0 of every window gets it fed first, at position 0, as an
//! ordinary cache entry, and its own prediction is never scored. ppl, speed (and bench), generate
//! and heatmap turn their text tokens into what is fed here; a model without one is fed its text.

use crate::error::{LengthError, Setting};

/// Tokens fed before the text: 1 for a model that declares a BOS, else 0.
pub fn lead(bos: Option<u32>) -> usize {
    usize::from(bos.is_some())
}

/// What is fed for `text`: the declared BOS, if any, then the text.
pub fn fed(bos: Option<u32>, text: &[u32]) -> Vec<u32> {
    bos.into_iter().chain(text.iter().copied()).collect()
}

/// Refuses lengths whose sum, plus the declared BOS's position when `bos`, is beyond the model's
/// `max_positions`; the error lists `parts` and, with a BOS, names it as one more part.
pub fn check_positions(
    max_positions: usize,
    parts: Vec<(Setting, usize)>,
    bos: bool,
) -> Result<(), LengthError> {
    let lead = usize::from(bos);
    let total = parts
        .iter()
        .fold(lead, |sum, &(_, n)| sum.saturating_add(n));
    if total <= max_positions {
        return Ok(());
    }
    let mut parts = parts;
    parts.extend(bos.then_some((Setting::Bos, lead)));
    Err(LengthError::BeyondPositions {
        parts,
        max_positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bos_goes_first_or_nothing_does() {
        assert_eq!(fed(None, &[5, 6]), vec![5, 6]);
        assert_eq!(fed(Some(0), &[5, 6]), vec![0, 5, 6]);
        assert_eq!(fed(Some(7), &[]), vec![7]);
        assert_eq!((lead(None), lead(Some(0))), (0, 1));
    }
}
