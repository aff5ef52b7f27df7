//! The text of a policy spec: parsing and the canonical display, read off the family table
//! ([`super::kinds`]). The grammar is in the docs of [`super`] (the policy spec module).

use std::fmt;
use std::str::FromStr;

use super::kinds::{
    is_switch, option_is_count, takers, Family, Parts, Place, Role, Values, OPTION_KEYS,
};
use super::{PolicyError, PolicyKind, PolicySpec, Positions};
use crate::policy::schedule::Schedule;

/// The accepted spec forms, as shown in error messages (identical to the reference's; the
/// families' forms are the table's, checked by a test).
pub const ACCEPTED_FORMS: &str = "full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R | tova:B | \
     tova-head:B | scissor:B | knorm:B | random:B, then optional options: @pyramid or @uniform \
     (any bounded family), @rng=N (random), @window=W, @recent=R, @sinks=S and @normalized \
     (scissor), @skip=N (knorm: its first N layers keep every token), @rolling (any bounded family: \
     rolling positions) (non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64, \
     h2o:192+64@pyramid, random:256@rng=7, knorm:256@skip=2, scissor:256@sinks=4@normalized)";

impl Family {
    /// The family's form in [`ACCEPTED_FORMS`], e.g. `sink:S+R`.
    pub(super) fn form(&self) -> String {
        let letters: Vec<String> = self.numbers().map(|p| p.letter.to_string()).collect();
        if letters.is_empty() {
            self.name.to_string()
        } else {
            format!("{}:{}", self.name, letters.join("+"))
        }
    }
}

impl PolicySpec {
    /// Short human label for tables and plot legends: the canonical spec with `:` and `@` as
    /// spaces, e.g. `local 256`, `sink 4+252`, `h2o 192+64`, `h2o 192+64 pyramid`,
    /// `random 256 rng=7`, `full`.
    pub fn label(&self) -> String {
        self.to_string().replace([':', '@'], " ")
    }
}

impl fmt::Display for PolicyKind {
    /// The canonical spec of the kind alone, e.g. `h2o-layer:192+64`, `scissor:256@window=64`:
    /// the keyword, its numbers joined by `+` after a `:`, then each option not at its default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = Parts::of(self);
        f.write_str(parts.family.name)?;
        let mut sep = ":";
        for (param, v) in parts.each() {
            match param.place {
                Place::Number => {
                    write!(f, "{sep}{v}")?;
                    sep = "+";
                }
                Place::Option { key, default } if v != default => write!(f, "@{key}={v}")?,
                Place::Switch { key } if v != 0 => write!(f, "@{key}")?,
                Place::Option { .. } | Place::Switch { .. } => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for PolicySpec {
    /// The canonical spec (what results and traces record), e.g. `h2o-layer:192+64`,
    /// `h2o:192+64@pyramid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.schedule != Schedule::Uniform {
            write!(f, "@{}", self.schedule.name())?;
        }
        if self.positions == Positions::Rolling {
            write!(f, "@{ROLLING}")?;
        }
        Ok(())
    }
}

/// A non-empty run of ASCII digits as a number (`Err` when it does not fit).
fn number<T: FromStr>(s: &str) -> Option<Result<T, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<T>().map_err(|_| ()))
}

const TOO_LARGE: &str = "a number is too large; ";

/// The option selecting rolling positions ([`Positions::Rolling`]).
const ROLLING: &str = "rolling";

/// The options after the family's numbers, each at most once.
#[derive(Default)]
struct Options {
    schedule: Option<Schedule>,
    /// `@rolling` was given.
    rolling: bool,
    /// The value of each option of [`OPTION_KEYS`], if given.
    given: [Option<u64>; OPTION_KEYS.len()],
}

impl Options {
    /// The value of option `@key=N`, if given.
    fn get(&self, key: &str) -> Option<u64> {
        let i = OPTION_KEYS.iter().position(|k| *k == key)?;
        self.given[i]
    }
}

