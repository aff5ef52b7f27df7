//! Bytes a step moves between host and device memory, counted from the tensors a run binds on the host:
//! with K/V in host memory every input goes in and every output comes out (what ONNX Runtime copies
//! under a device provider; nothing moves on the CPU provider); with K/V on the device only the ids,
//! positions, mask and slot indices go in, and the logits and attention sums come out.

use serde::{Deserialize, Serialize};

use super::StepDims;

/// Bytes sent to the device and received from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub to_device: u64,
    pub from_device: u64,
}

/// Each layer's past length of a run (`None`: every layer has `StepDims::past`), and whether the graph
/// takes one mask per layer.
#[derive(Debug, Clone, Copy)]
pub struct Pasts<'a> {
    pub layers: Option<&'a [usize]>,
    pub per_layer_masks: bool,
}

impl<'a> Pasts<'a> {
    /// Every layer has the step's past; one shared mask.
    pub fn uniform() -> Self {
        Pasts {
            layers: None,
            per_layer_masks: false,
        }
    }

    fn each(&self, d: &StepDims) -> impl Iterator<Item = u64> + 'a {
        let (n, past) = (d.layers, d.past as u64);
        let layers = self.layers;
        (0..n).map(move |l| layers.map_or(past, |p| p[l] as u64))
    }
}

const I64: u64 = 8;
const F32: u64 = 4;

impl std::ops::Add for Traffic {
    type Output = Traffic;
    fn add(self, o: Traffic) -> Traffic {
        Traffic {
            to_device: self.to_device + o.to_device,
            from_device: self.from_device + o.from_device,
        }
    }
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        *self = *self + o;
    }
}

impl Traffic {
    /// Host-side inputs of every run: ids and positions `[batch, seq]`, the mask: one
    /// `[batch, past + seq]`, or one `[batch, past_l + seq]` per layer on a per-layer-mask graph,
    /// and `logits_from` (one int64) where the graph takes it.
    fn step_inputs(d: &StepDims, pasts: &Pasts<'_>) -> u64 {
        let (b, s) = (d.batch as u64, d.seq as u64);
        let mask: u64 = match pasts.per_layer_masks {
            true => pasts.each(d).map(|p| b * (p + s)).sum(),
            false => b * (d.past as u64 + s),
        };
        I64 * (2 * b * s + mask + u64::from(d.logits_from.is_some()))
    }

    /// Outputs the host reads every run: logits `[batch, seq - logits_from, vocab]` and per layer the attention
    /// sums `[batch, heads, past_l + seq]`, float32.
    fn step_outputs(d: &StepDims, pasts: &Pasts<'_>) -> u64 {
        let (b, s, h) = (d.batch as u64, d.seq as u64, d.heads as u64);
        let sums: u64 = pasts.each(d).map(|p| b * h * (p + s)).sum();
        F32 * (b * d.logits_rows() as u64 * d.vocab as u64 + sums)
    }

    /// Bytes of K and V of `tokens` slots per (batch, KV head) in one layer, `kv_bytes` per element.
    fn layer_kv(d: &StepDims, tokens: u64, kv_bytes: usize) -> u64 {
        2 * (d.batch * d.kv_heads * d.head_dim * kv_bytes) as u64 * tokens
    }

    /// One run with K/V in host memory, every layer of `d.past` slots: past K/V in, new K/V out.
    pub fn host_run(d: &StepDims, kv_bytes: usize) -> Traffic {
        Self::host_run_layers(d, &Pasts::uniform(), kv_bytes)
    }

    /// [`Traffic::host_run`] with each layer's own past.
    pub fn host_run_layers(d: &StepDims, pasts: &Pasts<'_>, kv_bytes: usize) -> Traffic {
        let past_kv: u64 = pasts.each(d).map(|p| Self::layer_kv(d, p, kv_bytes)).sum();
        let new_kv = d.layers as u64 * Self::layer_kv(d, d.seq as u64, kv_bytes);
        Traffic {
            to_device: Self::step_inputs(d, pasts) + past_kv,
            from_device: Self::step_outputs(d, pasts) + new_kv,
        }
    }

    /// One run with K/V on the device, every layer of `d.past` slots: they stay there.
    pub fn device_run(d: &StepDims) -> Traffic {
        Self::device_run_layers(d, &Pasts::uniform())
    }

    /// [`Traffic::device_run`] with each layer's own past.
    pub fn device_run_layers(d: &StepDims, pasts: &Pasts<'_>) -> Traffic {
        Traffic {
            to_device: Self::step_inputs(d, pasts),
            from_device: Self::step_outputs(d, pasts),
        }
    }

    /// Host tensors of `elements` int64 (or other 8-byte) values sent to the device.
    pub fn sent(elements: usize) -> Traffic {
        Traffic {
            to_device: I64 * elements as u64,
            from_device: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pythia shapes (batch 1, one decode step, Pythia's 50,304-wide logits).
    fn dims(layers: usize, heads: usize, head_dim: usize, past: usize) -> StepDims {
        StepDims {
            batch: 1,
            seq: 1,
            past,
            layers,
            heads,
            kv_heads: heads,
            head_dim,
            vocab: 50_304,
            logits_from: None,
        }
    }

    /// The write of a decode step that keeps its token in every (layer, head): K and V rows, a source
    /// and a destination index each.
    fn write(d: &StepDims) -> Traffic {
        Traffic::sent(2 * 2 * d.layers * d.kv_heads)
    }

    /// The figures docs/architecture.md quotes, from these functions.
    #[test]
    fn decode_step_bytes_at_pythia_shapes() {
        // 160m fp32 (12 x 12 x 64) at 256 slots
        let d = dims(12, 12, 64, 256);
        let ids_pos_mask = 8 * (2 + 257);
        let out = 4 * (50_304 + 12 * 12 * 257);
        assert_eq!(Traffic::device_run(&d).to_device, ids_pos_mask);
        assert_eq!(Traffic::device_run(&d).from_device, out);
        assert_eq!(write(&d).to_device, 4_608);
        assert_eq!(out, 349_248);
        let host = Traffic::host_run(&d, 4);
        assert_eq!(host.to_device, ids_pos_mask + 18_874_368);
        assert_eq!(host.from_device, out + 73_728);
        // 2.8B fp16 (32 x 32 x 80) at 256 slots: the 84 MB a step, ~1 MB of attention sums
        let d = dims(32, 32, 80, 256);
        let host = Traffic::host_run(&d, 2);
        assert_eq!(
            host.to_device - Traffic::device_run(&d).to_device,
            83_886_080
        );
        assert_eq!(Traffic::device_run(&d).from_device, 201_216 + 1_052_672);
        assert_eq!(write(&d).to_device, 32_768);
        // ... and with the full cache at 2048 tokens: 671 MB a step in
        let d = dims(32, 32, 80, 2048);
        let kv = Traffic::host_run(&d, 2).to_device - Traffic::device_run(&d).to_device;
        assert_eq!(kv, 671_088_640);
        assert_eq!(Traffic::device_run(&d).to_device, 16_408);
        assert_eq!(Traffic::device_run(&d).from_device, 8_593_920);
        assert_eq!(Traffic::host_run(&d, 2).from_device, 8_921_600);
    }

    #[test]
    fn traffic_adds_up() {
        let mut t = Traffic::sent(2);
        t += Traffic {
            to_device: 1,
            from_device: 5,
        };
        assert_eq!(
            t,
            Traffic {
                to_device: 17,
                from_device: 5
            }
        );
    }
}
