//! One table over every family: what a spec parses to, its canonical text, budget, scaling, its
//! layers under `@pyramid` and the refusals of `validate`, all written out by hand; and the family
//! table's own consistency (the forms, the options, the roles).

use super::kinds::{Place, Role, KINDS, OPTION_KEYS};
use super::{PolicyError, PolicyKind, PolicySpec, ACCEPTED_FORMS, FAMILIES};
use crate::policy::Scope;

/// One family's expected numbers.
struct Row {
    /// As a user writes it (options in any order).
    text: &'static str,
    kind: PolicyKind,
    canonical: &'static str,
    budget: Option<usize>,
    /// `scaled(1, 4)`: counts / 4 rounded to nearest, ties up, at least 1.
    quarter: &'static str,
    /// The four layers of `{canonical}@pyramid`: a free part of 40 spreads as 79, 52, 27, 2
    /// (PyramidKV with beta 20 over 4 layers: floor((4680 - 1520 i) / 60) = 78, 52, 27, 2, and
    /// the one token short goes to layer 0); `None` for `full`.
    pyramid: Option<[&'static str; 4]>,
    /// The same family at budget 0, refused.
    zero: Option<&'static str>,
}

fn rows() -> Vec<Row> {
    let h2o = |heavy, recent, scope| PolicyKind::H2o {
        heavy,
        recent,
        scope,
    };
    vec![
        Row {
            text: "full",
            kind: PolicyKind::Full,
            canonical: "full",
            budget: None,
            quarter: "full",
            pyramid: None,
            zero: None,
        },
        Row {
            text: "local:40",
            kind: PolicyKind::Local { recent: 40 },
            canonical: "local:40",
            budget: Some(40),
            quarter: "local:10",
            pyramid: Some(["local:79", "local:52", "local:27", "local:2"]),
            zero: Some("local:0"),
        },
        Row {
            text: "sink:4+40",
            kind: PolicyKind::Sink {
                sinks: 4,
                recent: 40,
            },
            canonical: "sink:4+40",
            budget: Some(44),
            quarter: "sink:1+10",
            pyramid: Some(["sink:4+79", "sink:4+52", "sink:4+27", "sink:4+2"]),
            zero: Some("sink:0+0"),
        },
        Row {
            text: "h2o:40+8",
            kind: h2o(40, 8, Scope::Head),
            canonical: "h2o:40+8",
            budget: Some(48),
            quarter: "h2o:10+2",
            pyramid: Some(["h2o:79+8", "h2o:52+8", "h2o:27+8", "h2o:2+8"]),
            zero: Some("h2o:0+0"),
        },
        Row {
            text: "h2o-layer:40+8",
            kind: h2o(40, 8, Scope::Layer),
            canonical: "h2o-layer:40+8",
            budget: Some(48),
            quarter: "h2o-layer:10+2",
            pyramid: Some([
                "h2o-layer:79+8",
                "h2o-layer:52+8",
                "h2o-layer:27+8",
                "h2o-layer:2+8",
            ]),
            zero: Some("h2o-layer:0+0"),
        },
        Row {
            text: "tova:40",
            kind: PolicyKind::Tova {
                budget: 40,
                scope: Scope::Layer,
            },
            canonical: "tova:40",
            budget: Some(40),
            quarter: "tova:10",
            pyramid: Some(["tova:79", "tova:52", "tova:27", "tova:2"]),
            zero: Some("tova:0"),
        },
        Row {
            text: "tova-head:40",
            kind: PolicyKind::Tova {
                budget: 40,
                scope: Scope::Head,
            },
            canonical: "tova-head:40",
            budget: Some(40),
            quarter: "tova-head:10",
            pyramid: Some([
                "tova-head:79",
                "tova-head:52",
                "tova-head:27",
                "tova-head:2",
            ]),
            zero: Some("tova-head:0"),
        },
        Row {
            // the default recent window 10 is protected, 40 spread
            text: "scissor:50",
            kind: PolicyKind::Scissor {
                budget: 50,
                window: 400,
                recent: 10,
                sinks: 0,
                normalized: false,
            },
            canonical: "scissor:50",
            budget: Some(50),
            quarter: "scissor:13@recent=3",
            pyramid: Some(["scissor:89", "scissor:62", "scissor:37", "scissor:12"]),
            zero: Some("scissor:0"),
        },
        Row {
            text: " scissor:48@recent=8@window=5 ",
            kind: PolicyKind::Scissor {
                budget: 48,
                window: 5,
                recent: 8,
                sinks: 0,
                normalized: false,
            },
            canonical: "scissor:48@window=5@recent=8",
            budget: Some(48),
            quarter: "scissor:12@window=5@recent=2",
            pyramid: Some([
                "scissor:87@window=5@recent=8",
                "scissor:60@window=5@recent=8",
                "scissor:35@window=5@recent=8",
                "scissor:10@window=5@recent=8",
            ]),
            zero: Some("scissor:0@recent=0"),
        },
        Row {
            text: "knorm:40",
            kind: PolicyKind::Knorm {
                budget: 40,
                skip: 0,
            },
            canonical: "knorm:40",
            budget: Some(40),
            quarter: "knorm:10",
            pyramid: Some(["knorm:79", "knorm:52", "knorm:27", "knorm:2"]),
            zero: Some("knorm:0"),
        },
        Row {
            text: "random:40@rng=7",
            kind: PolicyKind::Random { budget: 40, rng: 7 },
            canonical: "random:40@rng=7",
            budget: Some(40),
            quarter: "random:10@rng=7",
            pyramid: Some([
                "random:79@rng=7",
                "random:52@rng=7",
                "random:27@rng=7",
                "random:2@rng=7",
            ]),
            zero: Some("random:0@rng=7"),
        },
    ]
}

#[test]
fn every_family_parses_displays_scales_and_validates() {
    let rows = rows();
    let mut families: Vec<&str> = rows.iter().map(|r| r.kind.family()).collect();
    families.dedup();
    assert_eq!(families, FAMILIES, "a row for every family, in order");
    for r in &rows {
        let c = r.canonical;
        let spec: PolicySpec = r.text.parse().unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(spec, PolicySpec::from(r.kind), "{c}");
        assert_eq!(spec.to_string(), c);
        assert_eq!(c.parse::<PolicySpec>(), Ok(spec), "{c}");
        assert_eq!(spec.budget(), r.budget, "{c}");
        assert_eq!(spec.scaled(1, 4).to_string(), r.quarter, "{c}");
        assert_eq!(spec.scaled(4, 4), spec, "{c}");
        let policy = spec.kind.build();
        assert_eq!(policy.spec(), c);
        assert_eq!(policy.budget(), r.budget.unwrap_or(usize::MAX), "{c}");

        let Some(b) = r.budget else {
            assert_eq!(spec.validate(8, 1), Ok(()));
            continue;
        };
        assert_eq!(spec.validate(8, b), Ok(()), "{c}");
        assert_eq!(
            spec.validate(8, b - 1).unwrap_err().to_string(),
            format!("policy {c}: budget {b} exceeds the model's {} positions; use a smaller budget or `full`", b - 1)
        );
        let zero = r.zero.unwrap();
        assert_eq!(
            zero.parse::<PolicySpec>(),
            Err(PolicyError::ZeroBudget {
                spec: zero.to_string()
            })
        );

        let pyramid: PolicySpec = format!("{c}@pyramid").parse().unwrap();
        assert_eq!(pyramid.to_string(), format!("{c}@pyramid"));
        assert_eq!(pyramid.budget(), r.budget);
        let layers: Vec<String> = pyramid
            .layer_kinds(4)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(layers, r.pyramid.unwrap(), "{c}");
        assert_eq!(
            pyramid.scaled(1, 4).to_string(),
            format!("{}@pyramid", r.quarter)
        );
        let first = pyramid.layer_kinds(4)[0].budget().unwrap();
        assert_eq!(
            first,
            b + 39,
            "{c}: layer 0 holds 79 of a mean free part of 40"
        );
        assert_eq!(pyramid.validate(4, first), Ok(()), "{c}");
        assert_eq!(
            pyramid.validate(4, first - 1).unwrap_err().to_string(),
            format!(
                "policy {c}@pyramid: layer 0's budget {first} exceeds the model's {} positions; use a smaller budget or @uniform",
                first - 1
            )
        );
    }
}

#[test]
fn the_table_is_consistent() {
    assert_eq!(
        FAMILIES,
        [
            "full",
            "local",
            "sink",
            "h2o",
            "h2o-layer",
            "tova",
            "tova-head",
            "scissor",
            "knorm",
            "random"
        ]
    );
    let forms: Vec<String> = KINDS.iter().map(|f| f.form()).collect();
    assert!(
        ACCEPTED_FORMS.starts_with(&format!("{}, then optional options: ", forms.join(" | "))),
        "{forms:?}"
    );
    for key in OPTION_KEYS {
        assert!(KINDS.iter().any(|f| f.takes(key)), "{key}");
        let written = if super::kinds::is_switch(key) {
            format!("@{key}")
        } else {
            format!("@{key}=")
        };
        assert!(ACCEPTED_FORMS.contains(&written), "{key}");
    }
    for f in KINDS {
        let p = f.params;
        // numbers first (at most two), then options from OPTION_KEYS
        let numbers = p.iter().take_while(|x| x.place == Place::Number).count();
        assert!(numbers <= 2, "{}", f.name);
        assert!(p[numbers..].iter().all(|x| matches!(x.place,
            Place::Option { key, .. } | Place::Switch { key } if OPTION_KEYS.contains(&key))));
        // a bounded family has exactly one part a schedule spreads; a part within needs a total
        let spread = p
            .iter()
            .filter(|x| matches!(x.role, Role::Spread | Role::Total))
            .count();
        assert_eq!(spread, usize::from(f.is_bounded()), "{}", f.name);
        let within = p.iter().any(|x| x.role == Role::Within);
        assert!(!within || p.iter().any(|x| x.role == Role::Total));
    }
}

/// The family each variant must have a row under. No wildcard: a new `PolicyKind` variant fails to
/// compile here until it is named, and [`every_variant_has_its_row`] then needs its row in `KINDS`
/// (without one, `Parts::of` would panic at the first use of such a spec).
fn family_of(k: &PolicyKind) -> &'static str {
    match k {
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

#[test]
fn every_variant_has_its_row() {
    let kinds = [
        PolicyKind::Full,
        PolicyKind::Local { recent: 8 },
        PolicyKind::Sink {
            sinks: 4,
            recent: 4,
        },
        PolicyKind::H2o {
            heavy: 4,
            recent: 4,
            scope: Scope::Head,
        },
        PolicyKind::H2o {
            heavy: 4,
            recent: 4,
            scope: Scope::Layer,
        },
        PolicyKind::Tova {
            budget: 8,
            scope: Scope::Layer,
        },
        PolicyKind::Tova {
            budget: 8,
            scope: Scope::Head,
        },
        PolicyKind::Scissor {
            budget: 8,
            window: 400,
            recent: 2,
            sinks: 0,
            normalized: false,
        },
        PolicyKind::Knorm { budget: 8, skip: 0 },
        PolicyKind::Random { budget: 8, rng: 0 },
    ];
    let names: Vec<&str> = kinds.iter().map(family_of).collect();
    let mut rows: Vec<&str> = KINDS.iter().map(|f| f.name).collect();
    let mut named = names.clone();
    rows.sort_unstable();
    named.sort_unstable();
    assert_eq!(named, rows, "one example per family, one family per row");
    for k in &kinds {
        assert_eq!(
            super::kinds::Parts::of(k).family.name,
            family_of(k),
            "{k:?}"
        );
    }
}

/// The authors' variants (issue 32): knorm's whole first layers, scissor's sinks and normalised
/// count; numbers worked out by hand.
#[test]
fn authors_variants_parse_display_scale_and_spread() {
    let p = |s: &str| {
        s.parse::<PolicySpec>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    let strs = |ks: Vec<PolicyKind>| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();

    let kn = p("knorm:40@skip=2");
    assert_eq!(
        kn.kind,
        PolicyKind::Knorm {
            budget: 40,
            skip: 2
        }
    );
    assert_eq!(kn.to_string(), "knorm:40@skip=2");
    assert_eq!(kn.budget(), Some(40), "the evicting layers' budget");
    assert_eq!(
        strs(kn.layer_kinds(4)),
        ["full", "full", "knorm:40@skip=2", "knorm:40@skip=2"]
    );
    assert_eq!(
        strs(kn.layer_kinds(1)),
        ["full"],
        "more skipped than layers"
    );
    let built = kn.build(4);
    assert_eq!(built.layers(), Some(4), "one policy per layer");
    assert_eq!(built.layer(1).budget(), usize::MAX);
    assert_eq!(built.layer(2).spec(), "knorm:40");
    assert_eq!(
        kn.scaled(1, 4).to_string(),
        "knorm:10@skip=2",
        "layers do not scale"
    );
    assert_eq!(
        kn.validate(4, 40),
        Ok(()),
        "whole layers hold what the text has"
    );
    // a schedule spreads the free part over all four layers, then the first two are whole
    assert_eq!(
        strs(p("knorm:40@skip=2@pyramid").layer_kinds(4)),
        ["full", "full", "knorm:27@skip=2", "knorm:2@skip=2"]
    );
    assert_eq!(p("knorm:40@skip=0").to_string(), "knorm:40");
    assert!(
        p("knorm:40").build(4).layers().is_none(),
        "shared as before"
    );

    let sc = p("scissor:48@normalized@sinks=4");
    assert_eq!(
        sc.kind,
        PolicyKind::Scissor {
            budget: 48,
            window: 400,
            recent: 10,
            sinks: 4,
            normalized: true
        }
    );
    assert_eq!(sc.to_string(), "scissor:48@sinks=4@normalized");
    assert_eq!(sc.kind.build().spec(), "scissor:48@sinks=4@normalized");
    assert_eq!(
        sc.scaled(1, 4).to_string(),
        "scissor:12@recent=3@sinks=1@normalized"
    );
    // fixed part 10 + 4 = 14; the free 34 spreads as 67, 45, 23, 1
    assert_eq!(
        strs(p("scissor:48@sinks=4@normalized@pyramid").layer_kinds(4)),
        [
            "scissor:81@sinks=4@normalized",
            "scissor:59@sinks=4@normalized",
            "scissor:37@sinks=4@normalized",
            "scissor:15@sinks=4@normalized"
        ]
    );
    assert_eq!(p("scissor:14@sinks=4").budget(), Some(14));

    let msg = |s: &str| s.parse::<PolicySpec>().unwrap_err().to_string();
    for (s, want) in [
        (
            "scissor:13@sinks=4",
            "scissor's recent window and sinks (14 together) are more than its budget 13; ",
        ),
        (
            "scissor:48@normalized=1",
            "option `@normalized` takes no value (@normalized); ",
        ),
        (
            "scissor:48@normalized@normalized",
            "option `@normalized` is given twice; ",
        ),
        ("knorm:4@skip", "option `@skip` takes a number (@skip=N); "),
        (
            "knorm:4@sinks=1",
            "`@sinks` applies to scissor only, not `knorm`; ",
        ),
        (
            "h2o:4+4@skip=1",
            "`@skip` applies to knorm only, not `h2o`; ",
        ),
        (
            "tova:4@normalized",
            "`@normalized` applies to scissor only, not `tova`; ",
        ),
    ] {
        assert_eq!(
            msg(s),
            format!("invalid policy spec '{s}': {want}accepted forms are {ACCEPTED_FORMS}")
        );
    }
}
