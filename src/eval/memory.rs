//! Process memory: peak resident set size of this process (Linux /proc/self/status VmHWM).

/// Peak RSS of this process in bytes, if the platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current RSS of this process in bytes, if the platform reports it.
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_at_least_current() {
        // current first: other test threads may allocate between the two reads, and the peak read
        // later is at least any earlier current value.
        let c = super::current_rss_bytes();
        let p = super::peak_rss_bytes();
        if let (Some(p), Some(c)) = (p, c) {
            assert!(p >= c && c > 0, "peak {p} current {c}");
        }
    }
}
