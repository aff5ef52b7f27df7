//! The experiment catalogue: experiments (a policy under a label), the groups of `h2o bench
//! --groups` (seed | seed-head | policies | pyramid), budget counting (ours | seed) and the seed's
//! vocabulary ([`seed`]). Below both the run ([`crate::experiment`], [`crate::runner`]) and the
//! report ([`crate::report`]): it imports neither.

pub mod seed;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::policy::scissor::DEFAULT_RECENT;
use crate::policy::{PolicyKind, PolicySpec, Schedule, Scope};
use seed::{seed_equivalent, seed_groups};

/// One policy under a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    /// Display label, e.g. `H2O (64r+192h)` or `h2o 192+64`.
    pub label: String,
    pub spec: PolicySpec,
    /// The experiment group it comes from (`None`: named on the command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

impl Experiment {
    /// An experiment labelled by its spec's short label ([`PolicySpec::label`]).
    pub fn of(spec: PolicySpec) -> Experiment {
        Experiment {
            label: spec.label(),
            spec,
            group: None,
        }
    }

    /// The seed's ten groups, scaled to the model's positions (see [`seed_groups`]).
    pub fn seed_groups(max_positions: usize) -> Vec<Experiment> {
        Self::seed_groups_as(Group::Seed, max_positions)
    }

    /// The seed's ten groups as experiments of `group` (`seed` or `seed-head`).
    fn seed_groups_as(group: Group, max_positions: usize) -> Vec<Experiment> {
        seed_groups(max_positions)
            .into_iter()
            .map(|(label, spec)| Experiment {
                label,
                spec,
                group: Some(group),
            })
            .collect()
    }

    /// The seed group's H2O under the seed's counting is the seed's own: one score per layer
    /// (its code sums the attention over the heads), not the H2O paper's per-head ranking.
    fn in_the_seeds_variant(self) -> Experiment {
        match (self.group, self.spec.kind) {
            (
                Some(Group::Seed),
                PolicyKind::H2o {
                    heavy,
                    recent,
                    scope: Scope::Head,
                },
            ) => Experiment {
                label: format!("{}, {PER_LAYER_AS_THE_SEED}", self.label),
                spec: PolicySpec {
                    kind: PolicyKind::H2o {
                        heavy,
                        recent,
                        scope: Scope::Layer,
                    },
                    ..self.spec
                },
                ..self
            },
            _ => self,
        }
    }
}

/// What the label of the seed group's H2O says under the seed's counting.
const PER_LAYER_AS_THE_SEED: &str = "one score per layer as the seed";

/// Which text of a WikiText-2 raw file the tokens come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextMode {
    /// The file as it is, from its first byte (`wiki.test.raw` starts " \n = Robert Boulter = \n \n").
    #[default]
    File,
    /// The seed's text (`eval::data::seed_text`): the rows of the Hugging Face `wikitext-2-raw-v1` split,
    /// joined with nothing between them until longer than 16,384 characters (it starts
    /// " = Robert Boulter = \n Robert Boulter is").
    Seed,
}

/// How an experiment's budget is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counting {
    /// Ours (design §3): budget B tokens are kept between steps; a step attends B + the new one.
    #[default]
    Ours,
    /// The seed's: budget B counts the new token (a step attends B tokens), run as our spec with
    /// one token less ([`seed_equivalent`]): the seed's `Local (256)` runs as `local:255`; the seed
    /// group's H2O runs as the seed's code computes it, one score per layer (`h2o-layer`).
    Seed,
}

impl Experiment {
    /// The experiment under `counting`: as it is, or (seed counting) our spec that attends as
    /// many tokens a step as the seed's, labelled `<label>, seed counting` (the seed group's H2O
    /// as the seed's per-layer variant, saying so; `seed-head` keeps the per-head one). `None`
    /// for a budget of 1 in the seed's counting (only the new token: nothing to keep).
    pub fn counted(self, counting: Counting) -> Option<Experiment> {
        match counting {
            Counting::Ours => Some(self),
            Counting::Seed => {
                let e = self.in_the_seeds_variant();
                let label = match e.label.strip_suffix(&format!(", {PER_LAYER_AS_THE_SEED}")) {
                    Some(base) => format!("{base}, seed counting, {PER_LAYER_AS_THE_SEED}"),
                    None => format!("{}, seed counting", e.label),
                };
                seed_equivalent(&e.spec).map(|spec| Experiment { label, spec, ..e })
            }
        }
    }
}

/// A named list of experiments (`h2o bench --groups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// The seed's ten experiments, scaled to the model's positions (the default); under the
    /// seed's counting its H2O runs as the seed's, one score per layer.
    Seed,
    /// The seed's ten with the H2O paper's per-head H2O under either counting.
    #[serde(rename = "seed-head")]
    SeedHead,
    /// Every family at 12.5% and 25% of the text: full, local, sink, h2o, h2o-layer, tova,
    /// scissor, knorm, random.
    Policies,
    /// Every bounded family of `policies` under the pyramid schedule, at the same budgets.
    Pyramid,
}

