//! Issue 28 on the model side, table-driven (tests/common/bad_input.rs): lying manifests (every
//! field the engine reads, several bad values each, and values the graph contradicts), a tokenizer
//! of another vocabulary, weight formats the graph contradicts, and the size and count flags
//! (huge and negative --kv-cap, a batch beyond the text, negative numbers to every numeric flag).
//! Each is refused with exit code 2, a message naming the file or flag and the problem, and the
//! model's files unchanged.

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use common::bad_input::{check_all, Case, Scratch};

/// A copy of the scratch model in `name`.
fn copy_model(s: &Scratch, name: &str) -> PathBuf {
    let dir = s.path(name);
    std::fs::create_dir(&dir).unwrap();
    for f in ["model.onnx", "manifest.json", "tokenizer.json"] {
        std::fs::copy(s.model().join(f), dir.join(f)).unwrap();
    }
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// A copy of the model whose manifest has `field` set to `value` (removed when `None`).
fn manifest_with(s: &Scratch, name: &str, field: &str, value: Option<Value>) -> PathBuf {
    let dir = copy_model(s, name);
    edit_json(&dir.join("manifest.json"), |m| match value {
        Some(v) => m[field] = v,
        None => {
            m.as_object_mut().unwrap().remove(field);
        }
    });
    dir
}

/// `info --model dir` refused with `words`, the copy unchanged.
fn info_case(name: &str, dir: &Path, words: &[&str]) -> Case {
    Case::new(name, &[&"info", &"--model", &dir, &"--threads", &"1"])
        .words(words)
        .unchanged(&[dir.to_path_buf()])
}

/// Bad values of the whole-number fields, with the range each must be in.
const COUNTS: [(&str, &str); 6] = [
    ("num_layers", "from 1 to 1024"),
    ("num_heads", "from 1 to 1024"),
    ("head_dim", "from 1 to 1024"),
    ("hidden_size", "from 1 to 1048576"),
    ("vocab_size", "from 1 to 2097152"),
    ("max_position_embeddings", "from 1 to 1048576"),
];

fn bad_counts() -> Vec<(String, Option<Value>)> {
    let mut v: Vec<(String, Option<Value>)> = [
        json!(0),
        json!(-1),
        json!(1u64 << 62),
        json!(4.5),
        json!("4"),
        json!(true),
        Value::Null,
    ]
    .into_iter()
    .map(|x| (x.to_string(), Some(x)))
    .collect();
    v.push(("missing".into(), None));
    v
}

/// Each whole-number field with each bad value: one error naming manifest.json, the field, the
/// range and the fix.
fn count_cases(s: &Scratch) -> Vec<Case> {
    let mut cases = Vec::new();
    for (field, range) in COUNTS {
        for (i, (shown, value)) in bad_counts().into_iter().enumerate() {
            let dir = manifest_with(s, &format!("count-{field}-{i}"), field, value);
            let quoted = format!("`{field}`");
            cases.push(info_case(
                &format!("manifest {field} = {shown}"),
                &dir,
                &["manifest.json", &quoted, range, "re-export"],
            ));
        }
    }
    let dir = manifest_with(s, "layers-1e9", "num_layers", Some(json!(1_000_000_000)));
    cases.push(info_case(
        "manifest num_layers = 10^9",
        &dir,
        &["manifest.json", "`num_layers`", "1000000000", "re-export"],
    ));
    cases
}

/// Other fields of the manifest, each with a bad value and the words of its refusal.
fn other_field_cases(s: &Scratch) -> Vec<Case> {
    let table: Vec<(&str, Option<Value>, &[&str])> = vec![
        (
            "format_version",
            Some(json!("1")),
            &["`format_version`", "whole number"],
        ),
        (
            "format_version",
            Some(json!(-1)),
            &["`format_version`", "negative"],
        ),
        ("format_version", None, &["`format_version`", "missing"]),
        (
            "format_version",
            Some(json!(2)),
            &["format_version 2", "version 1"],
        ),
        ("name", Some(json!(5)), &["`name`", "a string"]),
        ("name", None, &["`name`", "missing"]),
        (
            "model_type",
            Some(json!("mistral")),
            &["`model_type`", "\"gpt_neox\""],
        ),
        (
            "rotary_dims",
            Some(json!(-2)),
            &["`rotary_dims`", "negative"],
        ),
        (
            "rotary_dims",
            Some(json!(1u64 << 62)),
            &["`rotary_dims`", "from 0 to 1024"],
        ),
        ("rotary_dims", Some(json!(3)), &["`rotary_dims`", "even"]),
        (
            "rotary_dims",
            Some(json!(18)),
            &["`rotary_dims`", "head_dim 16"],
        ),
        (
            "rotary_base",
            Some(json!(0)),
            &["`rotary_base`", "positive"],
        ),
        (
            "rotary_base",
            Some(json!(-1.5)),
            &["`rotary_base`", "positive"],
        ),
        (
            "rotary_base",
            Some(json!("1e4")),
            &["`rotary_base`", "positive"],
        ),
        ("rotary_base", None, &["`rotary_base`", "missing"]),
        (
            "dtype",
            Some(json!("bfloat16")),
            &["`dtype`", "\"float32\", \"float16\""],
        ),
        ("dtype", Some(json!(32)), &["`dtype`", "one of"]),
        ("dtype", None, &["`dtype`", "missing"]),
        (
            "attention_masks",
            Some(json!("both")),
            &["`attention_masks`", "\"per_layer\""],
        ),
        ("inputs", Some(json!(3)), &["`inputs`", "list of strings"]),
        (
            "inputs",
            Some(json!(["input_ids", 1])),
            &["`inputs`", "list of strings"],
        ),
        ("outputs", None, &["`outputs`", "missing"]),
        ("opset", Some(json!(0)), &["`opset`", "from 1 to 1000"]),
        ("opset", Some(json!("17")), &["`opset`", "a string"]),
        (
            "exporter_version",
            Some(json!(130)),
            &["`exporter_version`", "a string"],
        ),
        ("source", Some(json!("hf")), &["`source`", "an object"]),
        (
            "source",
            Some(json!({"sha256": 5})),
            &["`source.sha256`", "a string"],
        ),
        (
            "random_init",
            Some(json!("yes")),
            &["`random_init`", "true or false"],
        ),
        ("init_seed", Some(json!(-1)), &["`init_seed`", "negative"]),
        (
            "init_seed",
            Some(json!(1.5)),
            &["`init_seed`", "whole number"],
        ),
        (
            "tokenizer_vocab_size",
            Some(json!(0)),
            &["`tokenizer_vocab_size`", "from 1"],
        ),
        (
            "tokenizer_vocab_size",
            Some(json!(1u64 << 62)),
            &["`tokenizer_vocab_size`", "2097152"],
        ),
        (
            "tokenizer_vocab_size",
            Some(json!("500")),
            &["`tokenizer_vocab_size`", "a string"],
        ),
        (
            "eos_token_id",
            Some(json!(-1)),
            &["`eos_token_id`", "negative"],
        ),
        (
            "eos_token_id",
            Some(json!(512)),
            &["`eos_token_id`", "below vocab_size 512"],
        ),
        (
            "eos_token_id",
            Some(json!(1u64 << 40)),
            &["`eos_token_id`", "whole number"],
        ),
        (
            "prepend_bos_token_id",
            Some(json!(512)),
            &["`prepend_bos_token_id`", "below vocab_size"],
        ),
        (
            "prepend_bos_token_id",
            Some(json!(-1)),
            &["`prepend_bos_token_id`", "negative"],
        ),
        (
            "hidden_size",
            Some(json!(65)),
            &["`hidden_size`", "num_heads 4 x head_dim 16 = 64"],
        ),
        ("weights", Some(json!("int8")), &["`weights`", "an object"]),
        (
            "weights",
            Some(json!({"format": "int3"})),
            &["`weights.format`", "\"int4\""],
        ),
        (
            "weights",
            Some(json!({"format": 8})),
            &["`weights.format`", "one of"],
        ),
        ("weights", Some(json!({})), &["`weights.format`", "missing"]),
        (
            "weights",
            Some(json!({"format": "int4", "block_size": 0})),
            &["`weights.block_size`", "from 16 to 256"],
        ),
        (
            "weights",
            Some(json!({"format": "int4", "block_size": -32})),
            &["`weights.block_size`", "negative"],
        ),
        (
            "weights",
            Some(json!({"format": "int4", "block_size": 48})),
            &["`weights.block_size`", "power of two"],
        ),
        (
            "weights",
            Some(json!({"format": "fp32", "block_size": 32})),
            &["`weights.block_size`", "\"fp32\""],
        ),
        (
            "weights",
            Some(json!({"format": "fp32", "lm_head": "int4"})),
            &["`weights.lm_head`", "\"fp32\""],
        ),
        (
            "weights",
            Some(json!({"format": "int4", "lm_head": "int2"})),
            &["`weights.lm_head`", "one of"],
        ),
    ];
    table
        .into_iter()
        .enumerate()
        .map(|(i, (field, value, words))| {
            let name = format!(
                "manifest {field} = {}",
                value.as_ref().map_or("missing".into(), Value::to_string)
            );
            let dir = manifest_with(s, &format!("field-{i}"), field, value);
            let mut w = vec!["manifest.json", "re-export"];
            w.extend_from_slice(words);
            info_case(&name, &dir, &w)
        })
        .collect()
}

/// manifest.json with NaN (what Python's json writes for a float NaN): not JSON, the place named.
fn nan_case(s: &Scratch) -> Case {
    let dir = copy_model(s, "nan");
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("\"rotary_base\": 10000.0", "\"rotary_base\": NaN"),
    )
    .unwrap();
    info_case(
        "manifest rotary_base = NaN",
        &dir,
        &[
            "manifest.json",
            "not JSON",
            "rotary_base",
            "NaN and Infinity are not JSON numbers",
        ],
    )
}

