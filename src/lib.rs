//! h2o-engine: Pythia (GPT-NeoX) decoding through ONNX Runtime with a host-managed KV cache.

pub mod policy;
pub mod report;
pub mod timing;
