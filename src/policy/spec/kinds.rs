//! The family table: every policy family described once (its keyword, its parameters with where a
//! spec writes them and what they mean, how its policy is built). The grammar and the arithmetic
//! read only this table; adding a family is one more row in [`KINDS`] (and its [`PolicyKind`]
//! variant). The reference's table is `FAMILIES` in export/h2o_export/policies/.

use super::PolicyKind;
use crate::policy::scissor::{DEFAULT_RECENT, DEFAULT_WINDOW};
use crate::policy::{
    FullPolicy, H2oPolicy, KnormPolicy, LocalPolicy, Policy, RandomPolicy, ScissorPolicy, Scope,
    SinkPolicy, TovaPolicy,
};

/// Most parameters of one family (scissor's budget, window, recent window, sinks and the
/// normalised switch).
pub(super) const MAX_PARAMS: usize = 5;

/// A family's parameter values in the order of its [`Family::params`], token counts as `u64`
/// (they come from `usize`); entries past the family's parameters are 0.
pub(super) type Values = [u64; MAX_PARAMS];

/// What a parameter means to the arithmetic (budget, schedule, scaling, checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Tokens a schedule spreads over the layers; part of the budget (h2o's heavy hitters, the
    /// budget of a family that protects nothing).
    Spread,
    /// Tokens every layer keeps under a schedule; part of the budget (sink's sinks, h2o's recent
    /// window).
    Protected,
    /// The whole budget, its [`Role::Within`] part included (scissor's budget): a schedule spreads
    /// what that part leaves.
    Total,
    /// Protected tokens inside the family's [`Role::Total`], at most it (scissor's recent window).
    Within,
    /// Steps, not tokens: kept when the spec is scaled, at least 1 (scissor's history window).
    Steps,
    /// A generator number: kept when the spec is scaled (random's rng).
    Seed,
    /// Layers, not tokens: kept when the spec is scaled (knorm's skipped first layers, which
    /// keep every token: [`super::PolicySpec::layer_kinds`] makes them `full`).
    Layers,
    /// An on/off switch `@key` (1 when given): kept when scaled (scissor's `@normalized`).
    Switch,
}

impl Role {
    /// Whether the parameter counts tokens (and so scales with the budget).
    pub fn is_tokens(self) -> bool {
        matches!(
            self,
            Role::Spread | Role::Protected | Role::Total | Role::Within
        )
    }

    /// Whether the parameter adds to the budget.
    pub fn in_budget(self) -> bool {
        matches!(self, Role::Spread | Role::Protected | Role::Total)
    }
}

