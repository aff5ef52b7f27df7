//! Bad input to the engine gets one clear error that names the problem and the fix.

mod common;

use std::path::Path;

use common::*;
use h2o_engine::model::Model;
use h2o_engine::runtime::{check_provider, ExecutionProvider, Runtime, SessionConfig};

fn copy_fixture(dst: &Path) {
    for f in ["model.onnx", "manifest.json", "tokenizer.json"] {
        std::fs::copy(fixture_dir().join(f), dst.join(f)).unwrap();
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut m);
    std::fs::write(p, serde_json::to_string(&m).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    let cfg = SessionConfig {
        intra_threads: 1,
        ..SessionConfig::default()
    };
    Model::load(runtime(), dir, cfg).unwrap_err().to_string()
}

#[test]
fn model_dir_missing() {
    let e = load_err(Path::new("/nonexistent/model-dir"));
    assert!(
        e.contains("does not exist") && e.contains("export/export.py"),
        "{e}"
    );
}

#[test]
fn manifest_missing() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    std::fs::remove_file(d.path().join("manifest.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("manifest.json is missing"), "{e}");
}

#[test]
fn manifest_of_another_version() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    edit_manifest(d.path(), |m| m["format_version"] = 2.into());
    let e = load_err(d.path());
    assert!(
        e.contains("format_version 2") && e.contains("reads version 1"),
        "{e}"
    );
}

#[test]
fn manifest_not_json() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    std::fs::write(d.path().join("manifest.json"), "{not json").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn graph_outputs_not_as_the_manifest_says() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    // The manifest claims 3 layers; the graph has 2: names are missing from the graph.
    edit_manifest(d.path(), |m| {
        m["num_layers"] = 3.into();
        let outs = m["outputs"].as_array_mut().unwrap();
        outs.push("new_key_values.2.key".into());
        outs.push("new_key_values.2.value".into());
        outs.push("attention_sums.2".into());
        let ins = m["inputs"].as_array_mut().unwrap();
        ins.push("past_key_values.2.key".into());
        ins.push("past_key_values.2.value".into());
    });
    let e = load_err(d.path());
    assert!(
        e.contains("num_layers is 3") && e.contains("model.onnx has 2 layers"),
        "{e}"
    );
}

#[test]
fn graph_names_not_as_the_manifest_says() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    // The manifest names a layer's sums as the graph does not.
    edit_manifest(d.path(), |m| {
        let outs = m["outputs"].as_array_mut().unwrap();
        outs.retain(|o| o != "attention_sums.1");
        outs.push("attention_sum.1".into());
    });
    let e = load_err(d.path());
    assert!(
        e.contains("manifest outputs: missing") && e.contains("attention_sums.1"),
        "{e}"
    );
}

#[test]
fn manifest_without_attention_outputs() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    edit_manifest(d.path(), |m| {
        let outs = m["outputs"].as_array_mut().unwrap();
        outs.retain(|o| !o.as_str().unwrap().starts_with("attention_sums"));
    });
    let e = load_err(d.path());
    assert!(
        e.contains("manifest outputs: missing") && e.contains("attention_sums.0"),
        "{e}"
    );
}

#[test]
fn tokenizer_larger_than_the_model_vocab() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    edit_manifest(d.path(), |m| m["vocab_size"] = 100.into());
    let e = load_err(d.path());
    assert!(
        e.contains("500 tokens") && e.contains("vocabulary is 100"),
        "{e}"
    );
}

#[test]
fn tokenizer_missing_or_broken() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture(d.path());
    std::fs::write(d.path().join("tokenizer.json"), "[]").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("not a tokenizer.json"), "{e}");
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("tokenizer.json is missing"), "{e}");
}

#[test]
fn a_library_that_is_not_onnx_runtime() {
    let d = tempfile::tempdir().unwrap();
    let fake = d.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let e = Runtime::start_from(&fake).unwrap_err().to_string();
    assert!(
        e.contains("cannot be loaded") && e.contains("ORT_DYLIB_PATH"),
        "{e}"
    );
}

