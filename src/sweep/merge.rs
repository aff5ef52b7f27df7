//! Joins a sweep's result files into one run: the run document (bench's [`RunDocument`], each row's
//! origin beside it) and the CSV (bench's columns, then each row's job id, host, CPU, GPU and
//! ONNX Runtime). Pure of time and order of files: merging the same records gives the same bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{csv_header, ExperimentResult, RunDocument, RunInfo, RuntimeInfo, Settings};

use super::{JobRecord, SweepError, SweepJob};

/// Columns the merged CSV adds after bench's: where each row ran.
pub const ORIGIN_COLUMNS: [&str; 5] = ["Job ID", "Host", "CPU", "GPU", "ONNX Runtime"];

/// Where one row of a merged run was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowOrigin {
    pub job_id: String,
    pub host: Option<String>,
    pub cpu: String,
    pub gpus: Vec<String>,
    pub ort_version: String,
    /// The model directory and the text of the row's job.
    pub model_dir: String,
    pub data_path: String,
}

/// A run-level fact on which the merged rows differ, with every value found (sorted, once each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixedFact {
    pub fact: String,
    pub values: Vec<String>,
}

/// A merged run: bench's run document (its keys at the top level, so bench's readers read it),
/// each experiment's origin, in the same order, and the run facts the rows differ in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepDocument {
    #[serde(flatten)]
    pub run: RunDocument,
    pub origins: Vec<RowOrigin>,
    /// Empty when every row ran with the same facts; else each fact that differs (see
    /// [`merge`] for how the run's own fields then read).
    pub mixed: Vec<MixedFact>,
}

/// What a merge gives: the document, the CSV text, and what did not fit.
#[derive(Debug, Clone)]
pub struct Merged {
    pub document: SweepDocument,
    pub csv: String,
    /// Job ids found more than once: (id, the file used, the file left out).
    pub duplicates: Vec<(String, PathBuf, PathBuf)>,
    /// Jobs of the JOBS file with no result: (id, label, model dir).
    pub missing: Vec<(String, String, String)>,
    /// Results of jobs the JOBS file does not list (merged all the same): (id, file).
    pub unlisted: Vec<(String, PathBuf)>,
}

/// The `<id>.json` records of `dir`, by file name (hidden and temporary files left out).
fn records_in(dir: &Path) -> Result<Vec<(PathBuf, JobRecord)>, SweepError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SweepError::Read { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read(dir))?;
    paths.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        !name.starts_with('.') && name.ends_with(".json") && p.is_file()
    });
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(read(&p))?;
            let record: JobRecord =
                serde_json::from_str(&text).map_err(|source| SweepError::BadRecord {
                    path: p.clone(),
                    source,
                })?;
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            let id = super::job_id(&record.job.job);
            if record.job.id != id || stem.as_deref() != Some(id.as_str()) {
                return Err(SweepError::RecordMisnamed {
                    path: p,
                    id,
                    expected: stem.unwrap_or_default(),
                });
            }
            Ok((p, record))
        })
        .collect()
}

/// The settings of one job's row (bench's run settings, for this job alone).
fn settings_of(job: &SweepJob) -> Settings {
    let plan = &job.job.plan;
    let speed = plan.speed;
    Settings {
        ppl_tokens: plan.ppl.map_or(0, |p| p.tokens),
        prompt: speed.map_or(0, |s| s.prompt),
        gen: speed.map_or(0, |s| s.gen),
        warmup: speed.map_or(0, |s| s.warmup),
        data_path: job.job.setup.data.display().to_string(),
        text: job.job.setup.text,
        counting: job.counting,
        batch: speed.map_or(1, |s| s.batch),
        experiments: vec![(job.job.experiment.label.clone(), job.job.experiment.spec)],
    }
}

fn origin_of(r: &JobRecord) -> RowOrigin {
    let m = &r.host.machine;
    RowOrigin {
        job_id: r.job.id.clone(),
        host: m.hostname.clone(),
        cpu: m.cpu_brand.clone(),
        gpus: m.gpus.clone(),
        ort_version: r.host.ort_version.clone(),
        model_dir: r.job.job.setup.model.display().to_string(),
        data_path: r.job.job.setup.data.display().to_string(),
    }
}

