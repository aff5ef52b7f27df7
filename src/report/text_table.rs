//! Console tables laid out for a terminal width: cells wrap at spaces only (a number, a policy
//! spec or a number with its unit is never split); when the columns cannot fit even so, the least
//! important ones are left out (and named), or with every column asked for (`--wide`) each row is
//! printed as a block of `name: value` lines. Drawn with comfy-table; every table of the tool
//! (results, speed, compare) goes through [`TextTable::fit`].

use std::fmt;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use super::wrap::{text_width, widest_atom, wrap_line, wrap_words};

/// How much a column matters when the terminal is too narrow for its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Importance {
    /// Never left out: what names a row and the figures the table is for.
    Essential,
    /// Left out after every [`Importance::Minor`] column.
    Normal,
    /// Left out first.
    Minor,
}

/// A console table: a header, rows of cells as text, and per column its alignment and
/// [`Importance`].
#[derive(Debug, Clone)]
pub struct TextTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
    importance: Vec<Importance>,
    every_column: bool,
}

/// Columns of frame a table of `columns` columns draws: a border left of each column and one at
/// the right end, and one space of padding either side of each cell.
fn frame(columns: usize) -> usize {
    3 * columns + 1
}

/// How a table is laid out at a width.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// A table of the columns `shown` (indices, in order) at these content `widths`; the columns
    /// `left_out` did not fit.
    Table {
        shown: Vec<usize>,
        widths: Vec<usize>,
        left_out: Vec<usize>,
    },
    /// One block of `name: value` lines per row.
    Records,
}

/// Content widths from `mins` up, the `spare` columns given to the columns that need the fewest to
/// reach their `naturals` (one line per cell) first.
fn distribute(mins: &[usize], naturals: &[usize], mut spare: usize) -> Vec<usize> {
    let mut widths = mins.to_vec();
    let mut order: Vec<usize> = (0..mins.len()).collect();
    order.sort_by_key(|&i| naturals[i] - mins[i]);
    for i in order {
        let more = (naturals[i] - mins[i]).min(spare);
        widths[i] += more;
        spare -= more;
    }
    widths
}

/// `cell` wrapped at spaces to `width` columns, line by line.
fn wrap_cell(cell: &str, width: usize) -> String {
    cell.lines()
        .flat_map(|l| wrap_line(l, width, 0))
        .collect::<Vec<_>>()
        .join("\n")
}

impl TextTable {
    /// A table with this header, no rows, every column left-aligned and [`Importance::Normal`].
    pub fn new<S: ToString>(header: &[S]) -> TextTable {
        let n = header.len();
        TextTable {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
            right: vec![false; n],
            importance: vec![Importance::Normal; n],
            every_column: false,
        }
    }

