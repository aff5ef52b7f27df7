//! Unit tests of the sweep's files: job ids, the JOBS file's refusals, merging hand-made records.

use super::*;
use crate::catalogue::{Experiment, TextMode};
use crate::experiment::{Plan, PplPlan, Setup};
use crate::report::ExperimentStatus;
use crate::runtime::{Denormals, SessionConfig};

fn job(spec: &str) -> SweepJob {
    let job = Job {
        setup: Setup {
            model: "models/m".into(),
            session: SessionConfig {
                intra_threads: 1,
                ..SessionConfig::default()
            },
            data: "text.txt".into(),
            text: TextMode::File,
        },
        plan: Plan {
            ppl: Some(PplPlan {
                tokens: 16,
                trace: false,
            }),
            speed: None,
        },
        experiment: Experiment::of(spec.parse().unwrap()),
    };
    let model = ModelInfo {
        name: "m".into(),
        dir: "models/m".into(),
        dtype: "f32".into(),
        layers: 2,
        heads: 2,
        kv_heads: Some(2),
        head_dim: 8,
        max_positions: 64,
        weights: Some("fp32".into()),
    };
    let needs = Needs {
        provider: ExecutionProvider::Cpu,
        cpus: 1,
        memory_bytes: 1,
    };
    SweepJob::new(job, needs, model, Counting::Ours)
}

fn host(name: &str) -> Host {
    Host {
        machine: MachineInfo {
            cpu_brand: "cpu".into(),
            cpu_arch: "x86_64".into(),
            physical_cores: Some(1),
            logical_cores: 2,
            total_memory_bytes: 1 << 30,
            os: "linux".into(),
            kernel: None,
            hostname: Some(name.into()),
            gpus: vec!["gpu-a".into()],
        },
        ort_version: "1.24.1".into(),
    }
}

fn record(j: &SweepJob, host_name: &str) -> JobRecord {
    let mut result = ExperimentResult::new(j.job.experiment.label.clone(), j.job.experiment.spec);
    result.status = ExperimentStatus::Failed {
        message: "x".into(),
    };
    JobRecord {
        job: j.clone(),
        host: host(host_name),
        result,
    }
}

fn write_record(dir: &Path, r: &JobRecord) {
    std::fs::create_dir_all(dir).unwrap();
    let p = record_path(dir, &r.job.id);
    std::fs::write(p, serde_json::to_string(r).unwrap()).unwrap();
}

#[test]
fn a_job_id_is_its_jobs_and_changes_with_any_setting() {
    let a = job("local:8");
    assert_eq!(a.id, job("local:8").id, "stable");
    assert_eq!(a.id.len(), 16);
    assert!(a.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a.id, job("local:9").id);
    let mut b = a.job.clone();
    b.setup.session.intra_threads = 2;
    assert_ne!(job_id(&b), a.id);
    // FNV-1a 64 of a known text, computed by hand from its definition: "" → offset basis
    let empty_basis = 0xcbf2_9ce4_8422_2325u64;
    assert_eq!(format!("{empty_basis:016x}"), "cbf29ce484222325");
}

#[test]
fn a_jobs_file_round_trips_and_bad_lines_are_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("jobs.jsonl");
    let jobs = vec![job("local:8"), job("h2o:4+4")];
    std::fs::write(&p, jobs_text(&jobs)).unwrap();
    assert_eq!(read_jobs(&p).unwrap(), jobs);
    let bad = |text: &str| {
        std::fs::write(&p, text).unwrap();
        read_jobs(&p).unwrap_err().to_string()
    };
    let one = serde_json::to_string(&jobs[0]).unwrap();
    let e = bad(&format!("{one}\n{{\"id\": 3}}\n"));
    assert!(e.contains("line 2: not a sweep job"), "{e}");
    let e = bad(&format!("{one}\n\n{one}\n"));
    assert!(e.contains("line 3: the same job as line 1"), "{e}");
    let e = bad(&one.replace(&jobs[0].id, "0000000000000000"));
    assert!(
        e.contains("line 1: id 0000000000000000 is not its job's"),
        "{e}"
    );
    let e = bad("\n\n");
    assert!(e.ends_with("holds no jobs"), "{e}");
    let e = read_jobs(&d.path().join("none")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read"), "{e}");
    let e = read_jobs(d.path()).unwrap_err().to_string();
    assert!(e.contains("it is a folder"), "{e}");
}

