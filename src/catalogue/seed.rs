//! The seed's vocabulary (the PyTorch project this tool grew from): its ten experiment groups and its
//! experiment names (`Baseline`, `Local (256)`, `H2O (64+192)`), read as [`PolicySpec`]s.

use crate::policy::{PolicyKind, PolicySpec, Scope};

/// Positions of the seed's model (Pythia-2.8B) that its budgets were chosen for.
pub const SEED_MAX_POSITIONS: usize = 2048;

/// The seed's ten groups, named as in its `pytorch-results.csv` (`H2O (recent+heavy)`), in its order.
pub const SEED_GROUPS: [&str; 10] = [
    "Baseline",
    "H2O (64+64)",
    "Local (128)",
    "H2O (128+128)",
    "H2O (64+192)",
    "H2O (32+224)",
    "Local (256)",
    "H2O (256+256)",
    "H2O (128+384)",
    "H2O (64+448)",
];

/// The number inside the first `(...)` of a name, with its `r`/`h` suffix: `(64r + 192h)` ->
/// `["64r", "192h"]`.
fn parenthesised(name: &str) -> Option<Vec<String>> {
    let (_, rest) = name.split_once('(')?;
    let (inner, _) = rest.split_once(')')?;
    Some(inner.split('+').map(|p| p.trim().to_string()).collect())
}

fn number(part: &str) -> Option<usize> {
    part.trim_end_matches(['r', 'h']).trim().parse().ok()
}

/// One of the seed's experiment names as a spec: `Baseline` (or `Full ...`) is `full`; `Local (R)`
/// is `local:R` (`budget`, the seed's Budget column, when the name has no number); `H2O (R+H)` is
/// `h2o-layer:H+R` (the seed writes recent first; `(64r+192h)` and `(192h+64r)` say which is which).
/// The seed's H2O keeps the same tokens for every head of a layer (scores summed over heads): our
/// `h2o-layer`. `None` for any other name.
pub fn parse_seed_name(name: &str, budget: Option<usize>) -> Option<PolicySpec> {
    let lower = name.trim().to_ascii_lowercase();
    if lower.starts_with("baseline") || lower.starts_with("full") {
        return Some(PolicySpec::FULL);
    }
    let inner = parenthesised(&lower);
    if lower.starts_with("local") {
        let recent = match inner.as_deref() {
            Some([r]) => number(r)?,
            None => budget?,
            Some(_) => return None,
        };
        return Some(PolicyKind::Local { recent }.into()).filter(|_| recent > 0);
    }
    if lower.starts_with("h2o") {
        let [a, b] = inner.as_deref()? else {
            return None;
        };
        let (x, y) = (number(a)?, number(b)?);
        let (heavy, recent) = if a.ends_with('h') || b.ends_with('r') {
            (x, y)
        } else {
            (y, x) // recent + heavy, the seed's order
        };
        return Some(PolicySpec::from(PolicyKind::H2o {
            heavy,
            recent,
            scope: Scope::Layer,
        }))
        .filter(|s| s.budget() != Some(0));
    }
    None
}