    /// Adds a row; missing cells are empty, cells beyond the header are dropped.
    pub fn add_row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        let mut row: Vec<String> = cells.into_iter().map(|c| c.to_string()).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
        self
    }

    /// Aligns column `i` right (numbers).
    pub fn align_right(&mut self, i: usize) -> &mut Self {
        if let Some(r) = self.right.get_mut(i) {
            *r = true;
        }
        self
    }

    /// Sets each column's importance, in order.
    pub fn set_importance(
        &mut self,
        importance: impl IntoIterator<Item = Importance>,
    ) -> &mut Self {
        for (slot, i) in self.importance.iter_mut().zip(importance) {
            *slot = i;
        }
        self
    }

    /// Every column was asked for (`--wide`): none is left out; a table too wide for the terminal
    /// is printed as records instead.
    pub fn every_column(&mut self, yes: bool) -> &mut Self {
        self.every_column = yes;
        self
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Column `i`'s header and cells.
    fn column(&self, i: usize) -> impl Iterator<Item = &str> {
        std::iter::once(self.header[i].as_str()).chain(self.rows.iter().map(move |r| r[i].as_str()))
    }

    /// The width column `i` needs to show every cell on one line.
    fn natural_width(&self, i: usize) -> usize {
        self.column(i)
            .flat_map(str::lines)
            .map(text_width)
            .max()
            .unwrap_or(0)
    }

    /// The least width column `i` can be wrapped to without splitting a number, spec or unit.
    fn least_width(&self, i: usize) -> usize {
        self.column(i).map(widest_atom).max().unwrap_or(0)
    }

    /// The layout at `width` columns: every column if they fit (wrapped at spaces where needed),
    /// else without the least important ones (the rightmost first among equals; never an
    /// [`Importance::Essential`] one, nor any when every column was asked for), else records.
    fn layout(&self, width: usize) -> Layout {
        let mut shown: Vec<usize> = (0..self.header.len()).collect();
        let mut left_out = Vec::new();
        loop {
            let naturals: Vec<usize> = shown.iter().map(|&i| self.natural_width(i)).collect();
            let mins: Vec<usize> = shown.iter().map(|&i| self.least_width(i)).collect();
            let frame = frame(shown.len());
            let need: usize = frame + mins.iter().sum::<usize>();
            if need <= width {
                let widths = distribute(&mins, &naturals, width - need);
                left_out.sort_unstable();
                return Layout::Table {
                    shown,
                    widths,
                    left_out,
                };
            }
            if self.every_column {
                return Layout::Records;
            }
            let dropped = shown
                .iter()
                .enumerate()
                .filter(|(_, &i)| self.importance[i] != Importance::Essential)
                .max_by_key(|(_, &i)| self.importance[i]);
            match dropped {
                Some((at, &i)) => {
                    shown.remove(at);
                    left_out.push(i);
                }
                None => return Layout::Records,
            }
        }
    }

    /// A comfy-table table of the columns `shown`, cells wrapped to `widths` when given.
    fn draw(&self, shown: &[usize], widths: Option<&[usize]>) -> Table {
        let cell = |text: &str, k: usize| match widths {
            Some(w) => wrap_cell(text, w[k]),
            None => text.to_string(),
        };
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(
                shown
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| cell(&self.header[i], k))
                    .collect::<Vec<_>>(),
            );
        for row in &self.rows {
            t.add_row(
                shown
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| cell(&row[i], k))
                    .collect::<Vec<_>>(),
            );
        }
        for (k, &i) in shown.iter().enumerate() {
            if let (true, Some(c)) = (self.right[i], t.column_mut(k)) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        t
    }

    /// Each row as a block of `name: value` lines (the first column's unindented, the others
    /// indented two spaces), wrapped at spaces to `width`; a blank line between blocks.
    fn records(&self, width: usize) -> String {
        let mut out = wrap_words(
            &format!("(one block per row: the table does not fit {width} columns)"),
            width,
        );
        for row in &self.rows {
            out.push('\n');
            for (i, cell) in row.iter().enumerate() {
                let indent = if i == 0 { 0 } else { 2 };
                let name = self.header[i].replace('\n', " ");
                let value = cell.lines().collect::<Vec<_>>().join(" ");
                let line = format!("{}{name}: {value}", " ".repeat(indent));
                for l in wrap_line(&line, width, indent + 2) {
                    out.push('\n');
                    out.push_str(&l);
                }
            }
        }
        out
    }

    /// The table as text for a terminal of `width` columns (no final newline), see [`Layout`]:
    /// no line is wider than `width` unless a single piece (a number, spec, word) is. `None` (not
    /// a terminal) gives every column at its natural width.
    pub fn fit(&self, width: Option<u16>) -> String {
        let Some(width) = width.map(usize::from) else {
            return self.to_string();
        };
        match self.layout(width) {
            Layout::Table {
                shown,
                widths,
                left_out,
            } => {
                let table = self.draw(&shown, Some(&widths)).to_string();
                if left_out.is_empty() {
                    return table;
                }
                let names: Vec<String> = left_out
                    .iter()
                    .map(|&i| self.header[i].replace('\n', " "))
                    .collect();
                let note = format!(
                    "Left out to fit {width} columns: {}; --wide shows every column.",
                    names.join(", ")
                );
                format!("{table}\n{}", wrap_words(&note, width))
            }
            Layout::Records => self.records(width),
        }
    }
}

