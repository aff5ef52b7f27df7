//! Bad outputs refused before anything runs (issue 28, "trust fixes"), one table per class:
//! an output that is an input of the run or another output of it (however it is named: as
//! given, through a link, through `..`, as a hard link), a read-only file, a FIFO with no
//! reader (which used to hang the end of the run), and paths of the wrong kind, each named with
//! the flag that gave it. Every case lists the files that must stay byte for byte as they were.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bad_input::{check_all, Case, Scratch};

/// `h2o ppl` on the scratch model and text, small and quick, then `extra`.
fn ppl(s: &Scratch, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["ppl", "--model"].map(Into::into).to_vec();
    args.push(s.model().into());
    args.extend(["--data".into(), s.text().into_os_string()]);
    args.extend(["--tokens", "16", "--policy", "local:4", "--threads", "1"].map(Into::into));
    args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
    args
}

/// `h2o speed` on the scratch model and text, small and quick, then `extra`.
fn speed(s: &Scratch, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["speed", "--model"].map(Into::into).to_vec();
    args.push(s.model().into());
    args.extend(["--data".into(), s.text().into_os_string()]);
    let quick = [
        "--prompt",
        "8",
        "--gen",
        "4",
        "--warmup",
        "0",
        "--no-floor",
        "--threads",
        "1",
    ];
    args.extend(quick.map(Into::into));
    args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
    args
}

/// `h2o heatmap` on the scratch model, pictures of layers 0 and 1 into `out`, then `extra`.
fn heatmap(
    s: &Scratch,
    out: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["heatmap", "--model"].map(Into::into).to_vec();
    args.push(s.model().into());
    args.extend(["--threads", "1", "--layers", "0,1", "--out"].map(Into::into));
    args.push(out.into());
    args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
    args
}

/// A case over a built command line.
fn case(name: &str, args: Vec<std::ffi::OsString>) -> Case {
    let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    Case::new(name, &refs)
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", path.display());
}

/// The model folder, the text, and `more`: what no refused case may change.
fn kept(s: &Scratch, more: &[&Path]) -> Vec<PathBuf> {
    let mut v = vec![s.model(), s.text(), s.results()];
    v.extend(more.iter().map(|p| p.to_path_buf()));
    v
}

