//! `h2o info`: manifest, ONNX Runtime, execution provider, threads and the machine.

use anyhow::Result;
use clap::Args;

use super::ModelArgs;
use h2o_engine::runtime::Denormals;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let (rt, model) = a.model.load()?;
    let m = &model.manifest;
    outln!("model            {} ({})", m.name, model.dir.display());
    outln!("architecture     {}", architecture(&m.model_type));
    outln!(
        "shape            {} layers, {} heads x {} head_dim, hidden {}, vocab {}, rotary {} dims, {} positions",
        m.num_layers, m.num_heads, m.head_dim, m.hidden_size, m.vocab_size, m.rotary_dims, m.max_position_embeddings
    );
    outln!("KV heads         {}", kv_heads(m.num_heads, m.kv_heads()));
    if let Some(scaling) = &m.rope_scaling {
        outln!(
            "rope scaling     {}; base {}",
            describe_rope_scaling(scaling),
            m.rotary_base
        );
    }
    outln!("dtype            {}", m.dtype.name());
    outln!("weight format    {}", m.weights.describe());
    if let Some(copy) = m.weights.describe_prefill() {
        outln!("prefill copy     {copy}");
    }
    outln!(
        "attention masks  {}",
        match m.attention_masks {
            h2o_engine::manifest::MaskInputs::Shared =>
                "one for all layers (uniform budgets only; export --layer-masks for @pyramid)",
            h2o_engine::manifest::MaskInputs::PerLayer => "one per layer (per-layer budgets)",
        }
    );
    outln!(
        "weights          {}{}",
        if m.random_init {
            "random init"
        } else {
            "from checkpoint"
        },
        m.seed
            .map(|s| format!(" (exported with --init-seed {s})"))
            .unwrap_or_default()
    );
    if let Some(sha) = &m.source.sha256 {
        outln!("source sha256    {sha}");
    }
    outln!(
        "exporter         {} (opset {})",
        m.exporter_version.as_deref().unwrap_or("?"),
        m.opset.unwrap_or(0)
    );
    outln!(
        "declared BOS     {}",
        match m.prepend_bos_token_id {
            Some(b) => format!(
                "{b} ({}): fed first at position 0 in ppl, speed, bench, generate and heatmap, never scored",
                model.tokenizer.id_to_token(b).unwrap_or_else(|| "?".into())
            ),
            None => "none (the text is fed as it is)".to_string(),
        }
    );
    outln!(
        "KV per token     {} bytes (2 x {} layers x {} KV heads x {} head_dim x {} bytes: K and V)",
        m.kv_bytes_per_token(),
        m.num_layers,
        m.kv_heads(),
        m.head_dim,
        m.dtype.size()
    );
    outln!(
        "tokenizer        {} tokens{}",
        model.tokenizer.get_vocab_size(true),
        match m.borrowed_tokenizer() {
            Some(t) => format!(
                ", not the model's own: its ids come from {}; ids from {} up are refused (vocab_size)",
                t.source, m.vocab_size
            ),
            None => String::new(),
        }
    );
    outln!("onnxruntime      {} ({})", rt.version, rt.library.display());
    outln!("provider         {}", model.config.provider);
    outln!("KV store         {} memory", model.config.kv);
    outln!("intra threads    {}", model.config.intra_threads);
    outln!("graph opt level  {}", model.config.opt_level);
    let thread = match Denormals::thread_flushes() {
        true => "this thread flushes them to zero",
        false => "this thread computes them",
    };
    outln!("denormals        {} ({thread})", model.config.denormals);
    outln!(
        "machine          {}",
        h2o_engine::report::MachineInfo::collect().summary()
    );
    search_order(a.model.model != h2o_engine::locate::default_model());
    Ok(())
}

