//! The KV cache: per layer a slot table (positions, scores, slots in use) that plans each step on the
//! host, and K/V buffers that apply the plan (host memory, or ONNX Runtime device memory).

pub mod buffers;
pub mod device;
mod history;
pub mod plan;
mod scores;
pub mod sizing;
pub mod slots;
pub mod store;

pub use buffers::{host_buffers, HostKv, KvBuffers, KvElement, NewKv};
pub use device::DeviceKv;
pub use plan::{LayerPlan, NOT_STORED};
pub use sizing::{grown_capacity, slots_after, KvLayout};
pub use slots::SlotTable;
pub use store::{KvStore, NewTokens};

#[cfg(test)]
mod proptests;
