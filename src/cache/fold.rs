//! Grouped-query attention: a step's attention sums arrive per query head, the cache holds K/V per
//! KV head; the one rule that turns the first into what every policy ranks (docs/architecture.md,
//! "Grouped-query attention"): KV head g receives the SUM of the rows of the query heads that read
//! it, g*G .. g*G+G-1 (G = query heads / KV heads, Hugging Face's repeat_kv order).

use crate::error::{Error, Result};

/// Folds `attention` `[batch, query_heads, cols]` to `[batch, kv_heads, cols]`: row (b, g) is the
/// sum, in query-head order, of rows (b, g*G) .. (b, g*G+G-1). Without grouping (`query_heads ==
/// kv_heads`) it returns `attention` itself, untouched (bit for bit, no copy); else the folded
/// rows, written into `out` (a buffer reused across steps).
pub fn fold_query_heads<'a>(
    attention: &'a [f32],
    batch: usize,
    query_heads: usize,
    kv_heads: usize,
    out: &'a mut Vec<f32>,
) -> Result<&'a [f32]> {
    if kv_heads == 0 || !query_heads.is_multiple_of(kv_heads) {
        return Err(Error::Store(format!(
            "{query_heads} query heads cannot be folded onto {kv_heads} KV heads: the KV heads must divide the query heads"
        )));
    }
    let rows = batch * query_heads;
    if rows == 0 || !attention.len().is_multiple_of(rows) {
        return Err(Error::Store(format!(
            "attention sums have {} values, not [batch {batch} x query heads {query_heads} x columns]",
            attention.len()
        )));
    }
    if query_heads == kv_heads {
        return Ok(attention);
    }
    let (group, cols) = (query_heads / kv_heads, attention.len() / rows);
    out.clear();
    out.resize(batch * kv_heads * cols, 0.0);
    // [batch, kv_heads, group, cols] in, [batch, kv_heads, cols] out: the group's rows are adjacent
    for (dst, src) in out
        .chunks_exact_mut(cols)
        .zip(attention.chunks_exact(group * cols))
    {
        dst.copy_from_slice(&src[..cols]);
        for row in src[cols..].chunks_exact(cols) {
            for (d, &x) in dst.iter_mut().zip(row) {
                *d += x;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_head_gets_the_sum_of_its_query_heads() {
        // batch 2, 4 query heads, 2 KV heads (groups {0, 1} and {2, 3}), 3 columns
        let att: Vec<f32> = vec![
            0.5, 0.25, 0.25, /* b0 q0 */ 0.125, 0.375, 0.5, /* b0 q1 */
            1.0, 0.0, 0.0, /* b0 q2 */ 0.0, 0.0, 1.0, /* b0 q3 */
            0.125, 0.25, 0.625, /* b1 q0 */ 0.375, 0.25, 0.375, /* b1 q1 */
            0.0, 1.0, 0.0, /* b1 q2 */ 0.25, 0.5, 0.25, /* b1 q3 */
        ];
        let mut out = Vec::new();
        let folded = fold_query_heads(&att, 2, 4, 2, &mut out).unwrap();
        let want: Vec<f32> = vec![
            0.625, 0.625, 0.75, // b0 g0 = q0 + q1
            1.0, 0.0, 1.0, // b0 g1 = q2 + q3
            0.5, 0.5, 1.0, // b1 g0
            0.25, 1.5, 0.25, // b1 g1
        ];
        assert_eq!(folded, &want[..]);
    }

    #[test]
    fn one_kv_head_sums_every_query_head_in_order() {
        // 3 query heads on 1 KV head, 2 columns: (q0 + q1) + q2. Column 0 tells the order:
        // (1e8 - 1e8) + 1 = 1, whereas 1e8 + (-1e8 + 1) = 0 in f32
        let att = [1e8f32, 1.0, -1e8, 2.0, 1.0, 3.0];
        let mut out = Vec::new();
        let folded = fold_query_heads(&att, 1, 3, 1, &mut out).unwrap();
        assert_eq!(folded, &[1.0, 6.0][..]);
    }

    #[test]
    fn without_groups_it_is_the_identity_bit_for_bit() {
        let att = [0.1f32, f32::MIN_POSITIVE, -0.0, 3.5, 1e-30, 0.7];
        let mut out = vec![9.0];
        let folded = fold_query_heads(&att, 1, 2, 2, &mut out).unwrap();
        assert!(std::ptr::eq(folded, &att[..]), "the input itself, no copy");
        assert_eq!(out, [9.0], "the buffer is not touched");
    }

    #[test]
    fn heads_that_do_not_divide_are_refused() {
        let mut out = Vec::new();
        let err = fold_query_heads(&[0.0; 6], 1, 3, 2, &mut out).unwrap_err();
        assert!(err.to_string().contains("must divide"), "{err}");
        let err = fold_query_heads(&[0.0; 5], 1, 4, 2, &mut out).unwrap_err();
        assert!(err.to_string().contains("5 values"), "{err}");
    }
}
