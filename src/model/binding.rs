//! The model's side of the device KV store: the step session's IoBinding (ids, positions and mask from
//! the host; past K/V as views of the store's pool; new K/V into device buffers held here; logits and
//! attention sums to the host) and the companion runs that grow the pool and write the kept new K/V
//! into their slots, all on the device. Per step only the inputs above, the slot indices, the logits
//! and the attention sums cross between host and device.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::{IoBinding, Session};
use ort::value::{DynTensor, Tensor};

use super::companion::{grow, write, zero, Companions};
use super::device_kv::{element_type, view, DeviceKv, Growth, LayoutKey};
use super::traffic::{Pasts, Traffic};
use super::{StepDims, StepInputs};
use crate::error::{Error, Result};
use crate::manifest::{KvDtype, LayerNames, LOGITS_FROM};
use crate::runtime::ExecutionProvider;

/// What the step binding was last made for: the store's layout and the new-K/V buffers' shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoundFor {
    layout: LayoutKey,
    batch: usize,
    seq: usize,
}

/// IoBinding of the step graph and the companion graphs, for stores made by [`DeviceRunner::buffers`].
pub(crate) struct DeviceRunner {
    binding: IoBinding,
    companions: Companions,
    dtype: KvDtype,
    /// The provider's device memory (K/V) and the host memory logits and attention sums go to.
    device: MemoryInfo<'static>,
    host: MemoryInfo<'static>,
    /// Per layer `[K, V]` views `[batch, heads, seq, head_dim]` into `fresh` (declared first: dropped
    /// first), where the run leaves the new K/V.
    fresh_views: Vec<[DynTensor; 2]>,
    /// `[2 x layers x batch x heads x seq, head_dim]`.
    fresh: Option<DynTensor>,
    allocator: Allocator,
    bound: Option<BoundFor>,
    /// The store whose new K/V `fresh` holds, if not yet written.
    fresh_of: Option<u64>,
    next_store: u64,
    src: Vec<i64>,
    dst: Vec<i64>,
}

/// Device memory of `provider` (ONNX Runtime's names), where the store's K/V are allocated.
fn device_memory(provider: ExecutionProvider) -> Result<MemoryInfo<'static>> {
    let device = match provider {
        ExecutionProvider::Cpu => AllocationDevice::CPU,
        ExecutionProvider::Cuda => AllocationDevice::CUDA,
    };
    MemoryInfo::new(device, 0, AllocatorType::Device, MemoryType::Default)
        .map_err(|e| Error::ort("describing the device memory", e))
}