/// Where a spec writes a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// A number after the keyword's `:` (the second after a `+`).
    Number,
    /// An option `@key=N`, `default` when absent (and then left out of the canonical form).
    Option { key: &'static str, default: u64 },
    /// A switch `@key` without a value: 1 when given, 0 (and left out of the canonical form) when
    /// absent.
    Switch { key: &'static str },
}

/// One parameter of a family.
#[derive(Debug)]
pub(super) struct Param {
    pub place: Place,
    pub role: Role,
    /// Its letter in the accepted forms and messages (`local:R`, `@window=W`).
    pub letter: char,
    /// Its name in messages, e.g. `recent window`.
    pub label: &'static str,
}

/// One policy family.
pub(super) struct Family {
    /// The spec's keyword, e.g. `h2o-layer`.
    pub name: &'static str,
    /// Its parameters: the numbers after `:` first, then its options, in canonical order.
    pub params: &'static [Param],
    /// The kind of this family with these values.
    pub kind: fn(&Values) -> PolicyKind,
    /// The values of `kind` if it is of this family (`None` otherwise).
    pub values: fn(&PolicyKind) -> Option<Values>,
    /// The policy object.
    pub build: fn(&Values) -> Box<dyn Policy>,
}

const fn number(role: Role, letter: char, label: &'static str) -> Param {
    Param {
        place: Place::Number,
        role,
        letter,
        label,
    }
}

const fn option(
    key: &'static str,
    default: u64,
    role: Role,
    letter: char,
    label: &'static str,
) -> Param {
    Param {
        place: Place::Option { key, default },
        role,
        letter,
        label,
    }
}

/// An on/off switch `@key` ([`Place::Switch`], [`Role::Switch`]).
const fn switch(key: &'static str, label: &'static str) -> Param {
    Param {
        place: Place::Switch { key },
        role: Role::Switch,
        letter: '-',
        label,
    }
}

/// A family's values from its first parameters' values (the rest 0).
fn vals(v: &[u64]) -> Values {
    let mut out = [0; MAX_PARAMS];
    out[..v.len()].copy_from_slice(v);
    out
}

/// A token count held as a value (always one that came from a `usize`).
pub(super) fn count(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

const BUDGET: Param = number(Role::Spread, 'B', "budget");

/// Every family, in the order of the accepted forms.
pub(super) const KINDS: &[Family] = &[
    Family {
        name: "full",
        params: &[],
        kind: |_| PolicyKind::Full,
        values: |k| matches!(k, PolicyKind::Full).then_some(vals(&[])),
        build: |_| Box::new(FullPolicy::new()),
    },
    Family {
        name: "local",
        params: &[number(Role::Spread, 'R', "recent window")],
        kind: |v| PolicyKind::Local {
            recent: count(v[0]),
        },
        values: |k| match *k {
            PolicyKind::Local { recent } => Some(vals(&[recent as u64])),
            _ => None,
        },
        build: |v| Box::new(LocalPolicy::new(count(v[0]))),
    },
    Family {
        name: "sink",
        params: &[
            number(Role::Protected, 'S', "sinks"),
            number(Role::Spread, 'R', "recent window"),
        ],
        kind: |v| PolicyKind::Sink {
            sinks: count(v[0]),
            recent: count(v[1]),
        },
        values: |k| match *k {
            PolicyKind::Sink { sinks, recent } => Some(vals(&[sinks as u64, recent as u64])),
            _ => None,
        },
        build: |v| Box::new(SinkPolicy::new(count(v[0]), count(v[1]))),
    },
    Family {
        name: "h2o",
        params: &H2O_PARAMS,
        kind: |v| PolicyKind::H2o {
            heavy: count(v[0]),
            recent: count(v[1]),
            scope: Scope::Head,
        },
        values: |k| match *k {
            PolicyKind::H2o {
                heavy,
                recent,
                scope: Scope::Head,
            } => Some(vals(&[heavy as u64, recent as u64])),
            _ => None,
        },
        build: |v| Box::new(H2oPolicy::new(count(v[0]), count(v[1]), Scope::Head)),
    },
    Family {
        name: "h2o-layer",
        params: &H2O_PARAMS,
        kind: |v| PolicyKind::H2o {
            heavy: count(v[0]),
            recent: count(v[1]),
            scope: Scope::Layer,
        },
        values: |k| match *k {
            PolicyKind::H2o {
                heavy,
                recent,
                scope: Scope::Layer,
            } => Some(vals(&[heavy as u64, recent as u64])),
            _ => None,
        },
        build: |v| Box::new(H2oPolicy::new(count(v[0]), count(v[1]), Scope::Layer)),
    },
    Family {
        name: "tova",
        params: &[BUDGET],
        kind: |v| PolicyKind::Tova {
            budget: count(v[0]),
            scope: Scope::Layer,
        },
        values: |k| match *k {
            PolicyKind::Tova {
                budget,
                scope: Scope::Layer,
            } => Some(vals(&[budget as u64])),
            _ => None,
        },
        build: |v| Box::new(TovaPolicy::new(count(v[0]), Scope::Layer)),
    },
    Family {
        name: "tova-head",
        params: &[BUDGET],
        kind: |v| PolicyKind::Tova {
            budget: count(v[0]),
            scope: Scope::Head,
        },
        values: |k| match *k {
            PolicyKind::Tova {
                budget,
                scope: Scope::Head,
            } => Some(vals(&[budget as u64])),
            _ => None,
        },
        build: |v| Box::new(TovaPolicy::new(count(v[0]), Scope::Head)),
    },
    Family {
        name: "scissor",
        params: &[
            number(Role::Total, 'B', "budget"),
            option(
                "window",
                DEFAULT_WINDOW as u64,
                Role::Steps,
                'W',
                "history window",
            ),
            option(
                "recent",
                DEFAULT_RECENT as u64,
                Role::Within,
                'R',
                "recent window",
            ),
            option("sinks", 0, Role::Within, 'S', "sinks"),
            switch("normalized", "normalisation by time in cache"),
        ],
        kind: |v| PolicyKind::Scissor {
            budget: count(v[0]),
            window: count(v[1]),
            recent: count(v[2]),
            sinks: count(v[3]),
            normalized: v[4] != 0,
        },
        values: |k| match *k {
            PolicyKind::Scissor {
                budget,
                window,
                recent,
                sinks,
                normalized,
            } => Some(vals(&[
                budget as u64,
                window as u64,
                recent as u64,
                sinks as u64,
                u64::from(normalized),
            ])),
            _ => None,
        },
        build: |v| {
            Box::new(
                ScissorPolicy::new(count(v[0]), count(v[1]), count(v[2]))
                    .with_sinks(count(v[3]))
                    .with_normalized(v[4] != 0),
            )
        },
    },
    Family {
        name: "knorm",
        params: &[
            BUDGET,
            option("skip", 0, Role::Layers, 'N', "skipped first layers"),
        ],
        kind: |v| PolicyKind::Knorm {
            budget: count(v[0]),
            skip: count(v[1]),
        },
        values: |k| match *k {
            PolicyKind::Knorm { budget, skip } => Some(vals(&[budget as u64, skip as u64])),
            _ => None,
        },
        // one layer's policy: the skipped layers are `full` ([`super::PolicySpec::layer_kinds`])
        build: |v| Box::new(KnormPolicy::new(count(v[0]))),
    },
    Family {
        name: "random",
        params: &[
            BUDGET,
            option("rng", 0, Role::Seed, 'N', "generator number"),
        ],
        kind: |v| PolicyKind::Random {
            budget: count(v[0]),
            rng: v[1],
        },
        values: |k| match *k {
            PolicyKind::Random { budget, rng } => Some(vals(&[budget as u64, rng])),
            _ => None,
        },
        build: |v| Box::new(RandomPolicy::new(count(v[0]), v[1])),
    },
];

/// h2o's and h2o-layer's numbers: the heavy hitters (spread by a schedule), the recent window.
const H2O_PARAMS: [Param; 2] = [
    number(Role::Spread, 'H', "heavy hitters"),
    number(Role::Protected, 'R', "recent window"),
];

/// Every option `@key=N` of the table, in the order a refusal names one that the family does not
/// take (the reference's order).
pub(super) const OPTION_KEYS: [&str; 6] =
    ["rng", "window", "recent", "sinks", "normalized", "skip"];

/// Every family's keyword, in the order of the accepted forms.
pub const FAMILIES: [&str; KINDS.len()] = {
    let mut names = [""; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        names[i] = KINDS[i].name;
        i += 1;
    }
    names
};

impl Family {
    /// The family with keyword `name`.
    pub fn named(name: &str) -> Option<&'static Family> {
        KINDS.iter().find(|f| f.name == name)
    }

    /// The parameters written as numbers after the `:`.
    pub fn numbers(&self) -> impl Iterator<Item = &'static Param> {
        self.params.iter().filter(|p| p.place == Place::Number)
    }

    /// Whether the family has a budget (every family but `full`).
    pub fn is_bounded(&self) -> bool {
        self.params.iter().any(|p| p.role.in_budget())
    }

    /// Whether the family takes the option `@key=N` (or the switch `@key`).
    pub fn takes(&self, key: &str) -> bool {
        self.params.iter().any(|p| p.key() == Some(key))
    }
}

