//! Every manifest.json field the engine reads, checked on the raw JSON before anything is read
//! from it or sized by it: present when required, of the right type, whole numbers within this
//! engine's stated limits, and the fields that depend on each other consistent. A problem names
//! the field, what it holds and what it must hold.

use serde_json::Value;

/// Most layers a manifest may declare (Pythia-12b has 36).
pub const MAX_LAYERS: u64 = 1024;
/// Most attention heads per layer (Pythia-12b has 40).
pub const MAX_HEADS: u64 = 1024;
/// Largest head dimension (Pythia: 64 to 128).
pub const MAX_HEAD_DIM: u64 = 1024;
/// Largest vocabulary (Pythia: 50,304 logits; the largest current tokenizers hold about 256k).
pub const MAX_VOCAB: u64 = 1 << 21;
/// Most positions (Pythia: 2048).
pub const MAX_POSITIONS: u64 = 1 << 20;
/// Highest ONNX opset a manifest may name.
pub const MAX_OPSET: u64 = 1000;

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field, e.g. `num_heads` or `weights.format`.
    pub field: String,
    /// What it holds and what it must hold, e.g. `is -1; it must be a whole number from 1 to 1024`.
    pub problem: String,
}

/// Whether a field may be absent or null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    /// May be absent (a default is used), not null.
    Optional,
    /// May be absent or null.
    Nullable,
}

/// What a field must hold.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A whole number within `min..=max`.
    Int {
        min: u64,
        max: u64,
    },
    /// A finite number above 0.
    Positive,
    Str,
    OneOf(&'static [&'static str]),
    Bool,
    StrList,
    Object,
}

use Kind::*;
use Presence::*;

const WEIGHT_FORMATS: &[&str] = &["fp32", "int8", "int4", "int8-dq"];

/// The architectures the engine runs: GPT-NeoX (Pythia) and the Llama family (Llama 2/3, SmolLM2,
/// TinyLlama: "llama"; Qwen2).
pub const MODEL_TYPES: &[&str] = &["gpt_neox", "llama", "qwen2"];

/// The rope scalings a graph may apply (recorded; the graph applies them to its frequencies).
const ROPE_TYPES: &[&str] = &["linear", "llama3"];

/// The top-level fields the engine reads (`Manifest`'s own; the others are the exporter's notes).
const FIELDS: &[(&str, Presence, Kind)] = &[
    ("name", Required, Str),
    ("model_type", Required, OneOf(MODEL_TYPES)),
    (
        "num_layers",
        Required,
        Int {
            min: 1,
            max: MAX_LAYERS,
        },
    ),
    (
        "num_heads",
        Required,
        Int {
            min: 1,
            max: MAX_HEADS,
        },
    ),
    (
        "num_kv_heads",
        Nullable,
        Int {
            min: 1,
            max: MAX_HEADS,
        },
    ),
    (
        "head_dim",
        Required,
        Int {
            min: 1,
            max: MAX_HEAD_DIM,
        },
    ),
    (
        "hidden_size",
        Required,
        Int {
            min: 1,
            max: MAX_HEADS * MAX_HEAD_DIM,
        },
    ),
    (
        "vocab_size",
        Required,
        Int {
            min: 1,
            max: MAX_VOCAB,
        },
    ),
    (
        "rotary_dims",
        Required,
        Int {
            min: 0,
            max: MAX_HEAD_DIM,
        },
    ),
    ("rotary_base", Required, Positive),
    ("rope_scaling", Nullable, Object),
    (
        "max_position_embeddings",
        Required,
        Int {
            min: 1,
            max: MAX_POSITIONS,
        },
    ),
    ("dtype", Required, OneOf(&["float32", "float16"])),
    ("weights", Optional, Object),
    ("attention_masks", Optional, OneOf(&["shared", "per_layer"])),
    ("key_cache", Optional, OneOf(&["rotated", "unrotated"])),
    ("inputs", Required, StrList),
    ("outputs", Required, StrList),
    (
        "opset",
        Nullable,
        Int {
            min: 1,
            max: MAX_OPSET,
        },
    ),
    ("exporter_version", Nullable, Str),
    ("source", Optional, Object),
    ("tokenizer", Nullable, Object),
    ("random_init", Optional, Bool),
    (
        "init_seed",
        Nullable,
        Int {
            min: 0,
            max: u64::MAX,
        },
    ),
    (
        "seed",
        Nullable,
        Int {
            min: 0,
            max: u64::MAX,
        },
    ),
    (
        "tokenizer_vocab_size",
        Nullable,
        Int {
            min: 1,
            max: MAX_VOCAB,
        },
    ),
    (
        "eos_token_id",
        Nullable,
        Int {
            min: 0,
            max: u32::MAX as u64,
        },
    ),
    (
        "prepend_bos_token_id",
        Nullable,
        Int {
            min: 0,
            max: u32::MAX as u64,
        },
    ),
];

