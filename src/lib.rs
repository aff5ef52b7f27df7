//! h2o-engine: Pythia (GPT-NeoX) decoding through ONNX Runtime with a host-managed KV cache.

pub mod cache;
pub mod catalogue;
pub mod decoder;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod heatmap;
pub mod locate;
pub mod manifest;
pub mod model;
pub mod output;
pub mod png;
pub mod policy;
pub mod report;
pub mod runner;
pub mod runtime;
pub mod sweep;
pub mod timing;

pub use error::{Error, Result};