#[test]
fn merge_names_duplicates_missing_and_unlisted_jobs_and_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let jobs = vec![job("local:8"), job("h2o:4+4"), job("tova:8")];
    write_record(&a, &record(&jobs[1], "host-1"));
    write_record(&a, &record(&jobs[0], "host-1"));
    write_record(&b, &record(&jobs[0], "host-2"));
    let extra = job("knorm:8");
    write_record(&b, &record(&extra, "host-2"));
    let dirs = [a.clone(), b.clone()];
    let m = merge(&dirs, Some(&jobs)).unwrap();
    let ids: Vec<&str> = m
        .document
        .origins
        .iter()
        .map(|o| o.job_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [&jobs[0].id, &jobs[1].id, &extra.id],
        "JOBS order, then unlisted"
    );
    assert_eq!(
        m.document.origins[0].host.as_deref(),
        Some("host-1"),
        "first dir wins"
    );
    assert_eq!(m.duplicates.len(), 1);
    assert_eq!(m.duplicates[0].0, jobs[0].id);
    assert_eq!(
        m.missing,
        vec![(jobs[2].id.clone(), "tova 8".into(), "models/m".into())]
    );
    assert_eq!(
        m.unlisted,
        vec![(extra.id.clone(), record_path(&b, &extra.id))]
    );
    assert!(!m.document.run.complete);
    // the CSV: bench's header, then the origin columns
    let mut lines = m.csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.ends_with("Job ID,Host,CPU,GPU,ONNX Runtime"),
        "{header}"
    );
    assert!(
        header.starts_with(&crate::report::csv_header().join(",")),
        "{header}"
    );
    assert!(lines
        .next()
        .unwrap()
        .ends_with(&format!("{},host-1,cpu,gpu-a,1.24.1", jobs[0].id)));
    // the same records give the same bytes
    let again = merge(&dirs, Some(&jobs)).unwrap();
    assert_eq!(again.csv, m.csv);
    assert_eq!(again.document, m.document);
    // without JOBS: by id, complete, nothing missing
    let m = merge(&dirs, None).unwrap();
    assert!(m.document.run.complete && m.missing.is_empty());
    // the document reads as bench's run document
    let text = serde_json::to_string(&m.document).unwrap();
    let doc: crate::report::RunDocument = serde_json::from_str(&text).unwrap();
    assert_eq!(doc.experiments.len(), 3);
}