/// The architecture a manifest's `model_type` names, in words.
fn architecture(model_type: &str) -> String {
    let family = match model_type {
        "gpt_neox" => "GPT-NeoX (Pythia)",
        "llama" => "Llama (Llama 2/3, SmolLM2, TinyLlama)",
        "qwen2" => "Qwen2",
        other => other,
    };
    format!("{family}, model_type \"{model_type}\"")
}

/// The KV heads in words: grouped-query attention names its groups.
fn kv_heads(heads: usize, kv_heads: usize) -> String {
    if kv_heads == heads {
        format!("{kv_heads} (one per query head)")
    } else {
        format!(
            "{kv_heads} (grouped-query attention: {} query heads share each)",
            heads / kv_heads
        )
    }
}

/// Where the library, the default model and the default text are looked for, in order, and
/// which is used (see `h2o_engine::locate`): one place a line, so no path wraps mid-way. With
/// `--model` given, that is what is used and the default found is marked "(the default)".
fn search_order(model_given: bool) {
    use h2o_engine::locate::{binary_dir, model_places, project_root, text_places, DATA_ENV};
    let bin = binary_dir().map_or_else(|| "<binary's folder>".into(), |d| d.display().to_string());
    let lines = |head: &str, places: Vec<String>| {
        outln!("{head:<17}{}", places[0]);
        for p in &places[1..] {
            outln!("{:<17}then {p}", "");
        }
    };
    lines(
        "library search",
        vec![
            "$ORT_DYLIB_PATH".to_string(),
            format!("{bin}/lib/libonnxruntime.so*"),
            format!("{}/.venv (onnxruntime wheel)", project_root().display()),
        ],
    );
    let mark = |p: &std::path::Path, yes: bool, what: &str| {
        format!("{}{}", p.display(), if yes { what } else { "" })
    };
    let used = |p: &std::path::Path, yes: bool| mark(p, yes, " (used)");
    let model_default = model_places()
        .iter()
        .position(|p| p.path.join("manifest.json").is_file());
    let default_mark = if model_given {
        " (the default)"
    } else {
        " (used)"
    };
    let mut models = vec![format!(
        "--model{}",
        if model_given { " (used)" } else { "" }
    )];
    models.extend(
        model_places()
            .iter()
            .enumerate()
            .map(|(i, p)| mark(&p.path, Some(i) == model_default, default_mark)),
    );
    lines("model search", models);
    let env_set = std::env::var_os(DATA_ENV).is_some_and(|v| !v.is_empty());
    let text_used = (!env_set)
        .then(|| text_places().iter().position(|p| p.path.is_file()))
        .flatten();
    let mut texts = vec![
        "--data".to_string(),
        format!("${DATA_ENV}{}", if env_set { " (set: used)" } else { "" }),
    ];
    texts.extend(
        text_places()
            .iter()
            .enumerate()
            .map(|(i, p)| used(&p.path, Some(i) == text_used)),
    );
    lines("text search", texts);
}

/// The manifest's rope_scaling in words that wrap at spaces, e.g. `llama3 (factor 8.0,
/// low_freq_factor 1.0, ...)`: its type first, then every other field as `name value`.
fn describe_rope_scaling(v: &serde_json::Value) -> String {
    let Some(fields) = v.as_object() else {
        return v.to_string();
    };
    let kind = fields
        .get("rope_type")
        .or_else(|| fields.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("scaling");
    let rest: Vec<String> = fields
        .iter()
        .filter(|(k, _)| *k != "rope_type" && *k != "type")
        .map(|(k, x)| format!("{k} {x}"))
        .collect();
    if rest.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({})", rest.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::describe_rope_scaling;

    #[test]
    fn rope_scaling_reads_as_words() {
        let v = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 256});
        assert_eq!(
            describe_rope_scaling(&v),
            "llama3 (factor 8.0, original_max_position_embeddings 256)"
        );
        let linear = serde_json::json!({"rope_type": "linear", "factor": 2.0});
        assert_eq!(describe_rope_scaling(&linear), "linear (factor 2.0)");
    }
}
