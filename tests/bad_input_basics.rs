//! Bad input refused before anything runs (issue 28's table-driven check): the cases that held
//! before issue 28; each class of the issue has its own table file (tests/bad_input_*.rs).

mod common;

use common::bad_input::{check_all, Case, Scratch};

#[test]
fn refused_cleanly_and_nothing_touched() {
    let s = Scratch::new();
    let (model, text, results) = (s.model(), s.text(), s.results());
    let missing = s.path("no-such-model");
    check_all(&[
        Case::new(
            "missing model dir",
            &[&"ppl", &"--model", &missing, &"--data", &text],
        )
        .words(&["--model", "no-such-model"])
        .unchanged(&[text.clone(), missing.clone()]),
        Case::new(
            "bench with an impossible budget",
            &[
                &"bench",
                &"--model",
                &model,
                &"--data",
                &text,
                &"--results",
                &results,
                &"--exp",
                &"local:0",
            ],
        )
        .words(&["--exp"])
        .unchanged(&[model.clone(), text.clone(), results.clone()]),
    ]);
}
