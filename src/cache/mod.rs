//! The host KV cache: fixed-capacity slot arrays per layer with a position and a score per slot.

pub mod store;

pub use store::{KvBuf, KvStore, NewKv, NewTokens};
