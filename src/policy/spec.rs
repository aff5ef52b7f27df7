//! Policy specs: parsing, canonical display, validation and construction of policies.
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
//!   (R <= B), defaults [`DEFAULT_WINDOW`] and [`DEFAULT_RECENT`].
//!
//! Options may come in any order, each once; surrounding whitespace is ignored. The canonical
//! form leaves defaults out and orders options `@window`, `@recent`, `@rng`, `@pyramid`, e.g.
//! `scissor:256@window=64`, `random:256@rng=7@pyramid`.

use std::fmt;
use std::str::FromStr;

use super::schedule::Schedule;
use super::scissor::{DEFAULT_RECENT, DEFAULT_WINDOW};
use super::{
    FullPolicy, H2oPolicy, KnormPolicy, LayerPolicies, LocalPolicy, Policy, RandomPolicy,
    ScissorPolicy, Scope, SinkPolicy, TovaPolicy,
};

/// The accepted spec forms, as shown in error messages (identical to the reference's).
pub const ACCEPTED_FORMS: &str = "full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R | tova:B | \
     tova-head:B | scissor:B | knorm:B | random:B, then optional options: @pyramid or @uniform \
     (any bounded family), @rng=N (random), @window=W and @recent=R (scissor) \
     (non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64, \
     h2o:192+64@pyramid, random:256@rng=7)";

/// Every family's keyword, in the order of [`ACCEPTED_FORMS`].
pub const FAMILIES: [&str; 10] = [
    "full",
    "local",
    "sink",
    "h2o",
    "h2o-layer",
    "tova",
    "tova-head",
    "scissor",
    "knorm",
    "random",
];

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

/// A policy family with its numbers (one layer's policy, or the mean layer of a schedule).
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
    /// Scissorhands: the `recent` last positions and the least often unimportant of the rest.
    Scissor {
        budget: usize,
        window: usize,
        recent: usize,
    },
    /// The `budget` keys with the smallest L2 norm.
    Knorm { budget: usize },
    /// `budget` tokens kept at random (generator number `rng`).
    Random { budget: usize, rng: u64 },
}

/// A parsed policy spec: a family with its numbers and a per-layer budget schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub schedule: Schedule,
}

impl From<PolicyKind> for PolicySpec {
    /// The kind with the uniform schedule.
    fn from(kind: PolicyKind) -> Self {
        PolicySpec {
            kind,
            schedule: Schedule::Uniform,
        }
    }
}

impl PolicyKind {
    /// Most tokens kept per head; `None` for the full cache (saturates at `usize::MAX`).
    pub fn budget(&self) -> Option<usize> {
        match *self {
            PolicyKind::Full => None,
            PolicyKind::Local { recent } => Some(recent),
            PolicyKind::Sink { sinks, recent } => Some(sinks.saturating_add(recent)),
            PolicyKind::H2o { heavy, recent, .. } => Some(heavy.saturating_add(recent)),
            PolicyKind::Tova { budget, .. }
            | PolicyKind::Scissor { budget, .. }
            | PolicyKind::Knorm { budget }
            | PolicyKind::Random { budget, .. } => Some(budget),
        }
    }

    /// The policy object.
    pub fn build(&self) -> Box<dyn Policy> {
        match *self {
            PolicyKind::Full => Box::new(FullPolicy::new()),
            PolicyKind::Local { recent } => Box::new(LocalPolicy::new(recent)),
            PolicyKind::Sink { sinks, recent } => Box::new(SinkPolicy::new(sinks, recent)),
            PolicyKind::H2o {
                heavy,
                recent,
                scope,
            } => Box::new(H2oPolicy::new(heavy, recent, scope)),
            PolicyKind::Tova { budget, scope } => Box::new(TovaPolicy::new(budget, scope)),
            PolicyKind::Scissor {
                budget,
                window,
                recent,
            } => Box::new(ScissorPolicy::new(budget, window, recent)),
            PolicyKind::Knorm { budget } => Box::new(KnormPolicy::new(budget)),
            PolicyKind::Random { budget, rng } => Box::new(RandomPolicy::new(budget, rng)),
        }
    }