#[test]
fn an_output_that_is_an_input_of_the_run_is_refused() {
    let s = Scratch::new();
    let model = s.model();
    let text = s.text();
    let link_onnx = s.path("onnx-link.json");
    symlink(model.join("model.onnx"), &link_onnx).unwrap();
    let link_text = s.path("text-link.json");
    symlink("text.txt", &link_text).unwrap();
    let hard = s.path("hard.txt");
    std::fs::hard_link(&text, &hard).unwrap();
    let via_dots = s.path("results/../model/manifest.json");
    let text_via_dots = model.join("../text.txt");
    let maps = s.path("maps");
    std::fs::create_dir(&maps).unwrap();
    symlink(&text, maps.join("kept_layer_01.png")).unwrap();
    let maps2 = s.path("maps2");
    std::fs::create_dir(&maps2).unwrap();
    symlink(
        "../model/tokenizer.json",
        maps2.join("heatmap_layer_00_log.png"),
    )
    .unwrap();
    let k = |more: &[&Path]| kept(&s, more);
    check_all(&[
        case("ppl --json the text", ppl(&s, &[&"--json", &text]))
            .words(&["--json", "text.txt", "the file --data reads"])
            .unchanged(&k(&[])),
        case("ppl --trace the text", ppl(&s, &[&"--trace", &text]))
            .words(&["--trace", "the file --data reads"])
            .unchanged(&k(&[])),
        case(
            "ppl --json the manifest",
            ppl(&s, &[&"--json", &model.join("manifest.json")]),
        )
        .words(&["--json", "manifest.json", "the file --model reads"])
        .unchanged(&k(&[])),
        case(
            "ppl --trace the tokenizer",
            ppl(&s, &[&"--trace", &model.join("tokenizer.json")]),
        )
        .words(&["--trace", "the file --model reads"])
        .unchanged(&k(&[])),
        case(
            "ppl --json a link to model.onnx",
            ppl(&s, &[&"--json", &link_onnx]),
        )
        .words(&["--json", "model.onnx", "the file --model reads"])
        .unchanged(&k(&[&link_onnx])),
        case(
            "ppl --json a link to the text",
            ppl(&s, &[&"--json", &link_text]),
        )
        .words(&["--json", "the file --data reads"])
        .unchanged(&k(&[&link_text])),
        case(
            "ppl --json the manifest through ..",
            ppl(&s, &[&"--json", &via_dots]),
        )
        .words(&["--json", "the file --model reads"])
        .unchanged(&k(&[])),
        case(
            "ppl --trace the text through ..",
            ppl(&s, &[&"--trace", &text_via_dots]),
        )
        .words(&["--trace", "the file --data reads"])
        .unchanged(&k(&[])),
        case(
            "ppl --json a hard link to the text",
            ppl(&s, &[&"--json", &hard]),
        )
        .words(&["--json", "the file --data reads"])
        .unchanged(&k(&[&hard])),
        case("speed --json the text", speed(&s, &[&"--json", &text]))
            .words(&["--json", "the file --data reads"])
            .unchanged(&k(&[])),
        case(
            "speed --plot model.onnx",
            speed(&s, &[&"--plot", &model.join("model.onnx")]),
        )
        .words(&["--plot", "the file --model reads"])
        .unchanged(&k(&[])),
        case(
            "heatmap picture is the --file text",
            heatmap(&s, &maps, &[&"--file", &text]),
        )
        .words(&["--out", "kept_layer_01.png", "the file --file reads"])
        .unchanged(&k(&[&maps])),
        case("heatmap picture is the tokenizer", heatmap(&s, &maps2, &[]))
            .words(&["--out", "the file --model reads"])
            .unchanged(&k(&[&maps2])),
    ]);
}

#[test]
fn two_outputs_on_one_file_are_refused() {
    let s = Scratch::new();
    let out = s.path("out.json");
    std::fs::write(&out, "old").unwrap();
    let link = s.path("link.json");
    symlink("out.json", &link).unwrap();
    let dots = s.path("results/../out.json");
    let new = s.path("new.json");
    let png = s.path("p.png");
    let k = |more: &[&Path]| kept(&s, more);
    check_all(&[
        case(
            "ppl --json X --trace X",
            ppl(&s, &[&"--json", &out, &"--trace", &out]),
        )
        .words(&["--json", "same file as --trace"])
        .unchanged(&k(&[&out])),
        case(
            "ppl --json X --trace a link to X",
            ppl(&s, &[&"--json", &out, &"--trace", &link]),
        )
        .words(&["same file as"])
        .unchanged(&k(&[&out, &link])),
        case(
            "ppl --json X --trace X through ..",
            ppl(&s, &[&"--json", &dots, &"--trace", &out]),
        )
        .words(&["same file as"])
        .unchanged(&k(&[&out])),
        case(
            "ppl --json and --trace one new file",
            ppl(&s, &[&"--json", &new, &"--trace", &new]),
        )
        .words(&["same file as"])
        .unchanged(&k(&[&new])),
        case(
            "speed --json X --plot X",
            speed(&s, &[&"--json", &png, &"--plot", &png]),
        )
        .words(&["--plot", "same file as --json"])
        .unchanged(&k(&[&png])),
    ]);
}

#[test]
fn a_read_only_file_is_never_replaced() {
    let s = Scratch::new();
    let ro = s.path("ro.json");
    std::fs::write(&ro, "keep").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    let link = s.path("ro-link.json");
    symlink("ro.json", &link).unwrap();
    let ro_png = s.path("ro.png");
    std::fs::write(&ro_png, "keep").unwrap();
    std::fs::set_permissions(&ro_png, std::fs::Permissions::from_mode(0o400)).unwrap();
    let k = |more: &[&Path]| kept(&s, more);
    check_all(&[
        case("ppl --json read-only", ppl(&s, &[&"--json", &ro]))
            .words(&["--json", "read-only", "chmod"])
            .unchanged(&k(&[&ro])),
        case(
            "ppl --trace a link to read-only",
            ppl(&s, &[&"--trace", &link]),
        )
        .words(&["--trace", "read-only"])
        .unchanged(&k(&[&ro, &link])),
        case("speed --plot read-only", speed(&s, &[&"--plot", &ro_png]))
            .words(&["--plot", "read-only"])
            .unchanged(&k(&[&ro_png])),
    ]);
}