/// The fields of `weights` the engine reads.
const WEIGHT_FIELDS: &[(&str, Presence, Kind)] = &[
    ("format", Required, OneOf(WEIGHT_FORMATS)),
    ("block_size", Nullable, Int { min: 16, max: 256 }),
    ("lm_head", Nullable, OneOf(WEIGHT_FORMATS)),
];

/// The fields of `rope_scaling` the engine reads (the others are the exporter's record).
const ROPE_SCALING_FIELDS: &[(&str, Presence, Kind)] = &[
    ("rope_type", Required, OneOf(ROPE_TYPES)),
    ("factor", Required, Positive),
];

/// The fields of `tokenizer` (which tokenizer supplies the ids, when not the model's own).
const TOKENIZER_FIELDS: &[(&str, Presence, Kind)] =
    &[("source", Required, Str), ("own", Optional, Bool)];

/// The fields of `source` the engine reads.
const SOURCE_FIELDS: &[(&str, Presence, Kind)] =
    &[("path", Nullable, Str), ("sha256", Nullable, Str)];

/// Checks `format_version` alone (read before the rest, to name another version as such).
pub fn format_version(raw: &Value) -> Result<u64, FieldProblem> {
    let kind = Int {
        min: 0,
        max: u64::MAX,
    };
    check_field(raw, "", ("format_version", Required, kind))?;
    Ok(raw["format_version"].as_u64().unwrap_or_default())
}

/// Checks every field the engine reads, then the ones that depend on each other.
pub fn check(raw: &Value) -> Result<(), FieldProblem> {
    if !raw.is_object() {
        return Err(problem("(the whole file)", "is not a JSON object"));
    }
    check_fields(raw, "", FIELDS)?;
    if let Some(w) = raw.get("weights") {
        check_fields(w, "weights.", WEIGHT_FIELDS)?;
    }
    if let Some(s) = raw.get("source") {
        check_fields(s, "source.", SOURCE_FIELDS)?;
    }
    if let Some(r) = raw.get("rope_scaling").filter(|v| !v.is_null()) {
        check_fields(r, "rope_scaling.", ROPE_SCALING_FIELDS)?;
    }
    if let Some(t) = raw.get("tokenizer").filter(|v| !v.is_null()) {
        check_fields(t, "tokenizer.", TOKENIZER_FIELDS)?;
    }
    check_relations(raw)
}

fn check_fields(
    obj: &Value,
    prefix: &str,
    fields: &[(&str, Presence, Kind)],
) -> Result<(), FieldProblem> {
    fields
        .iter()
        .try_for_each(|&field| check_field(obj, prefix, field))
}

fn check_field(
    obj: &Value,
    prefix: &str,
    (name, presence, kind): (&str, Presence, Kind),
) -> Result<(), FieldProblem> {
    let field = format!("{prefix}{name}");
    let fail = |shown: String| {
        Err(problem(
            &field,
            &format!("{shown}; it must be {}", expect(kind)),
        ))
    };
    match (obj.get(name), presence) {
        (None, Required) => fail("is missing".into()),
        (None, _) | (Some(Value::Null), Nullable) => Ok(()),
        (Some(v), _) if fits(v, kind) => Ok(()),
        (Some(v), _) => fail(format!("is {}", shown(v))),
    }
}

