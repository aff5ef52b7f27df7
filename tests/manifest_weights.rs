//! The manifest's optional `weights` entry (export.py --weights): read when present, fp32 when absent.

use h2o_engine::manifest::Manifest;

mod common;

/// The tiny fixture's manifest (written before `weights` existed) with `weights` set or removed.
fn manifest_with(weights: Option<serde_json::Value>) -> Manifest {
    let path = common::fixture_dir().join("manifest.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let obj = doc.as_object_mut().unwrap();
    obj.remove("weights");
    if let Some(w) = weights {
        obj.insert("weights".into(), w);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("manifest.json");
    std::fs::write(&p, serde_json::to_string(&doc).unwrap()).unwrap();
    Manifest::load(&p).unwrap()
}

#[test]
fn absent_weights_mean_fp32() {
    let m = manifest_with(None);
    assert_eq!(m.weights.format, "fp32");
    assert_eq!(m.weights.describe(), "fp32");
}

#[test]
fn quantized_weights_are_read_and_described() {
    let m = manifest_with(Some(serde_json::json!({
        "format": "int4", "op": "com.microsoft.MatMulNBits", "block_size": 32, "symmetric": true,
        "accuracy_level": 4, "lm_head": "int8", "embedding": "float", "quantized": ["embed_out"]
    })));
    assert_eq!(m.weights.format, "int4");
    assert_eq!(m.weights.block_size, Some(32));
    assert_eq!(
        m.weights.describe(),
        "int4 (MatMulNBits, block 32, LM head int8)"
    );
    let fp32 = manifest_with(Some(serde_json::json!({"format": "fp32"})));
    assert_eq!(fp32.weights.describe(), "fp32");
}
