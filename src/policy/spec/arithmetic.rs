//! What a spec's numbers add up to, from the roles of the family table ([`super::kinds`]): the
//! budget, each layer's numbers under a schedule, scaling, the checks against a model, and the
//! policy objects.

use super::kinds::{count, Parts, Role};
use super::{PolicyError, PolicyKind, PolicySpec};
use crate::policy::schedule::Schedule;
use crate::policy::{LayerPolicies, Policy};

/// Roles whose tokens every layer keeps under a schedule.
const FIXED: [Role; 2] = [Role::Protected, Role::Within];

impl Parts {
    /// Most tokens kept per head; `None` for a family without a budget (saturates at `usize::MAX`).
    fn budget(&self) -> Option<usize> {
        self.family
            .is_bounded()
            .then(|| count(self.sum(&[Role::Spread, Role::Protected, Role::Total])))
    }

    /// `(fixed, free, at_least)`: the budget's protected part every layer keeps under a schedule,
    /// the part a schedule spreads, and the least free part a layer may get (1 when nothing is
    /// protected, so no layer's budget drops to 0). `None` for a family without a budget.
    fn split(&self) -> Option<(usize, usize, usize)> {
        if !self.family.is_bounded() {
            return None;
        }
        let fixed = self.sum(&FIXED);
        let free = self
            .sum(&[Role::Spread, Role::Total])
            .saturating_sub(self.sum(&[Role::Within]));
        Some((count(fixed), count(free), usize::from(fixed == 0)))
    }

    /// The same family with its free part (see [`Parts::split`]) set to `free`: the spread
    /// parameter becomes `free`, a total becomes its part within plus `free`.
    fn with_free(&self, free: usize) -> Parts {
        let within = self.sum(&[Role::Within]);
        let mut out = *self;
        for (i, (p, _)) in self.each().enumerate() {
            match p.role {
                Role::Spread => out.values[i] = free as u64,
                Role::Total => out.values[i] = within.saturating_add(free as u64),
                _ => {}
            }
        }
        out
    }

    /// The same family with its token counts (budgets, windows of positions, sinks) mapped by
    /// `f`, a part within the total kept within the mapped total; steps and generator numbers stay.
    fn map_counts(&self, f: impl Fn(usize) -> usize) -> Parts {
        let mut out = *self;
        for (i, (p, v)) in self.each().enumerate() {
            if p.role.is_tokens() {
                out.values[i] = f(count(v)) as u64;
            }
        }
        let total = out.sum(&[Role::Total]);
        for (i, (p, v)) in out.each().enumerate() {
            if p.role == Role::Within {
                out.values[i] = v.min(total);
            }
        }
        out
    }
}

impl PolicyKind {
    /// Most tokens kept per head; `None` for the full cache (saturates at `usize::MAX`).
    pub fn budget(&self) -> Option<usize> {
        Parts::of(self).budget()
    }

    /// The policy object.
    pub fn build(&self) -> Box<dyn Policy> {
        Parts::of(self).build()
    }
}

impl PolicySpec {
    /// Most tokens kept per head (per layer, averaged over the layers under a schedule); `None`
    /// for the full cache.
    pub fn budget(&self) -> Option<usize> {
        self.kind.budget()
    }

    /// Whether the policy reads scores of any kind.
    pub fn needs_scores(&self) -> bool {
        self.kind.build().needs_scores()
    }

    /// Each layer's family and numbers for a model of `layers` layers: the schedule's budgets,
    /// then the first layers a family leaves whole ([`Role::Layers`], knorm's `@skip`) `full`.
    pub fn layer_kinds(&self, layers: usize) -> Vec<PolicyKind> {
        let parts = Parts::of(&self.kind);
        let mut kinds = match (self.schedule, parts.split()) {
            (Schedule::Pyramid, Some((_, free, at_least))) => Schedule::Pyramid
                .free_parts(free, layers, at_least)
                .into_iter()
                .map(|f| parts.with_free(f).kind())
                .collect(),
            _ => vec![self.kind; layers],
        };
        let whole = count(parts.sum(&[Role::Layers])).min(layers);
        kinds[..whole].fill(PolicyKind::Full);
        kinds
    }

    /// Whether every layer runs the spec's own policy (uniform schedule, no layer left whole).
    fn same_in_every_layer(&self) -> bool {
        self.schedule == Schedule::Uniform && Parts::of(&self.kind).sum(&[Role::Layers]) == 0
    }