/// Values each sane alone that the graph contradicts (its static shapes and types).
fn graph_lie_cases(s: &Scratch) -> Vec<Case> {
    let table: Vec<(&str, Value, &[&str])> = vec![
        (
            "more heads",
            json!({"num_heads": 8, "hidden_size": 128}),
            &[
                "num_heads is 8",
                "past_key_values.0.key is [batch, 4, past, 16]",
            ],
        ),
        (
            "another head_dim",
            json!({"head_dim": 8, "hidden_size": 32}),
            &["head_dim is 8", "head_dim 16 there"],
        ),
        (
            "another vocab",
            json!({"vocab_size": 600}),
            &["vocab_size is 600", "logits", "512"],
        ),
        (
            "fp16 K/V",
            json!({"dtype": "float16"}),
            &["dtype is \"float16\"", "holds float32"],
        ),
        (
            "more layers",
            json!({"num_layers": 3}),
            &["num_layers is 3", "model.onnx has 2 layers"],
        ),
        (
            "fewer layers",
            json!({"num_layers": 1}),
            &["num_layers is 1", "model.onnx has 2 layers"],
        ),
        (
            "a misnamed output",
            json!({"outputs": ["logits", "new_key_values.0.key", "new_key_values.0.value",
                "new_key_values.1.key", "new_key_values.1.value", "attention_sums.0", "attention_sum.1"]}),
            &["does not match its manifest.json", "attention_sums.1"],
        ),
        (
            "per-layer masks",
            json!({"attention_masks": "per_layer"}),
            &[
                "attention_masks is \"per_layer\"",
                "one attention_mask for every layer",
            ],
        ),
    ];
    table
        .into_iter()
        .enumerate()
        .map(|(i, (name, fields, words))| {
            let dir = copy_model(s, &format!("graph-lie-{i}"));
            edit_json(&dir.join("manifest.json"), |m| {
                for (k, v) in fields.as_object().unwrap() {
                    m[k] = v.clone();
                }
            });
            let mut w = vec!["model.onnx", "re-export"];
            w.extend_from_slice(words);
            info_case(&format!("graph contradicts: {name}"), &dir, &w)
        })
        .collect()
}

