//! The physical floor of a decode step at batch 1: weight bytes read per token over the machine's
//! measured memory read bandwidth.

use std::path::Path;
use std::time::Instant;

/// Measured read bandwidth in bytes/s: `threads` threads sum disjoint parts of a `bytes` buffer
/// (larger than the caches); best of `repeats` passes.
pub fn measure_read_bandwidth(bytes: usize, threads: usize, repeats: usize) -> f64 {
    let n = (bytes / 8).max(1024);
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let total = sum_in_parallel(&buf, threads);
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / secs);
    }
    best
}

/// Wrapping sum of `buf`, read by `threads` threads (at least one) over disjoint parts.
fn sum_in_parallel(buf: &[u64], threads: usize) -> u64 {
    let chunk = buf.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    // four independent accumulators keep the loads in flight
                    let mut acc = [0u64; 4];
                    let mut it = part.chunks_exact(4);
                    for c in &mut it {
                        acc[0] = acc[0].wrapping_add(c[0]);
                        acc[1] = acc[1].wrapping_add(c[1]);
                        acc[2] = acc[2].wrapping_add(c[2]);
                        acc[3] = acc[3].wrapping_add(c[3]);
                    }
                    let rest: u64 = it.remainder().iter().fold(0u64, |a, &x| a.wrapping_add(x));
                    acc.iter().fold(rest, |a, &x| a.wrapping_add(x))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, |a, x| a.wrapping_add(x))
    })
}

/// Bytes of the model's weights on disk: model.onnx plus its external data files (the graph itself is
/// a few hundred KB, so this is the weight bytes a decode step reads, within a fraction of a percent).
pub fn weight_bytes(model_dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(model_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == "model.onnx"
                || name.starts_with("model.onnx.data")
                || name.ends_with(".onnx_data")
            {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// Bytes a batch-1 decode step must read: all weights except the input embedding, of which the
/// step gathers one row (`vocab x hidden` elements are on disk but not read).
pub fn bytes_read_per_token(
    weight_file_bytes: u64,
    vocab: usize,
    hidden: usize,
    dtype_size: usize,
) -> u64 {
    weight_file_bytes.saturating_sub((vocab * hidden * dtype_size) as u64)
}

/// Floor of one decode step in ms: (weights + K/V bytes read) / bandwidth.
pub fn floor_ms(weight_bytes: u64, kv_bytes: u64, bandwidth: f64) -> f64 {
    if bandwidth <= 0.0 {
        return f64::NAN;
    }
    (weight_bytes + kv_bytes) as f64 / bandwidth * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_read_once_whatever_the_threads() {
        for n in [0usize, 1, 5, 1024, 4099] {
            let buf: Vec<u64> = (1..=n as u64).collect();
            let want = (n as u64) * (n as u64 + 1) / 2;
            for threads in [0, 1, 2, 3, 7, 64] {
                assert_eq!(
                    sum_in_parallel(&buf, threads),
                    want,
                    "n {n} threads {threads}"
                );
            }
        }
        // wrapping, never a panic
        assert_eq!(sum_in_parallel(&[u64::MAX, 2], 1), 1);
    }

    #[test]
    fn floor_and_bytes_read() {
        assert_eq!(floor_ms(1_000_000, 0, 1e9), 1.0);
        assert_eq!(floor_ms(600_000, 400_000, 2e9), 0.5);
        assert!(floor_ms(1, 1, 0.0).is_nan());
        assert_eq!(bytes_read_per_token(1000, 10, 20, 2), 600);
        assert_eq!(bytes_read_per_token(100, 10, 20, 2), 0);
    }

    #[test]
    fn weight_bytes_count_the_graph_and_its_data_files_only() {
        let d = tempfile::tempdir().unwrap();
        for (name, len) in [
            ("model.onnx", 100),
            ("model.onnx.data", 1000),
            ("model.onnx.data.1", 10),
            ("extra.onnx_data", 7),
            ("tokenizer.json", 5000),
            ("manifest.json", 300),
        ] {
            std::fs::write(d.path().join(name), vec![0u8; len]).unwrap();
        }
        assert_eq!(weight_bytes(d.path()), 1117);
        assert_eq!(weight_bytes(&d.path().join("missing")), 0);
    }
}
