//! `AttentionMatrix`: the lower-triangular [query x key] attention of one layer, built row by row.

use super::error::{HeatmapError, Result};

/// Lower-triangular attention matrix: row `i` holds the attention of query `i` over keys `0..=i`
/// (already averaged over heads, or for one head). Stored packed, row after row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionMatrix {
    values: Vec<f32>,
    rows: usize,
}

/// Offset of row `i` in the packed storage.
fn row_start(i: usize) -> usize {
    i * (i + 1) / 2
}

impl AttentionMatrix {
    /// An empty matrix (no rows yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty matrix with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            values: Vec::with_capacity(row_start(rows)),
            rows: 0,
        }
    }

    /// Builds a matrix from whole rows (row `i` of length `i + 1`), validating each.
    pub fn from_rows<R: AsRef<[f32]>>(rows: impl IntoIterator<Item = R>) -> Result<Self> {
        let mut m = Self::new();
        for row in rows {
            m.push_row(row.as_ref())?;
        }
        Ok(m)
    }

    /// Appends the next query row. Row `i` must have exactly `i + 1` values (keys `0..=i`), each
    /// finite and non-negative; otherwise the matrix is left unchanged and an error names the row.
    pub fn push_row(&mut self, row: &[f32]) -> Result<()> {
        let i = self.rows;
        if row.len() != i + 1 {
            return Err(HeatmapError::BadRow {
                row: i,
                reason: format!(
                    "expected {} values (query {i} attends to keys 0..={i}), got {}",
                    i + 1,
                    row.len()
                ),
            });
        }
        if let Some((k, v)) = row
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(HeatmapError::BadRow {
                row: i,
                reason: format!("key {k} has value {v}; attention must be finite and >= 0"),
            });
        }
        self.values.extend_from_slice(row);
        self.rows += 1;
        Ok(())
    }

    /// Number of query rows (= number of tokens so far).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row has been pushed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Row `i` (length `i + 1`), if it exists.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        (i < self.rows).then(|| &self.values[row_start(i)..row_start(i + 1)])
    }

    /// Attention of query `q` to key `k`; `None` above the diagonal or out of range.
    pub fn get(&self, q: usize, k: usize) -> Option<f32> {
        (q < self.rows && k <= q).then(|| self.values[row_start(q) + k])
    }

    /// The rows in order.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> + '_ {
        (0..self.rows).map(move |i| &self.values[row_start(i)..row_start(i + 1)])
    }

    /// Sum of each row (each should be 1 for softmax attention), summed in f64.
    pub fn row_sums(&self) -> Vec<f32> {
        self.rows()
            .map(|r| r.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
            .collect()
    }

    /// Largest value in the matrix; `None` when empty.
    pub fn max_value(&self) -> Option<f32> {
        self.values.iter().copied().reduce(f32::max)
    }

    /// Accumulated attention per key: column sums (what H2O ranks by, for the mean over heads).
    pub fn column_sums(&self) -> Vec<f32> {
        let mut sums = vec![0f64; self.rows];
        for r in self.rows() {
            for (s, &v) in sums.iter_mut().zip(r) {
                *s += f64::from(v);
            }
        }
        sums.into_iter().map(|s| s as f32).collect()
    }

    /// Checks every row sums to 1 within `tol`; the error names the first row that does not.
    pub fn check_rows_sum_to_one(&self, tol: f32) -> Result<()> {
        if self.is_empty() {
            return Err(HeatmapError::EmptyMatrix);
        }
        match self
            .row_sums()
            .into_iter()
            .enumerate()
            .find(|(_, s)| (s - 1.0).abs() > tol)
        {
            Some((row, s)) => Err(HeatmapError::BadRow {
                row,
                reason: format!("sums to {s}, expected 1 within {tol}"),
            }),
            None => Ok(()),
        }
    }
}

/// Mean of several equally long rows (e.g. one attention row per head), element by element.
pub fn mean_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Vec<f32>> {
    let first = rows
        .first()
        .ok_or_else(|| HeatmapError::BadInput("no heads to average".to_string()))?
        .as_ref();
    let mut acc = vec![0f64; first.len()];
    for (h, r) in rows.iter().enumerate() {
        let r = r.as_ref();
        if r.len() != acc.len() {
            return Err(HeatmapError::BadInput(format!(
                "head {h} has {} values, head 0 has {}",
                r.len(),
                acc.len()
            )));
        }
        for (a, &v) in acc.iter_mut().zip(r) {
            *a += f64::from(v);
        }
    }
    let n = rows.len() as f64;
    Ok(acc.into_iter().map(|a| (a / n) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(n: usize) -> AttentionMatrix {
        AttentionMatrix::from_rows((0..n).map(|i| vec![1.0 / (i + 1) as f32; i + 1])).unwrap()
    }

    #[test]
    fn rows_are_stored_and_summed() {
        let m = uniform(5);
        assert_eq!(m.len(), 5);
        assert_eq!(m.row(2).unwrap().len(), 3);
        assert_eq!(m.get(3, 4), None);
        assert_eq!(m.get(9, 0), None);
        assert!((m.get(3, 1).unwrap() - 0.25).abs() < 1e-7);
        assert!(m.row_sums().iter().all(|s| (s - 1.0).abs() < 1e-6));
        m.check_rows_sum_to_one(1e-5).unwrap();
        let cols = m.column_sums();
        assert!((cols[4] - 0.2).abs() < 1e-6);
        assert!(cols[0] > cols[4]);
        assert_eq!(m.max_value(), Some(1.0));
    }

    #[test]
    fn wrong_length_is_refused_and_matrix_unchanged() {
        let mut m = AttentionMatrix::new();
        m.push_row(&[1.0]).unwrap();
        let err = m.push_row(&[0.5, 0.25, 0.25]).unwrap_err();
        assert!(matches!(err, HeatmapError::BadRow { row: 1, .. }), "{err}");
        assert!(err.to_string().contains("expected 2 values"));
        assert_eq!(m.len(), 1);
        m.push_row(&[0.5, 0.5]).unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, -0.1] {
            let mut m = AttentionMatrix::new();
            m.push_row(&[1.0]).unwrap();
            assert!(
                matches!(
                    m.push_row(&[bad, 1.0]),
                    Err(HeatmapError::BadRow { row: 1, .. })
                ),
                "{bad}"
            );
            assert_eq!(m.len(), 1);
        }
    }

    #[test]
    fn sum_check_names_the_row() {
        let m = AttentionMatrix::from_rows([vec![1.0], vec![0.2, 0.2]]).unwrap();
        let err = m.check_rows_sum_to_one(1e-3).unwrap_err();
        assert!(matches!(err, HeatmapError::BadRow { row: 1, .. }), "{err}");
        assert!(matches!(
            AttentionMatrix::new().check_rows_sum_to_one(1e-3),
            Err(HeatmapError::EmptyMatrix)
        ));
    }

    #[test]
    fn mean_over_heads() {
        let m = mean_rows(&[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        assert_eq!(m, vec![0.5, 0.5]);
        assert!(mean_rows::<Vec<f32>>(&[]).is_err());
        assert!(mean_rows(&[vec![1.0], vec![0.5, 0.5]]).is_err());
    }
}