/// Every column at its natural width, nothing wrapped.
impl fmt::Display for TextTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<usize> = (0..self.header.len()).collect();
        write!(f, "{}", self.draw(&all, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Importance::*;

    /// Policy (essential), TTFT (minor), TPOT (normal), Status (essential).
    fn table() -> TextTable {
        let mut t = TextTable::new(&["Policy", "TTFT (ms)", "TPOT (ms)", "Status"]);
        t.add_row(["local:256", "636.2", "12.45", "ok"])
            .add_row(["h2o:192+64@pyramid", "1234.5", "9.10", "failed: killed"])
            .set_importance([Essential, Minor, Normal, Essential])
            .align_right(1)
            .align_right(2);
        t
    }

    fn widest_line(text: &str) -> usize {
        text.lines().map(text_width).max().unwrap_or(0)
    }

    #[test]
    fn widths_needed() {
        let t = table();
        assert_eq!(
            (0..4).map(|i| t.natural_width(i)).collect::<Vec<_>>(),
            [18, 9, 9, 14]
        );
        // "TTFT (ms)" wraps to "TTFT" / "(ms)", but "1234.5" does not split
        assert_eq!(
            (0..4).map(|i| t.least_width(i)).collect::<Vec<_>>(),
            [18, 6, 5, 7]
        );
        assert_eq!(frame(4), 13);
    }

    #[test]
    fn spare_columns_go_to_the_column_nearest_one_line_first() {
        assert_eq!(
            distribute(&[18, 6, 5, 7], &[18, 9, 9, 14], 5),
            [18, 9, 7, 7]
        );
        assert_eq!(distribute(&[1, 1], &[3, 2], 100), [3, 2]);
    }

    #[test]
    fn layout_wraps_then_leaves_out_the_least_important_then_gives_records() {
        let t = table();
        // natural: 13 + 50 = 63 columns
        let all = |widths: Vec<usize>| Layout::Table {
            shown: vec![0, 1, 2, 3],
            widths,
            left_out: vec![],
        };
        assert_eq!(t.layout(63), all(vec![18, 9, 9, 14]));
        // least: 13 + 36 = 49
        assert_eq!(t.layout(49), all(vec![18, 6, 5, 7]));
        // 48: TTFT (minor) goes first; 10 + 30 = 40 fits with 8 to spare
        assert_eq!(
            t.layout(48),
            Layout::Table {
                shown: vec![0, 2, 3],
                widths: vec![18, 9, 11],
                left_out: vec![1]
            }
        );
        // 39: TPOT (normal) goes too; 7 + 25 = 32
        assert_eq!(
            t.layout(39),
            Layout::Table {
                shown: vec![0, 3],
                widths: vec![18, 14],
                left_out: vec![1, 2]
            }
        );
        // 31: only essential columns are left and they do not fit
        assert_eq!(t.layout(31), Layout::Records);
        // every column asked for: records as soon as they do not fit
        let mut wide = table();
        wide.every_column(true);
        assert_eq!(wide.layout(49), all(vec![18, 6, 5, 7]));
        assert_eq!(wide.layout(48), Layout::Records);
    }

    #[test]
    fn fitted_text_is_never_wider_and_keeps_every_figure_whole() {
        let t = table();
        let figures = [
            ("Policy", "local:256"),
            ("Policy", "h2o:192+64@pyramid"),
            ("TTFT (ms)", "636.2"),
            ("TTFT (ms)", "1234.5"),
            ("TPOT (ms)", "12.45"),
            ("TPOT (ms)", "9.10"),
        ];
        // below 20 columns even a records line ("Policy: h2o:192+64@pyramid") cannot fit
        for width in 20..=70 {
            let text = t.fit(Some(width));
            assert!(widest_line(&text) <= usize::from(width), "{width}:\n{text}");
            let note = text
                .split_once("Left out")
                .map_or(String::new(), |(_, n)| n.replace('\n', " "));
            for (column, figure) in figures {
                assert!(
                    text.lines().any(|l| l.contains(figure)) || note.contains(column),
                    "{figure} at {width}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn the_text_names_what_it_left_out() {
        let text = table().fit(Some(48));
        assert_eq!(
            text,
            "\
┌────────────────────┬───────────┬─────────┐
│ Policy             ┆ TPOT (ms) ┆ Status  │
╞════════════════════╪═══════════╪═════════╡
│ local:256          ┆     12.45 ┆ ok      │
│ h2o:192+64@pyramid ┆      9.10 ┆ failed: │
│                    ┆           ┆ killed  │
└────────────────────┴───────────┴─────────┘
Left out to fit 48 columns: TTFT (ms); --wide
shows every column."
        );
    }

    #[test]
    fn records_are_name_value_blocks() {
        let mut t = table();
        t.every_column(true);
        assert_eq!(
            t.fit(Some(30)),
            "\
(one block per row: the table
does not fit 30 columns)

Policy: local:256
  TTFT (ms): 636.2
  TPOT (ms): 12.45
  Status: ok

Policy: h2o:192+64@pyramid
  TTFT (ms): 1234.5
  TPOT (ms): 9.10
  Status: failed: killed"
        );
    }

    #[test]
    fn without_a_width_every_column_is_at_its_natural_width() {
        let t = table();
        assert_eq!(t.fit(None), t.to_string());
        assert_eq!(widest_line(&t.to_string()), 63);
        assert!(t.to_string().contains("│ h2o:192+64@pyramid ┆    1234.5 ┆"));
    }
}
