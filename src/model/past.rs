//! PastKv: the narrow view of the KV cache a graph run reads (the K/V layout, batch rows, each
//! layer's capacity, the buffers that hold the past K/V), so that `Model::run` takes this instead of
//! the whole store; and host buffers bound as the graph's past inputs without a copy.

use half::f16;
use ort::session::SessionInputValue;
use ort::value::{PrimitiveTensorElementType, TensorRef};

use crate::cache::{KvBuffers, KvElement, KvLayout, KvStore};
use crate::dtype::KvDtype;
use crate::error::{Error, Result};

/// What a run reads of the cache. The decoder hands its [`KvStore`]; the model binds every layer's
/// `[batch, heads, capacity, head_dim]` K and V from [`PastKv::buffers`]: host buffers as slices, its
/// own device buffers (`super::DeviceKv`) as views of their pool.
pub trait PastKv {
    /// Layers, heads, head_dim and element type of the K/V.
    fn layout(&self) -> KvLayout;
    /// Batch rows.
    fn batch(&self) -> usize;
    /// Layer `layer`'s slots per (batch, head): its past length in the graph.
    fn capacity(&self, layer: usize) -> usize;
    /// The buffers holding every layer's K and V.
    fn buffers(&self) -> &dyn KvBuffers;
}

impl PastKv for KvStore {
    fn layout(&self) -> KvLayout {
        KvLayout {
            layers: self.num_layers(),
            heads: self.heads(),
            head_dim: self.head_dim(),
            dtype: self.dtype(),
        }
    }

    fn batch(&self) -> usize {
        KvStore::batch(self)
    }

    fn capacity(&self, layer: usize) -> usize {
        self.layer_capacity(layer)
    }

    fn buffers(&self) -> &dyn KvBuffers {
        KvStore::buffers(self)
    }
}

/// Layer `layer`'s K and V of host buffers as graph inputs `[batch, heads, capacity, head_dim]`,
/// without a copy.
pub(super) fn bind_host(
    buffers: &dyn KvBuffers,
    layer: usize,
) -> Result<[SessionInputValue<'_>; 2]> {
    match buffers.dtype() {
        KvDtype::Float32 => bind_typed::<f32>(buffers, layer),
        KvDtype::Float16 => bind_typed::<f16>(buffers, layer),
    }
}

fn bind_typed<T: KvElement + PrimitiveTensorElementType>(
    buffers: &dyn KvBuffers,
    layer: usize,
) -> Result<[SessionInputValue<'_>; 2]> {
    let host = buffers.host::<T>().ok_or_else(|| {
        Error::Store(format!(
            "K/V buffers of {} that are neither in host memory nor this model's device buffers cannot be bound as past",
            T::DTYPE.name()
        ))
    })?;
    let shape = host.shape(layer);
    let (k, v) = host.kv(layer);
    let bind = |data| {
        TensorRef::from_array_view((shape, data))
            .map(Into::into)
            .map_err(|e| Error::ort("binding the cache as past K/V", e))
    };
    Ok([bind(k)?, bind(v)?])
}