/// An experiment group name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown experiment group '{0}': the groups are seed, seed-head, policies, pyramid")]
pub struct UnknownGroup(pub String);

impl FromStr for Group {
    type Err = UnknownGroup;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "seed" => Ok(Group::Seed),
            "seed-head" => Ok(Group::SeedHead),
            "policies" => Ok(Group::Policies),
            "pyramid" => Ok(Group::Pyramid),
            other => Err(UnknownGroup(other.to_string())),
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Group::Seed => "seed",
            Group::SeedHead => "seed-head",
            Group::Policies => "policies",
            Group::Pyramid => "pyramid",
        })
    }
}

impl Group {
    /// The group's experiments for a model of `max_positions` positions measured on `text`
    /// tokens (the run's `Plan::text_tokens`): budgets B = 12.5% and 25% of the text (rounded, at
    /// least 1); sink keeps 4 sinks, h2o a quarter of B as its recent window, scissor its default
    /// recent window (a quarter of B when that is smaller).
    pub fn experiments(self, max_positions: usize, text: usize) -> Vec<Experiment> {
        let specs: Vec<PolicySpec> = match self {
            Group::Seed | Group::SeedHead => {
                return Experiment::seed_groups_as(self, max_positions)
            }
            Group::Policies => std::iter::once(PolicySpec::FULL)
                .chain(
                    share_budgets(text)
                        .into_iter()
                        .flat_map(|b| bounded_families(b, Schedule::Uniform)),
                )
                .collect(),
            Group::Pyramid => share_budgets(text)
                .into_iter()
                .flat_map(|b| bounded_families(b, Schedule::Pyramid))
                .collect(),
        };
        specs
            .into_iter()
            .map(|spec| Experiment {
                group: Some(self),
                ..Experiment::of(spec)
            })
            .collect()
    }
}

/// The experiments of `groups`, in order.
pub fn group_experiments(groups: &[Group], max_positions: usize, text: usize) -> Vec<Experiment> {
    groups
        .iter()
        .flat_map(|g| g.experiments(max_positions, text))
        .collect()
}

/// 12.5% and 25% of `text` tokens, rounded, at least 1.
fn share_budgets(text: usize) -> [usize; 2] {
    [(text + 4) / 8, (text + 2) / 4].map(|b| b.max(1))
}

