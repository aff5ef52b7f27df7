//! Errors of the heatmap module: bad input is refused with a message naming what was wrong.

use std::path::PathBuf;

/// Everything that can go wrong while shaping attention data or drawing a picture.
#[derive(Debug, thiserror::Error)]
pub enum HeatmapError {
    /// The text to analyse is empty (or only whitespace).
    #[error("empty text: give some text to analyse")]
    EmptyText,
    /// A head choice that is neither an index nor `mean`.
    #[error("head {0:?}: use a head index or `mean`")]
    Head(String),
    /// A head the model does not have.
    #[error("head {head} is out of range: the model has {heads} heads (0..={max})", max = heads.saturating_sub(1))]
    HeadOutOfRange {
        /// The requested head.
        head: usize,
        /// How many heads the model has.
        heads: usize,
    },
    /// The attention matrix (or score table) has no rows.
    #[error("empty attention matrix: no query rows were collected, nothing to draw")]
    EmptyMatrix,
    /// The model has no layers, so no layer can be chosen.
    #[error("the model reports 0 layers: no layer to draw")]
    NoLayers,
    /// A requested layer does not exist in the model.
    #[error("layer {layer} is out of range: the model has {num_layers} layers (valid: 0..={max})", max = num_layers.saturating_sub(1))]
    LayerOutOfRange {
        /// The requested layer.
        layer: usize,
        /// How many layers the model has.
        num_layers: usize,
    },
    /// A layer list that does not parse.
    #[error("bad layer list {spec:?}: {reason} (expected e.g. \"2,16,30\" or \"all\")")]
    BadLayerSpec {
        /// The list as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An attention row with the wrong length or a bad value.
    #[error("bad attention row {row}: {reason}")]
    BadRow {
        /// Index of the query row.
        row: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Inputs whose shapes or values do not fit together (labels, masks, scores, floor).
    #[error("bad input: {0}")]
    BadInput(String),
    /// A colour floor outside (0, 1).
    #[error("colour floor {0}: it must be between 0 and 1 (exclusive), e.g. 1e-4; attention probabilities are at most 1, so a floor of 1 or more draws a blank picture")]
    Floor(f32),
    /// The shipped font could not be registered with plotters.
    #[error("the shipped font (assets/fonts/DejaVuSans.ttf) could not be loaded")]
    Font,
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The picture's path cannot be written (see [`crate::output`]).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// plotters failed while drawing or encoding the picture.
    #[error("drawing {} failed: {message}", path.display())]
    Draw {
        /// The picture being written.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
}

/// A heatmap error met inside the engine (the collector, a decoder's observer) travels in the
/// library's error as it is.
impl From<HeatmapError> for crate::Error {
    fn from(e: HeatmapError) -> Self {
        crate::Error::Other(Box::new(e))
    }
}

/// Result type of the heatmap module.
pub type Result<T> = std::result::Result<T, HeatmapError>;
