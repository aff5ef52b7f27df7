//! DeviceKv: K/V slot arrays in memory of ONNX Runtime's allocator for the execution provider's device
//! (CPU memory on the CPU provider, device memory under CUDA). One pool holds every layer, per layer K
//! then V, each `[batch, heads, capacity, head_dim]`; the graph reads them in place as past through
//! views bound with IoBinding. Nothing here moves K/V bytes through the host: `apply` keeps the plan's
//! destination slots, and the model's companion graphs (`binding`) grow the pool and write the kept
//! new tokens on the device, from the row indices computed here. To the cache these are just
//! [`KvBuffers`] (made by `Model::kv_buffers`); the model finds them again with [`DeviceKv::of`].

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use ort::memory::Allocator;
use ort::value::{DynTensor, PrimitiveTensorElementType, TensorElementType};
use ort::AsPointer;

use crate::cache::{KvBuffers, KvElement, LayerPlan, NewKv, NOT_STORED};
use crate::dtype::KvDtype;
use crate::error::{Error, Result};

/// Which store and which layout of it a binding was made for: a binding is stale when either changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LayoutKey {
    /// Unique per store of one model.
    pub(super) store: u64,
    /// Bumped whenever the pool is replaced (growth).
    pub(super) generation: u64,
}

/// Layers whose regions move from one capacity to another together: in both layouts their regions
/// are contiguous, so one `grow` (or `zero`) run handles them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GrowGroup {
    /// First row of the group in the old and in the new pool.
    pub(super) old_row: usize,
    pub(super) new_row: usize,
    /// Slot rows of the group: 2 (K, V) x layers x batch x heads.
    pub(super) rows: usize,
    pub(super) old_capacity: usize,
    pub(super) new_capacity: usize,
}

/// A pending growth: the new pool's size in rows of `head_dim` elements and how to fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Growth {
    pub(super) rows: usize,
    pub(super) groups: Vec<GrowGroup>,
}

/// Where each layer's K and V regions lie in the pool: layer after layer, K then V, each `[batch x
/// heads x capacity]` rows of `head_dim` elements, without gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PoolLayout {
    /// Rows of one slot across a region: batch x heads.
    rows_per_slot: usize,
    /// Slots per (batch, head) of each layer.
    capacity: Vec<usize>,
    /// First row of each layer's K region.
    starts: Vec<usize>,
    rows: usize,
}

impl PoolLayout {
    /// `layers` layers of `rows_per_slot` (batch x heads) rows per slot with these capacities.
    pub(super) fn new(rows_per_slot: usize, capacity: Vec<usize>) -> Self {
        let mut starts = Vec::with_capacity(capacity.len());
        let mut row = 0;
        for &c in &capacity {
            starts.push(row);
            row += 2 * rows_per_slot * c;
        }
        Self {
            rows_per_slot,
            capacity,
            starts,
            rows: row,
        }
    }

    pub(super) fn capacity(&self) -> &[usize] {
        &self.capacity
    }

    /// Rows of the whole pool.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// First row of layer `layer`'s K (`kv` 0) or V (`kv` 1) region.
    pub(super) fn region(&self, layer: usize, kv: usize) -> usize {
        self.starts[layer] + kv * self.rows_per_slot * self.capacity[layer]
    }

    /// Row of slot `slot` of (batch x heads) row `r` in layer `layer`'s K or V region.
    pub(super) fn row(&self, layer: usize, kv: usize, r: usize, slot: usize) -> usize {
        self.region(layer, kv) + r * self.capacity[layer] + slot
    }

    /// How to fill a pool laid out as `to` from one laid out as `self` (`None` when they are the
    /// same): consecutive layers with the same (old, new) capacities form one group.
    pub(super) fn growth_to(&self, to: &PoolLayout) -> Option<Growth> {
        if self.capacity == to.capacity {
            return None;
        }
        let mut groups: Vec<GrowGroup> = Vec::new();
        for (l, (&c_old, &c_new)) in self.capacity.iter().zip(&to.capacity).enumerate() {
            let rows = 2 * self.rows_per_slot;
            match groups.last_mut() {
                Some(g) if g.old_capacity == c_old && g.new_capacity == c_new => g.rows += rows,
                _ => groups.push(GrowGroup {
                    old_row: self.starts[l],
                    new_row: to.starts[l],
                    rows,
                    old_capacity: c_old,
                    new_capacity: c_new,
                }),
            }
        }
        Some(Growth {
            rows: to.rows,
            groups,
        })
    }