/// A manifest its graph contradicts, through bench and speed: one error before any experiment
/// (bench and speed check in the parent, without a session; no results row, no file).
fn graph_lie_run_cases(s: &Scratch) -> Vec<Case> {
    let (text, results) = (s.text(), s.results());
    let dir = copy_model(s, "graph-lie-run");
    edit_json(&dir.join("manifest.json"), |m| {
        m["num_heads"] = json!(8);
        m["hidden_size"] = json!(128);
    });
    let words = [
        "--model",
        "model.onnx",
        "num_heads is 8",
        "past_key_values.0.key is [batch, 4, past, 16]",
    ];
    let runs = speed_and_bench(&text, &results);
    runs.into_iter()
        .map(|(cmd, mut args)| {
            args.extend_from_slice(&[&"--model", &dir, &"--threads", &"1"]);
            Case::new(&format!("{cmd}: the graph contradicts its manifest"), &args)
                .words(&words)
                .unchanged(&[dir.clone(), text.clone(), results.clone()])
        })
        .collect()
}

/// Command lines by command name, the model flags left to add.
type Runs<'a> = Vec<(&'static str, Vec<&'a dyn AsRef<std::ffi::OsStr>>)>;

/// Short `speed` and `bench` runs on `text` (bench's results in `results`).
#[allow(clippy::ptr_arg)] // the arguments become &dyn AsRef<OsStr>, which needs a sized PathBuf
fn speed_and_bench<'a>(text: &'a PathBuf, results: &'a PathBuf) -> Runs<'a> {
    vec![
        (
            "speed",
            vec![
                &"speed",
                &"--data",
                text,
                &"--prompt",
                &"8",
                &"--gen",
                &"2",
                &"--no-floor",
            ],
        ),
        (
            "bench",
            vec![
                &"bench",
                &"--data",
                text,
                &"--results",
                results,
                &"--exp",
                &"full",
                &"--ppl-tokens",
                &"16",
                &"--prompt",
                &"8",
                &"--gen",
                &"2",
            ],
        ),
    ]
}

