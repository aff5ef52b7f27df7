//! Reading benchmark text (WikiText-2 raw) and turning it into tokens, with one clear error per bad input.
//!
//! Two ways to read the file ([`TextMode`]): as it is (`file`), or as the seed read WikiText-2
//! (`seed`): the Hugging Face dataset's rows joined until the text passes 16,384 characters.

use std::path::Path;

use crate::error::{Error, Result};

pub use crate::catalogue::TextMode;

/// The seed joins rows until its text is longer than this many characters (8 x 2048).
pub const SEED_TEXT_CHARS: usize = 8 * 2048;

/// The rows of a WikiText raw file as the Hugging Face dataset holds them: one per line, each
/// with its newline; a line of only whitespace (WikiText's blank lines are a space and a
/// newline) is an empty row, as the dataset's loader makes it.
pub fn dataset_rows(raw: &str) -> impl Iterator<Item = &str> {
    raw.split_inclusive('\n')
        .map(|line| if line.trim().is_empty() { "" } else { line })
}

/// The seed's text: the rows ([`dataset_rows`]) joined with nothing between them, stopping as
/// soon as the text is longer than [`SEED_TEXT_CHARS`] characters (Unicode scalar values, as
/// Python's `len`), or at the end of the file.
pub fn seed_text(raw: &str) -> String {
    let mut text = String::new();
    let mut chars = 0;
    for row in dataset_rows(raw) {
        text.push_str(row);
        chars += row.chars().count();
        if chars > SEED_TEXT_CHARS {
            break;
        }
    }
    text
}

/// Read a whole text file as UTF-8; missing, empty (or whitespace only) and non-UTF-8 files are refused.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bounded(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found; give an existing UTF-8 text file (the benchmarks read WikiText-2 raw test, e.g. ../shared/data/wikitext-2-raw-v1/wiki.test.raw)".into()
        } else {
            format!("cannot read the file ({e})")
        },
    })?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(Error::Data {
            path: path.to_path_buf(),
            reason: format!(
                "more than {} MiB of text (WikiText-2 raw test is 1.3 MB); give a shorter file, e.g. its first part (head -c 100M FILE > part.txt)",
                MAX_TEXT_BYTES >> 20
            ),
        });
    }
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
            reason: "the file is empty; give a file with text".into(),
        });
    }
    Ok(text)
}