/// Merges the records of `dirs` (in that order: of a job found twice, the first is used and the
/// other named). With `jobs` (the JOBS file), rows come in its order, its jobs without a result
/// are named (the document is then not complete) and results it does not list are named and
/// merged after; without it, rows come by job id. Each row's own facts are in its CSV columns
/// (settings, then Job ID, Host, CPU, GPU, ONNX Runtime) and its origin. A run fact the rows differ
/// in is listed in the document's `mixed` with every value; in the run's own fields a text fact
/// (host, CPU, ONNX Runtime, provider, model name, data file) then reads all values joined by
/// ", ", the GPUs are all rows' GPUs, and a number (threads, lengths, batch, the model's shape,
/// the machine's cores and memory) keeps the first row's value: never silently the first's.
pub fn merge(dirs: &[PathBuf], jobs: Option<&[SweepJob]>) -> Result<Merged, SweepError> {
    let mut found: Vec<(PathBuf, JobRecord)> = Vec::new();
    let mut duplicates = Vec::new();
    for dir in dirs {
        for (path, record) in records_in(dir)? {
            match found.iter().find(|(_, r)| r.job.id == record.job.id) {
                Some((first, _)) => duplicates.push((record.job.id.clone(), first.clone(), path)),
                None => found.push((path, record)),
            }
        }
    }
    if found.is_empty() {
        return Err(SweepError::NothingToMerge {
            dirs: dirs.to_vec(),
        });
    }
    let (mut missing, mut unlisted) = (Vec::new(), Vec::new());
    let ordered: Vec<&JobRecord> = match jobs {
        Some(jobs) => {
            let listed: BTreeSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let mut rows = Vec::new();
            for j in jobs {
                match found.iter().find(|(_, r)| r.job.id == j.id) {
                    Some((_, r)) => rows.push(r),
                    None => missing.push((
                        j.id.clone(),
                        j.job.experiment.label.clone(),
                        j.job.setup.model.display().to_string(),
                    )),
                }
            }
            let mut extra: Vec<&(PathBuf, JobRecord)> = found
                .iter()
                .filter(|(_, r)| !listed.contains(r.job.id.as_str()))
                .collect();
            extra.sort_by(|a, b| a.1.job.id.cmp(&b.1.job.id));
            for (p, r) in extra {
                unlisted.push((r.job.id.clone(), p.clone()));
                rows.push(r);
            }
            rows
        }
        None => {
            let mut rows: Vec<&JobRecord> = found.iter().map(|(_, r)| r).collect();
            rows.sort_by(|a, b| a.job.id.cmp(&b.job.id));
            rows
        }
    };
    let document = document_of(&ordered, missing.is_empty());
    let csv = csv_of(&ordered)?;
    Ok(Merged {
        document,
        csv,
        duplicates,
        missing,
        unlisted,
    })
}

