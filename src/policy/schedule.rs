//! Per-layer budget schedules: `uniform` (every layer the same budget) and `pyramid` (PyramidKV,
//! Cai et al. 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
//! Funneling": more budget in the lower layers, less in the upper ones, the same total).
//!
//! A bounded spec's budget B splits into a fixed part P (what the policy protects: the recent
//! window of h2o and scissor, the sinks of sink; 0 for local, tova, knorm and random) and a free
//! part F = B - P. Under `pyramid` layer l of L gets P + F_l, the F_l falling linearly from
//! 2F - m at layer 0 to m at layer L - 1 with m = F / β, β = [`PYRAMID_BETA`] (PyramidKV's
//! default), so that the F_l add up to exactly L·F; each F_l is rounded down and the shortfall
//! goes one token each to the lowest layers (the sum stays exact and the budgets never rise with
//! the layer). When P = 0 the top layer keeps at least one token (m >= 1).
//! export/h2o_export/policies/schedule.py computes the same integers.

/// PyramidKV's β: the top layer gets F / β of the free budget.
pub const PYRAMID_BETA: u128 = 20;

/// How a spec's budget is spread over the layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// Every layer the spec's budget (`@uniform`, the default).
    #[default]
    Uniform,
    /// PyramidKV's linear schedule (`@pyramid`).
    Pyramid,
}

impl Schedule {
    /// Every schedule.
    pub const ALL: [Schedule; 2] = [Schedule::Uniform, Schedule::Pyramid];

    /// The schedule whose option is `@name`.
    pub fn named(name: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The option's name in a spec (`@uniform`, `@pyramid`).
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Uniform => "uniform",
            Schedule::Pyramid => "pyramid",
        }
    }

    /// The free part of each of `layers` layers for a free part `free` per layer on average;
    /// `at_least` is the smallest free part a layer may get (1 when nothing is protected).
    pub fn free_parts(self, free: usize, layers: usize, at_least: usize) -> Vec<usize> {
        match self {
            Schedule::Uniform => vec![free; layers],
            Schedule::Pyramid => pyramid(free, layers, at_least),
        }
    }
}

/// PyramidKV's linear sequence in integers (module docs): `free` per layer on average over
/// `layers` layers, the top layer at least `at_least`.
fn pyramid(free: usize, layers: usize, at_least: usize) -> Vec<usize> {
    let (f, l) = (free as u128, layers as u128);
    let beta = PYRAMID_BETA;
    // m = min_num / beta: the top layer's share
    let min_num = f.max(beta * at_least as u128);
    if layers < 2 || min_num > f * beta {
        return vec![free; layers];
    }
    // f_i * beta * (L - 1) = (2 f beta - min_num)(L - 1) - (2 f beta - 2 min_num) i
    let den = beta * (l - 1);
    let top = (2 * f * beta - min_num) * (l - 1);
    let drop = 2 * f * beta - 2 * min_num;
    let mut parts: Vec<usize> = (0..l).map(|i| ((top - drop * i) / den) as usize).collect();
    let short = free * layers - parts.iter().sum::<usize>();
    for p in parts.iter_mut().take(short) {
        *p += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn uniform_is_flat() {
        assert_eq!(Schedule::Uniform.free_parts(7, 3, 1), [7, 7, 7]);
    }

    #[test]
    fn pyramid_keeps_the_total_and_falls_with_the_layer() {
        for (free, layers, at_least) in [
            (192, 32, 0),
            (256, 32, 1),
            (48, 8, 0),
            (64, 2, 1),
            (5, 8, 1),
            (1, 4, 1),
            (0, 4, 0),
            (3000, 7, 0),
        ] {
            let p = Schedule::Pyramid.free_parts(free, layers, at_least);
            assert_eq!(p.len(), layers);
            assert_eq!(
                p.iter().sum::<usize>(),
                free * layers,
                "{free} {layers}: {p:?}"
            );
            assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
            assert!(p.iter().all(|&x| x >= at_least.min(free)), "{p:?}");
        }
    }

    #[test]
    fn pyramid_numbers() {
        // F = 192, L = 8: from 2F - F/20 = 374.4 down to 9.6 in steps of 52.11; floors add up to
        // 1532, the 4 missing tokens go to layers 0-3
        assert_eq!(
            Schedule::Pyramid.free_parts(192, 8, 0),
            [375, 323, 271, 219, 165, 113, 61, 9]
        );
        // F = 10 with nothing protected: m = max(10/20, 1) = 1, from 19 down to 1
        assert_eq!(Schedule::Pyramid.free_parts(10, 2, 1), [19, 1]);
        assert_eq!(Schedule::Pyramid.free_parts(10, 1, 1), [10]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A schedule spreads exactly `layers` x the free part, never raises the budget with the layer,
    /// and gives no layer less than its floor.
    #[test]
    fn pyramid_keeps_the_total(free in 0usize..5000, layers in 1usize..80, at_least in 0usize..2) {
        let parts = Schedule::Pyramid.free_parts(free, layers, at_least);
        prop_assert_eq!(parts.len(), layers);
        prop_assert_eq!(parts.iter().sum::<usize>(), free * layers);
        prop_assert!(parts.windows(2).all(|w| w[0] >= w[1]));
        prop_assert!(parts.iter().all(|&p| p >= at_least.min(free)));
    }
    }
}