    /// Refuses budget 0 and a budget (a layer's, under a schedule) above the model's
    /// `max_positions`, for a model of `layers` layers.
    pub fn validate(&self, layers: usize, max_positions: usize) -> Result<(), PolicyError> {
        match self.budget() {
            None => return Ok(()),
            Some(0) => {
                return Err(PolicyError::ZeroBudget {
                    spec: self.to_string(),
                })
            }
            Some(b) if b > max_positions => {
                return Err(PolicyError::BudgetTooLarge {
                    spec: self.to_string(),
                    budget: b,
                    max_positions,
                })
            }
            Some(_) => {}
        }
        for (layer, k) in self.layer_kinds(layers).iter().enumerate() {
            let budget = k.budget().unwrap_or(0);
            if budget > max_positions {
                return Err(PolicyError::LayerBudgetTooLarge {
                    spec: self.to_string(),
                    layer,
                    budget,
                    max_positions,
                });
            }
        }
        Ok(())
    }

    /// The policies of a model of `layers` layers: one shared policy when every layer runs the
    /// same (uniform schedule, no layer left whole), one per layer otherwise.
    pub fn build(&self, layers: usize) -> LayerPolicies {
        if self.same_in_every_layer() {
            LayerPolicies::Shared(self.kind.build())
        } else {
            LayerPolicies::PerLayer(self.layer_kinds(layers).iter().map(|k| k.build()).collect())
        }
    }

