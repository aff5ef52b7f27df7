//! Which layers to draw (`--layers`), and the file names of the pictures.

use super::error::{HeatmapError, Result};

/// The default layers for a model with `num_layers` layers: shallow, middle and deep.
///
/// That is `2, L/2, L-2` (for Pythia-2.8B's 32 layers exactly the seed's 2, 16, 30; for 8 layers
/// 2, 4, 6). For small models the shallow layer is `min(2, L/4)` so the three stay apart where
/// they can; every index is clamped to `L-1`, and the list is sorted and deduplicated (4 layers
/// give 1, 2; one layer gives 0). Zero layers give an empty list.
pub fn default_layers(num_layers: usize) -> Vec<usize> {
    if num_layers == 0 {
        return Vec::new();
    }
    let last = num_layers - 1;
    let shallow = 2.min(num_layers / 4);
    let mid = num_layers / 2;
    let deep = num_layers.saturating_sub(2);
    let mut layers: Vec<usize> = [shallow, mid, deep].iter().map(|&l| l.min(last)).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
}

/// Parses a `--layers` value such as `"2,16,30"` (or `"all"`) for a model with `num_layers` layers.
///
/// Spaces around entries are allowed; the result is sorted and deduplicated. Out-of-range layers,
/// empty entries and non-numbers are refused with a message naming the valid range.
pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    if num_layers == 0 {
        return Err(HeatmapError::NoLayers);
    }
    let trimmed = spec.trim();
    if trimmed.eq_ignore_ascii_case("all") {
        return Ok((0..num_layers).collect());
    }
    if trimmed.is_empty() {
        return Err(HeatmapError::BadLayerSpec {
            spec: spec.to_string(),
            reason: "the list is empty".to_string(),
        });
    }
    let mut layers = Vec::new();
    for part in trimmed.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(HeatmapError::BadLayerSpec {
                spec: spec.to_string(),
                reason: "empty entry between commas".to_string(),
            });
        }
        let layer: usize = part.parse().map_err(|_| HeatmapError::BadLayerSpec {
            spec: spec.to_string(),
            reason: format!("{part:?} is not a layer number (a non-negative integer)"),
        })?;
        if layer >= num_layers {
            return Err(HeatmapError::LayerOutOfRange { layer, num_layers });
        }
        layers.push(layer);
    }
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}

/// File name of the log-scale heatmap of `layer`, like the seed's: `heatmap_layer_02_log.png`.
pub fn heatmap_file_name(layer: usize) -> String {
    format!("heatmap_layer_{layer:02}_log.png")
}

/// File name of the kept-tokens picture of `layer`: `kept_layer_02.png`.
pub fn kept_file_name(layer: usize) -> String {
    format!("kept_layer_{layer:02}.png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed_for_32_layers() {
        assert_eq!(default_layers(32), vec![2, 16, 30]);
    }

    #[test]
    fn defaults_for_small_models() {
        assert_eq!(default_layers(8), vec![2, 4, 6]);
        assert_eq!(default_layers(6), vec![1, 3, 4]);
        assert_eq!(default_layers(4), vec![1, 2]);
        assert_eq!(default_layers(2), vec![0, 1]);
        assert_eq!(default_layers(1), vec![0]);
        assert!(default_layers(0).is_empty());
        for l in 1..80 {
            let d = default_layers(l);
            assert!(!d.is_empty() && d.iter().all(|&x| x < l), "L={l}: {d:?}");
            assert!(d.windows(2).all(|w| w[0] < w[1]), "L={l}: {d:?}");
        }
    }

    #[test]
    fn parse_accepts_lists_and_all() {
        assert_eq!(parse_layers("2,16,30", 32).unwrap(), vec![2, 16, 30]);
        assert_eq!(parse_layers(" 30 , 2,2 ", 32).unwrap(), vec![2, 30]);
        assert_eq!(parse_layers("all", 3).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn parse_refuses_out_of_range_with_the_range() {
        let err = parse_layers("2,16,32", 32).unwrap_err();
        assert!(matches!(
            err,
            HeatmapError::LayerOutOfRange {
                layer: 32,
                num_layers: 32
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("32 layers") && msg.contains("0..=31"), "{msg}");
    }

    #[test]
    fn parse_refuses_garbage() {
        for bad in ["", "2,,3", "two", "-1", "1.5"] {
            assert!(
                matches!(parse_layers(bad, 8), Err(HeatmapError::BadLayerSpec { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(parse_layers("0", 0), Err(HeatmapError::NoLayers)));
    }

    #[test]
    fn file_names_have_two_digits() {
        assert_eq!(heatmap_file_name(2), "heatmap_layer_02_log.png");
        assert_eq!(heatmap_file_name(30), "heatmap_layer_30_log.png");
        assert_eq!(kept_file_name(7), "kept_layer_07.png");
    }
}
