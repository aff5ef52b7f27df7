//! Attention heatmaps: data shaping (lower-triangular attention matrices, layer choice, labels)
//! and PNG rendering with plotters and a shipped font (DejaVu Sans), like the seed's
//! plot_heatmap.py (`heatmap_layer_XX_log.png`, logarithmic colour normalisation).

mod collect;
mod error;
mod labels;
mod layers;
mod matrix;
mod render;
mod text;

pub use collect::{collect_attention, heatmap_tokens, kept_at_end, HeadChoice, LayerAttention};
pub use error::{HeatmapError, Result};
pub use labels::{clean_label, token_labels, AxisLabels, MAX_LABEL_PX, MIN_LABEL_PX};
pub use layers::{default_layers, heatmap_file_name, kept_file_name, parse_layers};
pub use matrix::{mean_rows, AttentionMatrix};
pub use render::{
    check_floor, heatmap_image_size, kept_image_size, register_shipped_font,
    render_attention_heatmap, render_kept_tokens, FONT_FAMILY,
};
pub use text::{require_text, DEFAULT_TEXT};
