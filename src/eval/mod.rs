//! Evaluation on text: token loading and streaming perplexity.

pub mod data;
pub mod ppl;
