//! Default experiment groups (the seed's ten, scaled to the model's positions) and policy-spec keys used to line results up.

use serde::{Deserialize, Serialize};

/// Positions of the seed's model (Pythia-2.8B) that its budgets were chosen for.
pub const SEED_MAX_POSITIONS: usize = 2048;

/// The seed's ten groups as (family, heavy, recent) / local windows, in the seed's order.
/// The seed wrote them as (recent, heavy); specs here are `h2o:HEAVY+RECENT`.
enum Group {
    Full,
    Local(usize),
    H2o { heavy: usize, recent: usize },
}

const SEED_GROUPS: [Group; 10] = [
    Group::Full,
    Group::H2o {
        heavy: 64,
        recent: 64,
    },
    Group::Local(128),
    Group::H2o {
        heavy: 128,
        recent: 128,
    },
    Group::H2o {
        heavy: 192,
        recent: 64,
    },
    Group::H2o {
        heavy: 224,
        recent: 32,
    },
    Group::Local(256),
    Group::H2o {
        heavy: 256,
        recent: 256,
    },
    Group::H2o {
        heavy: 384,
        recent: 128,
    },
    Group::H2o {
        heavy: 448,
        recent: 64,
    },
];

/// Scales a seed token count by `max_positions / 2048`, rounding half up, at least 1.
fn scale(x: usize, max_positions: usize) -> usize {
    if max_positions >= SEED_MAX_POSITIONS {
        return x;
    }
    ((x * max_positions + SEED_MAX_POSITIONS / 2) / SEED_MAX_POSITIONS).max(1)
}

/// The seed's ten experiment groups as `(label, spec)`, scaled proportionally when the model
/// has fewer than 2048 positions (factor `max_positions / 2048`, rounded, each count ≥ 1).
///
/// Labels follow the seed's report (Table 1): `Baseline`, `Local (128)`, `H2O (64r+192h)`
/// (r = recent, h = heavy); specs are `full`, `local:R`, `h2o:H+R`.
pub fn default_experiments(max_positions: usize) -> Vec<(String, String)> {
    SEED_GROUPS
        .iter()
        .map(|g| match *g {
            Group::Full => ("Baseline".to_string(), "full".to_string()),
            Group::Local(r) => {
                let r = scale(r, max_positions);
                (format!("Local ({r})"), format!("local:{r}"))
            }
            Group::H2o { heavy, recent } => {
                let (h, r) = (scale(heavy, max_positions), scale(recent, max_positions));
                (format!("H2O ({r}r+{h}h)"), format!("h2o:{h}+{r}"))
            }
        })
        .collect()
}

/// What a policy spec (or a seed experiment name) says about the policy, enough to line results up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyKey {
    /// `full`, `local`, `h2o`, `h2o-layer`, or whatever family name the spec had.
    pub family: String,
    /// Tokens kept; `None` for the full cache or when unknown.
    pub budget: Option<usize>,
    pub heavy: Option<usize>,
    pub recent: Option<usize>,
}

impl PolicyKey {
    /// Families compared as the same method: `h2o` and `h2o-layer` are both H2O.
    pub fn group(&self) -> &str {
        match self.family.as_str() {
            "h2o" | "h2o-layer" => "h2o",
            f => f,
        }
    }
}

/// Parses a policy spec of the grammar `full`, `local:R`, `h2o:H+R`, `h2o-layer:H+R`.
/// Other families (`name:...`) are kept with their name and no budget; `None` for an empty or
/// malformed spec of a known family.
pub fn parse_spec(spec: &str) -> Option<PolicyKey> {
    let spec = spec.trim();
    let (family, arg) = match spec.split_once(':') {
        Some((f, a)) => (f.trim().to_ascii_lowercase(), Some(a.trim())),
        None => (spec.to_ascii_lowercase(), None),
    };
    if family.is_empty() {
        return None;
    }
    let key = |budget, heavy, recent| PolicyKey {
        family: family.clone(),
        budget,
        heavy,
        recent,
    };
    match (family.as_str(), arg) {
        ("full", None) => Some(key(None, None, None)),
        ("local", Some(a)) => a.parse().ok().map(|r| key(Some(r), None, Some(r))),
        ("h2o" | "h2o-layer", Some(a)) => {
            let (h, r) = a.split_once('+')?;
            let (h, r): (usize, usize) = (h.trim().parse().ok()?, r.trim().parse().ok()?);
            Some(key(h.checked_add(r), Some(h), Some(r)))
        }
        ("full" | "local" | "h2o" | "h2o-layer", _) => None,
        _ => Some(key(None, None, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_groups_unscaled() {
        let e = default_experiments(2048);
        let specs: Vec<&str> = e.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            specs,
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
        assert_eq!(default_experiments(4096), e);
    }

    #[test]
    fn seed_groups_scaled() {
        let specs: Vec<String> = default_experiments(512)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            specs,
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
        let specs: Vec<String> = default_experiments(100)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(specs[5], "h2o:11+2");
        assert_eq!(specs[6], "local:13");
        // tiny models never get a zero budget
        for (_, s) in default_experiments(1) {
            assert!(!s.contains(":0") && !s.contains("+0"), "{s}");
        }
        assert_eq!(default_experiments(0).len(), 10);
    }

    #[test]
    fn specs_parse() {
        let k = parse_spec("h2o:192+64").unwrap();
        assert_eq!(
            (k.budget, k.heavy, k.recent),
            (Some(256), Some(192), Some(64))
        );
        assert_eq!(parse_spec("h2o-layer:1+2").unwrap().group(), "h2o");
        assert_eq!(parse_spec("local:128").unwrap().budget, Some(128));
        assert_eq!(parse_spec("full").unwrap().budget, None);
        assert_eq!(parse_spec("snap:8").unwrap().family, "snap");
        assert!(parse_spec("local:x").is_none());
        assert!(parse_spec("h2o:12").is_none());
        assert!(parse_spec("").is_none());
        assert!(parse_spec("full:3").is_none());
    }
}
