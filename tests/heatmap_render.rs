//! Rendering tests for the heatmap module: PNG size, non-uniform pixels, refusals.

use std::path::Path;

use h2o_engine::heatmap::{
    default_layers, heatmap_file_name, heatmap_image_size, kept_file_name, kept_image_size,
    parse_layers, render_attention_heatmap, render_kept_tokens, AttentionMatrix, HeatmapError,
    DEFAULT_TEXT,
};

/// A causal attention pattern with a sink column and a punctuation stripe, rows summing to 1.
fn synthetic(n: usize) -> AttentionMatrix {
    let mut m = AttentionMatrix::new();
    for i in 0..n {
        let mut row: Vec<f32> = (0..=i)
            .map(|k| {
                let base = 1.0 / (1.0 + (i - k) as f32).powi(2);
                let sink = if k == 0 { 5.0 } else { 0.0 };
                let stripe = if k % 7 == 3 { 0.5 } else { 0.0 };
                base + sink + stripe + 1e-6
            })
            .collect();
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
        m.push_row(&row).unwrap();
    }
    m
}

fn labels(n: usize) -> Vec<String> {
    let words = [
        "ĠThe",
        "Ġcat",
        ",",
        "Ġsat",
        "Ċ",
        "Ġon",
        ".",
        "Ġ",
        "(",
        "\"",
        "Ġextraordinarily",
    ];
    (0..n).map(|i| words[i % words.len()].to_string()).collect()
}

fn decode(path: &Path) -> image::RgbImage {
    image::open(path).expect("decode PNG").to_rgb8()
}

fn distinct_colours(img: &image::RgbImage) -> usize {
    let mut seen = std::collections::HashSet::new();
    for p in img.pixels() {
        seen.insert(p.0);
        if seen.len() > 64 {
            break;
        }
    }
    seen.len()
}

#[test]
fn heatmap_png_has_expected_size_and_content() {
    let dir = tempfile::tempdir().unwrap();
    for n in [6usize, 80, 150] {
        let path = dir.path().join(heatmap_file_name(n));
        let m = synthetic(n);
        m.check_rows_sum_to_one(1e-4).unwrap();
        render_attention_heatmap(
            &m,
            &labels(n),
            "pythia-test: layer 2, mean over heads",
            1e-4,
            &path,
        )
        .unwrap();
        let img = decode(&path);
        let (w, h) = heatmap_image_size(n);
        assert_eq!((img.width(), img.height()), (w, h), "n={n}");
        assert!((900..=1600).contains(&w));
        assert!(distinct_colours(&img) > 20, "n={n}: too uniform");
        // Upper triangle is background: a pixel just right of the plot's top-left is white
        // for n > 1 (query 0 sees only key 0), the one at the bottom-left is coloured.
        let plot = w - 340;
        let top_right = img.get_pixel(170 + plot - 5, 100 + 5).0;
        let bottom_left = img.get_pixel(170 + 5, 100 + plot - 5).0;
        assert_eq!(top_right, [255, 255, 255], "n={n}");
        assert_ne!(bottom_left, [255, 255, 255], "n={n}");
    }
    assert_eq!(heatmap_image_size(6), (900, 900));
    assert_eq!(heatmap_image_size(1000), (1600, 1600));
}

#[test]
fn single_token_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.png");
    let m = AttentionMatrix::from_rows([vec![1.0f32]]).unwrap();
    render_attention_heatmap(&m, &["ĠHello".to_string()], "one token", 1e-4, &path).unwrap();
    assert_eq!(decode(&path).dimensions(), heatmap_image_size(1));
    render_kept_tokens(&[vec![0.0]], &[], &[], "all zero", &path).unwrap();
}

#[test]
fn labels_may_be_empty_but_not_mismatched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.png");
    let m = synthetic(10);
    render_attention_heatmap(&m, &[], "positions only", 1e-3, &path).unwrap();
    let err = render_attention_heatmap(&m, &labels(9), "t", 1e-3, &path).unwrap_err();
    assert!(matches!(err, HeatmapError::BadInput(_)), "{err}");
    // issue 19 item 4: a floor of 1 or more drew a blank picture; the floor is in (0, 1)
    for floor in [0.0, -1.0, f32::NAN, 1.0, 2.0, f32::INFINITY] {
        let err = render_attention_heatmap(&m, &[], "t", floor, &path).unwrap_err();
        assert!(
            err.to_string().contains("between 0 and 1"),
            "{floor}: {err}"
        );
    }
}

