//! Policy specs: what a spec is ([`PolicySpec`] = [`PolicyKind`] + [`Schedule`]) and its errors.
//!
//! Three parts, each in its own file:
//! - `kinds`: the table of families, each described once (keyword, parameters and their roles,
//!   how its policy is built); adding a family is one more row there (and its variant here);
//! - `grammar`: the text of a spec (parse, canonical display, [`ACCEPTED_FORMS`]);
//! - `arithmetic`: what the roles add up to (budget, per-layer budgets of a schedule, scaling,
//!   validation against a model) and building the policies.
//!
//! Grammar (the same grammar, canonical strings and messages as export/h2o_export/policies/):
//! `FAMILY[:A[+B]]` followed by options, each after an `@`:
//! - families: `full`, `local:R`, `sink:S+R`, `h2o:H+R`, `h2o-layer:H+R`, `tova:B`,
//!   `tova-head:B`, `scissor:B`, `knorm:B`, `random:B` (non-negative decimal integers, budget at
//!   least 1);
//! - `@uniform` / `@pyramid`: the per-layer budget schedule of any bounded family ([`Schedule`]);
//! - `@rng=N`: random's generator number (default 0; "seed" is kept for the PyTorch project this
//!   tool grew from);
//! - `@window=W`, `@recent=R`: scissor's history window (W >= 1) and protected recent window
//!   (R <= B), defaults [`DEFAULT_WINDOW`](crate::policy::scissor::DEFAULT_WINDOW) and
//!   [`DEFAULT_RECENT`](crate::policy::scissor::DEFAULT_RECENT);
//! - `@sinks=S`, `@normalized`: scissor's always-kept first S positions (within B, with R) and its
//!   count divided by the steps the token has been seen (the authors' variants, issue 32);
//! - `@skip=N`: knorm leaves its first N layers whole (`full`), as its authors do (N = 2);
//! - `@rolling`: rolling positions on any bounded family ([`Positions::Rolling`]).
//!
//! Options may come in any order, each once; surrounding whitespace is ignored. The canonical
//! form leaves defaults out and orders options `@window`, `@recent`, `@sinks`, `@normalized`,
//! `@skip`, `@rng`, `@pyramid`, `@rolling`, e.g. `scissor:256@window=64`,
//! `random:256@rng=7@pyramid`, `sink:4+252@rolling`.

mod arithmetic;
mod grammar;
mod kinds;
#[cfg(test)]
mod tests;

use super::schedule::Schedule;
use super::Scope;

pub use grammar::ACCEPTED_FORMS;
pub use kinds::FAMILIES;

/// A refused policy spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not in the grammar (`reason` is empty or says which part is wrong).
    #[error("invalid policy spec '{spec}': {reason}accepted forms are {ACCEPTED_FORMS}")]
    Invalid { spec: String, reason: String },
    /// The budget is 0.
    #[error("invalid policy spec '{spec}': the budget is 0; accepted forms are {ACCEPTED_FORMS}")]
    ZeroBudget { spec: String },
    /// The budget is larger than the model's positions.
    #[error("policy {spec}: budget {budget} exceeds the model's {max_positions} positions; use a smaller budget or `full`")]
    BudgetTooLarge {
        spec: String,
        budget: usize,
        max_positions: usize,
    },
    /// A schedule gives a layer more budget than the model has positions.
    #[error("policy {spec}: layer {layer}'s budget {budget} exceeds the model's {max_positions} positions; use a smaller budget or @uniform")]
    LayerBudgetTooLarge {
        spec: String,
        layer: usize,
        budget: usize,
        max_positions: usize,
    },
}

/// A policy family with its numbers (one layer's policy, or the mean layer of a schedule). Each
/// variant has its row in the family table (`kinds::KINDS`), which says what its numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Keep everything.
    Full,
    /// The last `recent` positions.
    Local { recent: usize },
    /// The first `sinks` positions and the last `recent`.
    Sink { sinks: usize, recent: usize },
    /// The last `recent` positions and the `heavy` largest accumulated scores among the rest.
    H2o {
        heavy: usize,
        recent: usize,
        scope: Scope,
    },
    /// The `budget` tokens with the most attention from the current query (TOVA).
    Tova { budget: usize, scope: Scope },
    /// Scissorhands: the `recent` last positions, the `sinks` first ones, and the least often
    /// unimportant of the rest (`normalized`: the count divided by the steps the token was seen).
    Scissor {
        budget: usize,
        window: usize,
        recent: usize,
        sinks: usize,
        normalized: bool,
    },
    /// The `budget` keys with the smallest L2 norm; the first `skip` layers keep every token.
    Knorm { budget: usize, skip: usize },
    /// `budget` tokens kept at random (generator number `rng`).
    Random { budget: usize, rng: u64 },
}

/// The positions the model sees (what RoPE rotates by; docs/architecture.md, "Graph contract").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Positions {
    /// Every token at its place in the text (the default): a text fits the model's positions.
    #[default]
    Absolute,
    /// `@rolling` (StreamingLLM's renumbering): the cached tokens numbered by rank within the
    /// cache, the new ones after them, so a text of any length streams; needs a graph that caches
    /// keys unrotated (manifest `"key_cache": "unrotated"`).
    Rolling,
}

/// A parsed policy spec: a family with its numbers, a per-layer budget schedule and the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub schedule: Schedule,
    pub positions: Positions,
}

impl From<PolicyKind> for PolicySpec {
    /// The kind with the uniform schedule, on absolute positions.
    fn from(kind: PolicyKind) -> Self {
        PolicySpec {
            kind,
            schedule: Schedule::Uniform,
            positions: Positions::Absolute,
        }
    }
}

impl PolicyKind {
    /// Kind name: the spec's keyword (`full`, `local`, `sink`, `h2o`, `h2o-layer`, `tova`,
    /// `tova-head`, `scissor`, `knorm`, `random`).
    pub fn family(&self) -> &'static str {
        kinds::Parts::of(self).family.name
    }
}

impl PolicySpec {
    /// The full cache.
    pub const FULL: PolicySpec = PolicySpec {
        kind: PolicyKind::Full,
        schedule: Schedule::Uniform,
        positions: Positions::Absolute,
    };

    /// Whether the spec asks for rolling positions (`@rolling`).
    pub fn rolling(&self) -> bool {
        self.positions == Positions::Rolling
    }

    /// Kind name: the spec's keyword (see [`PolicyKind::family`]); the schedule is not part of it.
    pub fn family(&self) -> &'static str {
        self.kind.family()
    }
}

/// Serialised as its canonical string (`h2o:192+64`), so results and jobs store the spec itself.
impl serde::Serialize for PolicySpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PolicySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
