//! Evaluation on text: token loading, the declared BOS, streaming perplexity, speed (batch
//! decoding), throughput under a K/V memory cap, and text generation.

pub mod bandwidth;
pub mod bos;
pub mod data;
pub mod decode;
pub mod generate;
pub mod memory;
pub mod ppl;
pub mod speed;
pub mod throughput;