impl Param {
    /// The option's or switch's key (`None` for a number after the `:`).
    pub fn key(&self) -> Option<&'static str> {
        match self.place {
            Place::Number => None,
            Place::Option { key, .. } | Place::Switch { key } => Some(key),
        }
    }
}

/// Whether `@key` is a switch (written without a value), not an option `@key=N`.
pub(super) fn is_switch(key: &str) -> bool {
    KINDS
        .iter()
        .flat_map(|f| f.params)
        .any(|p| matches!(p.place, Place::Switch { key: k } if k == key))
}

/// The families taking the option `@key=N`, e.g. `["random"]` for `rng`.
pub(super) fn takers(key: &str) -> impl Iterator<Item = &'static str> + '_ {
    KINDS.iter().filter(move |f| f.takes(key)).map(|f| f.name)
}

/// Whether the option `@key=N` counts tokens or steps (a `usize`), not a generator number.
pub(super) fn option_is_count(key: &str) -> bool {
    KINDS.iter().flat_map(|f| f.params).any(|p| {
        matches!(p.place, Place::Option { key: k, .. } if k == key) && p.role != Role::Seed
    })
}

/// A kind taken apart: its family's row and its values.
#[derive(Clone, Copy)]
pub(super) struct Parts {
    pub family: &'static Family,
    pub values: Values,
}

impl Parts {
    /// The row and values of `kind`.
    pub fn of(kind: &PolicyKind) -> Parts {
        KINDS
            .iter()
            .find_map(|family| {
                Some(Parts {
                    family,
                    values: (family.values)(kind)?,
                })
            })
            .unwrap_or_else(|| panic!("policy kind {kind:?} has no row in the family table"))
    }

    /// The kind back.
    pub fn kind(&self) -> PolicyKind {
        (self.family.kind)(&self.values)
    }

    /// Each parameter with its value, in the family's order.
    pub fn each(&self) -> impl Iterator<Item = (&'static Param, u64)> {
        self.family.params.iter().zip(self.values)
    }

    /// The sum of the values of the parameters whose role is one of `roles` (saturating).
    pub fn sum(&self, roles: &[Role]) -> u64 {
        self.each()
            .filter(|(p, _)| roles.contains(&p.role))
            .fold(0u64, |s, (_, v)| s.saturating_add(v))
    }

    /// The policy object.
    pub fn build(&self) -> Box<dyn Policy> {
        (self.family.build)(&self.values)
    }
}