    /// The rows of a step's writes: per layer the plan's destinations `dest[layer]` (`[batch x heads,
    /// seq]`, empty for a layer without a plan), as `src` rows in the step's new K/V (per layer K then
    /// V, each `[batch x heads, seq]` rows) and `dst` rows of this pool, K then V per kept token.
    pub(super) fn write_rows(
        &self,
        dest: &[Vec<u32>],
        seq: usize,
        src: &mut Vec<i64>,
        dst: &mut Vec<i64>,
    ) {
        let block = self.rows_per_slot * seq;
        for (l, dest) in dest.iter().enumerate() {
            for (i, &slot) in dest.iter().enumerate() {
                if slot == NOT_STORED {
                    continue;
                }
                for kv in 0..2 {
                    src.push(((2 * l + kv) * block + i) as i64);
                    dst.push(self.row(l, kv, i / seq, slot as usize) as i64);
                }
            }
        }
    }
}

/// K/V of every layer in one pool of ONNX Runtime device memory.
#[derive(Debug)]
pub struct DeviceKv {
    /// Per layer `[K, V]` views `[batch, heads, capacity, head_dim]` into `pool` (declared before
    /// `pool`, so dropped before it).
    past: Vec<[DynTensor; 2]>,
    /// `[rows, head_dim]`; `None` until the first growth.
    pool: Option<DynTensor>,
    allocator: Allocator,
    dtype: KvDtype,
    batch: usize,
    heads: usize,
    head_dim: usize,
    /// The layout of `pool`.
    layout: PoolLayout,
    /// Slots per layer after the growth `grow` asked for (the layout's when none is pending).
    wanted: Vec<usize>,
    /// Per layer, the applied plan's destination slots `[batch, heads, seq]` not yet written
    /// (empty: nothing pending).
    pending: Vec<Vec<u32>>,
    /// New tokens per row of the pending plans.
    pending_seq: usize,
    key: LayoutKey,
}

impl DeviceKv {
    /// `buffers` when they are device buffers (made by `Model::kv_buffers` with kv = device).
    pub fn of(buffers: &dyn KvBuffers) -> Option<&DeviceKv> {
        let any: &dyn std::any::Any = buffers;
        any.downcast_ref()
    }

    /// [`DeviceKv::of`], mutably (the model grows them and writes the step's K/V).
    pub(super) fn of_mut(buffers: &mut dyn KvBuffers) -> Option<&mut DeviceKv> {
        let any: &mut dyn std::any::Any = buffers;
        any.downcast_mut()
    }

    /// An empty store (capacity 0) whose memory comes from `allocator`; `store` tells its bindings apart.
    pub(super) fn new(
        allocator: Allocator,
        dtype: KvDtype,
        layers: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
        store: u64,
    ) -> Result<Self> {
        let mut kv = Self {
            past: Vec::new(),
            pool: None,
            allocator,
            dtype,
            batch,
            heads,
            head_dim,
            layout: PoolLayout::new(batch * heads, vec![0; layers]),
            wanted: vec![0; layers],
            pending: vec![Vec::new(); layers],
            pending_seq: 0,
            key: LayoutKey {
                store,
                generation: 0,
            },
        };
        kv.past = kv.views_of(None, &kv.layout)?;
        Ok(kv)
    }

    pub(super) fn key(&self) -> LayoutKey {
        self.key
    }

    pub(super) fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Layer `layer`'s K and V views `[batch, heads, capacity, head_dim]`.
    pub(super) fn past(&self, layer: usize) -> &[DynTensor; 2] {
        &self.past[layer]
    }

    /// The pool `[rows, head_dim]` (the `write` graph's in-place operand), once allocated.
    pub(super) fn pool(&self) -> Option<&DynTensor> {
        self.pool.as_ref()
    }

