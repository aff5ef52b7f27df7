//! Policy specs: parsing, canonical display, validation and construction of policies.
//!
//! Accepted forms (the same grammar and canonical strings as `export/reference.py`):
//! `full`, `local:R`, `sink:S+R`, `h2o:H+R`, `h2o-layer:H+R` with non-negative decimal integers
//! and budget (`S + R`, `H + R`) at least 1; surrounding whitespace is ignored. Heavy hitters
//! without scores (heavy > 0 on a score-free policy) cannot be expressed in this grammar.

use std::fmt;
use std::str::FromStr;

use super::{FullPolicy, H2oPolicy, LocalPolicy, Policy, Scope, SinkPolicy};

/// The accepted spec forms, as shown in error messages (identical to the reference's).
pub const ACCEPTED_FORMS: &str = "full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R \
     (non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64)";

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
}

/// A parsed policy spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicySpec {
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
}

impl PolicySpec {
    /// Most tokens kept per head; `None` for the full cache (saturates at `usize::MAX`).
    pub fn budget(&self) -> Option<usize> {
        match *self {
            PolicySpec::Full => None,
            PolicySpec::Local { recent } => Some(recent),
            PolicySpec::Sink { sinks, recent } => Some(sinks.saturating_add(recent)),
            PolicySpec::H2o { heavy, recent, .. } => Some(heavy.saturating_add(recent)),
        }
    }

    /// Whether the policy reads accumulated scores.
    pub fn needs_scores(&self) -> bool {
        matches!(self, PolicySpec::H2o { .. })
    }

    /// Refuses budget 0 and a budget above the model's `max_positions`.
    pub fn validate(&self, max_positions: usize) -> Result<(), PolicyError> {
        match self.budget() {
            None => Ok(()),
            Some(0) => Err(PolicyError::ZeroBudget {
                spec: self.to_string(),
            }),
            Some(b) if b > max_positions => Err(PolicyError::BudgetTooLarge {
                spec: self.to_string(),
                budget: b,
                max_positions,
            }),
            Some(_) => Ok(()),
        }
    }

    /// The policy object.
    pub fn build(&self) -> Box<dyn Policy> {
        match *self {
            PolicySpec::Full => Box::new(FullPolicy::new()),
            PolicySpec::Local { recent } => Box::new(LocalPolicy::new(recent)),
            PolicySpec::Sink { sinks, recent } => Box::new(SinkPolicy::new(sinks, recent)),
            PolicySpec::H2o {
                heavy,
                recent,
                scope,
            } => Box::new(H2oPolicy::new(heavy, recent, scope)),
        }
    }

    /// Kind name: `full`, `local`, `sink`, `h2o` or `h2o-layer` (the spec without numbers).
    pub fn family(&self) -> &'static str {
        match self {
            PolicySpec::Full => "full",
            PolicySpec::Local { .. } => "local",
            PolicySpec::Sink { .. } => "sink",
            PolicySpec::H2o {
                scope: Scope::Head, ..
            } => "h2o",
            PolicySpec::H2o {
                scope: Scope::Layer,
                ..
            } => "h2o-layer",
        }
    }

    /// Short human label for tables and plot legends, e.g. `local 256`, `sink 4+252`,
    /// `h2o 192+64`, `h2o-layer 192+64`, `full`.
    pub fn label(&self) -> String {
        match *self {
            PolicySpec::Full => "full".to_string(),
            PolicySpec::Local { recent } => format!("local {recent}"),
            PolicySpec::Sink { sinks, recent } => format!("sink {sinks}+{recent}"),
            PolicySpec::H2o { heavy, recent, .. } => format!("{} {heavy}+{recent}", self.family()),
        }
    }

    /// The spec with every number scaled by `num / den`, rounded to nearest (ties up); a
    /// non-zero number stays at least 1, so the budget never drops to 0. `den == 0` returns
    /// the spec unchanged. E.g. `h2o:192+64` scaled by 512/2048 is `h2o:48+16`.
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
        match *self {
            PolicySpec::Full => PolicySpec::Full,
            PolicySpec::Local { recent } => PolicySpec::Local { recent: f(recent) },
            PolicySpec::Sink { sinks, recent } => PolicySpec::Sink {
                sinks: f(sinks),
                recent: f(recent),
            },
            PolicySpec::H2o {
                heavy,
                recent,
                scope,
            } => PolicySpec::H2o {
                heavy: f(heavy),
                recent: f(recent),
                scope,
            },
        }
    }
}

