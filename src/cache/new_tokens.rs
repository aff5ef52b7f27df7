//! What a graph run hands the cache for one layer: the new tokens' K/V ([`NewKv`], typed by
//! [`KvElement`]), their attention sums, positions and mask ([`NewTokens`]).

use half::f16;

use crate::dtype::KvDtype;

/// What a step adds to one layer.
#[derive(Debug, Clone, Copy)]
pub struct NewTokens<'a> {
    /// New keys, `[batch, heads, seq, head_dim]` (rotated).
    pub k: NewKv<'a>,
    /// New values, `[batch, heads, seq, head_dim]`.
    pub v: NewKv<'a>,
    /// The step's attention sums, `[batch, heads, past + seq]`.
    pub attention: &'a [f32],
    /// The layer's capacity when the graph ran (the store may grow before writing).
    pub past: usize,
    /// Absolute positions of the new tokens, `[batch, seq]`.
    pub positions: &'a [i64],
    /// 1 for a real token, 0 for padding, `[batch, seq]`.
    pub mask: &'a [i64],
    pub seq: usize,
}

/// The new tokens' K or V of one layer as the graph returned them, `[batch, heads, seq, head_dim]`.
#[derive(Debug, Clone, Copy)]
pub enum NewKv<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// Left on the device by the run, in the buffers the model bound for them (device store).
    Device,
}

impl<'a> NewKv<'a> {
    /// Wrap a typed slice.
    pub fn of<T: KvElement>(data: &'a [T]) -> Self {
        T::wrap(data)
    }
}

/// An element type K/V can be stored in (f32 or f16): the one place that ties a Rust type to its
/// [`KvDtype`] and its [`NewKv`] variant.
pub trait KvElement: Copy + Default + std::fmt::Debug + Send + Sync + 'static {
    const DTYPE: KvDtype;
    fn wrap(data: &[Self]) -> NewKv<'_>;
    fn unwrap<'a>(kv: &NewKv<'a>) -> Option<&'a [Self]>;
}

/// `KvElement` for a Rust type, its dtype and its `NewKv` variant.
macro_rules! kv_element {
    ($t:ty, $dtype:ident, $variant:ident) => {
        impl KvElement for $t {
            const DTYPE: KvDtype = KvDtype::$dtype;
            fn wrap(data: &[Self]) -> NewKv<'_> {
                NewKv::$variant(data)
            }
            fn unwrap<'a>(kv: &NewKv<'a>) -> Option<&'a [Self]> {
                match *kv {
                    NewKv::$variant(s) => Some(s),
                    _ => None,
                }
            }
        }
    };
}

kv_element!(f32, Float32, F32);
kv_element!(f16, Float16, F16);