/// A value's JSON text without quotes (`"seed"` → `seed`, `32` → `32`).
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v).expect("a fact serialises") {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The run facts of one row: (fact, its value).
fn facts_of(r: &JobRecord) -> Vec<(&'static str, String)> {
    let (m, job) = (&r.host.machine, &r.job.job);
    let s = settings_of(&r.job);
    vec![
        ("host", m.hostname.clone().unwrap_or_default()),
        ("cpu", m.cpu_brand.clone()),
        ("gpus", m.gpus.join("; ")),
        ("logical_cores", m.logical_cores.to_string()),
        ("total_memory_bytes", m.total_memory_bytes.to_string()),
        ("ort_version", r.host.ort_version.clone()),
        ("execution_provider", job.setup.session.provider.to_string()),
        (
            "intra_op_threads",
            job.setup.session.intra_threads.to_string(),
        ),
        ("denormals", job.setup.session.denormals.to_string()),
        ("model", r.job.model.name.clone()),
        ("model_dir", r.job.model.dir.clone()),
        ("dtype", r.job.model.dtype.clone()),
        ("data_path", s.data_path),
        ("text", word(&s.text)),
        ("counting", word(&s.counting)),
        ("ppl_tokens", s.ppl_tokens.to_string()),
        ("prompt", s.prompt.to_string()),
        ("gen", s.gen.to_string()),
        ("warmup", s.warmup.to_string()),
        ("batch", s.batch.to_string()),
    ]
}

/// The facts of `rows` with more than one value, in [`facts_of`]'s order.
fn mixed_of(rows: &[&JobRecord]) -> Vec<MixedFact> {
    let per_row: Vec<Vec<(&str, String)>> = rows.iter().map(|r| facts_of(r)).collect();
    (0..per_row[0].len())
        .filter_map(|i| {
            let values: BTreeSet<&str> = per_row.iter().map(|f| f[i].1.as_str()).collect();
            (values.len() > 1).then(|| MixedFact {
                fact: per_row[0][i].0.to_string(),
                values: values.into_iter().map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Every distinct value of `of` over `rows`, sorted, joined by ", ".
fn joined(rows: &[&JobRecord], of: impl Fn(&JobRecord) -> String) -> String {
    let values: BTreeSet<String> = rows.iter().map(|r| of(r)).collect();
    values.into_iter().collect::<Vec<_>>().join(", ")
}

fn document_of(rows: &[&JobRecord], complete: bool) -> SweepDocument {
    let first = rows[0];
    let session = &first.job.job.setup.session;
    let mut settings = settings_of(&first.job);
    settings.experiments = rows
        .iter()
        .map(|r| {
            (
                r.job.job.experiment.label.clone(),
                r.job.job.experiment.spec,
            )
        })
        .collect();
    settings.data_path = joined(rows, |r| r.job.job.setup.data.display().to_string());
    let mut model = first.job.model.clone();
    model.name = joined(rows, |r| r.job.model.name.clone());
    model.dir = joined(rows, |r| r.job.model.dir.clone());
    model.dtype = joined(rows, |r| r.job.model.dtype.clone());
    let mut machine = first.host.machine.clone();
    machine.cpu_brand = joined(rows, |r| r.host.machine.cpu_brand.clone());
    let hosts: BTreeSet<Option<&String>> = rows
        .iter()
        .map(|r| r.host.machine.hostname.as_ref())
        .collect();
    if hosts.len() > 1 {
        machine.hostname = Some(joined(rows, |r| {
            r.host.machine.hostname.clone().unwrap_or_default()
        }));
    }
    let gpus: BTreeSet<&String> = rows.iter().flat_map(|r| &r.host.machine.gpus).collect();
    machine.gpus = gpus.into_iter().cloned().collect();
    let run = RunInfo {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        runtime: RuntimeInfo {
            ort_version: joined(rows, |r| r.host.ort_version.clone()),
            execution_provider: joined(rows, |r| r.job.job.setup.session.provider.to_string()),
            intra_op_threads: session.intra_threads,
            inter_op_threads: Some(1),
            denormals: Some(session.denormals.to_string()),
        },
        settings,
        machine,
        git_commit: None,
        start_time: String::new(),
        command_line: Vec::new(),
    };
    let experiments: Vec<ExperimentResult> = rows.iter().map(|r| r.result.clone()).collect();
    SweepDocument {
        run: RunDocument {
            run,
            experiments,
            complete,
        },
        origins: rows.iter().map(|r| origin_of(r)).collect(),
        mixed: mixed_of(rows),
    }
}

fn csv_of(rows: &[&JobRecord]) -> Result<String, SweepError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| SweepError::Engine(crate::Error::Input(e.to_string()));
    let header: Vec<String> = csv_header()
        .iter()
        .map(|s| s.to_string())
        .chain(ORIGIN_COLUMNS.iter().map(|s| s.to_string()))
        .collect();
    w.write_record(&header).map_err(io)?;
    for r in rows {
        let o = origin_of(r);
        let mut rec = r.result.csv_record(&settings_of(&r.job));
        rec.extend([
            o.job_id,
            o.host.unwrap_or_default(),
            o.cpu,
            o.gpus.join("; "),
            o.ort_version,
        ]);
        w.write_record(&rec).map_err(io)?;
    }
    let bytes = w.into_inner().map_err(|e| io(e.into_error().into()))?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 text"))
}
