//! Issue 19 item 14: `make bench` installs only what the main job needs (the exporter's packages
//! and ONNX Runtime); torch and the test tools are installed for `make test` only. Read from
//! what make would run (`make -n -B`: every recipe, nothing executed).

use std::process::Command;

mod common;

/// The recipes `make -n -B TARGET` prints, run in the project root.
fn recipes(target: &str) -> String {
    let out = Command::new("make")
        .args(["-n", "-B", target])
        .current_dir(common::root())
        // a make running this test (make test) must not hand its flags to the dry run
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "make -n -B {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn installs(recipes: &str) -> Vec<&str> {
    recipes
        .lines()
        .filter(|l| l.contains("pip install") && l.contains("requirements"))
        .collect()
}

#[test]
fn make_bench_installs_no_torch_and_make_test_does() {
    let bench = recipes("bench");
    let b = installs(&bench);
    assert!(
        b.iter().any(|l| l.contains("export/requirements.txt")),
        "make bench installs the exporter's requirements:\n{bench}"
    );
    assert!(
        b.iter().all(|l| !l.contains("requirements-torch")),
        "make bench installs torch:\n{bench}"
    );
    let test = recipes("test");
    let t = installs(&test);
    assert!(
        t.iter().any(|l| l.contains("export/requirements.txt"))
            && t.iter()
                .any(|l| l.contains("export/requirements-torch.txt")),
        "make test installs everything the tests need:\n{test}"
    );
    // and the base requirements hold neither torch, transformers nor the test tools
    let base = std::fs::read_to_string(common::root().join("export/requirements.txt")).unwrap();
    for p in ["torch", "transformers", "pytest", "pyarrow"] {
        assert!(
            !base.lines().any(|l| l.trim_start().starts_with(p)),
            "{p} in export/requirements.txt"
        );
    }
}