/// The 2^62-head and 10^9-layer manifests through every model-running command: refused, no panic,
/// no abort.
fn every_command_cases(s: &Scratch) -> Vec<Case> {
    let (text, results) = (s.text(), s.results());
    let mut cases = Vec::new();
    for (field, value) in [
        ("num_heads", json!(1u64 << 62)),
        ("num_layers", json!(1_000_000_000)),
    ] {
        let dir = manifest_with(s, &format!("every-{field}"), field, Some(value.clone()));
        let mut runs = speed_and_bench(&text, &results);
        runs.extend::<Runs>(vec![
            ("ppl", vec![&"ppl", &"--data", &text, &"--tokens", &"16"]),
            (
                "generate",
                vec![&"generate", &"--prompt", &"The river", &"--max-new", &"2"],
            ),
            ("heatmap", vec![&"heatmap", &"--out", &results]),
        ]);
        for (cmd, mut args) in runs {
            args.extend_from_slice(&[&"--model", &dir, &"--threads", &"1"]);
            cases.push(
                Case::new(&format!("{cmd} with {field} = {value}"), &args)
                    .words(&["manifest.json", field, "re-export"])
                    .unchanged(&[dir.clone(), text.clone(), results.clone()]),
            );
        }
    }
    cases
}

/// A copy of the model whose tokenizer.json is edited.
fn tokenizer_with(s: &Scratch, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = copy_model(s, name);
    edit_json(&dir.join("tokenizer.json"), edit);
    dir
}