/// What went wrong with one option, as the start of an error message (the accepted forms follow).
fn parse_options<'a>(opts: impl Iterator<Item = &'a str>) -> Result<Options, String> {
    let mut o = Options::default();
    for opt in opts {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if let (Some(s), None) = (Schedule::named(key), value) {
            if o.schedule.replace(s).is_some() {
                return Err("the schedule is given twice; ".to_string());
            }
            continue;
        }
        if key == ROLLING {
            if value.is_some() {
                return Err(format!("option `@{ROLLING}` takes no value; "));
            }
            if std::mem::replace(&mut o.rolling, true) {
                return Err(format!("option `@{ROLLING}` is given twice; "));
            }
            continue;
        }
        let Some(i) = OPTION_KEYS.iter().position(|k| *k == key) else {
            return Err(format!("unknown option `@{opt}`; "));
        };
        if o.given[i].is_some() {
            return Err(format!("option `@{key}` is given twice; "));
        }
        if is_switch(key) {
            if value.is_some() {
                return Err(format!("option `@{key}` takes no value (@{key}); "));
            }
            o.given[i] = Some(1);
            continue;
        }
        let n = match value.and_then(number::<u64>) {
            Some(Ok(n)) => n,
            Some(Err(())) => return Err(TOO_LARGE.to_string()),
            None => return Err(format!("option `@{key}` takes a number (@{key}=N); ")),
        };
        if option_is_count(key) && usize::try_from(n).is_err() {
            return Err(TOO_LARGE.to_string());
        }
        o.given[i] = Some(n);
    }
    Ok(o)
}

/// `family` with its `numbers` (as many as it takes, checked) and options, or what is wrong with
/// them: options it does not take, a schedule without a budget, values out of their range.
fn with_options(
    family: &'static Family,
    numbers: &[usize],
    o: &Options,
) -> Result<PolicySpec, String> {
    let name = family.name;
    for key in OPTION_KEYS {
        if o.get(key).is_some() && !family.takes(key) {
            let only = takers(key).collect::<Vec<_>>().join(", ");
            return Err(format!("`@{key}` applies to {only} only, not `{name}`; "));
        }
    }
    if !family.is_bounded() && o.schedule.is_some() {
        return Err(format!("`{name}` has no budget to schedule; "));
    }
    if !family.is_bounded() && o.rolling {
        return Err(format!(
            "`@{ROLLING}` applies to bounded policies only, not `{name}` (a cache that keeps every token has nothing to renumber); "
        ));
    }
    let mut values: Values = Default::default();
    let mut numbers = numbers.iter();
    for (i, p) in family.params.iter().enumerate() {
        values[i] = match p.place {
            Place::Number => numbers.next().map_or(0, |&n| n as u64),
            Place::Option { key, default } => o.get(key).unwrap_or(default),
            Place::Switch { key } => o.get(key).unwrap_or(0),
        };
    }
    let parts = Parts { family, values };
    let total = parts.sum(&[Role::Total]);
    for (p, v) in parts.each() {
        let letter = p.letter;
        let label = p.label;
        match (p.role, p.place) {
            (Role::Steps, _) if v == 0 => return Err(format!("{name}'s {label} is 0 steps; ")),
            (Role::Within, Place::Option { key, .. }) if v > total && total > 0 => {
                return Err(format!(
                    "{name}'s {label} {v} is larger than its budget {total} (lower it with @{key}={letter}); "
                ))
            }
            _ => {}
        }
    }
    let within = parts.sum(&[Role::Within]);
    if within > total && total > 0 {
        let labels: Vec<&str> = family
            .params
            .iter()
            .filter(|p| p.role == Role::Within)
            .map(|p| p.label)
            .collect();
        return Err(format!(
            "{name}'s {} ({within} together) are more than its budget {total}; ",
            labels.join(" and ")
        ));
    }
    Ok(PolicySpec {
        kind: parts.kind(),
        schedule: o.schedule.unwrap_or_default(),
        positions: if o.rolling {
            Positions::Rolling
        } else {
            Positions::Absolute
        },
    })
}

