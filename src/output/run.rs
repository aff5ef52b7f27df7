//! The rules between the paths of one run: no output is a file the run reads (the text, any file
//! of the model directory), and no file is replaced by two outputs (one would be lost). Paths are
//! compared as they resolve (symbolic links and `..` followed) and, for files that exist, by
//! device and inode (a hard link is the same file). The outputs come back [`Prepared`], as a
//! run's [`Outputs`], to be written when the run ends.

use std::path::{Path, PathBuf};

use super::{
    destination, follow_dangling, parent, prepare_output, Destination, FileId, OutputError,
    Prepared, Target,
};

/// A path of a run and the flag that named it (`--json`, `--model`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub flag: &'a str,
    pub path: &'a Path,
}

/// At most this many files of an input folder are looked at (a model directory holds a few).
const MAX_INPUT_FILES: usize = 10_000;
/// Folders below an input folder that are looked into.
const MAX_INPUT_DEPTH: usize = 4;

/// What a path resolves to: its canonical path (for a new file, its folder's canonical path and
/// its name) and, when something exists there, its identity.
#[derive(Debug, Clone)]
struct Resolved {
    path: PathBuf,
    id: Option<FileId>,
    /// A regular file, or nothing yet (what a rename would replace or create).
    regular: bool,
}

impl Resolved {
    fn of(path: &Path) -> Resolved {
        let meta = std::fs::metadata(path).ok();
        Resolved {
            path: canonical(path),
            id: meta.as_ref().map(FileId::of),
            regular: meta.as_ref().is_none_or(|m| m.is_file()),
        }
    }

    fn same(&self, other: &Resolved) -> bool {
        self.path == other.path || (self.id.is_some() && self.id == other.id)
    }
}

/// The canonical path of `path`, or of the folder a new file at `path` would be created in,
/// plus its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let target = follow_dangling(path).unwrap_or_else(|_| path.to_path_buf());
    match (std::fs::canonicalize(parent(&target)), target.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => target,
    }
}

/// A file the run reads, with the flag that named it (or its folder).
struct Read<'a> {
    flag: &'a str,
    file: PathBuf,
    resolved: Resolved,
}

/// The file `path` names, or every file under it when it is a folder (a model directory).
fn files_of(path: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if out.len() >= MAX_INPUT_FILES {
        return;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let Ok(entries) = std::fs::read_dir(path) else {
                return;
            };
            for e in entries.flatten().filter(|_| depth > 0) {
                files_of(&e.path(), depth - 1, out);
            }
        }
        _ => out.push(path.to_path_buf()),
    }
}

fn read_files<'a>(inputs: &[Named<'a>]) -> Vec<Read<'a>> {
    let mut read = Vec::new();
    for i in inputs {
        let mut files = Vec::new();
        files_of(i.path, MAX_INPUT_DEPTH, &mut files);
        read.extend(files.into_iter().map(|file| Read {
            flag: i.flag,
            resolved: Resolved::of(&file),
            file,
        }));
    }
    read
}

/// An output already checked: whether it is replaced (renamed over) or written through.
struct Written<'a> {
    named: Named<'a>,
    resolved: Resolved,
    replaced: bool,
}

/// The outputs of a run, checked before it starts and ready to be written, by the path that
/// named each (a FIFO among them is open, and stays open as long as this value lives).
#[derive(Debug, Default)]
pub struct Outputs {
    prepared: Vec<Prepared>,
}

impl Outputs {
    /// The prepared output named by `path` (as given to [`check_run`]).
    pub fn get(&self, path: &Path) -> Option<&Prepared> {
        self.prepared.iter().find(|p| p.path() == path)
    }

    /// Where to write `path`: its prepared output, or (a path the run did not check) the path
    /// itself, checked when it is written.
    pub fn target<'a>(&self, path: &'a Path) -> Target<'a> {
        self.get(path)
            .map_or(Target::Path(path), |p| Target::Prepared(p.clone()))
    }

    /// Prepares `path`, once: a path named twice (a device or FIFO taking two outputs) shares
    /// what was opened for it first.
    fn prepare(&mut self, path: &Path) -> Result<(), OutputError> {
        if self.get(path).is_none() {
            self.prepared.push(prepare_output(path)?);
        }
        Ok(())
    }
}

