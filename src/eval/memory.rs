//! Process memory: peak and current resident set size of this process (Linux /proc/self/status), and
//! the machine's available memory (/proc/meminfo). The one place the project reads them.

/// A `/proc/self/status` field in kB (e.g. `VmHWM`), as bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kb_field(&status, field)
}

/// Peak RSS of this process so far in bytes (`VmHWM`), if the platform reports it. The peak
/// covers the whole process lifetime, so a per-experiment peak needs a process per experiment.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Memory the machine can give to a new process without swapping, in bytes (`MemAvailable` of
/// /proc/meminfo), if the platform reports it.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kb_field(&info, "MemAvailable")
}

/// A `name:   123 kB` line of a /proc file, as bytes.
fn kb_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Current RSS of this process in bytes (`VmRSS`), if the platform reports it.
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_at_least_current() {
        // current first: other test threads may allocate between the two reads, and the peak read
        // later is at least any earlier current value.
        let c = super::current_rss_bytes();
        let p = super::peak_rss_bytes();
        if cfg!(target_os = "linux") {
            let (p, c) = (p.unwrap(), c.unwrap());
            assert!(p >= c && c > 0, "peak {p} current {c}");
            assert_eq!(p % 1024, 0, "kB from /proc, in bytes");
        }
        assert_eq!(super::status_bytes("NoSuchField"), None);
        if cfg!(target_os = "linux") {
            assert!(super::available_bytes().unwrap() > 0);
        }
        assert_eq!(
            super::kb_field("MemTotal: 10 kB\nMemAvailable:  4 kB\n", "MemAvailable"),
            Some(4096)
        );
    }
}
