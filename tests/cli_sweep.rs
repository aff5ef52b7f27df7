//! End-to-end CLI tests of `h2o sweep plan | run | merge` on the tiny fixture: the grid's jobs, two
//! workers, one result file per job, a rerun that skips them, a failing job's row, the merged PPL
//! equal bit for bit to bench's, duplicates and missing jobs named, and bad input named by flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::cli::{h2o, write_text};
use common::fixture_dir;

const SMALL: [&str; 8] = [
    "--ppl-tokens",
    "32",
    "--prompt",
    "16",
    "--gen",
    "4",
    "--warmup",
    "0",
];

fn plan(data: &Path, exps: &str, out: &Path) {
    let o = h2o()
        .args(["sweep", "plan", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--exp", exps, "--threads", "1"])
        .args(SMALL)
        .arg("--out")
        .arg(out)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `h2o sweep ARGS`: (exit code, stdout, stderr).
fn sweep(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let o = h2o()
        .arg("sweep")
        .args(args)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a std::ffi::OsStr> {
    args.iter().map(std::ffi::OsStr::new).collect()
}

fn record_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn plan_run_merge_matches_bench_skips_finished_and_records_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = write_text(t, 200);
    let short_dir = t.join("short");
    std::fs::create_dir(&short_dir).unwrap();
    let short = write_text(&short_dir, 200);
    let jobs = t.join("jobs.jsonl");
    plan(&data, "full,h2o:8+8,local:16", &jobs);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jobs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["needs"]["provider"], "cpu", "{l}");
        assert!(l["needs"]["memory_bytes"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(l["job"]["plan"]["ppl"]["tokens"], 32);
    }
    // a fourth job on a text that is cut short after planning: it fails in its child
    let failing = t.join("failing.jsonl");
    plan(&short, "tova:8", &failing);
    let mut all = std::fs::read_to_string(&jobs).unwrap();
    all.push_str(&std::fs::read_to_string(&failing).unwrap());
    std::fs::write(&jobs, &all).unwrap();
    std::fs::write(&short, "Too short.").unwrap();

    let results = t.join("results");
    let (j, r) = (jobs.to_str().unwrap(), results.to_str().unwrap());
    let (code, out, err) = sweep(&os(&["run", j, "--workers", "2", "--results", r]));
    assert_eq!(code, 1, "one job failed:\n{out}\n{err}");
    assert!(out.contains("4 ran (1 failed), 0 skipped"), "{out}");
    assert!(
        err.contains("error: 1 of 4 jobs failed; their records in")
            && err.contains("delete a job's record to run it again"),
        "{err}"
    );
    let files = record_files(&results);
    assert_eq!(files.len(), 4, "one file per job, no leftovers: {files:?}");
    let failed_id =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&failing).unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    let failed = json(&results.join(format!("{failed_id}.json")));
    assert_eq!(failed["result"]["status"]["state"], "failed", "{failed}");

    // a rerun skips every finished job (the failed one too: its record is its result)
    let before = std::fs::read(&files[0]).unwrap();
    let (code, out, _) = sweep(&os(&["run", j, "--workers", "2", "--results", r]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 ran (0 failed), 4 skipped"), "{out}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), before, "untouched");

    // merge: one run, JOBS order, the failed row, origins; twice gives the same bytes
    let merged = t.join("merged");
    let m = merged.to_str().unwrap();
    let (code, out, err) = sweep(&os(&["merge", r, "--jobs", j, "--out", m]));
    assert_eq!(code, 0, "{out}\n{err}");
    let csv1 = std::fs::read(t.join("merged.csv")).unwrap();
    let json1 = std::fs::read(t.join("merged.json")).unwrap();
    let (code, ..) = sweep(&os(&["merge", r, "--jobs", j, "--out", m]));
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(t.join("merged.csv")).unwrap(),
        csv1,
        "idempotent CSV"
    );
    assert_eq!(
        std::fs::read(t.join("merged.json")).unwrap(),
        json1,
        "idempotent JSON"
    );
    let doc = json(&t.join("merged.json"));
    let exps = doc["experiments"].as_array().unwrap();
    let specs: Vec<&str> = exps.iter().map(|e| e["spec"].as_str().unwrap()).collect();
    assert_eq!(specs, ["full", "h2o:8+8", "local:16", "tova:8"]);
    assert_eq!(exps[3]["status"]["state"], "failed");
    assert!(doc["complete"].as_bool().unwrap());
    let origins = doc["origins"].as_array().unwrap();
    assert_eq!(origins.len(), 4);
    assert!(origins[0]["ort_version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    let csv_text = String::from_utf8(csv1).unwrap();
    let header = csv_text.lines().next().unwrap();
    assert!(
        header.ends_with("Job ID,Host,CPU,GPU,ONNX Runtime"),
        "{header}"
    );
    assert_eq!(csv_text.lines().count(), 5);

    // bench on the same experiments: the same NLLs, bit for bit
    let bench_dir = t.join("bench");
    let o = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(&data)
        .args([
            "--exp",
            "full,h2o:8+8,local:16",
            "--threads",
            "1",
            "--name",
            "b",
        ])
        .args(SMALL)
        .arg("--results")
        .arg(&bench_dir)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bench = json(&bench_dir.join("b.json"));
    for (i, b) in bench["experiments"].as_array().unwrap().iter().enumerate() {
        let bits = |e: &serde_json::Value| -> Vec<u64> {
            e["nlls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap().to_bits())
                .collect()
        };
        assert_eq!(bits(&exps[i]), bits(b), "{} NLLs", b["spec"]);
        assert_eq!(
            exps[i]["ppl"]["ppl"].as_f64().unwrap().to_bits(),
            b["ppl"]["ppl"].as_f64().unwrap().to_bits()
        );
    }

    // duplicates and missing jobs are named
    let copy = t.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(&files[0], copy.join(files[0].file_name().unwrap())).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let c = copy.to_str().unwrap();
    let (code, _, err) = sweep(&os(&["merge", r, c, "--jobs", j, "--out", m]));
    assert_eq!(code, 2, "{err}");
    let dup_id = files[0].file_stem().unwrap().to_str().unwrap();
    let gone_id = files[1].file_stem().unwrap().to_str().unwrap();
    assert!(err.contains(&format!("duplicate: job {dup_id}")), "{err}");
    assert!(err.contains(&format!("missing: job {gone_id}")), "{err}");
    assert!(err.contains("1 of 4 jobs have no result"), "{err}");
    assert!(!json(&t.join("merged.json"))["complete"].as_bool().unwrap());
}

#[test]
fn bad_input_is_one_error_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let p = |n: &str| t.join(n).to_str().unwrap().to_string();
    let file = p("file");
    std::fs::write(&file, "x").unwrap();
    let bad = p("bad.jsonl");
    std::fs::write(&bad, "{\"id\":1}\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), p("none.jsonl"), "--results".into(), p("r")],
            "JOBS: cannot read",
        ),
        (
            vec!["run".into(), bad.clone(), "--results".into(), p("r")],
            "JOBS: ",
        ),
        (
            vec!["run".into(), file.clone(), "--results".into(), p("r")],
            "line 1: not a sweep job",
        ),
        (
            vec![
                "merge".into(),
                p("r"),
                "--jobs".into(),
                p("none"),
                "--out".into(),
                p("m"),
            ],
            "--jobs: cannot read",
        ),
        (
            vec!["merge".into(), file.clone(), "--out".into(), p("m")],
            "results folder: cannot read",
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let (code, _, err) = sweep(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // a results path that is a file: named by --results, before anything runs
    let jobs = t.join("jobs.jsonl");
    let data = write_text(t, 200);
    plan(&data, "full", &jobs);
    let (code, _, err) = sweep(&os(&["run", jobs.to_str().unwrap(), "--results", &file]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--results:"), "{err}");
    let (code, _, err) = sweep(&os(&[
        "run",
        jobs.to_str().unwrap(),
        "--workers",
        "0",
        "--results",
        &p("r"),
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("--workers 0"), "{err}");
    let j = jobs.to_str().unwrap();
    let r = p("r");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", j, "--results", &r, "--index", "1"],
            "--index 1: ",
        ),
        (vec!["run", j, "--results", &r, "--index", "-1"], "negative"),
        (
            vec!["run", j, "--results", &r, "--index", "0", "--workers", "2"],
            "cannot be used with",
        ),
        (
            vec!["slurm", j, "--results", &file, "--out", "x.sbatch"],
            "--results:",
        ),
        (
            vec!["slurm", &bad, "--results", &r, "--out", "x.sbatch"],
            "JOBS: ",
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = sweep(&os(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!Path::new(&r).exists(), "nothing made for refused input");
}

/// The NLLs and PPL of each experiment of the merged run document `merged` equal, bit for bit,
/// `h2o bench`'s on the same experiments (`exps`) of the fixture over `data`.
fn assert_merged_equals_bench(t: &Path, data: &Path, exps: &str, merged: &serde_json::Value) {
    let bench_dir = t.join("bench");
    let o = h2o()
        .args(["bench", "--model"])
        .arg(fixture_dir())
        .arg("--data")
        .arg(data)
        .args(["--exp", exps, "--threads", "1", "--name", "b"])
        .args(SMALL)
        .arg("--results")
        .arg(&bench_dir)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bench = json(&bench_dir.join("b.json"));
    let ours = merged["experiments"].as_array().unwrap();
    let theirs = bench["experiments"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    let bits = |e: &serde_json::Value| -> Vec<u64> {
        e["nlls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().to_bits())
            .collect()
    };
    for (o, b) in ours.iter().zip(theirs) {
        assert_eq!(o["status"]["state"], "ok", "{o}");
        assert_eq!(o["spec"], b["spec"]);
        assert_eq!(bits(o), bits(b), "{} NLLs", b["spec"]);
        assert_eq!(
            o["ppl"]["ppl"].as_f64().unwrap().to_bits(),
            b["ppl"]["ppl"].as_f64().unwrap().to_bits()
        );
    }
}

/// The ids of a JOBS file's jobs, in order.
fn job_ids(jobs: &Path) -> Vec<String> {
    std::fs::read_to_string(jobs)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = record_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn index_runs_one_job_and_the_sbatch_script_runs_job_i_as_task_i() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = write_text(t, 200);
    let jobs = t.join("jobs.jsonl");
    plan(&data, "full,h2o:8+8,local:16", &jobs);
    let ids = job_ids(&jobs);
    let (j, r) = (jobs.to_str().unwrap(), t.join("results"));
    let results = r.to_str().unwrap();

    // --index 1: job 1 alone, into its own file; again: skipped
    let (code, out, err) = sweep(&os(&["run", j, "--results", results, "--index", "1"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 ran (0 failed), 0 skipped"), "{out}");
    assert!(err.contains(&format!("job 1 of 3 ({})", ids[1])), "{err}");
    assert_eq!(file_names(&r), [format!("{}.json", ids[1])]);
    let (code, out, _) = sweep(&os(&["run", j, "--results", results, "--index", "1"]));
    assert_eq!(code, 0);
    assert!(out.contains("0 ran (0 failed), 1 skipped"), "{out}");

    // the script: one task per job, the most any job needs, the exact command
    let script = t.join("sweep.sbatch");
    let (code, out, err) = sweep(&os(&[
        "slurm",
        j,
        "--results",
        results,
        "--out",
        script.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("3 array tasks, each 1 CPU, "), "{out}");
    let text = std::fs::read_to_string(&script).unwrap();
    let max_memory = std::fs::read_to_string(&jobs)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["needs"]["memory_bytes"]
                .as_u64()
                .unwrap()
        })
        .max()
        .unwrap();
    // the documented request: the largest certain need x 1.5 + 1 GiB, in MiB rounded up
    let mib = (max_memory as f64 * 1.5 + 1024.0 * 1024.0 * 1024.0) / (1024.0 * 1024.0);
    let exe = std::fs::canonicalize(assert_cmd::cargo::cargo_bin("h2o")).unwrap();
    let directives: Vec<&str> = text.lines().filter(|l| l.starts_with("#SBATCH")).collect();
    assert_eq!(
        directives,
        [
            "#SBATCH --job-name=h2o-sweep".to_string(),
            "#SBATCH --array=0-2".into(),
            "#SBATCH --ntasks=1".into(),
            "#SBATCH --cpus-per-task=1".into(),
            format!("#SBATCH --mem={}M", mib.ceil() as u64),
            format!("#SBATCH --output={results}/slurm-%A_%a.log"),
        ]
    );
    assert!(text.starts_with("#!/bin/bash\n"), "{text}");
    let command = format!(
        "exec '{}' sweep run '{j}' --results '{results}' --index \"$SLURM_ARRAY_TASK_ID\"",
        exe.display()
    );
    assert_eq!(text.lines().last().unwrap(), command, "{text}");

    // task I by hand (bash the script with Slurm's variable): job I's result, nothing else
    for task in ["0", "2"] {
        let o = std::process::Command::new("bash")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", task)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut want: Vec<String> = ids.iter().map(|i| format!("{i}.json")).collect();
    want.sort();
    assert_eq!(file_names(&r), want);
    let merged = t.join("merged");
    let (code, _, err) = sweep(&os(&[
        "merge",
        results,
        "--jobs",
        j,
        "--out",
        merged.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_merged_equals_bench(
        t,
        &data,
        "full,h2o:8+8,local:16",
        &json(&t.join("merged.json")),
    );
}

/// Why a local Slurm cluster cannot be started here, or None when it can (the daemons and
/// clients installed, and root to run slurmd).
fn slurm_missing() -> Option<String> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    for tool in ["munged", "slurmctld", "slurmd", "sbatch", "sinfo"] {
        if !dirs.iter().any(|d| d.join(tool).is_file()) {
            return Some(format!(
                "{tool} is not installed (Debian: apt-get install slurm-wlm munge)"
            ));
        }
    }
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: slurmd must run as root to start jobs".into());
    }
    None
}

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| name.into())
}

/// munged, slurmctld and slurmd started by a test, stopped (by the pids they wrote) when dropped.
struct LocalSlurm {
    pid_files: Vec<PathBuf>,
    conf: PathBuf,
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        for f in &self.pid_files {
            if let Ok(pid) = std::fs::read_to_string(f) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-node Slurm cluster on this machine, every file under `dir` (its own munge key and socket,
/// free ports), its node idle.
fn start_slurm(dir: &Path) -> LocalSlurm {
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let d = |n: &str| dir.join(n);
    for sub in ["state", "spool", "munge"] {
        std::fs::create_dir_all(d(sub)).unwrap();
    }
    let key: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d("munge/munge.key"), key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d("munge"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(d("munge/munge.key"), std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut slurm = LocalSlurm {
        pid_files: Vec::new(),
        conf: d("slurm.conf"),
    };
    let socket = d("munge/munge.socket");
    run(std::process::Command::new(tool("munged"))
        .arg("--force")
        .arg(format!("--key-file={}", d("munge/munge.key").display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", d("munge/munged.pid").display()))
        .arg(format!("--log-file={}", d("munge/munged.log").display()))
        .arg(format!("--seed-file={}", d("munge/munge.seed").display())));
    slurm.pid_files.push(d("munge/munged.pid"));
    let host = run(std::process::Command::new("hostname").arg("-s"));
    let host = host.trim();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let p = |n: &str| d(n).display().to_string();
    let conf = format!(
        "ClusterName=h2otest\nSlurmctldHost={host}\nSlurmctldPort={}\nSlurmdPort={}\n\
         AuthType=auth/munge\nAuthInfo=socket={}\nCredType=cred/munge\nSlurmUser=root\n\
         SlurmdUser=root\nStateSaveLocation={}\nSlurmdSpoolDir={}\nSlurmctldPidFile={}\n\
         SlurmdPidFile={}\nSlurmctldLogFile={}\nSlurmdLogFile={}\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\nSelectType=select/cons_tres\n\
         SelectTypeParameters=CR_CPU_Memory\nReturnToService=2\nMpiDefault=none\n\
         NodeName={host} CPUs={cpus} RealMemory=4096 State=UNKNOWN\n\
         PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
        free_port(),
        free_port(),
        socket.display(),
        p("state"),
        p("spool"),
        p("slurmctld.pid"),
        p("slurmd.pid"),
        p("slurmctld.log"),
        p("slurmd.log"),
    );
    std::fs::write(&slurm.conf, conf).unwrap();
    run(std::process::Command::new(tool("slurmctld"))
        .arg("-i")
        .env("SLURM_CONF", &slurm.conf));
    slurm.pid_files.push(d("slurmctld.pid"));
    run(std::process::Command::new(tool("slurmd")).env("SLURM_CONF", &slurm.conf));
    slurm.pid_files.push(d("slurmd.pid"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = std::process::Command::new(tool("sinfo"))
            .args(["-h", "-o", "%T"])
            .env("SLURM_CONF", &slurm.conf)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).trim() == "idle" {
            return slurm;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the local Slurm node is not idle after 60 s: {}{}",
            String::from_utf8_lossy(&o.stdout),
            std::fs::read_to_string(d("slurmd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The sbatch array end to end on a one-node Slurm cluster started here (munge, slurmctld and
/// slurmd on localhost): every task's result, merged, equal to bench. Where Slurm is not
/// installed or the test is not root (a fresh CI machine has neither), it says why and passes.
#[test]
fn sbatch_array_end_to_end_on_a_local_slurm() {
    if let Some(why) = slurm_missing() {
        eprintln!("skipped: no local Slurm cluster: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let slurm = start_slurm(&t.join("slurm"));
    let data = write_text(t, 200);
    let jobs = t.join("jobs.jsonl");
    plan(&data, "full,h2o:8+8,local:16", &jobs);
    let ids = job_ids(&jobs);
    let (j, r) = (jobs.to_str().unwrap(), t.join("results"));
    let script = t.join("sweep.sbatch");
    let (code, _, err) = sweep(&os(&[
        "slurm",
        j,
        "--results",
        r.to_str().unwrap(),
        "--out",
        script.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    let o = std::process::Command::new(tool("sbatch"))
        .arg("--wait")
        .arg(&script)
        .current_dir(t)
        .env("SLURM_CONF", &slurm.conf)
        .output()
        .unwrap();
    let logs: String = record_files(&r)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        o.status.success(),
        "sbatch --wait: {}\n{logs}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records: Vec<String> = file_names(&r)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    let mut want: Vec<String> = ids.iter().map(|i| format!("{i}.json")).collect();
    want.sort();
    assert_eq!(records, want, "{logs}");
    assert_eq!(
        file_names(&r)
            .iter()
            .filter(|n| n.ends_with(".log"))
            .count(),
        3,
        "one log per task"
    );
    let merged = t.join("merged");
    let (code, _, err) = sweep(&os(&[
        "merge",
        r.to_str().unwrap(),
        "--jobs",
        j,
        "--out",
        merged.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_merged_equals_bench(
        t,
        &data,
        "full,h2o:8+8,local:16",
        &json(&t.join("merged.json")),
    );
    drop(slurm);
}