    /// Kind name: the spec's keyword (`full`, `local`, `sink`, `h2o`, `h2o-layer`, `tova`,
    /// `tova-head`, `scissor`, `knorm`, `random`).
    pub fn family(&self) -> &'static str {
        match self {
            PolicyKind::Full => "full",
            PolicyKind::Local { .. } => "local",
            PolicyKind::Sink { .. } => "sink",
            PolicyKind::H2o {
                scope: Scope::Head, ..
            } => "h2o",
            PolicyKind::H2o {
                scope: Scope::Layer,
                ..
            } => "h2o-layer",
            PolicyKind::Tova {
                scope: Scope::Layer,
                ..
            } => "tova",
            PolicyKind::Tova {
                scope: Scope::Head, ..
            } => "tova-head",
            PolicyKind::Scissor { .. } => "scissor",
            PolicyKind::Knorm { .. } => "knorm",
            PolicyKind::Random { .. } => "random",
        }
    }

    /// `(fixed, free, at_least)`: the budget's protected part every layer keeps under a schedule,
    /// the part a schedule spreads, and the least free part a layer may get (1 when nothing is
    /// protected, so no layer's budget drops to 0). `None` for the full cache.
    fn split(&self) -> Option<(usize, usize, usize)> {
        let (fixed, free) = match *self {
            PolicyKind::Full => return None,
            PolicyKind::Local { recent } => (0, recent),
            PolicyKind::Sink { sinks, recent } => (sinks, recent),
            PolicyKind::H2o { heavy, recent, .. } => (recent, heavy),
            PolicyKind::Scissor { budget, recent, .. } => (recent, budget - recent),
            PolicyKind::Tova { budget, .. }
            | PolicyKind::Knorm { budget }
            | PolicyKind::Random { budget, .. } => (0, budget),
        };
        Some((fixed, free, usize::from(fixed == 0)))
    }

    /// The kind with its free part (see [`PolicyKind::split`]) set to `free`.
    fn with_free(&self, free: usize) -> PolicyKind {
        let mut k = *self;
        match &mut k {
            PolicyKind::Full => {}
            PolicyKind::Local { recent } | PolicyKind::Sink { recent, .. } => *recent = free,
            PolicyKind::H2o { heavy, .. } => *heavy = free,
            PolicyKind::Scissor { budget, recent, .. } => *budget = *recent + free,
            PolicyKind::Tova { budget, .. }
            | PolicyKind::Knorm { budget }
            | PolicyKind::Random { budget, .. } => *budget = free,
        }
        k
    }

    /// The kind with its token counts (budgets, windows of positions, sinks) scaled by
    /// `f`; scissor's history window (steps) and random's generator number stay.
    fn map_counts(&self, f: impl Fn(usize) -> usize) -> PolicyKind {
        match *self {
            PolicyKind::Full => PolicyKind::Full,
            PolicyKind::Local { recent } => PolicyKind::Local { recent: f(recent) },
            PolicyKind::Sink { sinks, recent } => PolicyKind::Sink {
                sinks: f(sinks),
                recent: f(recent),
            },
            PolicyKind::H2o {
                heavy,
                recent,
                scope,
            } => PolicyKind::H2o {
                heavy: f(heavy),
                recent: f(recent),
                scope,
            },
            PolicyKind::Tova { budget, scope } => PolicyKind::Tova {
                budget: f(budget),
                scope,
            },
            PolicyKind::Scissor {
                budget,
                window,
                recent,
            } => {
                let budget = f(budget);
                PolicyKind::Scissor {
                    budget,
                    window,
                    recent: f(recent).min(budget),
                }
            }
            PolicyKind::Knorm { budget } => PolicyKind::Knorm { budget: f(budget) },
            PolicyKind::Random { budget, rng } => PolicyKind::Random {
                budget: f(budget),
                rng,
            },
        }
    }
}

impl PolicySpec {
    /// The full cache.
    pub const FULL: PolicySpec = PolicySpec {
        kind: PolicyKind::Full,
        schedule: Schedule::Uniform,
    };

    /// Most tokens kept per head (per layer, averaged over the layers under a schedule); `None`
    /// for the full cache.
    pub fn budget(&self) -> Option<usize> {
        self.kind.budget()
    }

    /// Whether the policy reads scores of any kind.
    pub fn needs_scores(&self) -> bool {
        self.kind.build().needs_scores()
    }