    /// Whether a growth or applied plans wait for the model's `write_kv` (a run must not read the
    /// store before).
    pub(super) fn has_pending(&self) -> bool {
        self.has_writes() || self.wanted != self.layout.capacity()
    }

    fn has_writes(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }

    /// The growth `grow` asked for since the last [`DeviceKv::install`], if any.
    pub(super) fn growth(&self) -> Option<Growth> {
        self.layout.growth_to(&PoolLayout::new(
            self.batch * self.heads,
            self.wanted.clone(),
        ))
    }

    /// A fresh `[rows, head_dim]` tensor of this store's memory. A device allocator leaves it
    /// uninitialised; host memory is filled with NaN here, so that on the CPU provider too every row
    /// the graph reads must have been written by the companion graphs (zeroed, padded or scattered).
    pub(super) fn allocate(&self, rows: usize) -> Result<DynTensor> {
        let fail = |e: ort::Error| {
            Error::ort(
                format!("allocating {rows} K/V rows of {}", self.dtype.name()),
                e,
            )
        };
        let mut t = DynTensor::new(
            &self.allocator,
            element_type(self.dtype),
            [rows, self.head_dim],
        )
        .map_err(fail)?;
        if t.memory_info().is_cpu_accessible() {
            match self.dtype {
                KvDtype::Float32 => t
                    .try_extract_tensor_mut::<f32>()
                    .map_err(fail)?
                    .1
                    .fill(f32::NAN),
                KvDtype::Float16 => t
                    .try_extract_tensor_mut::<half::f16>()
                    .map_err(fail)?
                    .1
                    .fill(half::f16::NAN),
            }
        }
        Ok(t)
    }

    /// A view of `shape` over `base` (a tensor of this store's memory and dtype) from row `row` on.
    pub(super) fn view(&self, base: &DynTensor, row: usize, shape: &[usize]) -> Result<DynTensor> {
        view(base, &self.allocator, row * self.head_dim, shape)
    }

    /// Make `pool` (filled by the growth's `grow`/`zero` runs) the store's pool at the wanted
    /// capacities; the views and the layout key change.
    pub(super) fn install(&mut self, pool: DynTensor) -> Result<()> {
        let layout = PoolLayout::new(self.batch * self.heads, self.wanted.clone());
        let rows = layout.rows();
        if pool.shape()[..] != [rows as i64, self.head_dim as i64] {
            return Err(Error::Store(format!(
                "a pool of shape {:?} cannot hold capacities {:?} ({rows} rows)",
                &pool.shape()[..],
                self.wanted
            )));
        }
        self.past = self.views_of(Some(&pool), &layout)?;
        self.pool = Some(pool);
        self.layout = layout;
        self.key.generation += 1;
        Ok(())
    }

    /// Per layer `[K, V]` views of `pool` laid out as `layout` (empty tensors for capacity 0).
    fn views_of(
        &self,
        pool: Option<&DynTensor>,
        layout: &PoolLayout,
    ) -> Result<Vec<[DynTensor; 2]>> {
        let (b, h, d) = (self.batch, self.heads, self.head_dim);
        layout
            .capacity()
            .iter()
            .enumerate()
            .map(|(l, &c)| {
                let one = |kv: usize| match pool {
                    Some(p) if c > 0 => self.view(p, layout.region(l, kv), &[b, h, c, d]),
                    _ => DynTensor::new(&self.allocator, element_type(self.dtype), [b, h, 0, d])
                        .map_err(|e| Error::ort("allocating an empty K/V view", e)),
                };
                Ok([one(0)?, one(1)?])
            })
            .collect()
    }

    /// The pending writes as rows: `src` in the step's new K/V (per layer K then V, each `[batch,
    /// heads, seq, head_dim]`, layer after layer: the order the run's outputs were bound in), `dst` in
    /// the pool. Clears them; call after the growth is installed.
    pub(super) fn take_writes(&mut self, src: &mut Vec<i64>, dst: &mut Vec<i64>) -> Result<()> {
        src.clear();
        dst.clear();
        if !self.has_writes() {
            return Ok(());
        }
        if self.wanted != self.layout.capacity() {
            return Err(Error::Store(
                "K/V writes are pending on a pool that has not grown yet".into(),
            ));
        }
        self.layout
            .write_rows(&self.pending, self.pending_seq, src, dst);
        self.pending.iter_mut().for_each(Vec::clear);
        Ok(())
    }