/// The most bytes of text read from a file: 200 times WikiText-2 raw test, and a bound on what
/// `/dev/zero` or an endless pipe given as the text can make the tool allocate.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// The file's bytes, reading no further than one byte past [`MAX_TEXT_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Tokenize `text` without special tokens.
pub fn tokenize(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::Input(format!("tokenizer failed: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// The first `n` tokens of the data file as it is; fewer than `n` is an error naming both counts.
pub fn load_tokens(tok: &tokenizers::Tokenizer, path: &Path, n: usize) -> Result<Vec<u32>> {
    load_text_tokens(tok, path, n, TextMode::File)
}

/// The first `n` tokens of the data file's text (`mode`); fewer than `n` is an error naming both counts.
pub fn load_text_tokens(
    tok: &tokenizers::Tokenizer,
    path: &Path,
    n: usize,
    mode: TextMode,
) -> Result<Vec<u32>> {
    let ids = read_text_tokens(tok, path, n, mode)?;
    if ids.len() < n {
        return Err(short_text(path, mode, ids.len(), n));
    }
    Ok(ids)
}

/// The first `n` tokens of the data file's text (`mode`), or all there are when fewer.
pub fn read_text_tokens(
    tok: &tokenizers::Tokenizer,
    path: &Path,
    n: usize,
    mode: TextMode,
) -> Result<Vec<u32>> {
    let text = read_text(path)?;
    let mut ids = match mode {
        TextMode::File => file_tokens(tok, &text, n)?,
        TextMode::Seed => tokenize(tok, &seed_text(&text))?,
    };
    ids.truncate(n);
    Ok(ids)
}

/// The error of a text that gives `got` tokens where `n` are asked for.
pub fn short_text(path: &Path, mode: TextMode, got: usize, n: usize) -> Error {
    let what = match mode {
        TextMode::File => "the file gives".to_string(),
        TextMode::Seed => format!(
            "the seed's text (the dataset's rows joined up to {SEED_TEXT_CHARS} characters) gives"
        ),
    };
    Error::Data {
        path: path.to_path_buf(),
        reason: format!(
            "{what} only {got} tokens, {n} asked for; lower the token count or use a longer file"
        ),
    }
}

/// Tokens of the file as it is: at least the first `n`, or all there are.
fn file_tokens(tok: &tokenizers::Tokenizer, text: &str, n: usize) -> Result<Vec<u32>> {
    // Tokenizing all of wiki.test.raw takes a while; a prefix long enough for n tokens is enough
    // (BPE tokens are at least one byte: 16 bytes per token is far more than needed; cut on a line end).
    let cut = text.len().min(n.saturating_mul(16).max(4096));
    let prefix = match text[..floor_char_boundary(text, cut)].rfind('\n') {
        Some(i) if cut < text.len() => &text[..=i],
        _ => &text[..floor_char_boundary(text, cut)],
    };
    let ids = tokenize(tok, prefix)?;
    if ids.len() < n && prefix.len() < text.len() {
        return tokenize(tok, text);
    }
    Ok(ids)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed excerpt: the first 32 lines of wiki.test.raw (tests/data/README.md).
    const EXCERPT: &str = include_str!("../../tests/data/wiki.test.excerpt.raw");

    #[test]
    fn rows_are_the_lines_with_blank_lines_empty() {
        let rows: Vec<&str> = dataset_rows(EXCERPT).collect();
        assert_eq!(rows.len(), 32);
        assert_eq!(rows[0], "");
        assert_eq!(rows[1], " = Robert Boulter = \n");
        assert_eq!(rows[2], "");
        assert!(rows[3].starts_with(" Robert Boulter is an English film"));
        // every row is a line with its newline, or empty for a blank line (" \n")
        let blank = EXCERPT
            .split_inclusive('\n')
            .filter(|l| *l == " \n")
            .count();
        assert_eq!(rows.iter().filter(|r| r.is_empty()).count(), blank);
        assert_eq!(rows.concat().len(), EXCERPT.len() - 2 * blank);
        // a last line without a newline is a row; "\t \n" counts as blank
        let r: Vec<&str> = dataset_rows("a\n\t \nb").collect();
        assert_eq!(r, ["a\n", "", "b"]);
    }

    #[test]
    fn the_seed_text_joins_rows_and_stops_past_16384_characters() {
        // the excerpt is shorter than the limit: all rows, joined with nothing between them
        let t = seed_text(EXCERPT);
        assert!(t.starts_with(" = Robert Boulter = \n Robert Boulter is an English film"));
        assert_eq!(t, dataset_rows(EXCERPT).collect::<String>());
        assert!(!t.contains("\n \n"));
        // rows of 1000 characters: the 17th makes 17,000 > 16,384; the 18th is never read
        let row = format!("{}\n", "x".repeat(999));
        let raw = format!(" \n{}", row.repeat(20));
        assert_eq!(seed_text(&raw).len(), 17 * 1000);
        // characters, not bytes: 'é' is one character of two bytes
        let row = format!("{}\n", "é".repeat(4095));
        let t = seed_text(&row.repeat(6));
        assert_eq!(t.chars().count(), 5 * 4096);
        // the limit itself is not past it: exactly 16,384 characters reads on
        let t = seed_text(&format!(
            "{}\n{}",
            "y".repeat(SEED_TEXT_CHARS - 1),
            "z\n".repeat(3)
        ));
        assert_eq!(t.chars().count(), SEED_TEXT_CHARS + 2);
    }
}
