//! A sweep's grid (models × experiments under one plan) made into checked, self-contained jobs.

use crate::catalogue::{Choice, Counting};
use crate::eval::bandwidth::weight_bytes;
use crate::eval::throughput::memory_need_of;
use crate::experiment::{check_model_dir, Checked, Job, Plan, Setup};
use crate::report::ModelInfo;

use super::{Needs, SweepError, SweepJob};

/// The grid: every model's setup × the chosen experiments, under one plan and counting.
#[derive(Debug, Clone)]
pub struct Grid {
    pub setups: Vec<Setup>,
    pub plan: Plan,
    pub experiments: Choice,
    pub counting: Counting,
}

/// Every job of `grid`, in order (model, then experiment), each checked as bench checks its suite
/// (the model's files, manifest and graph, the plan against its positions, the text, every
/// experiment against the model; no session). The machine is not checked: a job may be planned
/// here and run on another (its provider and memory are in its [`Needs`]).
pub fn plan(grid: &Grid) -> Result<Vec<SweepJob>, SweepError> {
    let mut jobs = Vec::new();
    for setup in &grid.setups {
        check_model_dir(&setup.model)?;
        let mut checked = Checked::model(setup)?;
        checked.read_text(&[grid.plan])?;
        let man = checked.manifest().clone();
        let max = man.max_position_embeddings;
        let exps = grid.experiments.experiments(max, grid.plan.text_tokens());
        for e in exps {
            let spec = e.spec;
            let e = e
                .counted(grid.counting)
                .ok_or_else(|| SweepError::Counting {
                    spec: spec.to_string(),
                })?;
            checked.check(&e).map_err(|source| SweepError::Experiment {
                label: e.label.clone(),
                spec: e.spec.to_string(),
                model: setup.model.clone(),
                source: Box::new(source),
            })?;
            let bos = man.prepend_bos_token_id.is_some();
            let memory_bytes = match grid.plan.speed {
                Some(s) => {
                    memory_need_of(&man, &setup.model, &e.spec, &s.shape(bos), s.batch).total()
                }
                None => weight_bytes(&setup.model),
            };
            let needs = Needs {
                provider: setup.session.provider,
                cpus: setup.session.intra_threads.max(1),
                memory_bytes,
            };
            let job = Job {
                setup: setup.clone(),
                plan: grid.plan,
                experiment: e,
            };
            jobs.push(SweepJob::new(
                job,
                needs,
                ModelInfo::of(&man, &setup.model),
                grid.counting,
            ));
        }
    }
    Ok(jobs)
}