impl fmt::Display for PolicySpec {
    /// The canonical spec (what results and traces record), e.g. `h2o-layer:192+64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PolicySpec::Full => write!(f, "full"),
            PolicySpec::Local { recent } => write!(f, "local:{recent}"),
            PolicySpec::Sink { sinks, recent } => write!(f, "sink:{sinks}+{recent}"),
            PolicySpec::H2o { heavy, recent, .. } => {
                write!(f, "{}:{heavy}+{recent}", self.family())
            }
        }
    }
}

/// A non-empty run of ASCII digits as a number.
fn number(s: &str) -> Option<Result<usize, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<usize>().map_err(|_| ()))
}

impl FromStr for PolicySpec {
    type Err = PolicyError;

    /// Parses `full`, `local:R`, `sink:S+R`, `h2o:H+R` or `h2o-layer:H+R` (whitespace trimmed);
    /// refuses anything else and budget 0.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| PolicyError::Invalid {
            spec: raw.to_string(),
            reason,
        };
        let text = raw.trim();
        let (name, rest) = match text.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (text, None),
        };
        if !matches!(name, "full" | "local" | "sink" | "h2o" | "h2o-layer") {
            return Err(invalid(String::new()));
        }
        // numbers: None, one, or two joined by '+'
        let (a, b) = match rest {
            None => (None, None),
            Some(r) => match r.split_once('+') {
                None => (Some(number(r).ok_or_else(|| invalid(String::new()))?), None),
                Some((x, y)) => (
                    Some(number(x).ok_or_else(|| invalid(String::new()))?),
                    Some(number(y).ok_or_else(|| invalid(String::new()))?),
                ),
            },
        };
        let too_large = || invalid("a number is too large; ".to_string());
        let a = a.map(|r| r.map_err(|_| too_large())).transpose()?;
        let b = b.map(|r| r.map_err(|_| too_large())).transpose()?;
        let spec = match (name, a, b) {
            ("full", None, None) => PolicySpec::Full,
            ("full", _, _) => return Err(invalid("`full` takes no numbers; ".to_string())),
            ("local", Some(recent), None) => PolicySpec::Local { recent },
            ("local", _, _) => {
                return Err(invalid("`local` takes one number (local:R); ".to_string()))
            }
            (n, Some(x), Some(y)) => {
                if x.checked_add(y).is_none() {
                    return Err(too_large());
                }
                match n {
                    "sink" => PolicySpec::Sink {
                        sinks: x,
                        recent: y,
                    },
                    "h2o" => PolicySpec::H2o {
                        heavy: x,
                        recent: y,
                        scope: Scope::Head,
                    },
                    _ => PolicySpec::H2o {
                        heavy: x,
                        recent: y,
                        scope: Scope::Layer,
                    },
                }
            }
            (n, _, _) => return Err(invalid(format!("`{n}` takes two numbers ({n}:A+B); "))),
        };
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

    #[test]
    fn parses_all_forms() {
        assert_eq!(p("full"), Ok(PolicySpec::Full));
        assert_eq!(p("local:256"), Ok(PolicySpec::Local { recent: 256 }));
        assert_eq!(
            p("sink:4+252"),
            Ok(PolicySpec::Sink {
                sinks: 4,
                recent: 252
            })
        );
        assert_eq!(
            p("h2o:192+64"),
            Ok(PolicySpec::H2o {
                heavy: 192,
                recent: 64,
                scope: Scope::Head
            })
        );
        assert_eq!(
            p(" h2o-layer:192+64\n"),
            Ok(PolicySpec::H2o {
                heavy: 192,
                recent: 64,
                scope: Scope::Layer
            })
        );
        assert_eq!(
            p("h2o:5+0"),
            Ok(PolicySpec::H2o {
                heavy: 5,
                recent: 0,
                scope: Scope::Head
            })
        );
        assert_eq!(
            p("sink:0+8"),
            Ok(PolicySpec::Sink {
                sinks: 0,
                recent: 8
            })
        );
        assert_eq!(p("local:007"), Ok(PolicySpec::Local { recent: 7 }));
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
        ] {
            let spec = p(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(p(&spec.to_string()), Ok(spec));
            assert_eq!(spec.build().spec(), s);
            assert_eq!(spec.build().budget(), spec.budget().unwrap_or(usize::MAX));
            assert_eq!(spec.build().needs_scores(), spec.needs_scores());
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), spec);
        }
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
        ] {
            let e = p(s).unwrap_err();
            assert!(matches!(e, PolicyError::Invalid { .. }), "{s:?}: {e}");
            assert!(e.to_string().contains(ACCEPTED_FORMS), "{s:?}: {e}");
        }
        // "local:1 " is trimmed, so it is fine
        assert_eq!(p("local:1 "), Ok(PolicySpec::Local { recent: 1 }));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            p("foo").unwrap_err().to_string(),
            "invalid policy spec 'foo': accepted forms are full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R \
             (non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64)"
        );
        assert!(p("full:3").unwrap_err().to_string().starts_with("invalid policy spec 'full:3': `full` takes no numbers; accepted forms are full | local:R"));
        assert!(p("local:1+2")
            .unwrap_err()
            .to_string()
            .contains("`local` takes one number (local:R); accepted forms are"));
        assert!(p("sink:4")
            .unwrap_err()
            .to_string()
            .contains("`sink` takes two numbers (sink:A+B); accepted forms are"));
        assert!(p("h2o-layer:4")
            .unwrap_err()
            .to_string()
            .contains("`h2o-layer` takes two numbers (h2o-layer:A+B)"));
        assert_eq!(
            p("h2o:0+0").unwrap_err().to_string(),
            format!("invalid policy spec 'h2o:0+0': the budget is 0; accepted forms are {ACCEPTED_FORMS}")
        );
        assert!(matches!(p("local:0"), Err(PolicyError::ZeroBudget { .. })));
        assert!(p("local:99999999999999999999999")
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(p(&format!("sink:{}+1", usize::MAX))
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn validate_budget() {
        let s = p("h2o:192+64").unwrap();
        assert_eq!(s.validate(2048), Ok(()));
        assert_eq!(s.validate(256), Ok(()));
        assert_eq!(
            s.validate(255).unwrap_err().to_string(),
            "policy h2o:192+64: budget 256 exceeds the model's 255 positions; use a smaller budget or `full`"
        );
        assert_eq!(PolicySpec::Full.validate(1), Ok(()));
        assert!(matches!(
            PolicySpec::Local { recent: 0 }.validate(10),
            Err(PolicyError::ZeroBudget { .. })
        ));
    }

    #[test]
    fn helpers() {
        let specs = [
            "full",
            "local:256",
            "sink:4+252",
            "h2o:192+64",
            "h2o-layer:192+64",
        ]
        .map(|s| p(s).unwrap());
        let fam: Vec<_> = specs.iter().map(|s| s.family()).collect();
        assert_eq!(fam, ["full", "local", "sink", "h2o", "h2o-layer"]);
        let lab: Vec<_> = specs.iter().map(|s| s.label()).collect();
        assert_eq!(
            lab,
            [
                "full",
                "local 256",
                "sink 4+252",
                "h2o 192+64",
                "h2o-layer 192+64"
            ]
        );
        assert_eq!(
            specs.map(|s| s.budget()),
            [None, Some(256), Some(256), Some(256), Some(256)]
        );
        assert_eq!(
            specs.map(|s| s.needs_scores()),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn scaling() {
        assert_eq!(
            p("h2o:192+64").unwrap().scaled(512, 2048).to_string(),
            "h2o:48+16"
        );
        assert_eq!(
            p("sink:4+252").unwrap().scaled(512, 2048).to_string(),
            "sink:1+63"
        );
        assert_eq!(
            p("sink:4+252").unwrap().scaled(1, 16).to_string(),
            "sink:1+16"
        );
        assert_eq!(
            p("h2o-layer:0+8").unwrap().scaled(1, 100).to_string(),
            "h2o-layer:0+1"
        );
        assert_eq!(
            p("local:256").unwrap().scaled(3, 0).to_string(),
            "local:256"
        );
        assert_eq!(PolicySpec::Full.scaled(1, 2), PolicySpec::Full);
        assert_eq!(
            p("local:100").unwrap().scaled(2, 1).to_string(),
            "local:200"
        );
    }
}