    /// The spec with every token count scaled by `num / den`, rounded to nearest (ties up); a
    /// non-zero count stays at least 1, so the budget never drops to 0 (scissor's recent window
    /// stays within its budget). `den == 0` returns the spec unchanged. E.g. `h2o:192+64` scaled
    /// by 512/2048 is `h2o:48+16`.
    pub fn scaled(&self, num: usize, den: usize) -> PolicySpec {
        if den == 0 {
            return *self;
        }
        let f = |x: usize| -> usize {
            if x == 0 {
                return 0;
            }
            let v = (x as u128 * num as u128 + den as u128 / 2) / den as u128;
            usize::try_from(v).unwrap_or(usize::MAX).max(1)
        };
        PolicySpec {
            kind: Parts::of(&self.kind).map_counts(f).kind(),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PolicyError, PolicyKind, PolicySpec, FAMILIES};

    fn p(s: &str) -> Result<PolicySpec, PolicyError> {
        s.parse()
    }

    fn k(kind: PolicyKind) -> PolicySpec {
        kind.into()
    }

    #[test]
    fn validate_budget() {
        let s = p("h2o:192+64").unwrap();
        assert_eq!(s.validate(8, 2048), Ok(()));
        assert_eq!(s.validate(8, 256), Ok(()));
        assert_eq!(
            s.validate(8, 255).unwrap_err().to_string(),
            "policy h2o:192+64: budget 256 exceeds the model's 255 positions; use a smaller budget or `full`"
        );
        assert_eq!(PolicySpec::FULL.validate(8, 1), Ok(()));
        assert!(matches!(
            k(PolicyKind::Local { recent: 0 }).validate(8, 10),
            Err(PolicyError::ZeroBudget { .. })
        ));
        // pyramid: layer 0 holds 64 + 375 = 439 of a mean of 256
        let py = p("h2o:192+64@pyramid").unwrap();
        assert_eq!(py.validate(8, 439), Ok(()));
        assert_eq!(
            py.validate(8, 438).unwrap_err().to_string(),
            "policy h2o:192+64@pyramid: layer 0's budget 439 exceeds the model's 438 positions; use a smaller budget or @uniform"
        );
    }

    #[test]
    fn pyramid_layers_keep_the_protected_part_and_the_total() {
        let kinds = |s: &str, l| p(s).unwrap().layer_kinds(l);
        let h = kinds("h2o:192+64@pyramid", 8);
        assert_eq!(
            h.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            [
                "h2o:375+64",
                "h2o:323+64",
                "h2o:271+64",
                "h2o:219+64",
                "h2o:165+64",
                "h2o:113+64",
                "h2o:61+64",
                "h2o:9+64"
            ]
        );
        for s in [
            "local:64@pyramid",
            "sink:4+60@pyramid",
            "h2o-layer:48+16@pyramid",
            "tova:64@pyramid",
            "tova-head:7@pyramid",
            "scissor:64@recent=8@pyramid",
            "knorm:64@pyramid",
            "random:3@rng=2@pyramid",
        ] {
            let spec = p(s).unwrap();
            for layers in [1, 2, 8, 32] {
                let ks = spec.layer_kinds(layers);
                let total: usize = ks.iter().map(|k| k.budget().unwrap()).sum();
                assert_eq!(total, layers * spec.budget().unwrap(), "{s} x {layers}");
                assert!(ks.iter().all(|k| k.budget().unwrap() >= 1), "{s}: {ks:?}");
                assert!(ks.iter().all(|k| k.family() == spec.family()));
                if layers > 1 {
                    assert!(ks[0].budget() > ks[layers - 1].budget(), "{s}: {ks:?}");
                }
            }
        }
        // protected parts stay, options stay
        assert!(kinds("sink:4+60@pyramid", 8)
            .iter()
            .all(|k| matches!(k, PolicyKind::Sink { sinks: 4, .. })));
        assert!(kinds("scissor:64@window=9@recent=8@pyramid", 8)
            .iter()
            .all(|k| matches!(
                k,
                PolicyKind::Scissor {
                    window: 9,
                    recent: 8,
                    ..
                }
            )));
        assert!(kinds("random:3@rng=2@pyramid", 4)
            .iter()
            .all(|k| matches!(k, PolicyKind::Random { rng: 2, .. })));
        // uniform: one shared policy; pyramid: one per layer with the layer's numbers
        assert!(p("h2o:2+2").unwrap().build(8).layers().is_none());
        let built = p("h2o:192+64@pyramid").unwrap().build(8);
        assert_eq!(built.layers(), Some(8));
        assert_eq!(built.layer(0).spec(), "h2o:375+64");
        assert_eq!(built.layer(7).budget(), 73);
    }

    #[test]
    fn helpers() {
        let specs = [
            "full",
            "local:256",
            "sink:4+252",
            "h2o:192+64",
            "h2o-layer:192+64",
            "tova:256",
            "tova-head:256",
            "scissor:256",
            "knorm:256",
            "random:256@rng=7@pyramid",
        ]
        .map(|s| p(s).unwrap());
        let fam: Vec<_> = specs.iter().map(|s| s.family()).collect();
        assert_eq!(fam, FAMILIES);
        let lab: Vec<_> = specs.iter().map(|s| s.label()).collect();
        assert_eq!(
            lab,
            [
                "full",
                "local 256",
                "sink 4+252",
                "h2o 192+64",
                "h2o-layer 192+64",
                "tova 256",
                "tova-head 256",
                "scissor 256",
                "knorm 256",
                "random 256 rng=7 pyramid"
            ]
        );
        assert_eq!(specs.map(|s| s.budget())[..2], [None, Some(256)]);
        assert!(specs[1..].iter().all(|s| s.budget() == Some(256)));
        assert_eq!(
            specs.map(|s| s.needs_scores()),
            [false, false, false, true, true, true, true, true, true, true]
        );
    }

    #[test]
    fn scaling() {
        let sc = |s: &str, num, den| p(s).unwrap().scaled(num, den).to_string();
        assert_eq!(sc("h2o:192+64", 512, 2048), "h2o:48+16");
        assert_eq!(sc("sink:4+252", 512, 2048), "sink:1+63");
        assert_eq!(sc("sink:4+252", 1, 16), "sink:1+16");
        assert_eq!(sc("h2o-layer:0+8", 1, 100), "h2o-layer:0+1");
        assert_eq!(sc("local:256", 3, 0), "local:256");
        assert_eq!(PolicySpec::FULL.scaled(1, 2), PolicySpec::FULL);
        assert_eq!(sc("local:100", 2, 1), "local:200");
        assert_eq!(sc("h2o:192+64@pyramid", 1, 4), "h2o:48+16@pyramid");
        assert_eq!(sc("tova:256", 1, 4), "tova:64");
        assert_eq!(sc("random:256@rng=3", 1, 4), "random:64@rng=3");
        // scissor: the budget and the recent window scale, the history window (steps) stays
        assert_eq!(
            sc("scissor:256@window=64@recent=40", 1, 4),
            "scissor:64@window=64"
        );
        assert_eq!(sc("scissor:20", 1, 10), "scissor:2@recent=1");
    }
}