    /// Each layer's family and numbers for a model of `layers` layers.
    pub fn layer_kinds(&self, layers: usize) -> Vec<PolicyKind> {
        match (self.schedule, self.kind.split()) {
            (Schedule::Pyramid, Some((_, free, at_least))) => Schedule::Pyramid
                .free_parts(free, layers, at_least)
                .into_iter()
                .map(|f| self.kind.with_free(f))
                .collect(),
            _ => vec![self.kind; layers],
        }
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

    /// The policies of a model of `layers` layers: one shared policy under the uniform schedule,
    /// one per layer otherwise.
    pub fn build(&self, layers: usize) -> LayerPolicies {
        match self.schedule {
            Schedule::Uniform => LayerPolicies::Shared(self.kind.build()),
            Schedule::Pyramid => LayerPolicies::PerLayer(
                self.layer_kinds(layers).iter().map(|k| k.build()).collect(),
            ),
        }
    }

    /// Kind name: the spec's keyword (see [`PolicyKind::family`]); the schedule is not part of it.
    pub fn family(&self) -> &'static str {
        self.kind.family()
    }

    /// Short human label for tables and plot legends: the canonical spec with `:` and `@` as
    /// spaces, e.g. `local 256`, `sink 4+252`, `h2o 192+64`, `h2o 192+64 pyramid`,
    /// `random 256 rng=7`, `full`.
    pub fn label(&self) -> String {
        self.to_string().replace([':', '@'], " ")
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
            kind: self.kind.map_counts(f),
            schedule: self.schedule,
        }
    }
}

impl fmt::Display for PolicyKind {
    /// The canonical spec of the kind alone, e.g. `h2o-layer:192+64`, `scissor:256@window=64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PolicyKind::Full => write!(f, "full"),
            PolicyKind::Local { recent } => write!(f, "local:{recent}"),
            PolicyKind::Sink { sinks, recent } => write!(f, "sink:{sinks}+{recent}"),
            PolicyKind::H2o { heavy, recent, .. } => {
                write!(f, "{}:{heavy}+{recent}", self.family())
            }
            PolicyKind::Tova { budget, .. } | PolicyKind::Knorm { budget } => {
                write!(f, "{}:{budget}", self.family())
            }
            PolicyKind::Scissor {
                budget,
                window,
                recent,
            } => {
                write!(f, "scissor:{budget}")?;
                if window != DEFAULT_WINDOW {
                    write!(f, "@window={window}")?;
                }
                if recent != DEFAULT_RECENT {
                    write!(f, "@recent={recent}")?;
                }
                Ok(())
            }
            PolicyKind::Random { budget, rng } => {
                write!(f, "random:{budget}")?;
                if rng != 0 {
                    write!(f, "@rng={rng}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for PolicySpec {
    /// The canonical spec (what results and traces record), e.g. `h2o-layer:192+64`,
    /// `h2o:192+64@pyramid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match self.schedule {
            Schedule::Uniform => Ok(()),
            s => write!(f, "@{}", s.name()),
        }
    }
}

/// A non-empty run of ASCII digits as a number (`Err` when it does not fit).
fn number<T: FromStr>(s: &str) -> Option<Result<T, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<T>().map_err(|_| ()))
}

/// The options after the family's numbers, each at most once.
#[derive(Default)]
struct Options {
    schedule: Option<Schedule>,
    rng: Option<u64>,
    window: Option<usize>,
    recent: Option<usize>,
}

/// What went wrong with one option, as the start of an error message (the accepted forms follow).
fn parse_options<'a>(opts: impl Iterator<Item = &'a str>) -> Result<Options, String> {
    let mut o = Options::default();
    for opt in opts {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let twice = || format!("option `@{key}` is given twice; ");
        let num = |v: Option<&str>| -> Result<u64, String> {
            match v.and_then(number::<u64>) {
                Some(Ok(n)) => Ok(n),
                Some(Err(())) => Err("a number is too large; ".to_string()),
                None => Err(format!("option `@{key}` takes a number (@{key}=N); ")),
            }
        };
        let count = |v: Option<&str>| -> Result<usize, String> {
            usize::try_from(num(v)?).map_err(|_| "a number is too large; ".to_string())
        };
        match key {
            "uniform" | "pyramid" if value.is_none() => {
                let s = if key == "pyramid" {
                    Schedule::Pyramid
                } else {
                    Schedule::Uniform
                };
                if o.schedule.replace(s).is_some() {
                    return Err("the schedule is given twice; ".to_string());
                }
            }
            "rng" if o.rng.is_some() => return Err(twice()),
            "rng" => o.rng = Some(num(value)?),
            "window" if o.window.is_some() => return Err(twice()),
            "window" => o.window = Some(count(value)?),
            "recent" if o.recent.is_some() => return Err(twice()),
            "recent" => o.recent = Some(count(value)?),
            _ => return Err(format!("unknown option `@{opt}`; ")),
        }
    }
    Ok(o)
}