#[test]
fn cuda_without_the_feature() {
    if h2o_engine::runtime::CUDA_COMPILED {
        return;
    }
    let e = check_provider(ExecutionProvider::Cuda)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("without the `cuda` feature") && e.contains("--features cuda"),
        "{e}"
    );
    let cfg = SessionConfig {
        provider: ExecutionProvider::Cuda,
        intra_threads: 1,
        ..SessionConfig::default()
    };
    let e = Model::load(runtime(), &fixture_dir(), cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cuda"), "{e}");
}

#[test]
fn a_file_given_as_the_model_dir_and_a_directory_as_model_onnx() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("README.md");
    std::fs::write(&file, "not a model").unwrap();
    let e = load_err(&file);
    assert!(e.contains("is a file, not a directory"), "{e}");
    copy_fixture(d.path());
    std::fs::remove_file(d.path().join("model.onnx")).unwrap();
    std::fs::create_dir(d.path().join("model.onnx")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("is not a file"), "{e}");
}

#[test]
fn more_threads_than_cores_are_refused_by_the_library_too() {
    let cfg = SessionConfig {
        intra_threads: 100_000,
        ..SessionConfig::default()
    };
    let e = Model::load(runtime(), &fixture_dir(), cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000") && e.contains("logical cores"), "{e}");
}

/// knorm with K/V in device memory is refused in the library's own terms (the typed variant with
/// the family; the CLI names `--kv host`, tests/bad_input_cli.rs), before anything runs.
#[test]
fn knorm_with_device_kv_is_refused_without_naming_a_flag() {
    use h2o_engine::decoder::Decoder;
    use h2o_engine::policy::PolicySpec;
    use h2o_engine::runtime::KvPlacement;
    let cfg = SessionConfig {
        intra_threads: 1,
        kv: KvPlacement::Device,
        ..SessionConfig::default()
    };
    let mut model = Model::load(runtime(), &fixture_dir(), cfg).unwrap();
    let spec: PolicySpec = "knorm:8".parse().unwrap();
    let layers = model.manifest.num_layers;
    let e = Decoder::new(&mut model, spec.build(layers), 1)
        .err()
        .unwrap();
    assert!(
        matches!(&e, h2o_engine::Error::KeyNormNeedsHostKv { family } if family == "knorm"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "knorm ranks tokens by their keys' norms, which the host computes from the new keys; with K/V in device memory the keys never reach the host: keep K/V in host memory"
    );
}

/// The graph is checked against the manifest from model.onnx's own declarations (no session);
/// they are what ONNX Runtime reads: every input's and output's name, type and shape, for each
/// exported form (fp32, fp16, per-layer masks, the default model).
#[test]
fn declared_ports_are_what_onnx_runtime_reads() {
    use h2o_engine::model::{onnx_scan, Port};
    let dirs = vec![
        fixture_dir(),
        fixture_fp16_dir(),
        root().join("tests/fixtures/tiny-layer-masks"),
    ];
    let dirs = dirs
        .into_iter()
        .chain([root().join("models/pythia-micro/onnx")]);
    for dir in dirs {
        let cfg = SessionConfig {
            intra_threads: 1,
            ..SessionConfig::default()
        };
        let model = Model::load(runtime(), &dir, cfg).unwrap();
        let (ins, outs) = model.ports();
        let ops = onnx_scan::scan(&dir.join("model.onnx")).unwrap();
        let declared =
            |v: &[onnx_scan::ValueInfo]| v.iter().map(Port::declared).collect::<Vec<_>>();
        assert_eq!(declared(&ops.inputs), ins, "{}", dir.display());
        assert_eq!(declared(&ops.outputs), outs, "{}", dir.display());
        assert!(ins.len() > 4 && outs.len() > 4, "{}", dir.display());
    }
}