/// Our spec that attends, at every decode step, as many tokens as the seed's `spec` does.
///
/// The seed evicts before attending: its budget B counts the new token, so a step attends B
/// tokens. Ours keeps B between steps and attends B + the new one (design §3). So the seed's
/// `Local (256)` is our `local:255`, and its `H2O (64r+192h)` (64 recent including the new
/// token) is our `h2o-layer:192+63`: one token less, taken from the recent window (from the
/// heavy hitters or sinks when there is no recent window). `full` is itself. `None` when the
/// seed's budget is 1 (it attends only the new token: a budget of 0 here, which is refused).
pub fn seed_equivalent(spec: &PolicySpec) -> Option<PolicySpec> {
    let less = |x: usize| x.checked_sub(1);
    let kind = match spec.kind {
        PolicyKind::Full => PolicyKind::Full,
        PolicyKind::Local { recent } => PolicyKind::Local {
            recent: less(recent)?,
        },
        PolicyKind::Sink { sinks, recent } if recent > 0 => PolicyKind::Sink {
            sinks,
            recent: recent - 1,
        },
        PolicyKind::Sink { sinks, recent } => PolicyKind::Sink {
            sinks: less(sinks)?,
            recent,
        },
        PolicyKind::H2o {
            heavy,
            recent,
            scope,
        } if recent > 0 => PolicyKind::H2o {
            heavy,
            recent: recent - 1,
            scope,
        },
        PolicyKind::H2o {
            heavy,
            recent,
            scope,
        } => PolicyKind::H2o {
            heavy: less(heavy)?,
            recent,
            scope,
        },
        PolicyKind::Tova { budget, scope } => PolicyKind::Tova {
            budget: less(budget)?,
            scope,
        },
        PolicyKind::Scissor {
            budget,
            window,
            recent,
            sinks,
            normalized,
        } => PolicyKind::Scissor {
            budget: less(budget)?,
            window,
            recent: recent.saturating_sub(1),
            sinks,
            normalized,
        },
        PolicyKind::Knorm { budget, skip } => PolicyKind::Knorm {
            budget: less(budget)?,
            skip,
        },
        PolicyKind::Random { budget, rng } => PolicyKind::Random {
            budget: less(budget)?,
            rng,
        },
    };
    let s = PolicySpec { kind, ..*spec };
    (s.budget() != Some(0)).then_some(s)
}

/// The seed report's label of a spec: `Baseline`, `Local (128)`, `H2O (64r+192h)` (r = recent,
/// h = heavy); other policies, and every scheduled one, are labelled by [`PolicySpec::label`].
pub fn seed_label(spec: &PolicySpec) -> String {
    if spec.schedule != crate::policy::Schedule::Uniform {
        return spec.label();
    }
    match spec.kind {
        PolicyKind::Full => "Baseline".to_string(),
        PolicyKind::Local { recent } => format!("Local ({recent})"),
        PolicyKind::H2o { heavy, recent, .. } => format!("H2O ({recent}r+{heavy}h)"),
        _ => spec.label(),
    }
}

