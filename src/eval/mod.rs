//! Evaluation on text: token loading and streaming perplexity.

pub mod bandwidth;
pub mod data;
pub mod memory;
pub mod ppl;
pub mod speed;