/// Whether `v` holds what `kind` asks for.
fn fits(v: &Value, kind: Kind) -> bool {
    match kind {
        Int { min, max } => v.as_u64().is_some_and(|n| (min..=max).contains(&n)),
        Positive => v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
        Str => v.is_string(),
        OneOf(names) => v.as_str().is_some_and(|s| names.contains(&s)),
        Bool => v.is_boolean(),
        StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Object => v.is_object(),
    }
}

/// What `kind` asks for, in words.
fn expect(kind: Kind) -> String {
    match kind {
        Int { min, max: u64::MAX } => format!("a whole number, {min} or more"),
        Int { min, max } => format!("a whole number from {min} to {max}"),
        Positive => "a positive number".into(),
        Str => "a string".into(),
        OneOf(names) => format!("one of {}", quoted(names)),
        Bool => "true or false".into(),
        StrList => "a list of strings".into(),
        Object => "an object".into(),
    }
}

fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    q.join(", ")
}

/// A value as the message shows it: its JSON (cut short), and its type when that is the problem.
fn shown(v: &Value) -> String {
    let mut text = v.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(37).collect::<String>() + "...";
    }
    let what = match v {
        Value::Null => "",
        Value::Bool(_) => " (true/false)",
        Value::Number(n) if n.is_f64() => " (not a whole number)",
        Value::Number(n) if n.as_u64().is_none() => " (negative)",
        Value::Number(_) => "",
        Value::String(_) => " (a string)",
        Value::Array(_) => " (a list)",
        Value::Object(_) => " (an object)",
    };
    format!("{text}{what}")
}

fn problem(field: &str, text: &str) -> FieldProblem {
    FieldProblem {
        field: field.to_string(),
        problem: text.to_string(),
    }
}

/// The fields that must agree with each other (each alone is already checked).
fn check_relations(raw: &Value) -> Result<(), FieldProblem> {
    let int = |name: &str| raw[name].as_u64().unwrap_or_default();
    let (heads, head_dim, hidden) = (int("num_heads"), int("head_dim"), int("hidden_size"));
    if let Some(kv) = raw.get("num_kv_heads").and_then(Value::as_u64) {
        if !heads.is_multiple_of(kv) {
            let divisors: Vec<String> = (1..=heads)
                .filter(|&d| heads.is_multiple_of(d))
                .map(|d| d.to_string())
                .collect();
            return Err(problem(
                "num_kv_heads",
                &format!(
                    "is {kv}, but num_heads {heads} is not a multiple of it: each KV head serves an equal group of query heads (num_heads / num_kv_heads), so num_kv_heads must divide num_heads ({})",
                    divisors.join(", ")
                ),
            ));
        }
    }
    // Llama and Qwen2 may give head_dim apart from the hidden size; a GPT-NeoX layer splits it.
    let gpt_neox = raw["model_type"] == "gpt_neox";
    if gpt_neox && heads.checked_mul(head_dim) != Some(hidden) {
        return Err(problem(
            "hidden_size",
            &format!("is {hidden}, but num_heads {heads} x head_dim {head_dim} = {}; a GPT-NeoX layer splits its hidden size over its heads", heads.saturating_mul(head_dim)),
        ));
    }
    let rotary = int("rotary_dims");
    if rotary > head_dim || rotary % 2 != 0 {
        return Err(problem(
            "rotary_dims",
            &format!("is {rotary}; it must be an even number from 0 to head_dim {head_dim}"),
        ));
    }
    let vocab = int("vocab_size");
    for id in ["eos_token_id", "prepend_bos_token_id"] {
        if let Some(v) = raw.get(id).and_then(Value::as_u64).filter(|&v| v >= vocab) {
            return Err(problem(
                id,
                &format!("is {v}; a token id must be below vocab_size {vocab}"),
            ));
        }
    }
    check_block_size(raw)
}

