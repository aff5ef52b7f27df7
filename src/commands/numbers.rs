//! Value parsers of the numeric flags. Every numeric flag takes values that start with a hyphen
//! (`allow_hyphen_values`), so `--tokens -5` or `--kv-cap -1GiB` reach these parsers (or the
//! tool's own checks) and get an answer that names the problem, not clap's "unexpected argument".

/// A count (tokens, rows, threads ...): a whole number, 0 or more.
pub fn count(s: &str) -> Result<usize, String> {
    whole(s).and_then(|n| {
        usize::try_from(n).map_err(|_| format!("'{s}' is more than this machine can count"))
    })
}

/// A 64-bit seed: a whole number from 0 to 2^64 - 1.
pub fn seed(s: &str) -> Result<u64, String> {
    whole(s)
}

/// A process id.
pub fn pid(s: &str) -> Result<u32, String> {
    whole(s).and_then(|n| u32::try_from(n).map_err(|_| format!("'{s}' is not a process id")))
}

/// A real number (finite or not: the flag's own check judges the range).
pub fn real(s: &str) -> Result<f32, String> {
    s.trim()
        .parse::<f32>()
        .map_err(|_| format!("'{s}' is not a number; give e.g. 1e-4 or 0.001"))
}

/// A whole number, 0 or more, up to 2^64 - 1; what is wrong named otherwise.
fn whole(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let numeric = t.parse::<f64>().is_ok();
    Err(if numeric && t.starts_with('-') {
        format!("'{s}' is negative; give a whole number (e.g. 512)")
    } else if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        format!("'{s}' is too large; give a whole number up to {}", u64::MAX)
    } else if numeric {
        format!("'{s}' is not a whole number; give one such as 512")
    } else {
        format!("'{s}' is not a number; give a whole number such as 512")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_what_is_wrong_with_them() {
        assert_eq!(count("512"), Ok(512));
        assert_eq!(count(" 0 "), Ok(0));
        assert!(count("-5").unwrap_err().contains("negative"));
        assert!(count("-1.5").unwrap_err().contains("negative"));
        assert!(count("1.5").unwrap_err().contains("not a whole number"));
        assert!(count("1e3").unwrap_err().contains("not a whole number"));
        assert!(count("99999999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(count("--model").unwrap_err().contains("not a number"));
        assert!(count("").unwrap_err().contains("not a number"));
        assert_eq!(seed("18446744073709551615"), Ok(u64::MAX));
        assert!(pid("4294967296").unwrap_err().contains("process id"));
        assert!(real("-inf").unwrap().is_infinite());
        assert!(real("tiny").unwrap_err().contains("not a number"));
    }
}