/// The kind for `name` with its numbers (`a`, `b`), or what is wrong with them.
fn kind_of(name: &str, a: Option<usize>, b: Option<usize>) -> Result<PolicyKind, String> {
    let one = |k: &str| format!("`{k}` takes one number ({k}:B); ");
    Ok(match (name, a, b) {
        ("full", None, None) => PolicyKind::Full,
        ("full", _, _) => return Err("`full` takes no numbers; ".to_string()),
        ("local", Some(recent), None) => PolicyKind::Local { recent },
        ("local", _, _) => return Err("`local` takes one number (local:R); ".to_string()),
        ("tova" | "tova-head", Some(budget), None) => PolicyKind::Tova {
            budget,
            scope: if name == "tova" {
                Scope::Layer
            } else {
                Scope::Head
            },
        },
        ("scissor", Some(budget), None) => PolicyKind::Scissor {
            budget,
            window: DEFAULT_WINDOW,
            recent: DEFAULT_RECENT,
        },
        ("knorm", Some(budget), None) => PolicyKind::Knorm { budget },
        ("random", Some(budget), None) => PolicyKind::Random { budget, rng: 0 },
        ("tova" | "tova-head" | "scissor" | "knorm" | "random", _, _) => return Err(one(name)),
        ("sink", Some(sinks), Some(recent)) => PolicyKind::Sink { sinks, recent },
        ("h2o" | "h2o-layer", Some(heavy), Some(recent)) => PolicyKind::H2o {
            heavy,
            recent,
            scope: if name == "h2o" {
                Scope::Head
            } else {
                Scope::Layer
            },
        },
        (n, _, _) => return Err(format!("`{n}` takes two numbers ({n}:A+B); ")),
    })
}

/// `kind` with the options applied, or what is wrong with them.
fn with_options(kind: PolicyKind, o: &Options) -> Result<PolicySpec, String> {
    let mut kind = kind;
    if o.rng.is_some() && !matches!(kind, PolicyKind::Random { .. }) {
        return Err(format!(
            "`@rng` applies to random only, not `{}`; ",
            kind.family()
        ));
    }
    if (o.window.is_some() || o.recent.is_some()) && !matches!(kind, PolicyKind::Scissor { .. }) {
        let which = if o.window.is_some() {
            "window"
        } else {
            "recent"
        };
        return Err(format!(
            "`@{which}` applies to scissor only, not `{}`; ",
            kind.family()
        ));
    }
    match &mut kind {
        PolicyKind::Random { rng, .. } => *rng = o.rng.unwrap_or(0),
        PolicyKind::Scissor {
            budget,
            window,
            recent,
        } => {
            *window = o.window.unwrap_or(DEFAULT_WINDOW);
            *recent = o.recent.unwrap_or(DEFAULT_RECENT);
            if *window == 0 {
                return Err("scissor's history window is 0 steps; ".to_string());
            }
            if *recent > *budget && *budget > 0 {
                return Err(format!(
                    "scissor's recent window {recent} is larger than its budget {budget} (lower it with @recent=R); "
                ));
            }
        }
        PolicyKind::Full if o.schedule.is_some() => {
            return Err("`full` has no budget to schedule; ".to_string())
        }
        _ => {}
    }
    Ok(PolicySpec {
        kind,
        schedule: o.schedule.unwrap_or_default(),
    })
}

impl FromStr for PolicySpec {
    type Err = PolicyError;