/// What is wrong with `family` given `given` numbers, if it takes another count.
fn arity_error(family: &Family, given: usize) -> Option<String> {
    let n = family.name;
    let takes = family.numbers().count();
    (given != takes).then(|| match takes {
        0 => format!("`{n}` takes no numbers; "),
        1 => format!("`{n}` takes one number ({}); ", family.form()),
        _ => format!("`{n}` takes two numbers ({n}:A+B); "),
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
        let family = Family::named(name).ok_or_else(|| invalid(String::new()))?;
        // numbers: none, one, or two joined by '+'
        let written: Vec<&str> = match rest {
            None => vec![],
            Some(r) => match r.split_once('+') {
                None => vec![r],
                Some((x, y)) => vec![x, y],
            },
        };
        let numbers = written
            .iter()
            .map(|w| number::<usize>(w).ok_or_else(|| invalid(String::new())))
            .collect::<Result<Vec<_>, _>>()?;
        let numbers = numbers
            .into_iter()
            .collect::<Result<Vec<usize>, ()>>()
            .map_err(|()| invalid(TOO_LARGE.to_string()))?;
        if let [x, y] = numbers[..] {
            if x.checked_add(y).is_none() {
                return Err(invalid(TOO_LARGE.to_string()));
            }
        }
        if let Some(reason) = arity_error(family, numbers.len()) {
            return Err(invalid(reason));
        }
        let options = parse_options(parts).map_err(invalid)?;
        let spec = with_options(family, &numbers, &options).map_err(invalid)?;
        if spec.budget() == Some(0) {
            return Err(PolicyError::ZeroBudget {
                spec: raw.to_string(),
            });
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PolicyError, PolicyKind, PolicySpec, Positions};
    use super::ACCEPTED_FORMS;
    use crate::policy::schedule::Schedule;
    use crate::policy::Scope;

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
                recent: 10,
                sinks: 0,
                normalized: false,
            }))
        );
        assert_eq!(
            p("scissor:64@recent=4@window=32"),
            Ok(k(PolicyKind::Scissor {
                budget: 64,
                window: 32,
                recent: 4,
                sinks: 0,
                normalized: false,
            }))
        );
        assert_eq!(
            p("knorm:9"),
            Ok(k(PolicyKind::Knorm { budget: 9, skip: 0 }))
        );
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
                schedule: Schedule::Pyramid,
                positions: Positions::Absolute
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
            "sink:4+252@rolling",
            "h2o:192+64@pyramid@rolling",
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
            let plain = spec.schedule == Schedule::Uniform && !spec.rolling();
            assert_eq!(plain, pol.spec() == s, "{s}");
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
    fn rolling_positions_option() {
        let s = p("sink:4+252@rolling").unwrap();
        assert_eq!(s.positions, Positions::Rolling);
        assert!(s.rolling());
        assert_eq!(
            s.kind,
            PolicyKind::Sink {
                sinks: 4,
                recent: 252
            }
        );
        assert!(!p("sink:4+252").unwrap().rolling());
        // canonical: last, after the schedule, whatever order it was written in
        assert_eq!(
            p("h2o:192+64@rolling@pyramid").unwrap().to_string(),
            "h2o:192+64@pyramid@rolling"
        );
        assert_eq!(
            p("random:5@rolling@rng=7").unwrap().to_string(),
            "random:5@rng=7@rolling"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"sink:4+252@rolling\"");
        assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), s);
        assert_eq!(s.label(), "sink 4+252 rolling");
        let msg = |s: &str| p(s).unwrap_err().to_string();
        assert!(msg("full@rolling").contains(
            "`@rolling` applies to bounded policies only, not `full` (a cache that keeps every token has nothing to renumber); accepted forms are"
        ));
        assert!(msg("local:4@rolling@rolling").contains("option `@rolling` is given twice; "));
        assert!(msg("local:4@rolling=1").contains("option `@rolling` takes no value; "));
        assert!(matches!(
            p("local:0@rolling"),
            Err(PolicyError::ZeroBudget { .. })
        ));
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
        // several options the family does not take: rng is named first, then window, then recent
        assert!(msg("h2o:4+4@recent=1@window=1@rng=1")
            .contains("`@rng` applies to random only, not `h2o`; "));
        assert!(msg("full@recent=1@window=1")
            .contains("`@window` applies to scissor only, not `full`; "));
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
}