#[test]
fn empty_matrix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    let err = render_attention_heatmap(&AttentionMatrix::new(), &[], "t", 1e-4, &path).unwrap_err();
    assert!(matches!(err, HeatmapError::EmptyMatrix));
    assert!(err.to_string().contains("empty"));
    assert!(!path.exists(), "nothing written for refused input");
    let err = render_kept_tokens(&[], &[], &[], "t", &path).unwrap_err();
    assert!(matches!(err, HeatmapError::EmptyMatrix));
}

#[test]
fn unwritable_path_names_the_path() {
    let m = synthetic(4);
    let path = Path::new("/nonexistent-dir-h2o/x.png");
    let err = render_attention_heatmap(&m, &[], "t", 1e-4, path).unwrap_err();
    assert!(matches!(err, HeatmapError::Output(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent-dir-h2o/x.png"));
    assert!(
        !Path::new("/nonexistent-dir-h2o").exists(),
        "no folder created"
    );
}

/// Per-policy kept masks: (policy spec, [heads][tokens]).
type Kept = Vec<(String, Vec<Vec<bool>>)>;

fn kept_inputs(heads: usize, n: usize, budget: usize) -> (Vec<Vec<f32>>, Kept) {
    let m = synthetic(n);
    let cols = m.column_sums();
    let scores: Vec<Vec<f32>> = (0..heads)
        .map(|h| {
            cols.iter()
                .enumerate()
                .map(|(t, &c)| c * (1.0 + ((h * 31 + t * 17) % 5) as f32 * 0.3))
                .collect()
        })
        .collect();
    let local: Vec<Vec<bool>> = (0..heads)
        .map(|_| (0..n).map(|t| t + budget >= n).collect())
        .collect();
    let h2o: Vec<Vec<bool>> = scores
        .iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let heavy: std::collections::HashSet<usize> =
                idx.into_iter().take(budget / 2).collect();
            (0..n)
                .map(|t| heavy.contains(&t) || t + budget / 2 >= n)
                .collect()
        })
        .collect();
    (
        scores,
        vec![
            (format!("h2o:budget={budget}"), h2o),
            (format!("local:budget={budget}"), local),
        ],
    )
}

#[test]
fn kept_tokens_picture_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (heads, n) in [(32usize, 80usize), (4, 12)] {
        let (scores, kept) = kept_inputs(heads, n, n / 3);
        let path = dir.path().join(kept_file_name(heads));
        render_kept_tokens(&scores, &labels(n), &kept, "pythia-test: layer 16", &path).unwrap();
        let img = decode(&path);
        assert_eq!(
            (img.width(), img.height()),
            kept_image_size(heads, n, kept.len())
        );
        assert!(distinct_colours(&img) > 20);
    }
    // No policy: one unmarked panel.
    let (scores, _) = kept_inputs(4, 12, 4);
    let path = dir.path().join("plain.png");
    render_kept_tokens(&scores, &[], &[], "plain", &path).unwrap();
    let img = decode(&path);
    assert_eq!((img.width(), img.height()), kept_image_size(4, 12, 1));
}

#[test]
fn kept_masks_must_match_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let (scores, mut kept) = kept_inputs(4, 12, 4);
    kept[1].1[2].pop();
    let err = render_kept_tokens(&scores, &[], &kept, "t", &path).unwrap_err();
    assert!(err.to_string().contains("local:budget=4"), "{err}");
    let mut bad = scores.clone();
    bad[1][3] = f32::NAN;
    assert!(render_kept_tokens(&bad, &[], &[], "t", &path).is_err());
}

#[test]
fn layers_and_text() {
    assert_eq!(default_layers(32), vec![2, 16, 30]);
    assert_eq!(default_layers(8), vec![2, 4, 6]);
    let err = parse_layers("2,40", 32).unwrap_err();
    assert!(err.to_string().contains("0..=31"), "{err}");
    assert!(!DEFAULT_TEXT.trim().is_empty());
}

/// Writes sample pictures to $HEATMAP_SAMPLE_DIR for looking at them (skipped when unset).
#[test]
fn write_samples_when_asked() {
    let Some(dir) = std::env::var_os("HEATMAP_SAMPLE_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let n = 80;
    render_attention_heatmap(
        &synthetic(n),
        &labels(n),
        "synthetic: layer 2, mean over heads",
        1e-4,
        &dir.join(heatmap_file_name(2)),
    )
    .unwrap();
    let (scores, kept) = kept_inputs(32, n, 24);
    render_kept_tokens(
        &scores,
        &labels(n),
        &kept,
        "synthetic: layer 2",
        &dir.join(kept_file_name(2)),
    )
    .unwrap();
}