fn add_tokens(t: &mut Value, n: usize) {
    let added = t["added_tokens"].as_array_mut().unwrap();
    for i in 0..n {
        added.push(
            json!({"id": 600 + i, "content": format!("<extra_{i}>"), "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
        );
    }
}

/// Keeps the BPE vocabulary's ids below `n` and the merges among them.
fn prune_vocab(t: &mut Value, n: u64) {
    let vocab = t["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().unwrap() < n);
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    let pair = |m: &Value| -> Vec<String> {
        match m {
            Value::String(s) => s.split(' ').map(String::from).collect(),
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            _ => Vec::new(),
        }
    };
    t["model"]["merges"].as_array_mut().unwrap().retain(|m| {
        let p = pair(m);
        p.iter().all(|x| kept.contains(x)) && kept.contains(&p.concat())
    });
}

/// Tokenizers of another vocabulary than the model's (the probe's PPL 28859, exit 0), through ppl.
fn tokenizer_cases(s: &Scratch) -> Vec<Case> {
    let text = s.text();
    let ppl = |name: &str, dir: PathBuf, words: &[&str]| {
        Case::new(
            name,
            &[
                &"ppl",
                &"--model",
                &dir,
                &"--data",
                &text,
                &"--tokens",
                &"32",
                &"--threads",
                &"1",
            ],
        )
        .words(words)
        .unchanged(&[dir.clone(), text.clone()])
    };
    let no_count = tokenizer_with(s, "tok-13-more", |t| add_tokens(t, 13));
    edit_json(&no_count.join("manifest.json"), |m| {
        m.as_object_mut().unwrap().remove("tokenizer_vocab_size");
    });
    vec![
        ppl(
            "tokenizer with a token more",
            tokenizer_with(s, "tok-1-more", |t| add_tokens(t, 1)),
            &[
                "tokenizer.json",
                "501 tokens",
                "tokenizer_vocab_size",
                "500",
            ],
        ),
        ppl(
            "tokenizer of 300 ids",
            tokenizer_with(s, "tok-300", |t| prune_vocab(t, 300)),
            &[
                "tokenizer.json",
                "300 tokens",
                "500",
                "the tokenizer.json the model was exported with",
            ],
        ),
        ppl(
            "tokenizer beyond the logits, no tokenizer_vocab_size",
            no_count,
            &[
                "tokenizer.json",
                "513 tokens",
                "vocabulary is 512",
                "vocab_size",
            ],
        ),
        ppl(
            "manifest's tokenizer_vocab_size not the tokenizer's",
            manifest_with(s, "tok-count-300", "tokenizer_vocab_size", Some(json!(300))),
            &["tokenizer.json", "500 tokens", "tokenizer of 300"],
        ),
    ]
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let x = b[*at];
        *at += 1;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// model.onnx with one more initializer in its graph: `name`, uint8 `[4]`, used by no node (ONNX
/// Runtime loads it and drops it). The ModelProto's fields are copied, the graph (field 7) grown.
fn with_uint8_initializer(model: &[u8], name: &str) -> Vec<u8> {
    let mut tensor = Vec::new();
    tensor.extend_from_slice(&[1 << 3, 4, 2 << 3, 2]); // dims [4], data_type uint8
    tensor.push(8 << 3 | 2);
    varint(name.len() as u64, &mut tensor);
    tensor.extend_from_slice(name.as_bytes());
    tensor.extend_from_slice(&[9 << 3 | 2, 4, 1, 2, 3, 4]); // raw_data
    let (mut out, mut at) = (Vec::new(), 0);
    while at < model.len() {
        let start = at;
        let key = read_varint(model, &mut at);
        let end = match key & 7 {
            0 => {
                read_varint(model, &mut at);
                at
            }
            2 => {
                let n = read_varint(model, &mut at) as usize;
                at + n
            }
            1 => at + 8,
            _ => at + 4,
        };
        if key == (7 << 3 | 2) {
            let body = &model[at..end];
            varint(key, &mut out);
            varint((body.len() + 2 + tensor.len()) as u64, &mut out);
            out.extend_from_slice(body);
            out.push(5 << 3 | 2);
            varint(tensor.len() as u64, &mut out);
            out.extend_from_slice(&tensor);
        } else {
            out.extend_from_slice(&model[start..end]);
        }
        at = end;
    }
    out
}

/// Weight formats the graph contradicts: quantized claimed of the fp32 graph, fp32 claimed (or
/// implied) of a graph with quantized weights.
fn weight_format_cases(s: &Scratch) -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, w) in [
        json!({"format": "int4", "block_size": 32}),
        json!({"format": "int8", "block_size": 32, "lm_head": "int8"}),
        json!({"format": "int8"}),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = manifest_with(s, &format!("weights-{i}"), "weights", Some(w.clone()));
        cases.push(info_case(
            &format!("weights {w} of an fp32 graph"),
            &dir,
            &[
                "manifest.json",
                "weights.format",
                "model.onnx has no MatMulNBits",
                "re-export",
            ],
        ));
    }
    for (name, weights) in [("fp32", Some(json!({"format": "fp32"}))), ("absent", None)] {
        let dir = manifest_with(s, &format!("quantized-graph-{name}"), "weights", weights);
        let onnx = dir.join("model.onnx");
        let grown = with_uint8_initializer(&std::fs::read(&onnx).unwrap(), "q_weight");
        std::fs::write(&onnx, grown).unwrap();
        cases.push(info_case(
            &format!("weights {name} of a graph with uint8 weights"),
            &dir,
            &[
                "manifest.json",
                "weights.format is \"fp32\"",
                "model.onnx holds quantized weights",
                "1 int8/uint8/int4 initializer",
            ],
        ));
    }
    cases
}

/// --kv-cap sizes that overflow or are negative, and a batch beyond the text.
fn size_cases(s: &Scratch) -> Vec<Case> {
    let (model, text) = (s.model(), s.text());
    let speed = |name: &str, extra: &[&dyn AsRef<std::ffi::OsStr>], words: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"speed",
            &"--model",
            &model,
            &"--data",
            &text,
            &"--prompt",
            &"8",
            &"--gen",
            &"2",
            &"--no-floor",
            &"--threads",
            &"1",
        ];
        args.extend_from_slice(extra);
        Case::new(name, &args)
            .words(words)
            .unchanged(&[model.clone(), text.clone()])
    };
    vec![
        speed(
            "--kv-cap -1GiB",
            &[&"--kv-cap", &"-1GiB"],
            &["--kv-cap", "negative"],
        ),
        speed("--kv-cap -5", &[&"--kv-cap=-5"], &["--kv-cap", "negative"]),
        // 2^108 + 1 MiB: wrapped to 1 MiB and measured before
        speed(
            "--kv-cap wrapping to 1 MiB",
            &[&"--kv-cap", &"324518553658426726783156020576257MiB"],
            &["--kv-cap", "more bytes than this machine can count"],
        ),
        // (2^88 + 1) TiB: wraps to 1 TiB in u128
        speed(
            "--kv-cap wrapping to 1 TiB",
            &[&"--kv-cap", &"309485009821345068724781057TiB"],
            &["--kv-cap", "more bytes than this machine can count"],
        ),
        speed(
            "--kv-cap 2^64 bytes",
            &[&"--kv-cap", &"18446744073709551616"],
            &["--kv-cap", "more bytes"],
        ),
        speed(
            "--kv-cap of 40 digits",
            &[&"--kv-cap", &"9999999999999999999999999999999999999999TiB"],
            &["--kv-cap", "more bytes"],
        ),
        speed(
            "--batch 100000",
            &[&"--batch", &"100000"],
            &["--batch 100000", "tokens of text", "is the most that fits"],
        ),
        speed(
            "--batch 1,100000",
            &[&"--batch", &"1,100000"],
            &["--batch 100000", "is the most that fits"],
        ),
        speed(
            "--batch 2^62",
            &[&"--batch", &"4611686018427387904"],
            &["--batch 4611686018427387904", "is the most that fits"],
        ),
    ]
}

