//! The KV cache: per layer a slot table (positions, scores, slots in use) that plans each step on the
//! host, and K/V buffers that apply the plan (host memory here, or buffers the caller supplies, e.g.
//! the model's device store). Nothing here knows ONNX Runtime or the model.

pub mod buffers;
pub mod fold;
mod history;
pub mod new_tokens;
pub mod plan;
mod scores;
pub mod sizing;
pub mod slots;
pub mod store;

pub use buffers::{host_buffers, HostKv, KvBuffers};
pub use fold::fold_query_heads;
pub use new_tokens::{KvElement, NewKv, NewTokens};
pub use plan::{LayerPlan, NOT_STORED};
pub use sizing::{grown_capacity, slots_after, KvLayout};
pub use slots::SlotTable;
pub use store::KvStore;

#[cfg(test)]
mod proptests;