/// A FIFO nobody reads used to block the end of the run forever; now it is refused at once.
#[test]
fn a_fifo_without_a_reader_is_refused_before_the_run() {
    let s = Scratch::new();
    let fifo = s.path("pipe");
    mkfifo(&fifo);
    let maps = s.path("maps");
    std::fs::create_dir(&maps).unwrap();
    mkfifo(&maps.join("heatmap_layer_01_log.png"));
    let k = |more: &[&Path]| kept(&s, more);
    let quick = Duration::from_secs(30);
    check_all(&[
        case("ppl --json FIFO", ppl(&s, &[&"--json", &fifo]))
            .words(&["--json", "no process is reading"])
            .unchanged(&k(&[&fifo]))
            .timeout(quick),
        case("ppl --trace FIFO", ppl(&s, &[&"--trace", &fifo]))
            .words(&["--trace", "no process is reading"])
            .unchanged(&k(&[&fifo]))
            .timeout(quick),
        case("speed --json FIFO", speed(&s, &[&"--json", &fifo]))
            .words(&["--json", "no process is reading"])
            .unchanged(&k(&[&fifo]))
            .timeout(quick),
        case("speed --plot FIFO", speed(&s, &[&"--plot", &fifo]))
            .words(&["--plot", "no process is reading"])
            .unchanged(&k(&[&fifo]))
            .timeout(quick),
        case("heatmap picture a FIFO", heatmap(&s, &maps, &[]))
            .words(&["--out", "heatmap_layer_01_log.png", "no process is reading"])
            .unchanged(&k(&[&maps]))
            .timeout(quick),
    ]);
}

/// Paths of the wrong kind are named as such, with the flag that gave them.
#[test]
fn a_path_of_the_wrong_kind_is_named_with_its_flag() {
    let s = Scratch::new();
    let (model, text) = (s.model(), s.text());
    let file = s.path("results.txt");
    std::fs::write(&file, "mine").unwrap();
    let fifo = s.path("pipe");
    mkfifo(&fifo);
    let bench = |results: &Path| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["bench", "--model"].map(Into::into).to_vec();
        a.extend([model.clone().into(), "--data".into(), text.clone().into()]);
        a.extend([
            "--results".into(),
            results.into(),
            "--exp".into(),
            "local:4".into(),
        ]);
        a
    };
    let k = |more: &[&Path]| kept(&s, more);
    check_all(&[
        case("bench --results a file", bench(&file))
            .words(&["--results", "is a file, not a folder"])
            .unchanged(&k(&[&file])),
        case("bench --results the text", bench(&text))
            .words(&["--results", "is a file, not a folder"])
            .unchanged(&k(&[])),
        case("bench --results a FIFO", bench(&fifo))
            .words(&["--results", "is a FIFO, not a folder"])
            .unchanged(&k(&[&fifo]))
            .timeout(Duration::from_secs(30)),
        case("bench --results under a file", bench(&file.join("sub")))
            .words(&["--results", "results.txt is a file, not a folder"])
            .unchanged(&k(&[&file])),
        case("heatmap --out a file", heatmap(&s, &file, &[]))
            .words(&["--out", "is a file, not a folder"])
            .unchanged(&k(&[&file])),
        case("ppl --json a folder", ppl(&s, &[&"--json", &s.results()]))
            .words(&["--json", "is a directory"])
            .unchanged(&k(&[])),
        case(
            "speed --plot in a missing folder",
            speed(&s, &[&"--plot", &s.path("no/such/p.png")]),
        )
        .words(&["--plot", "does not exist"])
        .unchanged(&k(&[&s.path("no")])),
    ]);
}