/// A negative (or otherwise hyphenated) value to every numeric flag: the tool's own parser or
/// check answers, naming the flag.
fn negative_cases(s: &Scratch) -> Vec<Case> {
    let (model, text, results) = (s.model(), s.text(), s.results());
    let table: &[(&str, &str, &str, &str)] = &[
        ("info", "--threads", "-2", "negative"),
        ("ppl", "--tokens", "-5", "negative"),
        ("ppl", "--threads", "-1", "negative"),
        ("speed", "--prompt", "-1", "negative"),
        ("speed", "--gen", "-1", "negative"),
        ("speed", "--batch", "-1", "negative"),
        ("speed", "--contexts", "-8", "negative"),
        ("speed", "--prefill-chunk", "-3", "negative"),
        ("speed", "--warmup", "-1", "negative"),
        ("bench", "--ppl-tokens", "-1", "negative"),
        ("bench", "--prompt", "-2", "negative"),
        ("bench", "--gen", "-1", "negative"),
        ("bench", "--warmup", "-1", "negative"),
        ("generate", "--max-new", "-1", "negative"),
        ("generate", "--rng-seed", "-1", "negative"),
        (
            "generate",
            "--temperature",
            "-1",
            "give 0 (greedy) or a positive number",
        ),
        ("generate", "--top-p", "-0.5", "outside (0, 1]"),
        ("heatmap", "--max-tokens", "-3", "negative"),
        ("heatmap", "--budget", "-3", "negative"),
        ("heatmap", "--floor", "-inf", "between 0 and 1"),
        ("heatmap", "--layers", "-1", "not a layer number"),
        ("heatmap", "--head", "-1", "use a head index or `mean`"),
        ("ppl", "--tokens", "1.5", "not a whole number"),
        ("speed", "--batch", "99999999999999999999999", "too large"),
    ];
    table
        .iter()
        .map(|&(cmd, flag, value, problem)| {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                vec![&cmd, &flag, &value, &"--model", &model];
            match cmd {
                "ppl" | "speed" => args.extend_from_slice(&[&"--data", &text]),
                "bench" => args.extend_from_slice(&[&"--data", &text, &"--results", &results]),
                "generate" => args.extend_from_slice(&[&"--prompt", &"The river"]),
                "heatmap" => args.extend_from_slice(&[&"--out", &results]),
                _ => {}
            }
            Case::new(&format!("{cmd} {flag} {value}"), &args)
                .words(&[flag, problem])
                .unchanged(&[model.clone(), text.clone(), results.clone()])
        })
        .collect()
}

#[test]
fn lying_manifests_are_refused_naming_the_field() {
    let s = Scratch::new();
    let mut cases = count_cases(&s);
    cases.extend(other_field_cases(&s));
    cases.push(nan_case(&s));
    check_all(&cases);
}

#[test]
fn manifests_the_graph_contradicts_are_refused() {
    let s = Scratch::new();
    check_all(&graph_lie_cases(&s));
    check_all(&graph_lie_run_cases(&s));
}

#[test]
fn every_command_refuses_a_huge_manifest_without_a_panic() {
    let s = Scratch::new();
    check_all(&every_command_cases(&s));
}

#[test]
fn a_tokenizer_of_another_vocabulary_is_refused() {
    let s = Scratch::new();
    check_all(&tokenizer_cases(&s));
}

#[test]
fn weight_formats_the_graph_contradicts_are_refused() {
    let s = Scratch::new();
    check_all(&weight_format_cases(&s));
}

#[test]
fn sizes_that_overflow_and_batches_beyond_the_text_are_refused() {
    let s = Scratch::new();
    check_all(&size_cases(&s));
}

#[test]
fn negative_numbers_reach_the_tools_own_checks() {
    let s = Scratch::new();
    check_all(&negative_cases(&s));
}
