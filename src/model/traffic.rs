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
    /// Host-side inputs of every run: ids and positions `[batch, seq]`, the mask `[batch, past + seq]`.
    fn step_inputs(d: &StepDims) -> u64 {
        let (b, s, p) = (d.batch as u64, d.seq as u64, d.past as u64);
        I64 * (2 * b * s + b * (p + s))
    }

    /// Outputs the host reads every run: logits `[batch, seq, vocab]` and per layer the attention
    /// sums `[batch, heads, past + seq]`, float32.
    fn step_outputs(d: &StepDims) -> u64 {
        let (b, s, p) = (d.batch as u64, d.seq as u64, d.past as u64);
        F32 * (b * s * d.vocab as u64 + d.layers as u64 * b * d.heads as u64 * (p + s))
    }

    /// Bytes of K and V of `tokens` slots per (batch, head), all layers, `kv_bytes` per element.
    fn kv(d: &StepDims, tokens: usize, kv_bytes: usize) -> u64 {
        2 * (d.layers * d.batch * d.heads * tokens * d.head_dim * kv_bytes) as u64
    }

    /// One run with K/V in host memory: past K/V of every layer in, new K/V out.
    pub fn host_run(d: &StepDims, kv_bytes: usize) -> Traffic {
        Traffic {
            to_device: Self::step_inputs(d) + Self::kv(d, d.past, kv_bytes),
            from_device: Self::step_outputs(d) + Self::kv(d, d.seq, kv_bytes),
        }
    }

    /// One run with K/V on the device: they stay there.
    pub fn device_run(d: &StepDims) -> Traffic {
        Traffic {
            to_device: Self::step_inputs(d),
            from_device: Self::step_outputs(d),
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
            head_dim,
            vocab: 50_304,
        }
    }

    /// The write of a decode step that keeps its token in every (layer, head): K and V rows, a source
    /// and a destination index each.
    fn write(d: &StepDims) -> Traffic {
        Traffic::sent(2 * 2 * d.layers * d.heads)
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