impl DeviceRunner {
    /// For `session` (the step graph) on `provider`, with companion graphs committed by `builder`.
    pub fn new(
        session: &Session,
        builder: &SessionBuilder,
        provider: ExecutionProvider,
        dtype: KvDtype,
    ) -> Result<Self> {
        let device = device_memory(provider)?;
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| Error::ort("describing host memory", e))?;
        let allocator = Allocator::new(session, device.clone())
            .map_err(|e| Error::ort(format!("getting the {provider} provider's allocator"), e))?;
        let binding = session
            .create_binding()
            .map_err(|e| Error::ort("binding the decoder-step graph", e))?;
        Ok(Self {
            binding,
            companions: Companions::new(builder, dtype)?,
            dtype,
            device,
            host,
            fresh_views: Vec::new(),
            fresh: None,
            allocator,
            bound: None,
            fresh_of: None,
            next_store: 0,
            src: Vec::new(),
            dst: Vec::new(),
        })
    }

    /// Empty device buffers for a store of `layers x batch x heads x head_dim`.
    pub fn buffers(
        &mut self,
        session: &Session,
        layers: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<DeviceKv> {
        let allocator = Allocator::new(session, self.device.clone())
            .map_err(|e| Error::ort("getting the device allocator", e))?;
        self.next_store += 1;
        DeviceKv::new(
            allocator,
            self.dtype,
            layers,
            batch,
            heads,
            head_dim,
            self.next_store,
        )
    }

    /// The step binding, ready for a run of `inputs` on `kv`: past = the store's views, new K/V into
    /// `fresh`, logits and attention sums to the host. Returns the bytes the run will move.
    pub fn bind_step(
        &mut self,
        kv: &DeviceKv,
        names: &[LayerNames],
        inputs: &StepInputs<'_>,
        dims: &StepDims,
        pasts: &Pasts<'_>,
    ) -> Result<&IoBinding> {
        if kv.has_pending() {
            return Err(Error::Store(
                "the last step's K/V were not written into their slots (Model::write_kv after every run)"
                    .into(),
            ));
        }
        let want = BoundFor {
            layout: kv.key(),
            batch: dims.batch,
            seq: dims.seq,
        };
        if self.bound != Some(want) {
            self.bound = None;
            self.binding.clear();
            self.alloc_fresh(dims, kv.head_dim())?;
            self.bind_layers(kv, names)?;
            self.bound = Some(want);
        }
        let (b, s) = (dims.batch, dims.seq);
        self.bind_host("input_ids", [b, s], inputs.ids)?;
        self.bind_host("position_ids", [b, s], inputs.positions)?;
        match (pasts.per_layer_masks, pasts.layers) {
            (true, Some(layer_pasts)) => {
                // every layer's [batch, past_l + seq], one after the other
                let mut rest = inputs.mask;
                for (n, &p) in names.iter().zip(layer_pasts) {
                    let (mask, next) = rest.split_at(b * (p + s));
                    rest = next;
                    self.bind_host(&n.mask, [b, p + s], mask)?;
                }
            }
            _ => self.bind_host("attention_mask", [b, dims.past + s], inputs.mask)?,
        }
        if !inputs.key_positions.is_empty() {
            // every layer's [batch, heads, past_l], one after the other
            let mut rest = inputs.key_positions;
            for (l, n) in names.iter().enumerate() {
                let p = pasts.layers.map_or(dims.past, |ps| ps[l]);
                let (kp, next) = rest.split_at(b * dims.heads * p);
                rest = next;
                self.bind_host(&n.key_positions, [b, dims.heads, p], kp)?;
            }
        }
        if let Some(from) = dims.logits_from {
            let t = Tensor::from_array(([1usize], vec![from as i64]))
                .map_err(|e| Error::ort(format!("making {LOGITS_FROM}"), e))?;
            self.binding
                .bind_input(LOGITS_FROM, &t)
                .map_err(|e| Error::ort(format!("binding {LOGITS_FROM}"), e))?;
        }
        self.fresh_of = Some(kv.key().store);
        Ok(&self.binding)
    }

    /// Binds a copy of the host tensor `data` of `shape` as input `name`.
    fn bind_host<const N: usize>(
        &mut self,
        name: &str,
        shape: [usize; N],
        data: &[i64],
    ) -> Result<()> {
        let t = Tensor::from_array((shape, data.to_vec()))
            .map_err(|e| Error::ort(format!("making {name}"), e))?;
        self.binding
            .bind_input(name, &t)
            .map_err(|e| Error::ort(format!("binding {name}"), e))
    }

    /// New-K/V buffers for `dims` (per layer K then V, `[batch, kv_heads, seq, head_dim]` each).
    fn alloc_fresh(&mut self, dims: &StepDims, head_dim: usize) -> Result<()> {
        self.fresh_views.clear();
        self.fresh = None;
        let block = dims.batch * dims.kv_heads * dims.seq;
        let rows = 2 * dims.layers * block;
        let fresh = DynTensor::new(&self.allocator, element_type(self.dtype), [rows, head_dim])
            .map_err(|e| Error::ort("allocating the new K/V buffers", e))?;
        let shape = [dims.batch, dims.kv_heads, dims.seq, head_dim];
        for l in 0..dims.layers {
            let at = |kv: usize| {
                view(
                    &fresh,
                    &self.allocator,
                    (2 * l + kv) * block * head_dim,
                    &shape,
                )
            };
            self.fresh_views.push([at(0)?, at(1)?]);
        }
        self.fresh = Some(fresh);
        Ok(())
    }

    /// Past views of `kv` and the new-K/V views as every layer's inputs and outputs; logits and
    /// attention sums to host memory.
    fn bind_layers(&mut self, kv: &DeviceKv, names: &[LayerNames]) -> Result<()> {
        let bind = |e: ort::Error| Error::ort("binding the device K/V", e);
        for (l, n) in names.iter().enumerate() {
            let [k, v] = kv.past(l);
            self.binding.bind_input(&n.past_key, k).map_err(bind)?;
            self.binding.bind_input(&n.past_value, v).map_err(bind)?;
            let [k, v] = &mut self.fresh_views[l];
            self.binding.bind_output(&n.new_key, k).map_err(bind)?;
            self.binding.bind_output(&n.new_value, v).map_err(bind)?;
            self.binding
                .bind_output_to_device(&n.attention_sums, &self.host)
                .map_err(bind)?;
        }
        self.binding
            .bind_output_to_device("logits", &self.host)
            .map_err(bind)
    }

    /// After a run and the store's update: grow `kv`'s pool if the plans asked for it, then write the
    /// kept new K/V into their slots, on the device. Returns the bytes sent (indices, shapes).
    pub fn commit(&mut self, kv: &mut DeviceKv) -> Result<Traffic> {
        let mut sent = Traffic::default();
        if let Some(growth) = kv.growth() {
            sent += self.grow(kv, &growth)?;
        }
        kv.take_writes(&mut self.src, &mut self.dst)?;
        if self.src.is_empty() {
            return Ok(sent);
        }
        if self.fresh_of != Some(kv.key().store) {
            return Err(Error::Store(
                "the new K/V to write are not this store's (another store ran since)".into(),
            ));
        }
        let (Some(pool), Some(fresh)) = (kv.pool(), self.fresh.as_ref()) else {
            return Err(Error::Store("K/V writes without a pool".into()));
        };
        let n = self.src.len();
        let fail = |e: ort::Error| Error::ort("binding the K/V write", e);
        let src = Tensor::from_array(([n], self.src.clone())).map_err(fail)?;
        let dst = Tensor::from_array(([n, 1], self.dst.clone())).map_err(fail)?;
        let w = &mut self.companions.write;
        w.binding.bind_input(write::POOL, pool).map_err(fail)?;
        w.binding.bind_input(write::FRESH, fresh).map_err(fail)?;
        w.binding.bind_input(write::SRC, &src).map_err(fail)?;
        w.binding.bind_input(write::DST, &dst).map_err(fail)?;
        // the pool is its own output: ScatterND writes the n rows in place
        let mut out = kv.view(pool, 0, &[pool.shape()[0] as usize, kv.head_dim()])?;
        w.binding
            .bind_output(write::POOL_OUT, &mut out)
            .map_err(fail)?;
        w.run()?;
        self.fresh_of = None;
        Ok(sent + Traffic::sent(2 * n))
    }

    /// A new pool at the wanted capacities: each group of layers padded from the old pool (or zeroed
    /// when it had no slots), then installed.
    fn grow(&mut self, kv: &mut DeviceKv, growth: &Growth) -> Result<Traffic> {
        let d = kv.head_dim();
        let pool = kv.allocate(growth.rows)?;
        let fail = |e: ort::Error| Error::ort("binding the K/V growth", e);
        let mut sent = Traffic::default();
        for g in &growth.groups {
            let mut out = kv.view(&pool, g.new_row, &[g.rows, g.new_capacity, d])?;
            match kv.pool() {
                Some(old) if g.old_capacity > 0 => {
                    let input = kv.view(old, g.old_row, &[g.rows, g.old_capacity, d])?;
                    let pads = [0, 0, 0, 0, (g.new_capacity - g.old_capacity) as i64, 0];
                    let pads = Tensor::from_array(([6usize], pads.to_vec())).map_err(fail)?;
                    let c = &mut self.companions.grow;
                    c.binding.bind_input(grow::OLD, &input).map_err(fail)?;
                    c.binding.bind_input(grow::PADS, &pads).map_err(fail)?;
                    c.binding.bind_output(grow::NEW, &mut out).map_err(fail)?;
                    c.run()?;
                    sent += Traffic::sent(6);
                }
                _ => {
                    let rows = g.rows * g.new_capacity;
                    let mut flat = kv.view(&pool, g.new_row, &[rows, d])?;
                    sent += self.zero(&mut flat, rows, d)?;
                }
            }
        }
        kv.install(pool)?;
        Ok(sent)
    }

    /// Fill `out` (`[rows, d]`) with zeros on the device.
    fn zero(&mut self, out: &mut DynTensor, rows: usize, d: usize) -> Result<Traffic> {
        let fail = |e: ort::Error| Error::ort("binding the K/V zeroing", e);
        let zero: DynTensor = match self.dtype {
            KvDtype::Float32 => Tensor::from_array(([1usize], vec![0f32])).map(|t| t.upcast()),
            KvDtype::Float16 => {
                Tensor::from_array(([1usize], vec![half::f16::ZERO])).map(|t| t.upcast())
            }
        }
        .map_err(fail)?;
        let shape = Tensor::from_array(([2usize], vec![rows as i64, d as i64])).map_err(fail)?;
        let c = &mut self.companions.zero;
        c.binding.bind_input(zero::ZERO, &zero).map_err(fail)?;
        c.binding.bind_input(zero::SHAPE, &shape).map_err(fail)?;
        c.binding.bind_output(zero::OUT, out).map_err(fail)?;
        c.run()?;
        Ok(Traffic::sent(2)
            + Traffic {
                to_device: self.dtype.size() as u64,
                from_device: 0,
            })
    }
}