    /// Parses a spec of the grammar in the module docs (whitespace trimmed); refuses anything
    /// else and budget 0.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| PolicyError::Invalid {
            spec: raw.to_string(),
            reason,
        };
        let text = raw.trim();
        let mut parts = text.split('@');
        let head = parts.next().unwrap_or_default();
        let (name, rest) = match head.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (head, None),
        };
        if !FAMILIES.contains(&name) {
            return Err(invalid(String::new()));
        }
        // numbers: None, one, or two joined by '+'
        let (a, b) = match rest {
            None => (None, None),
            Some(r) => match r.split_once('+') {
                None => (
                    Some(number::<usize>(r).ok_or_else(|| invalid(String::new()))?),
                    None,
                ),
                Some((x, y)) => (
                    Some(number::<usize>(x).ok_or_else(|| invalid(String::new()))?),
                    Some(number::<usize>(y).ok_or_else(|| invalid(String::new()))?),
                ),
            },
        };
        let too_large = || invalid("a number is too large; ".to_string());
        let a = a.map(|r| r.map_err(|_| too_large())).transpose()?;
        let b = b.map(|r| r.map_err(|_| too_large())).transpose()?;
        if let (Some(x), Some(y)) = (a, b) {
            if x.checked_add(y).is_none() {
                return Err(too_large());
            }
        }
        let kind = kind_of(name, a, b).map_err(invalid)?;
        let options = parse_options(parts).map_err(invalid)?;
        let spec = with_options(kind, &options).map_err(invalid)?;
        if spec.budget() == Some(0) {
            return Err(PolicyError::ZeroBudget {
                spec: raw.to_string(),
            });
        }
        Ok(spec)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<PolicySpec, PolicyError> {
        s.parse()
    }

    fn k(kind: PolicyKind) -> PolicySpec {
        kind.into()
    }

    #[test]
    fn parses_all_forms() {
        assert_eq!(p("full"), Ok(PolicySpec::FULL));
        assert_eq!(p("local:256"), Ok(k(PolicyKind::Local { recent: 256 })));
        assert_eq!(
            p("sink:4+252"),
            Ok(k(PolicyKind::Sink {
                sinks: 4,
                recent: 252
            }))
        );
        assert_eq!(
            p("h2o:192+64"),
            Ok(k(PolicyKind::H2o {
                heavy: 192,
                recent: 64,
                scope: Scope::Head
            }))
        );
        assert_eq!(
            p(" h2o-layer:192+64\n"),
            Ok(k(PolicyKind::H2o {
                heavy: 192,
                recent: 64,
                scope: Scope::Layer
            }))
        );
        assert_eq!(
            p("h2o:5+0"),
            Ok(k(PolicyKind::H2o {
                heavy: 5,
                recent: 0,
                scope: Scope::Head
            }))
        );
        assert_eq!(
            p("sink:0+8"),
            Ok(k(PolicyKind::Sink {
                sinks: 0,
                recent: 8
            }))
        );
        assert_eq!(p("local:007"), Ok(k(PolicyKind::Local { recent: 7 })));
        assert_eq!(
            p("tova:64"),
            Ok(k(PolicyKind::Tova {
                budget: 64,
                scope: Scope::Layer
            }))
        );
        assert_eq!(
            p("tova-head:64"),
            Ok(k(PolicyKind::Tova {
                budget: 64,
                scope: Scope::Head
            }))
        );
        assert_eq!(
            p("scissor:64"),
            Ok(k(PolicyKind::Scissor {
                budget: 64,
                window: 400,
                recent: 10
            }))
        );
        assert_eq!(
            p("scissor:64@recent=4@window=32"),
            Ok(k(PolicyKind::Scissor {
                budget: 64,
                window: 32,
                recent: 4
            }))
        );
        assert_eq!(p("knorm:9"), Ok(k(PolicyKind::Knorm { budget: 9 })));
        assert_eq!(
            p("random:9"),
            Ok(k(PolicyKind::Random { budget: 9, rng: 0 }))
        );
        assert_eq!(
            p("random:9@pyramid@rng=18446744073709551615"),
            Ok(PolicySpec {
                kind: PolicyKind::Random {
                    budget: 9,
                    rng: u64::MAX
                },
                schedule: Schedule::Pyramid
            })
        );
        assert_eq!(p("h2o:1+2@uniform"), p("h2o:1+2"));
    }

    #[test]
    fn round_trip() {
        for s in [
            "full",
            "local:256",
            "sink:4+252",
            "h2o:192+64",
            "h2o-layer:192+64",
            "h2o:0+1",
            "sink:1+0",
            "tova:256",
            "tova-head:8",
            "scissor:256",
            "scissor:256@window=64",
            "scissor:256@recent=0",
            "scissor:256@window=8@recent=3",
            "knorm:5",
            "random:5",
            "random:5@rng=7",
            "h2o:192+64@pyramid",
            "local:64@pyramid",
            "random:5@rng=7@pyramid",
            "scissor:256@window=64@pyramid",
        ] {
            let spec = p(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(p(&spec.to_string()), Ok(spec));
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), spec);
            let pol = spec.kind.build();
            assert_eq!(spec.schedule == Schedule::Uniform, pol.spec() == s, "{s}");
            assert_eq!(pol.budget(), spec.budget().unwrap_or(usize::MAX));
            assert_eq!(pol.needs_scores(), spec.needs_scores());
        }
        // options in another order, defaults spelled out: the same spec, canonical string
        assert_eq!(
            p("random:5@pyramid@rng=7").unwrap().to_string(),
            "random:5@rng=7@pyramid"
        );
        assert_eq!(
            p("scissor:80@recent=10@window=400@uniform")
                .unwrap()
                .to_string(),
            "scissor:80"
        );
        assert_eq!(p("random:5@rng=0").unwrap().to_string(), "random:5");
        assert!(serde_json::from_str::<PolicySpec>("\"local:0\"").is_err());
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "",
            "foo",
            "Full",
            "local",
            "local:",
            "local:-1",
            "local:+3",
            "local:1.5",
            "local :3",
            "sink:4+",
            "sink:+4",
            "h2o:1+2+3",
            "h2o-head:1+2",
            "h2o:a+b",
            "local: 1",
            "h2o:１+2",
            "tova",
            "tova:1+2",
            "knorm:",
            "random:4@",
            "random:4@rng",
            "random:4@rng=",
            "random:4@rng=-1",
            "random:4@rng=1@rng=2",
            "random:4@seed=1",
            "h2o:1+2@pyramid@uniform",
            "h2o:1+2@pyramid=3",
            "h2o:1+2@rng=3",
            "local:4@window=3",
            "scissor:4@recent=2@recent=3",
            "scissor:4@window=0",
            "scissor:4@recent=5",
            "scissor:8",
            "full@pyramid",
            "random:4@rng=99999999999999999999999",
        ] {
            let e = p(s).unwrap_err();
            assert!(matches!(e, PolicyError::Invalid { .. }), "{s:?}: {e}");
            assert!(e.to_string().contains(ACCEPTED_FORMS), "{s:?}: {e}");
        }
        // "local:1 " is trimmed, so it is fine
        assert_eq!(p("local:1 "), Ok(k(PolicyKind::Local { recent: 1 })));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            p("foo").unwrap_err().to_string(),
            format!("invalid policy spec 'foo': accepted forms are {ACCEPTED_FORMS}")
        );
        assert!(ACCEPTED_FORMS
            .starts_with("full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R | tova:B"));
        let msg = |s: &str| p(s).unwrap_err().to_string();
        assert!(msg("full:3").starts_with("invalid policy spec 'full:3': `full` takes no numbers; accepted forms are full | local:R"));
        assert!(msg("local:1+2").contains("`local` takes one number (local:R); accepted forms are"));
        assert!(msg("sink:4").contains("`sink` takes two numbers (sink:A+B); accepted forms are"));
        assert!(msg("h2o-layer:4").contains("`h2o-layer` takes two numbers (h2o-layer:A+B)"));
        assert!(msg("tova:1+2").contains("`tova` takes one number (tova:B); "));
        assert!(msg("random:4@seed=1").contains("unknown option `@seed=1`; "));
        assert!(msg("random:4@rng").contains("option `@rng` takes a number (@rng=N); "));
        assert!(msg("random:4@rng=1@rng=1").contains("option `@rng` is given twice; "));
        assert!(msg("h2o:1+1@pyramid@pyramid").contains("the schedule is given twice; "));
        assert!(msg("h2o:4+4@rng=1").contains("`@rng` applies to random only, not `h2o`; "));
        assert!(msg("tova:4@recent=1").contains("`@recent` applies to scissor only, not `tova`; "));
        assert!(msg("scissor:8").contains(
            "scissor's recent window 10 is larger than its budget 8 (lower it with @recent=R); "
        ));
        assert!(msg("scissor:80@window=0").contains("scissor's history window is 0 steps; "));
        assert!(msg("full@pyramid").contains("`full` has no budget to schedule; "));
        assert_eq!(
            msg("h2o:0+0"),
            format!("invalid policy spec 'h2o:0+0': the budget is 0; accepted forms are {ACCEPTED_FORMS}")
        );
        assert!(matches!(p("local:0"), Err(PolicyError::ZeroBudget { .. })));
        assert!(matches!(
            p("random:0@rng=3"),
            Err(PolicyError::ZeroBudget { .. })
        ));
        assert!(matches!(
            p("scissor:0@recent=0"),
            Err(PolicyError::ZeroBudget { .. })
        ));
        assert!(msg("local:99999999999999999999999").contains("too large"));
        assert!(msg(&format!("sink:{}+1", usize::MAX)).contains("too large"));
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
