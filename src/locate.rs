//! Where the tool finds its parts when no flag names them: the ONNX Runtime library, the default
//! model and the default text, beside the binary (an unpacked release archive) or in a clone.
//!
//! Search order (the first that exists wins; `h2o info` prints it):
//! - ONNX Runtime: `$ORT_DYLIB_PATH`; `<binary's folder>/lib/libonnxruntime.so*` (the archive);
//!   the project's `.venv` (onnxruntime wheel), the project being the current folder when it has a
//!   `.venv`, else the folder three levels above the binary (`target/release/h2o` of a clone);
//! - the default model (`--model` not given): `<binary's folder>/model` (the archive), then
//!   `models/pythia-micro/onnx` under the current folder, then under the project (a clone);
//! - the default text (`--data` not given): `$H2O_DATA`; `<binary's folder>/data/wiki.test.raw`
//!   (the archive); `../shared/data/wikitext-2-raw-v1/wiki.test.raw` beside the project.
//!
//! Every place is relative to the binary or the current folder: no path of the build machine is
//! baked in.

use std::path::{Path, PathBuf};

/// The default model's folder inside a clone.
pub const CLONE_MODEL: &str = "models/pythia-micro/onnx";
/// The default text inside the shared data folder beside a clone.
pub const SHARED_TEXT: &str = "../shared/data/wikitext-2-raw-v1/wiki.test.raw";
/// Environment variable naming the text file when `--data` is not given.
pub const DATA_ENV: &str = "H2O_DATA";

/// The folder of the running binary (symbolic links resolved), if it can be known.
pub fn binary_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    exe.parent().map(Path::to_path_buf)
}

/// The project a clone's binary belongs to: the current folder when it holds `.venv`, else the
/// folder three levels above the binary (`<root>/target/release/h2o`) when that one does, else
/// the current folder.
pub fn project_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd.join(".venv").is_dir() {
        return cwd;
    }
    let above = binary_dir().and_then(|d| d.parent()?.parent().map(Path::to_path_buf));
    match above {
        Some(root) if root.join(".venv").is_dir() => root,
        _ => cwd,
    }
}

/// One place looked at: what it is for a person, and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub what: &'static str,
    pub path: PathBuf,
}

/// The places the default model is looked for, in order.
pub fn model_places() -> Vec<Place> {
    let mut v = Vec::new();
    if let Some(d) = binary_dir() {
        v.push(Place {
            what: "beside the binary (release archive)",
            path: d.join("model"),
        });
    }
    v.push(Place {
        what: "under the current folder (a clone)",
        path: PathBuf::from(CLONE_MODEL),
    });
    let root = project_root();
    let in_root = root.join(CLONE_MODEL);
    if root != std::env::current_dir().unwrap_or_default() {
        v.push(Place {
            what: "under the binary's project (a clone's target/release)",
            path: in_root,
        });
    }
    v
}

/// The default model: the first of [`model_places`] holding a manifest.json, else the clone's
/// relative path (whose absence the model check then names).
pub fn default_model() -> PathBuf {
    model_places()
        .into_iter()
        .find(|p| p.path.join("manifest.json").is_file())
        .map_or_else(|| PathBuf::from(CLONE_MODEL), |p| p.path)
}

/// The places the default text is looked for after `$H2O_DATA`, in order.
pub fn text_places() -> Vec<Place> {
    let mut v = Vec::new();
    if let Some(d) = binary_dir() {
        v.push(Place {
            what: "beside the binary (release archive)",
            path: d.join("data").join("wiki.test.raw"),
        });
    }
    v.push(Place {
        what: "the shared data beside the project (a clone)",
        path: project_root().join(SHARED_TEXT),
    });
    v
}

/// The default text when neither `--data` nor `$H2O_DATA` names one: the first of
/// [`text_places`] that is a file.
pub fn default_text() -> Option<PathBuf> {
    text_places()
        .into_iter()
        .find(|p| p.path.is_file())
        .map(|p| p.path)
}

/// The ONNX Runtime library beside the binary (`lib/libonnxruntime.so*`), if the archive has one.
pub fn library_beside_binary() -> Option<PathBuf> {
    let lib = binary_dir()?.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_relative_to_the_binary_or_the_current_folder() {
        let bin = binary_dir().unwrap();
        let models = model_places();
        assert_eq!(models[0].path, bin.join("model"));
        assert_eq!(models[1].path, PathBuf::from(CLONE_MODEL));
        let texts = text_places();
        assert_eq!(texts[0].path, bin.join("data/wiki.test.raw"));
        assert!(texts[1].path.ends_with(SHARED_TEXT));
    }
}