/// A quantized format's block size is a power of two (MatMulNBits' blocks); fp32 weights have no
/// blocks and an fp32 LM head; int8-dq (a scale per column) has no blocks, and its LM head is
/// int8-dq or fp32 (and only its layers take an int8-dq head).
fn check_block_size(raw: &Value) -> Result<(), FieldProblem> {
    let Some(w) = raw.get("weights") else {
        return Ok(());
    };
    let fp32 = w["format"] == "fp32";
    let dq = w["format"] == "int8-dq";
    match (
        w.get("block_size").and_then(Value::as_u64),
        w.get("lm_head"),
    ) {
        (Some(b), _) if !b.is_power_of_two() => Err(problem(
            "weights.block_size",
            &format!("is {b}; it must be a power of two from 16 to 256"),
        )),
        (Some(b), _) if fp32 => Err(problem(
            "weights.block_size",
            &format!("is {b}, but weights.format is \"fp32\" (no quantization blocks)"),
        )),
        (_, Some(Value::String(head))) if fp32 && head != "fp32" => Err(problem(
            "weights.lm_head",
            &format!("is \"{head}\", but weights.format is \"fp32\" (nothing is quantized)"),
        )),
        (Some(b), _) if dq => Err(problem(
            "weights.block_size",
            &format!("is {b}, but weights.format is \"int8-dq\" (a scale per column, no blocks)"),
        )),
        (_, Some(Value::String(head))) if dq != (head == "int8-dq") && head != "fp32" => {
            Err(problem(
                "weights.lm_head",
                &format!(
                    "is \"{head}\" with weights.format {}; int8-dq layers take an int8-dq or fp32 \
                     head, and only they take an int8-dq one",
                    w["format"]
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Value {
        let text = std::fs::read_to_string("tests/fixtures/tiny/manifest.json").unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn problem_with(field: &str, value: Value) -> FieldProblem {
        let mut raw = fixture();
        raw[field] = value;
        check(&raw).unwrap_err()
    }

    #[test]
    fn the_fixture_passes() {
        assert_eq!(check(&fixture()), Ok(()));
    }

    #[test]
    fn bad_counts_are_named_with_their_range() {
        for bad in [
            Value::from(0),
            Value::from(-1),
            Value::from(1u64 << 62),
            Value::from(4.5),
            Value::from("four"),
            Value::Null,
        ] {
            let p = problem_with("num_heads", bad.clone());
            assert_eq!(p.field, "num_heads", "{bad}");
            assert!(
                p.problem.contains("a whole number from 1 to 1024"),
                "{bad}: {}",
                p.problem
            );
        }
        let p = problem_with("num_layers", Value::from(1_000_000_000));
        assert!(p.problem.starts_with("is 1000000000;"), "{}", p.problem);
    }

    #[test]
    fn missing_and_mistyped_fields() {
        let mut raw = fixture();
        raw.as_object_mut().unwrap().remove("vocab_size");
        let p = check(&raw).unwrap_err();
        assert_eq!(
            (p.field.as_str(), p.problem.starts_with("is missing")),
            ("vocab_size", true)
        );
        let p = problem_with("dtype", Value::from("bfloat16"));
        assert!(
            p.problem.contains("\"float32\", \"float16\""),
            "{}",
            p.problem
        );
        let p = problem_with("rotary_base", Value::from(-1.0));
        assert!(p.problem.contains("a positive number"), "{}", p.problem);
        let p = problem_with("inputs", Value::from(3));
        assert!(p.problem.contains("a list of strings"), "{}", p.problem);
        let mut raw = fixture();
        raw["weights"]["format"] = "int3".into();
        assert_eq!(check(&raw).unwrap_err().field, "weights.format");
    }

    #[test]
    fn fields_that_disagree() {
        let p = problem_with("hidden_size", Value::from(65));
        assert!(
            p.problem.contains("num_heads 4 x head_dim 16 = 64"),
            "{}",
            p.problem
        );
        let p = problem_with("rotary_dims", Value::from(18));
        assert_eq!(p.field, "rotary_dims");
        let p = problem_with("eos_token_id", Value::from(512));
        assert!(p.problem.contains("below vocab_size 512"), "{}", p.problem);
        let mut raw = fixture();
        raw["weights"] = serde_json::json!({"format": "int4", "block_size": 48});
        assert_eq!(check(&raw).unwrap_err().field, "weights.block_size");
        raw["weights"] = serde_json::json!({"format": "fp32", "block_size": 32});
        assert_eq!(check(&raw).unwrap_err().field, "weights.block_size");
        raw["weights"] = serde_json::json!({"format": "fp32", "lm_head": "int8"});
        assert_eq!(check(&raw).unwrap_err().field, "weights.lm_head");
        raw["weights"] = serde_json::json!({"format": "int8", "block_size": 32, "lm_head": "fp32"});
        assert!(check(&raw).is_ok());
        raw["weights"] = serde_json::json!({"format": "int8-dq", "lm_head": "int8-dq"});
        assert!(check(&raw).is_ok());
        raw["weights"] = serde_json::json!({"format": "int8-dq", "lm_head": "fp32"});
        assert!(check(&raw).is_ok());
        raw["weights"] = serde_json::json!({"format": "int8-dq", "block_size": 32});
        assert_eq!(check(&raw).unwrap_err().field, "weights.block_size");
        raw["weights"] = serde_json::json!({"format": "int8-dq", "lm_head": "int4"});
        assert_eq!(check(&raw).unwrap_err().field, "weights.lm_head");
        raw["weights"] =
            serde_json::json!({"format": "int4", "block_size": 32, "lm_head": "int8-dq"});
        assert_eq!(check(&raw).unwrap_err().field, "weights.lm_head");
        raw["weights"] = serde_json::json!({"format": "int8", "block_size": 32, "lm_head": "fp32"});
        assert_eq!(check(&raw), Ok(()));
    }

    #[test]
    fn grouped_query_attention_fields() {
        // the fixture: 4 query heads; 1, 2 and 4 KV heads divide them, absent = 4
        for kv in [1, 2, 4] {
            let mut raw = fixture();
            raw["num_kv_heads"] = kv.into();
            assert_eq!(check(&raw), Ok(()), "num_kv_heads {kv}");
        }
        let p = problem_with("num_kv_heads", Value::from(3));
        assert_eq!(p.field, "num_kv_heads");
        assert!(
            p.problem
                .starts_with("is 3, but num_heads 4 is not a multiple of it")
                && p.problem.ends_with("must divide num_heads (1, 2, 4)"),
            "{}",
            p.problem
        );
        let p = problem_with("num_kv_heads", Value::from(8));
        assert_eq!(p.field, "num_kv_heads", "more KV heads than query heads");
        let p = problem_with("num_kv_heads", Value::from(0));
        assert!(p.problem.contains("from 1 to 1024"), "{}", p.problem);
        let p = problem_with("model_type", Value::from("mistral"));
        assert!(
            p.problem
                .contains("one of \"gpt_neox\", \"llama\", \"qwen2\""),
            "{}",
            p.problem
        );
    }

    #[test]
    fn head_dim_apart_from_hidden_size_only_for_llama_and_qwen2() {
        for arch in ["llama", "qwen2"] {
            let mut raw = fixture();
            raw["model_type"] = arch.into();
            raw["hidden_size"] = 96.into(); // 4 heads x 16 = 64: allowed apart
            assert_eq!(check(&raw), Ok(()), "{arch}");
        }
        let p = problem_with("hidden_size", Value::from(96));
        assert_eq!(p.field, "hidden_size", "gpt_neox keeps the rule");
    }

    #[test]
    fn rope_scaling_and_tokenizer_notes() {
        let mut raw = fixture();
        raw["rope_scaling"] = Value::Null;
        assert_eq!(check(&raw), Ok(()));
        raw["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        assert_eq!(check(&raw), Ok(()));
        raw["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        assert_eq!(check(&raw).unwrap_err().field, "rope_scaling.rope_type");
        let mut raw = fixture();
        raw["tokenizer"] = serde_json::json!({"source": "pythia (random init)", "own": false});
        assert_eq!(check(&raw), Ok(()));
        raw["tokenizer"] = serde_json::json!({"own": false});
        assert_eq!(check(&raw).unwrap_err().field, "tokenizer.source");
    }
}
