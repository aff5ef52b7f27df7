//! Reading benchmark text (WikiText-2 raw) and turning it into tokens, with one clear error per bad input.

use std::path::Path;

use crate::error::{Error, Result};

/// Read a whole text file as UTF-8; missing, empty (or whitespace only) and non-UTF-8 files are refused.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "data file not found; give a WikiText-2 raw text file (e.g. ../shared/data/wikitext-2-raw-v1/wiki.test.raw)".into()
        } else {
            format!("cannot read the data file ({e})")
        },
    })?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {}); give a UTF-8 text file",
            e.utf8_error().valid_up_to()
        ),
    })?;
    if text.trim().is_empty() {
        return Err(Error::Data {
            path: path.to_path_buf(),
            reason: "the data file is empty; give a file with text".into(),
        });
    }
    Ok(text)
}

/// Tokenize `text` without special tokens.
pub fn tokenize(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::Input(format!("tokenizer failed: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// The first `n` tokens of the data file; fewer than `n` is an error naming both counts.
pub fn load_tokens(tok: &tokenizers::Tokenizer, path: &Path, n: usize) -> Result<Vec<u32>> {
    let text = read_text(path)?;
    // Tokenizing all of wiki.test.raw takes a while; a prefix long enough for n tokens is enough
    // (BPE tokens are at least one byte: 16 bytes per token is far more than needed; cut on a line end).
    let cut = text.len().min(n.saturating_mul(16).max(4096));
    let prefix = match text[..floor_char_boundary(&text, cut)].rfind('\n') {
        Some(i) if cut < text.len() => &text[..=i],
        _ => &text[..floor_char_boundary(&text, cut)],
    };
    let mut ids = tokenize(tok, prefix)?;
    if ids.len() < n && prefix.len() < text.len() {
        ids = tokenize(tok, &text)?;
    }
    if ids.len() < n {
        return Err(Error::Data {
            path: path.to_path_buf(),
            reason: format!(
                "only {} tokens, {n} asked for; lower the token count or use a longer file",
                ids.len()
            ),
        });
    }
    ids.truncate(n);
    Ok(ids)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