/// The seed's ten groups as `(label, spec)` with our per-head H2O (`h2o:H+R`), scaled
/// proportionally when the model has fewer than 2048 positions (factor `max_positions / 2048`,
/// rounded, each count >= 1; see [`PolicySpec::scaled`]).
pub fn seed_groups(max_positions: usize) -> Vec<(String, PolicySpec)> {
    SEED_GROUPS
        .iter()
        .filter_map(|name| parse_seed_name(name, None))
        .map(|spec| {
            let spec = match spec.kind {
                PolicyKind::H2o { heavy, recent, .. } => PolicySpec::from(PolicyKind::H2o {
                    heavy,
                    recent,
                    scope: Scope::Head,
                }),
                _ => spec,
            };
            let spec = if max_positions < SEED_MAX_POSITIONS {
                spec.scaled(max_positions, SEED_MAX_POSITIONS)
            } else {
                spec
            };
            (seed_label(&spec), spec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(max_positions: usize) -> Vec<String> {
        seed_groups(max_positions)
            .into_iter()
            .map(|(_, s)| s.to_string())
            .collect()
    }

    #[test]
    fn seed_groups_unscaled() {
        let e = seed_groups(2048);
        assert_eq!(
            specs(2048),
            [
                "full",
                "h2o:64+64",
                "local:128",
                "h2o:128+128",
                "h2o:192+64",
                "h2o:224+32",
                "local:256",
                "h2o:256+256",
                "h2o:384+128",
                "h2o:448+64"
            ]
        );
        assert_eq!(e[0].0, "Baseline");
        assert_eq!(e[4].0, "H2O (64r+192h)");
        assert_eq!(e[6].0, "Local (256)");
        assert_eq!(seed_groups(4096), e);
    }

    #[test]
    fn seed_groups_scaled() {
        assert_eq!(
            specs(512),
            [
                "full",
                "h2o:16+16",
                "local:32",
                "h2o:32+32",
                "h2o:48+16",
                "h2o:56+8",
                "local:64",
                "h2o:64+64",
                "h2o:96+32",
                "h2o:112+16"
            ]
        );
        // 100 positions: factor 0.048828125; 32 -> 1.56 -> 2, 64 -> 3.125 -> 3, 256 -> 12.5 -> 13
        let s = specs(100);
        assert_eq!(s[5], "h2o:11+2");
        assert_eq!(s[6], "local:13");
        // tiny models never get a zero budget
        for s in specs(1) {
            assert!(!s.contains(":0") && !s.contains("+0"), "{s}");
        }
        assert_eq!(seed_groups(0).len(), 10);
    }

    #[test]
    fn seed_counting_takes_the_new_token_from_the_budget() {
        let eq = |s: &str| seed_equivalent(&s.parse().unwrap()).map(|s| s.to_string());
        assert_eq!(eq("full").unwrap(), "full");
        assert_eq!(eq("local:256").unwrap(), "local:255");
        assert_eq!(eq("h2o-layer:192+64").unwrap(), "h2o-layer:192+63");
        assert_eq!(eq("h2o:192+64").unwrap(), "h2o:192+63");
        assert_eq!(eq("h2o:256+0").unwrap(), "h2o:255+0");
        assert_eq!(eq("sink:4+252").unwrap(), "sink:4+251");
        assert_eq!(eq("sink:4+0").unwrap(), "sink:3+0");
        assert_eq!(eq("local:2").unwrap(), "local:1");
        assert_eq!(eq("tova:64").unwrap(), "tova:63");
        assert_eq!(eq("knorm:64").unwrap(), "knorm:63");
        assert_eq!(eq("random:64@rng=7").unwrap(), "random:63@rng=7");
        assert_eq!(eq("h2o:48+16@pyramid").unwrap(), "h2o:48+15@pyramid");
        for one in [
            "local:1", "h2o:1+0", "h2o:0+1", "sink:1+0", "sink:0+1", "tova:1",
        ] {
            assert_eq!(eq(one), None, "{one}");
        }
        // every seed group has an equivalent with one token less
        for (_, spec) in seed_groups(2048) {
            let e = seed_equivalent(&spec).unwrap();
            assert_eq!(e.budget(), spec.budget().map(|b| b - 1), "{spec}");
        }
    }

    #[test]
    fn seed_names() {
        let p = |n: &str, b| parse_seed_name(n, b).map(|s| s.to_string());
        assert_eq!(p("H2O (64+192)", Some(256)).unwrap(), "h2o-layer:192+64");
        assert_eq!(
            p("H2O (64r + 192h)", Some(256)).unwrap(),
            "h2o-layer:192+64"
        );
        assert_eq!(p("H2O (192h+64r)", None).unwrap(), "h2o-layer:192+64");
        assert_eq!(p("Baseline", None).unwrap(), "full");
        assert_eq!(p("Local (256)", Some(256)).unwrap(), "local:256");
        assert_eq!(p("Local (256r)", None).unwrap(), "local:256");
        assert_eq!(p("Local Attention", Some(128)).unwrap(), "local:128");
        for bad in [
            "Mystery",
            "H2O",
            "H2O (64)",
            "Local",
            "Local (0)",
            "H2O (0+0)",
            "",
        ] {
            assert_eq!(p(bad, None), None, "{bad:?}");
        }
        // every seed group reads back from its own label
        for (label, spec) in seed_groups(2048) {
            let back = parse_seed_name(&label, None).unwrap();
            assert_eq!(back.budget(), spec.budget(), "{label}");
        }
    }
}