    /// Layer `layer`'s K and V copied to host vectors, when the pool is host memory (the CPU
    /// provider); for tests and debugging.
    pub fn read_host<T: KvElement + PrimitiveTensorElementType>(
        &self,
        layer: usize,
    ) -> Result<(Vec<T>, Vec<T>)> {
        if T::DTYPE != self.dtype {
            return Err(Error::Store(format!(
                "the store holds {}, not {}",
                self.dtype.name(),
                T::DTYPE.name()
            )));
        }
        let read = |t: &DynTensor| -> Result<Vec<T>> {
            if !t.memory_info().is_cpu_accessible() {
                return Err(Error::Store(
                    "K/V in device memory cannot be read from the host".into(),
                ));
            }
            if t.shape().contains(&0) {
                return Ok(Vec::new());
            }
            let (_, data) = t
                .try_extract_tensor::<T>()
                .map_err(|e| Error::ort("reading device K/V", e))?;
            Ok(data.to_vec())
        };
        let [k, v] = &self.past[layer];
        Ok((read(k)?, read(v)?))
    }
}

impl KvBuffers for DeviceKv {
    fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Recorded here; the model's `write_kv` grows the pool on the device before the step's writes.
    fn grow(&mut self, layer: usize, capacity: usize) {
        self.wanted[layer] = capacity;
    }

    /// Keeps the plan's destinations; the K/V stay where the run left them (`key`/`value` must be
    /// [`NewKv::Device`]) until the model's `write_kv`.
    fn apply(
        &mut self,
        layer: usize,
        plan: &LayerPlan,
        key: &NewKv<'_>,
        value: &NewKv<'_>,
    ) -> Result<()> {
        if !matches!((key, value), (NewKv::Device, NewKv::Device)) {
            return Err(Error::Store(
                "device K/V buffers take the new K/V the run left on the device, not host slices"
                    .into(),
            ));
        }
        let pending = self.has_writes();
        let same = plan.batch() == self.batch
            && plan.heads() == self.heads
            && plan.capacity() == self.wanted[layer]
            && (!pending || plan.seq() == self.pending_seq)
            && self.pending[layer].is_empty();
        if !same {
            return Err(Error::Store(format!(
                "plan [batch {} x heads {} x seq {}] into {} slots does not fit layer {layer} of the device store ([{} x {}], {} slots{})",
                plan.batch(), plan.heads(), plan.seq(), plan.capacity(), self.batch, self.heads,
                self.wanted[layer],
                if pending { ", a plan already pending" } else { "" }
            )));
        }
        self.pending_seq = plan.seq();
        self.pending[layer].extend_from_slice(plan.dest_all());
        Ok(())
    }

    fn allocated_bytes(&self) -> usize {
        self.layout.rows() * self.head_dim * self.dtype.size()
    }
}

/// ONNX element type of K/V in `dtype`.
pub(super) fn element_type(dtype: KvDtype) -> TensorElementType {
    match dtype {
        KvDtype::Float32 => TensorElementType::Float32,
        KvDtype::Float16 => TensorElementType::Float16,
    }
}