#[test]
fn merge_refuses_what_is_not_a_record_folder() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let e = merge(&[file], None).unwrap_err().to_string();
    assert!(e.starts_with("cannot read"), "{e}");
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = merge(std::slice::from_ref(&empty), None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("nothing to merge"), "{e}");
    // a record under another job's name
    let j = job("local:8");
    let r = record(&j, "h");
    std::fs::write(
        empty.join("0123456789abcdef.json"),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
    let e = merge(std::slice::from_ref(&empty), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds the result of job"), "{e}");
    std::fs::write(empty.join("0123456789abcdef.json"), "{").unwrap();
    let e = merge(&[empty], None).unwrap_err().to_string();
    assert!(e.contains("is not a job result"), "{e}");
}

#[test]
fn merge_says_which_run_facts_the_rows_differ_in() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let jobs = vec![job("local:8"), job("h2o:4+4")];
    // same facts: nothing mixed, the run reads as every row
    write_record(&a, &record(&jobs[0], "host-1"));
    write_record(&a, &record(&jobs[1], "host-1"));
    let m = merge(std::slice::from_ref(&a), Some(&jobs)).unwrap();
    assert_eq!(m.document.mixed, vec![]);
    assert_eq!(
        m.document.run.run.machine.hostname.as_deref(),
        Some("host-1")
    );
    assert_eq!(m.document.run.run.machine.cpu_brand, "cpu");
    // job 1 on another host, CPU, GPU and ONNX Runtime, with 2 threads, subnormals kept
    let mut two = job("h2o:4+4");
    two.job.setup.session.intra_threads = 2;
    two.job.setup.session.denormals = Denormals::Keep;
    two = SweepJob::new(two.job, two.needs, two.model, two.counting);
    let jobs = vec![jobs[0].clone(), two.clone()];
    let mut r = record(&two, "host-2");
    r.host.machine.cpu_brand = "other cpu".into();
    r.host.machine.gpus = vec!["gpu-b".into()];
    r.host.ort_version = "1.31.1".into();
    write_record(&a, &r);
    let m = merge(std::slice::from_ref(&a), Some(&jobs)).unwrap();
    let mixed: Vec<(&str, Vec<&str>)> = m
        .document
        .mixed
        .iter()
        .map(|f| {
            (
                f.fact.as_str(),
                f.values.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        mixed,
        [
            ("host", vec!["host-1", "host-2"]),
            ("cpu", vec!["cpu", "other cpu"]),
            ("gpus", vec!["gpu-a", "gpu-b"]),
            ("ort_version", vec!["1.24.1", "1.31.1"]),
            ("intra_op_threads", vec!["1", "2"]),
            ("denormals", vec!["flush", "keep"]),
        ]
    );
    let run = &m.document.run.run;
    assert_eq!(run.machine.hostname.as_deref(), Some("host-1, host-2"));
    assert_eq!(run.machine.cpu_brand, "cpu, other cpu");
    assert_eq!(run.machine.gpus, ["gpu-a", "gpu-b"]);
    assert_eq!(run.runtime.ort_version, "1.24.1, 1.31.1");
    // each row keeps its own in its origin and CSV columns
    assert_eq!(m.document.origins[1].cpu, "other cpu");
    assert!(m
        .csv
        .lines()
        .nth(2)
        .unwrap()
        .ends_with(&format!("{},host-2,other cpu,gpu-b,1.31.1", two.id)));
    let json = serde_json::to_value(&m.document).unwrap();
    assert_eq!(json["mixed"][0]["fact"], "host");
}

#[test]
fn a_slurm_array_asks_for_the_most_any_job_needs() {
    let mut a = job("local:8");
    a.needs = Needs {
        provider: ExecutionProvider::Cpu,
        cpus: 4,
        memory_bytes: 3 << 20,
    };
    let mut b = job("h2o:4+4");
    b.needs = Needs {
        provider: ExecutionProvider::Cuda,
        cpus: 2,
        memory_bytes: 10 << 20,
    };
    let r = SlurmRequest::of(&[a.clone(), b.clone()]);
    // 10 MiB x 1.5 + 1024 MiB
    assert_eq!(
        r,
        SlurmRequest {
            tasks: 2,
            cpus: 4,
            mem_mib: 1039,
            gpu: true,
            mixed: true
        }
    );
    let s = sbatch_script(
        &[a.clone(), b],
        Path::new("/opt/h2o"),
        Path::new("/w/it's.jsonl"),
        Path::new("/w/r"),
    );
    assert!(s.contains("#SBATCH --array=0-1\n"), "{s}");
    assert!(s.contains("#SBATCH --gres=gpu:1\n"), "{s}");
    assert!(
        s.contains("every task asks for the most any job needs"),
        "{s}"
    );
    assert!(
        s.ends_with("exec '/opt/h2o' sweep run '/w/it'\\''s.jsonl' --results '/w/r' --index \"$SLURM_ARRAY_TASK_ID\"\n"),
        "{s}"
    );
    let one = sbatch_script(&[a], Path::new("/h"), Path::new("/j"), Path::new("/r"));
    assert!(!one.contains("--gres"), "{one}");
    assert!(one.contains("#SBATCH --array=0-0\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=4\n#SBATCH --mem=1029M\n"), "{one}");
}
