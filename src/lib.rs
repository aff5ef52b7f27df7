//! h2o-engine: Pythia (GPT-NeoX) decoding through ONNX Runtime with a host-managed KV cache.

pub mod heatmap;
pub mod policy;
pub mod timing;
