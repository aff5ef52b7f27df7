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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{LayerPlan, NewKv, NewTokens};
    use crate::policy::FullPolicy;

    /// Two layers of limits 3 and 1 (chunk 4), batch 1, 2 heads, head_dim 2: two tokens into layer 0
    /// only grow it to its limit; layer 1 stays empty.
    #[test]
    fn a_stores_view_has_its_layout_and_each_layers_capacity() {
        let mut s = KvStore::with_limits(&[3, 1], 1, 2, 2, KvDtype::Float16, 4).unwrap();
        let kv = [f16::ONE; 2 * 2 * 2];
        let new = NewTokens {
            k: NewKv::of(&kv),
            v: NewKv::of(&kv),
            attention: &[0.5; 2 * 2],
            past: 0,
            positions: &[0, 1],
            mask: &[1, 1],
            seq: 2,
        };
        s.update(0, &new, &FullPolicy::new()).unwrap();
        let view: &dyn PastKv = &s;
        assert_eq!(
            view.layout(),
            KvLayout {
                layers: 2,
                heads: 2,
                head_dim: 2,
                dtype: KvDtype::Float16
            }
        );
        assert_eq!(view.batch(), 1);
        assert_eq!([view.capacity(0), view.capacity(1)], [3, 0]);
        assert_eq!(view.buffers().host::<f16>().unwrap().shape(0), [1, 2, 3, 2]);
    }

    /// Buffers that are neither host buffers nor the model's device buffers.
    #[derive(Debug)]
    struct Elsewhere;
    impl KvBuffers for Elsewhere {
        fn dtype(&self) -> KvDtype {
            KvDtype::Float32
        }
        fn grow(&mut self, _layer: usize, _capacity: usize) {}
        fn apply(&mut self, _: usize, _: &LayerPlan, _: &NewKv<'_>, _: &NewKv<'_>) -> Result<()> {
            Ok(())
        }
        fn allocated_bytes(&self) -> usize {
            0
        }
    }

    #[test]
    fn buffers_of_unknown_memory_are_refused_not_bound() {
        let e = bind_host(&Elsewhere, 0).err().unwrap().to_string();
        assert!(
            e.contains("float32") && e.contains("neither in host memory"),
            "{e}"
        );
    }
}