/// Every bounded family of the `policies` group at budget `b` under `schedule`.
fn bounded_families(b: usize, schedule: Schedule) -> Vec<PolicySpec> {
    let sinks = 4.min(b - 1);
    let recent = (b / 4).max(1).min(b);
    let scissor_recent = DEFAULT_RECENT.min(b / 4);
    [
        PolicyKind::Local { recent: b },
        PolicyKind::Sink {
            sinks,
            recent: b - sinks,
        },
        PolicyKind::H2o {
            heavy: b - recent,
            recent,
            scope: Scope::Head,
        },
        PolicyKind::H2o {
            heavy: b - recent,
            recent,
            scope: Scope::Layer,
        },
        PolicyKind::Tova {
            budget: b,
            scope: Scope::Layer,
        },
        PolicyKind::Scissor {
            budget: b,
            window: crate::policy::scissor::DEFAULT_WINDOW,
            recent: scissor_recent,
            sinks: 0,
            normalized: false,
        },
        PolicyKind::Knorm { budget: b, skip: 0 },
        PolicyKind::Random { budget: b, rng: 0 },
    ]
    .into_iter()
    .map(|kind| PolicySpec {
        kind,
        schedule,
        positions: Default::default(),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name() {
        assert_eq!("policies".parse::<Group>(), Ok(Group::Policies));
        assert_eq!(" pyramid".parse::<Group>(), Ok(Group::Pyramid));
        assert_eq!(
            "seeds".parse::<Group>().unwrap_err().to_string(),
            "unknown experiment group 'seeds': the groups are seed, seed-head, policies, pyramid"
        );
        assert_eq!(Group::Seed.to_string(), "seed");
        assert_eq!("seed-head".parse::<Group>(), Ok(Group::SeedHead));
        assert_eq!(Group::SeedHead.to_string(), "seed-head");
        assert_eq!(
            serde_json::to_string(&Group::SeedHead).unwrap(),
            "\"seed-head\""
        );
    }

    #[test]
    fn policies_group_is_every_family_at_an_eighth_and_a_quarter_of_the_text() {
        let e = Group::Policies.experiments(2048, 2048);
        let specs: Vec<String> = e.iter().map(|x| x.spec.to_string()).collect();
        let at = |b: usize, r: usize, sr: usize| {
            let sinks = 4.min(b - 1);
            [
                format!("local:{b}"),
                format!("sink:{sinks}+{}", b - sinks),
                format!("h2o:{}+{r}", b - r),
                format!("h2o-layer:{}+{r}", b - r),
                format!("tova:{b}"),
                if sr == 10 {
                    format!("scissor:{b}")
                } else {
                    format!("scissor:{b}@recent={sr}")
                },
                format!("knorm:{b}"),
                format!("random:{b}"),
            ]
        };
        let want: Vec<String> = std::iter::once("full".to_string())
            .chain(at(256, 64, 10))
            .chain(at(512, 128, 10))
            .collect();
        assert_eq!(specs, want);
        assert!(e.iter().all(|x| x.group == Some(Group::Policies)));
        assert_eq!(e[3].label, "h2o 192+64");
        // a short text: budgets 4 and 8, every spec valid
        let short = Group::Policies.experiments(2048, 32);
        let s: Vec<String> = short.iter().map(|x| x.spec.to_string()).collect();
        assert_eq!(s[1..9], at(4, 1, 1));
        for x in &short {
            assert_eq!(x.spec.to_string().parse::<PolicySpec>(), Ok(x.spec));
            assert!(x.spec.validate(8, 2048).is_ok(), "{}", x.spec);
        }
        assert_eq!(Group::Policies.experiments(2048, 1).len(), 17);
    }

    #[test]
    fn pyramid_group_schedules_every_bounded_family() {
        let e = Group::Pyramid.experiments(2048, 2048);
        assert_eq!(e.len(), 16);
        assert!(e.iter().all(|x| x.spec.schedule == Schedule::Pyramid));
        assert_eq!(e[2].spec.to_string(), "h2o:192+64@pyramid");
        let uniform: Vec<PolicySpec> = Group::Policies.experiments(2048, 2048)[1..]
            .iter()
            .map(|x| x.spec)
            .collect();
        let kinds: Vec<PolicySpec> = e.iter().map(|x| PolicySpec::from(x.spec.kind)).collect();
        assert_eq!(
            kinds, uniform,
            "the same families and budgets as `policies`"
        );
        let all = group_experiments(&[Group::Seed, Group::Pyramid], 2048, 2048);
        assert_eq!(all.len(), 26);
    }

    #[test]
    fn seed_groups_as_experiments() {
        let e = Experiment::seed_groups(2048);
        assert_eq!(e.len(), 10);
        assert_eq!(e[4].label, "H2O (64r+192h)");
        assert_eq!(e[4].spec.to_string(), "h2o:192+64");
        assert_eq!(Experiment::of(PolicySpec::FULL).label, "full");
    }

    #[test]
    fn seed_counting_runs_one_token_less() {
        let e = Experiment::seed_groups(2048);
        let seed: Vec<Experiment> = e
            .iter()
            .map(|x| x.clone().counted(Counting::Seed).unwrap())
            .collect();
        assert_eq!(seed[6].label, "Local (256), seed counting");
        assert_eq!(seed[6].spec.to_string(), "local:255");
        // the seed group's H2O as the seed's code runs it, one score per layer, and says so
        assert_eq!(seed[4].spec.to_string(), "h2o-layer:192+63");
        assert_eq!(
            seed[4].label,
            "H2O (64r+192h), seed counting, one score per layer as the seed"
        );
        assert_eq!(seed[0].spec, PolicySpec::FULL);
        // seed-head keeps the per-head H2O under the seed's counting
        let head: Vec<Experiment> = Group::SeedHead
            .experiments(2048, 2048)
            .into_iter()
            .map(|x| x.counted(Counting::Seed).unwrap())
            .collect();
        assert_eq!(head[4].spec.to_string(), "h2o:192+63");
        assert_eq!(head[4].label, "H2O (64r+192h), seed counting");
        assert_eq!(head[6].spec.to_string(), "local:255");
        // under our counting the seed group stays per head, as before
        assert_eq!(
            e[4].clone()
                .counted(Counting::Ours)
                .unwrap()
                .spec
                .to_string(),
            "h2o:192+64"
        );
        assert_eq!(e[4].clone().counted(Counting::Ours).unwrap(), e[4]);
        assert_eq!(
            Experiment::of("local:1".parse().unwrap()).counted(Counting::Seed),
            None
        );
    }
}

/// Which experiments a model runs, as `bench --exp` / `--groups` (and `sweep plan`) choose them.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// These specs, labelled by the spec.
    Specs(Vec<PolicySpec>),
    /// These groups, scaled to the model's positions and the text (none: the seed's ten).
    Groups(Vec<Group>),
}

impl Choice {
    /// `--exp` when given, else `--groups`.
    pub fn of(specs: &[PolicySpec], groups: &[Group]) -> Choice {
        if specs.is_empty() {
            Choice::Groups(groups.to_vec())
        } else {
            Choice::Specs(specs.to_vec())
        }
    }

    /// The experiments for a model of `max_positions` positions measured on `text_tokens`.
    pub fn experiments(&self, max_positions: usize, text_tokens: usize) -> Vec<Experiment> {
        match self {
            Choice::Specs(specs) => specs.iter().map(|s| Experiment::of(*s)).collect(),
            Choice::Groups(g) if g.is_empty() => Experiment::seed_groups(max_positions),
            Choice::Groups(g) => group_experiments(g, max_positions, text_tokens),
        }
    }
}