/// A tensor of `shape` over `base`'s memory from element `offset` on, without a copy; `allocator` is
/// only held as the view's handle (the view never frees memory).
///
/// ort's `TensorRefMut::from_raw` makes such a view, but ort 2.0.0-rc.15's `IoBinding::bind_input`
/// copies every borrowed tensor it is given (through an extra ONNX Runtime run); a tensor wrapped with
/// `Value::from_ptr` is bound as it is. The view must not be used after `base` is freed: every holder
/// of views here drops or rebinds them before their pool goes.
pub(super) fn view(
    base: &DynTensor,
    allocator: &Allocator,
    offset: usize,
    shape: &[usize],
) -> Result<DynTensor> {
    let ty = *base.data_type();
    let elem = ty.byte_size(1).unwrap_or(0);
    let n: usize = shape.iter().product();
    let total: usize = base.shape().iter().map(|&d| d as usize).product();
    if elem == 0 || n == 0 || offset + n > total {
        return Err(Error::Store(format!(
            "a view of {shape:?} at element {offset} does not fit a tensor of {total} elements"
        )));
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    // Pointer arithmetic only (never dereferenced here): the address may be device memory.
    let data = base.data_ptr().cast::<u8>().wrapping_add(offset * elem) as *mut c_void;
    let mut out: *mut ort::sys::OrtValue = ptr::null_mut();
    // SAFETY: `data .. data + n * elem` lies inside `base`'s allocation (checked above), described by
    // `base`'s memory info; ONNX Runtime creates a non-owning tensor over it and writes its handle to
    // `out`, or returns a status we take ownership of.
    unsafe {
        let status = (ort::api().CreateTensorWithDataAsOrtValue)(
            base.memory_info().ptr(),
            data,
            n * elem,
            dims.as_ptr(),
            dims.len(),
            ty.into(),
            &mut out,
        );
        ort::Error::result_from_status(status)
            .map_err(|e| Error::ort("making a view of device K/V", e))?;
    }
    let out = NonNull::new(out)
        .ok_or_else(|| Error::Store("ONNX Runtime returned no tensor for a K/V view".into()))?;
    // SAFETY: `out` is a valid tensor OrtValue we own; releasing it does not free `base`'s memory.
    Ok(unsafe { DynTensor::from_ptr(out, Some(allocator)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch 1 x 2 heads, layers of 2, 2 and 4 slots: regions K0 V0 K1 V1 K2 V2 of 4, 4, 4, 4, 8, 8 rows.
    fn layout() -> PoolLayout {
        PoolLayout::new(2, vec![2, 2, 4])
    }

    #[test]
    fn regions_lie_layer_after_layer_k_then_v() {
        let l = layout();
        assert_eq!(l.rows(), 32);
        assert_eq!(
            [0, 1, 2].map(|i| [l.region(i, 0), l.region(i, 1)]),
            [[0, 4], [8, 12], [16, 24]]
        );
        // layer 2, V, head 1, slot 3
        assert_eq!(l.row(2, 1, 1, 3), 24 + 4 + 3);
    }

    #[test]
    fn growth_groups_consecutive_layers_moving_alike() {
        let from = layout();
        assert_eq!(from.growth_to(&layout()), None);
        let g = from.growth_to(&PoolLayout::new(2, vec![4, 4, 4])).unwrap();
        assert_eq!(g.rows, 48);
        assert_eq!(
            g.groups,
            [
                GrowGroup {
                    old_row: 0,
                    new_row: 0,
                    rows: 8,
                    old_capacity: 2,
                    new_capacity: 4
                },
                GrowGroup {
                    old_row: 16,
                    new_row: 32,
                    rows: 4,
                    old_capacity: 4,
                    new_capacity: 4
                },
            ]
        );
        let fresh = PoolLayout::new(2, vec![0, 0, 0]).growth_to(&PoolLayout::new(2, vec![3; 3]));
        assert_eq!(
            fresh.unwrap().groups.len(),
            1,
            "all layers from empty: one zeroing"
        );
    }

    /// Seq 2: the fresh K/V are per layer K then V, `[2 heads, 2 tokens]` rows each.
    #[test]
    fn write_rows_skip_tokens_not_stored_and_pair_k_with_v() {
        let l = layout();
        let dest = vec![
            vec![1, NOT_STORED, 0, 1], // layer 0: head 0 token 0 -> slot 1; head 1 tokens -> 0, 1
            vec![],                    // layer 1: no plan
            vec![NOT_STORED, 3, NOT_STORED, NOT_STORED],
        ];
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        l.write_rows(&dest, 2, &mut src, &mut dst);
        // fresh rows: layer 0 K 0..4, V 4..8; layer 2 K 16..20, V 20..24
        assert_eq!(src, [0, 4, 2, 6, 3, 7, 17, 21]);
        // pool rows: layer 0 K head 0 slot 1 = 1, V = 5; head 1 slot 0 = 2 / 6, slot 1 = 3 / 7;
        // layer 2 K head 0 slot 3 = 19, V = 27
        assert_eq!(dst, [1, 5, 2, 6, 3, 7, 19, 27]);
    }
}
