//! Word wrapping for the terminal: lines broken at spaces only, so a number, a policy spec, a path
//! or a number with its unit (`23.6 GiB`, `636.2 ms`) is never split across lines.

/// Units that stay on the line of the number before them (`23.6 GiB`, `12 ms`, `40 %`).
const UNITS: [&str; 22] = [
    "B", "KiB", "MiB", "GiB", "TiB", "kB", "KB", "MB", "GB", "TB", "ns", "us", "µs", "ms", "s",
    "%", "T/s", "GB/s", "GiB/s", "MiB/s", "bytes", "tokens",
];

/// Whether `word` is a unit (trailing punctuation such as `;`, `,` or `)` aside).
fn is_unit(word: &str) -> bool {
    let bare = word.trim_end_matches([',', ';', ':', '.', ')', ']']);
    UNITS.contains(&bare)
}

/// The display width of `s` in terminal columns (one per character: the tool prints no wide
/// characters).
pub fn text_width(s: &str) -> usize {
    s.chars().count()
}

/// The pieces a line may be broken between: its words (split at spaces), with a unit glued to the
/// number before it (`23.6 GiB` is one piece).
pub fn atoms(line: &str) -> Vec<String> {
    spaced_atoms(line).into_iter().map(|(_, a)| a).collect()
}

/// [`atoms`], each with the number of spaces before it in `line`.
fn spaced_atoms(line: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut gap = 0;
    for word in line.split(' ') {
        if word.is_empty() {
            gap += 1;
            continue;
        }
        let gap_before = if out.is_empty() { gap } else { gap + 1 };
        gap = 0;
        match out.last_mut() {
            Some((_, prev)) if is_unit(word) && prev.ends_with(|c: char| c.is_ascii_digit()) => {
                prev.push_str(&" ".repeat(gap_before));
                prev.push_str(word);
            }
            _ => out.push((gap_before, word.to_string())),
        }
    }
    out
}

/// The widest piece of `text` (over its lines): the least width it can be wrapped to whole.
pub fn widest_atom(text: &str) -> usize {
    text.lines()
        .flat_map(atoms)
        .map(|a| text_width(&a))
        .max()
        .unwrap_or(0)
}

/// `line` broken at spaces into lines of at most `width` columns where its pieces allow ([`atoms`];
/// a piece wider than `width` stays whole on a line of its own); the lines after the first start
/// with `indent` spaces. The line's own leading spaces are kept on its first line, and the spaces
/// between the pieces of a line (an aligned `name    value`). A line's indentation shrinks where
/// it would push a piece that fits `width` beyond it.
pub fn wrap_line(line: &str, width: usize, indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut len = 0;
    for (k, (gap, atom)) in spaced_atoms(line).into_iter().enumerate() {
        let n = text_width(&atom);
        if k > 0 && len + gap + n > width {
            lines.push(std::mem::take(&mut current));
        } else if k > 0 {
            current.push_str(&" ".repeat(gap));
            current.push_str(&atom);
            len += gap + n;
            continue;
        }
        // the line's own leading spaces on its first line, `indent` on the others
        let pad = if k == 0 { gap } else { indent }.min(width.saturating_sub(n));
        current = format!("{}{atom}", " ".repeat(pad));
        len = pad + n;
    }
    if lines.is_empty() && current.is_empty() {
        current = line.to_string();
    }
    lines.push(current);
    lines
}

/// `text` with every line longer than `width` broken at spaces ([`wrap_line`]); the continuation
/// of an indented line (a list item) is indented two more spaces, that of any other line not at
/// all. Lines that fit are left as they are; the text's final newline is kept.
pub fn wrap_words(text: &str, width: usize) -> String {
    wrap_with(text, width, |lead| if lead > 0 { lead + 2 } else { 0 })
}

/// `text` with every line longer than `width` broken at spaces ([`wrap_line`]), the continuation
/// lines indented two spaces more than the line (a message and its hanging indent). Lines that
/// fit are left as they are; the text's final newline is kept.
pub fn wrap_hanging(text: &str, width: usize) -> String {
    wrap_with(text, width, |lead| lead + 2)
}

/// Wraps each line longer than `width`, its continuation lines indented `indent(leading spaces)`.
fn wrap_with(text: &str, width: usize, indent: impl Fn(usize) -> usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if text_width(line) <= width {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let lead = line.len() - line.trim_start_matches(' ').len();
        for l in wrap_line(line, width, indent(lead)) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_stay_with_their_numbers() {
        assert_eq!(
            atoms("2 physical / 4 logical cores; 23.6 GiB memory"),
            ["2", "physical", "/", "4", "logical", "cores;", "23.6 GiB", "memory"]
        );
        assert_eq!(
            atoms("TPOT 636.2 ms, KV 1.5 MiB)"),
            ["TPOT", "636.2 ms,", "KV", "1.5 MiB)"]
        );
        // a unit after a word, not a number, is a word of its own
        assert_eq!(atoms("in GiB"), ["in", "GiB"]);
        assert_eq!(widest_atom("a 23.6 GiB\nbb"), 8);
    }

    #[test]
    fn lines_break_at_spaces_and_never_inside_a_piece() {
        assert_eq!(wrap_line("aa bb cc dd", 5, 0), ["aa bb", "cc dd"]);
        assert_eq!(
            wrap_line("memory 23.6 GiB free", 12, 2),
            ["memory", "  23.6 GiB", "  free"]
        );
        // a piece wider than the width stays whole
        assert_eq!(
            wrap_line("x local:256@pyramid y", 6, 0),
            ["x", "local:256@pyramid", "y"]
        );
        assert_eq!(wrap_line("  line 3: a b", 9, 4), ["  line 3:", "    a b"]);
        assert_eq!(wrap_line("", 9, 0), [""]);
        // an indentation that would push a piece that fits beyond the width shrinks
        assert_eq!(wrap_line("         /a/b.json", 12, 0), ["   /a/b.json"]);
        assert_eq!(
            wrap_line("results: /a/b.json", 12, 4),
            ["results:", "   /a/b.json"]
        );
        assert_eq!(wrap_line("    abcdefghijklmn", 12, 0), ["abcdefghijklmn"]);
        // the spaces between pieces on a line are kept; a break drops them
        assert_eq!(
            wrap_line("machine    Xeon;  2 cores; 23.6  GiB", 22, 2),
            ["machine    Xeon;  2", "  cores; 23.6  GiB"]
        );
    }

    #[test]
    fn text_wraps_line_by_line_and_list_items_stay_indented() {
        assert_eq!(wrap_words("aa bb cc dd\n", 5), "aa bb\ncc dd\n");
        assert_eq!(wrap_words("  line 3: a b\n", 9), "  line 3:\n    a b\n");
        assert_eq!(wrap_words("abcdefgh ij\n", 4), "abcdefgh\nij\n");
        assert_eq!(wrap_words("short\n", 80), "short\n");
        assert_eq!(wrap_words("a b c", 3), "a b\nc");
    }

    #[test]
    fn messages_hang_their_continuation_lines() {
        assert_eq!(
            wrap_hanging("error: no file at /a/b.csv (23.6 GiB)", 20),
            "error: no file at\n  /a/b.csv\n  (23.6 GiB)"
        );
        assert_eq!(wrap_hanging("fits\n", 20), "fits\n");
    }
}
