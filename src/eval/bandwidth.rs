//! The physical floor of a decode step at batch 1: weight bytes read per token over the machine's
//! measured memory read bandwidth.

use std::path::Path;
use std::time::Instant;

/// Measured read bandwidth in bytes/s: the best, over `repeats` passes of every way of reading
/// tried, of summing a `bytes` buffer (larger than the caches). Ways tried: `threads` and
/// `2 * threads` threads over disjoint parts, each part read as one stream or as 4 interleaved
/// streams. A floor must not be slower than what the engine's own decode achieves: on the 2-core
/// EPYC VM one stream per thread with `threads` threads read 33-39 GB/s while ONNX Runtime's decode
/// at random-160m streamed its weights at ~45 GB/s (TPOT/floor 0.72-0.84); with twice the threads
/// and 4 streams each the same buffer reads at 52-59 GB/s (docs/architecture.md, "Bandwidth floor").
pub fn measure_read_bandwidth(bytes: usize, threads: usize, repeats: usize) -> f64 {
    let mut wall_clock = |read: &dyn Fn() -> u64| {
        let t0 = Instant::now();
        std::hint::black_box(read());
        t0.elapsed().as_secs_f64()
    };
    probe(bytes, threads, repeats, &mut wall_clock)
}

/// [`measure_read_bandwidth`] with the clock given: `seconds(read)` runs one pass (`read` sums the
/// buffer) and says how long it took. The buffer holds `bytes / 8` u64s (at least 1024); each
/// pass reads all of it, so its bytes over the pass's seconds is the bandwidth.
fn probe(
    bytes: usize,
    threads: usize,
    repeats: usize,
    seconds: &mut dyn FnMut(&dyn Fn() -> u64) -> f64,
) -> f64 {
    let buf: Vec<u64> = (0..(bytes / 8).max(1024) as u64).collect();
    let buf_bytes = std::mem::size_of_val(&buf[..]);
    let threads = threads.max(1);
    let mut best = 0f64;
    for _ in 0..repeats.max(1) {
        for (t, streams) in [
            (threads, 1),
            (threads, 4),
            (2 * threads, 1),
            (2 * threads, 4),
        ] {
            let secs = seconds(&|| sum_in_parallel(&buf, t, streams));
            best = best.max(buf_bytes as f64 / secs);
        }
    }
    best
}

/// Wrapping sum of `buf`, read by `threads` threads (at least one) over disjoint parts, each part
/// read as `streams` interleaved sub-ranges in lockstep (more prefetch streams in flight per thread).
fn sum_in_parallel(buf: &[u64], threads: usize, streams: usize) -> u64 {
    let chunk = buf.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(chunk)
            .map(|part| s.spawn(move || sum_streams(part, streams.max(1))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, |a, x| a.wrapping_add(x))
    })
}

/// Wrapping sum of `part`: `streams` equal sub-ranges of whole 16-element blocks read block by
/// block in turn (sixteen independent accumulators keep the loads in flight), then the rest.
fn sum_streams(part: &[u64], streams: usize) -> u64 {
    const BLOCK: usize = 16;
    let len = part.len() / streams / BLOCK * BLOCK; // elements per stream
    let mut acc = [0u64; BLOCK];
    for i in (0..len).step_by(BLOCK) {
        for s in 0..streams {
            let block = &part[s * len + i..s * len + i + BLOCK];
            for (a, &x) in acc.iter_mut().zip(block) {
                *a = a.wrapping_add(x);
            }
        }
    }
    let rest = part[streams * len..]
        .iter()
        .fold(0u64, |a, &x| a.wrapping_add(x));
    acc.iter().fold(rest, |a, &x| a.wrapping_add(x))
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
                for streams in [1, 4] {
                    assert_eq!(
                        sum_in_parallel(&buf, threads, streams),
                        want,
                        "n {n} threads {threads} streams {streams}"
                    );
                }
            }
        }
        // wrapping, never a panic
        assert_eq!(sum_in_parallel(&[u64::MAX, 2], 1, 1), 1);
        assert_eq!(sum_in_parallel(&[u64::MAX, 2], 1, 4), 1);
    }

    /// With a clock that says every pass took one second, the probe's bandwidth is the bytes one
    /// pass reads: the buffer's size (`bytes` rounded down to whole u64s, at least 1024 of them),
    /// every element read once per pass whatever the threads and streams.
    #[test]
    fn the_probe_counts_the_bytes_of_the_buffer_it_reads() {
        for (asked, buffer) in [(1 << 20, 1 << 20), (1000, 8 * 1024), (80_004, 80_000)] {
            let n = buffer as u64 / 8;
            let mut passes = 0;
            let mut one_second = |read: &dyn Fn() -> u64| {
                assert_eq!(read(), n * (n - 1) / 2, "a pass sums 0..{n} once");
                passes += 1;
                1.0
            };
            assert_eq!(probe(asked, 3, 2, &mut one_second), buffer as f64);
            assert_eq!(passes, 2 * 4, "2 repeats x 4 ways");
        }
        let mut half_a_second = |read: &dyn Fn() -> u64| {
            read();
            0.5
        };
        assert_eq!(
            probe(1 << 20, 1, 1, &mut half_a_second),
            2.0 * (1 << 20) as f64
        );
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
