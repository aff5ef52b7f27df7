//! Build script: records the git commit the binary is built from and the ONNX Runtime version the
//! project pins (export/requirements.txt), for `h2o --version` and the results' run record.

use std::process::Command;

fn main() {
    let commit = std::env::var("H2O_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common = git(&["rev-parse", "--git-common-dir"]).map_or(dir, Into::into);
            let r = common.join(branch);
            if r.exists() {
                println!("cargo:rerun-if-changed={}", r.display());
            }
        }
    }
    println!(
        "cargo:rustc-env=H2O_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_string())
    );
    let pinned = std::fs::read_to_string("export/requirements.txt")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("onnxruntime==").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=H2O_ORT_PINNED={pinned}");
    println!("cargo:rerun-if-changed=export/requirements.txt");
    println!("cargo:rerun-if-env-changed=H2O_GIT_COMMIT");
}

/// A git command's output, trimmed; `None` where git or the repository is missing.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