/// Refuses the outputs of a run before it starts: each by [`prepare_output`], then any that is a
/// file the run reads (`inputs`: files, or folders whose every file is read), and any that is
/// the same file as an earlier output when either of the two is replaced (two outputs written
/// through the same device or FIFO are both written). Errors name the output's flag. Returns the
/// outputs prepared, for the writes at the end of the run.
pub fn check_run(outputs: &[Named<'_>], inputs: &[Named<'_>]) -> Result<Outputs, OutputError> {
    let read = read_files(inputs);
    let mut written: Vec<Written<'_>> = Vec::new();
    let mut ready = Outputs::default();
    for o in outputs {
        let w = check_one(o, &read, &written)
            .and_then(|w| ready.prepare(o.path).map(|()| w))
            .map_err(|e| e.flag(o.flag))?;
        written.push(w);
    }
    Ok(ready)
}

fn check_one<'a>(
    o: &Named<'a>,
    read: &[Read<'_>],
    written: &[Written<'_>],
) -> Result<Written<'a>, OutputError> {
    let replaced = matches!(destination(o.path)?, Destination::Replace(_));
    let resolved = Resolved::of(o.path);
    if resolved.regular {
        if let Some(r) = read.iter().find(|r| resolved.same(&r.resolved)) {
            return Err(OutputError::IsInput {
                path: o.path.to_path_buf(),
                input_flag: r.flag.to_string(),
                input: r.file.clone(),
            });
        }
    }
    let clash = |w: &&Written<'_>| (replaced || w.replaced) && resolved.same(&w.resolved);
    if let Some(w) = written.iter().find(clash) {
        return Err(OutputError::SameOutput {
            path: o.path.to_path_buf(),
            other_flag: w.named.flag.to_string(),
            other: w.named.path.to_path_buf(),
        });
    }
    Ok(Written {
        named: *o,
        resolved,
        replaced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(flag: &'a str, path: &'a Path) -> Named<'a> {
        Named { flag, path }
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_however_it_is_named() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("manifest.json"), "{}").unwrap();
        std::fs::write(model.join("sub/model.onnx.data"), "w").unwrap();
        let text = d.path().join("text.txt");
        std::fs::write(&text, "text").unwrap();
        std::os::unix::fs::symlink("model/manifest.json", d.path().join("link.json")).unwrap();
        std::fs::hard_link(&text, d.path().join("hard.txt")).unwrap();
        let inputs = [named("--model", &model), named("--data", &text)];
        for (out, flag) in [
            (text.clone(), "--data"),
            (model.join("manifest.json"), "--model"),
            (model.join("sub/model.onnx.data"), "--model"),
            (d.path().join("link.json"), "--model"),
            (model.join("../text.txt"), "--data"),
            (d.path().join("hard.txt"), "--data"),
        ] {
            let e = check_run(&[named("--json", &out)], &inputs).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("--json: "), "{text}");
            assert!(text.contains(&format!("the file {flag} reads")), "{text}");
        }
        // a new file beside the inputs is fine
        check_run(&[named("--json", &d.path().join("out.json"))], &inputs).unwrap();
    }

    #[test]
    fn two_outputs_on_one_file_are_refused_but_a_device_may_take_both() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.json");
        std::os::unix::fs::symlink("out.json", d.path().join("link.json")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        for other in [
            out.clone(),
            d.path().join("link.json"),
            d.path().join("sub/../out.json"),
        ] {
            let e = check_run(&[named("--json", &out), named("--trace", &other)], &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("--trace: ") && e.contains("same file as --json"),
                "{e}"
            );
        }
        let null = Path::new("/dev/null");
        check_run(&[named("--json", null), named("--trace", null)], &[]).unwrap();
    }
}
