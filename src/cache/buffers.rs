//! K/V buffers: where a layer's keys and values live, behind one small interface (grow, apply a plan).
//! [`HostKv`] keeps them in host memory for any element type; other buffers (the model's device
//! store, `model::DeviceKv`) are made by whoever drives them and handed to the store as a
//! `Box<dyn KvBuffers>`, taking the same host-side [`LayerPlan`].

use std::any::Any;

use half::f16;

use super::new_tokens::{KvElement, NewKv};
use super::plan::{LayerPlan, NOT_STORED};
use crate::dtype::KvDtype;
use crate::error::{Error, Result};

/// Storage of every layer's K and V, `[batch, heads, capacity, head_dim]` each. The slot table decides
/// (the plan); this only moves bytes. Capacities may differ between layers. How a graph reads them
/// as past is the model's business: it binds [`HostKv`]'s slices, or its own buffers, which it finds
/// again by their type (the `Any` supertrait).
pub trait KvBuffers: Any + std::fmt::Debug + Send {
    /// Element type of K and V.
    fn dtype(&self) -> KvDtype;
    /// Resize layer `layer` to `capacity` slots per (batch, head), keeping the slots it has.
    fn grow(&mut self, layer: usize, capacity: usize);
    /// Write the new tokens' K and V of layer `layer` into the slots `plan` gives them. Checks the
    /// dtype and length of `key`/`value` before writing anything.
    fn apply(
        &mut self,
        layer: usize,
        plan: &LayerPlan,
        key: &NewKv<'_>,
        value: &NewKv<'_>,
    ) -> Result<()>;
    /// Bytes allocated for K and V, all layers.
    fn allocated_bytes(&self) -> usize;
}

impl dyn KvBuffers {
    /// These buffers when they are host buffers of element type `T`.
    pub fn host<T: KvElement>(&self) -> Option<&HostKv<T>> {
        let any: &dyn Any = self;
        any.downcast_ref()
    }
}

/// Host buffers for `layers` layers of `batch x heads` rows of `head_dim` elements per slot.
pub fn host_buffers(
    dtype: KvDtype,
    layers: usize,
    batch: usize,
    heads: usize,
    head_dim: usize,
) -> Box<dyn KvBuffers> {
    match dtype {
        KvDtype::Float32 => Box::new(HostKv::<f32>::new(layers, batch, heads, head_dim)),
        KvDtype::Float16 => Box::new(HostKv::<f16>::new(layers, batch, heads, head_dim)),
    }
}

/// K and V in host memory, one `Vec<T>` each per layer.
#[derive(Debug, Clone)]
pub struct HostKv<T> {
    batch: usize,
    heads: usize,
    head_dim: usize,
    /// Per layer `[K, V]`, `[batch, heads, capacity, head_dim]` each.
    layers: Vec<[Vec<T>; 2]>,
}

impl<T: KvElement> HostKv<T> {
    pub fn new(layers: usize, batch: usize, heads: usize, head_dim: usize) -> Self {
        Self {
            batch,
            heads,
            head_dim,
            layers: (0..layers).map(|_| [Vec::new(), Vec::new()]).collect(),
        }
    }

    /// Slots per (batch, head) of layer `layer`.
    pub fn capacity(&self, layer: usize) -> usize {
        let row = self
            .batch
            .saturating_mul(self.heads)
            .saturating_mul(self.head_dim);
        self.layers[layer][0].len().checked_div(row).unwrap_or(0)
    }

    /// The shape of layer `layer`'s K and of its V: `[batch, heads, capacity, head_dim]`.
    pub fn shape(&self, layer: usize) -> [usize; 4] {
        [self.batch, self.heads, self.capacity(layer), self.head_dim]
    }

    /// Layer `layer`'s K and V, `[batch, heads, capacity, head_dim]`.
    pub fn kv(&self, layer: usize) -> (&[T], &[T]) {
        let [k, v] = &self.layers[layer];
        (k, v)
    }
}

impl<T: KvElement> KvBuffers for HostKv<T> {
    fn dtype(&self) -> KvDtype {
        T::DTYPE
    }

    fn grow(&mut self, layer: usize, capacity: usize) {
        let (rows, d) = (self.batch * self.heads, self.head_dim);
        let old = self.capacity(layer);
        let keep = old.min(capacity);
        for buf in &mut self.layers[layer] {
            let mut grown = vec![T::default(); rows * capacity * d];
            for r in 0..rows {
                grown[r * capacity * d..(r * capacity + keep) * d]
                    .copy_from_slice(&buf[r * old * d..(r * old + keep) * d]);
            }
            *buf = grown;
        }
    }

    fn apply(
        &mut self,
        layer: usize,
        plan: &LayerPlan,
        key: &NewKv<'_>,
        value: &NewKv<'_>,
    ) -> Result<()> {
        let (rows, d, seq) = (self.batch * self.heads, self.head_dim, plan.seq());
        let want = rows * seq * d;
        let k = T::unwrap(key).filter(|s| s.len() == want);
        let v = T::unwrap(value).filter(|s| s.len() == want);
        let (Some(k), Some(v)) = (k, v) else {
            return Err(Error::Store(format!(
                "new K/V must be {want} values [batch {} x heads {} x seq {seq} x head_dim {d}] of {}",
                self.batch,
                self.heads,
                T::DTYPE.name()
            )));
        };
        let cap = self.capacity(layer);
        if plan.capacity() != cap {
            return Err(Error::Store(format!(
                "plan for {} slots applied to layer {layer} of {cap}",
                plan.capacity()
            )));
        }
        for (buf, src) in self.layers[layer].iter_mut().zip([k, v]) {
            for (i, &slot) in plan.dest_all().iter().enumerate() {
                if slot == NOT_STORED {
                    continue;
                }
                // i = r * seq + j over [batch x heads, seq]
                let (r, s) = (i / seq, i * d);
                let dst = (r * cap + slot as usize) * d;
                buf[dst..dst + d].copy_from_slice(&src[s..s + d]);
            }
        }
        Ok(())
    }

    fn allocated_bytes(&self) -> usize {
        let n: usize = self.layers.iter().map(|[k, v]| k.len() + v.len()).sum();
        n * T::DTYPE.size()
    }
}
