//! `cargo xtask bench`: our benchmark and the transformers reference back to back on the same
//! imported weights, written to `docs/benchmarks.md` with ratios.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use aligner_model::hub;
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::setup::{fetch_model, repo_root};

/// The transformers side of the benchmark, written by the project, relative to the repository.
const REFERENCE_SCRIPT: &str = "xtask/reference/transformers_bench.py";

/// Rows of the table: our JSON key, the reference's JSON key, what it measures.
const ROWS: &[(&str, &str, &str)] = &[
    (
        "decode_tok_s_f32",
        "decode_tok_s_f32",
        "decode, batch 1, f32 (tok/s)",
    ),
    (
        "decode_tok_s_bf16",
        "decode_tok_s_bf16",
        "decode, batch 1, bf16 (tok/s)",
    ),
    (
        "decode_tok_s_int4",
        "decode_tok_s_bf16",
        "decode, batch 1, packed int4 (Q4_1 layers, Q8_0 head, f32 activations) vs transformers bf16 (tok/s)",
    ),
    (
        "decode_tok_s_int8",
        "decode_tok_s_bf16",
        "decode, batch 1, packed int8 (Q8_0) vs transformers bf16 (tok/s)",
    ),
    (
        "decode_b8_tok_s_int4",
        "",
        "decode, batch 8, packed int4, total (tok/s)",
    ),
    (
        "decode_b32_tok_s_int4",
        "",
        "decode, batch 32, packed int4, total (tok/s)",
    ),
    (
        "prefill512_tok_s_f32",
        "prefill512_tok_s_f32",
        "prefill 512 tokens, f32 (tok/s)",
    ),
    (
        "prefill512_tok_s_bf16",
        "prefill512_tok_s_bf16",
        "prefill 512 tokens, bf16 (tok/s)",
    ),
    (
        "prefill512_tok_s_dense",
        "prefill512_tok_s_bf16",
        "prefill 512 tokens, packed dense f32 vs transformers bf16 (tok/s)",
    ),
    (
        "train_tok_s_f32_b4s256",
        "train_tok_s_f32_b4s256",
        "training step, batch 4 x 256, f32 (tok/s)",
    ),
    (
        "train_tok_s_bf16_b4s256",
        "train_tok_s_bf16autocast_b4s256",
        "training step, batch 4 x 256, bf16 (ours: bf16 compute, f32 master weights; transformers: bf16 autocast) (tok/s)",
    ),
    (
        "train_tok_s_f32_b4s256",
        "train_tok_s_bf16autocast_b4s256",
        "training step, batch 4 x 256, ours f32 vs transformers bf16 autocast (tok/s)",
    ),
];

/// Runs every benchmark, or with `stream_only` just the Stream Aligner one (re-rendering the
/// model table from the JSON files of the last full run), or with `render_only` none.
pub fn bench(stream_only: bool, render_only: bool) -> Result<()> {
    let root = repo_root()?;
    let model = fetch_model()?;
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let ours_path = out_dir.join("aligner-rs.json");
    let reference_path = out_dir.join("transformers.json");

    println!("== aligner-rs");
    let json = |p: &Path| vec!["--json".to_owned(), p.display().to_string()];
    let train_path = out_dir.join("aligner-rs-train.json");
    let stream_path = out_dir.join("aligner-rs-stream.json");
    let overlap_path = out_dir.join("aligner-rs-overlap.json");
    let stream_paths = [stream_path.as_path(), overlap_path.as_path()];
    if stream_only || render_only {
        if stream_only {
            crate::run_example::run("bench_stream", &json(&stream_path))?;
            crate::run_example::run("bench_overlap", &json(&overlap_path))?;
        }
        return write_doc(
            &root,
            &ours_path,
            &train_path,
            &reference_path,
            stream_paths,
        );
    }
    // The reference measures decoding and prefill first and training last, so our model
    // benchmark runs right before it and our training benchmark right after: each pair is
    // measured back to back, not half an hour apart on a machine whose speed drifts.
    crate::run_example::run("bench_stream", &json(&stream_path))?;
    crate::run_example::run("bench_overlap", &json(&overlap_path))?;
    crate::run_example::run("bench_model", &json(&ours_path))?;

    println!("== transformers ({REFERENCE_SCRIPT})");
    let script = root.join(REFERENCE_SCRIPT);
    if !script.is_file() {
        bail!("{} not found in the repository", script.display());
    }
    let python = hub::venv_python().context("no Python environment: run `cargo xtask setup`")?;
    let status = Command::new(python)
        .arg(&script)
        .arg(&model)
        .arg("--json")
        .arg(&reference_path)
        .status()
        .context("running the reference script")?;
    if !status.success() {
        bail!("reference script failed ({status})");
    }
    println!("== aligner-rs training");
    crate::run_example::run("bench_train", &json(&train_path))?;

    write_doc(
        &root,
        &ours_path,
        &train_path,
        &reference_path,
        stream_paths,
    )?;
    startup()?;
    versus()?;
    println!("== aligner-rs server");
    let serve_path = out_dir.join("aligner-rs-serve.json");
    let mut serve_args = json(&serve_path);
    serve_args.extend([
        "--doc".to_owned(),
        root.join("docs/benchmarks.md").display().to_string(),
    ]);
    crate::run_example::run("bench_serve", &serve_args)
}

/// `cargo xtask bench --startup`: builds `stream_align` and runs `bench_startup`, which
/// replaces its section of docs/benchmarks.md.
pub fn startup() -> Result<()> {
    let root = repo_root()?;
    fetch_model()?;
    println!("== aligner-rs start-up");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .args(["--package", "aligner", "--example", "stream_align"])
        .status()
        .context("building stream_align")?;
    if !status.success() {
        bail!("building stream_align failed ({status})");
    }
    run_into_doc(&root, "bench_startup", "aligner-rs-startup.json")
}

/// Runs the benchmark example `name`, which writes its JSON to `target/bench/{json}` and
/// replaces its own section of docs/benchmarks.md (`--json`, `--doc`).
fn run_into_doc(root: &Path, name: &str, json: &str) -> Result<()> {
    let path = |p: &Path| p.display().to_string();
    crate::run_example::run(
        name,
        &[
            "--json".to_owned(),
            path(&root.join("target/bench").join(json)),
            "--doc".to_owned(),
            path(&root.join("docs/benchmarks.md")),
        ],
    )
}

/// `cargo xtask bench --llama-cpp`: runs `bench_versus`, which replaces its section of
/// docs/benchmarks.md.
pub fn versus() -> Result<()> {
    let root = repo_root()?;
    fetch_model()?;
    println!("== aligner-rs against llama.cpp");
    run_into_doc(&root, "bench_versus", "aligner-rs-versus.json")
}

/// The headings of the sections other benchmarks write into the document themselves
/// (`aligner::app::bench::startup::HEADING` by `bench_startup --doc`,
/// `aligner::app::bench::versus::HEADING` by `bench_versus --doc`, `aligner_serve::bench::HEADING`
/// by `bench_serve --doc`): a re-render keeps them.
const OWN_SECTIONS: [&str; 3] = [
    "## Start-up of the main command",
    "## Decoding against llama.cpp",
    "## Aligning server",
];

/// The section of `doc` under `heading`: from the heading to the next `## ` heading.
fn section<'d>(doc: &'d str, heading: &str) -> Option<&'d str> {
    let start = doc.find(heading)?;
    let body = &doc[start + heading.len()..];
    let end = body
        .find("\n## ")
        .map_or(doc.len(), |i| start + heading.len() + i + 1);
    Some(&doc[start..end])
}

fn write_doc(
    root: &Path,
    ours: &Path,
    train: &Path,
    reference: &Path,
    [stream, overlap]: [&Path; 2],
) -> Result<()> {
    let doc_path = root.join("docs").join("benchmarks.md");
    let mut doc = if ours.is_file() {
        let mut ours_map = read(ours)?;
        ours_map.extend(
            read(train)?
                .into_iter()
                .filter(|(k, _)| k.starts_with("train_")),
        );
        let reference_map = read(reference)?;
        let mut doc = render(&ours_map, &reference_map);
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        };
        let apart = stamp(stream).abs_diff(stamp(ours));
        if apart > 3600 {
            let _ = writeln!(
                doc,
                "\nThe table above and the one below come from separate runs ({:.1} hours apart; \
                 `cargo xtask bench --stream-only` re-ran the latter).",
                apart as f64 / 3600.0
            );
        }
        doc
    } else {
        // No full run in this checkout (`--stream-only` on a fresh clone): keep the document's
        // model part as it is and say where the new Stream Aligner part ran.
        let old = std::fs::read_to_string(&doc_path).with_context(|| {
            format!(
                "no {} and no {} to keep the model tables from: run `cargo xtask bench`",
                ours.display(),
                doc_path.display()
            )
        })?;
        let Some(end) = old.find(STREAM_HEADING) else {
            bail!(
                "{} has no `{}` section",
                doc_path.display(),
                STREAM_HEADING.trim()
            );
        };
        let mut doc = old[..end].trim_end().to_owned();
        let _ = writeln!(
            doc,
            "\n\nThe tables above come from the last full run; the Stream Aligner sections below \
             were re-run on their own by `cargo xtask bench --stream-only`, on {} ({} cores; {}).",
            aligner_model::cpu::model_name(),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            aligner_model::cpu::vector_flags()
        );
        doc
    };
    doc.push_str(&render_stream(&read(stream)?));
    // Absent after a run from before `bench_overlap` existed.
    if overlap.is_file() {
        doc.push_str(&render_overlap(&read(overlap)?));
    }
    // The start-up and server sections are written by their own benchmarks (after this, in a
    // full run): keep the ones the document has.
    let old = std::fs::read_to_string(&doc_path).unwrap_or_default();
    for heading in OWN_SECTIONS {
        if let Some(kept) = section(&old, heading) {
            doc.push('\n');
            doc.push_str(kept.trim_end());
            doc.push('\n');
        }
    }
    aligner_data::atomic::write(&doc_path, doc.as_bytes())
        .with_context(|| format!("writing {}", doc_path.display()))?;
    println!("wrote {}", doc_path.display());
    Ok(())
}

fn read(path: &Path) -> Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str(&text)? {
        Value::Object(map) => Ok(map),
        _ => bail!("{} is not a JSON object", path.display()),
    }
}

fn render(ours: &Map<String, Value>, reference: &Map<String, Value>) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench`, which runs `examples/bench_model.rs`, \
         `{REFERENCE_SCRIPT}` (Hugging Face transformers, PyTorch eager, torch {}) \
         and `examples/bench_train.rs` back to back on the same machine and the same imported \
         SmolLM2-135M-Instruct weights (the reference measures decoding and prefill first and \
         training last, so each pair is measured minutes apart). \
         Both measure the same work: decode = greedy, batch 1, 16-token prompt, 128 new tokens, \
         128 / wall time of the call (best of 2 after a warm-up); prefill = one forward pass over \
         512 tokens with logits at every position (best of 3); training = forward, backward and an \
         AdamW step on batch 4 x 256 random tokens, loss at every position, torch's default AdamW \
         weight decay (best of 2 after a warm-up; ours in f32 writes the LM head's loss and \
         gradient out by hand, in a buffer kept across steps, and updates each tensor in one fused \
         pass: `crates/aligner-train`). Compare ratios, not absolute \
         numbers: they drift between runs and machines (on a shared 2-core machine, repeated runs \
         of the same side differ by up to about 10%). The packed rows are `PackedLlama` \
         (`crates/aligner-model/src/packed/`) with f32 activations: int4 keeps the embedded \
         GGUF file's own Q4_1 blocks (Q8_0 for the LM head, as in the file), int8 is Q8_0 \
         throughout; steps of up to 16 rows run on our block kernels, longer passes on a dense f32 \
         copy of the same weights. They are set beside transformers' bf16 figures, its faster \
         setting where the CPU has native bf16 (on one without, such as this one if its flags \
         below lack avx512_bf16 and amx, bf16 matrix products are slower than f32 on both sides). \
         The last training row does the same for training (our f32 step beside transformers' bf16 \
         autocast); on a CPU without native bf16 that comparison favours f32, so read it with the \
         like-for-like f32 and bf16 rows above it.\n",
        reference
            .get("torch")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    let _ = writeln!(
        s,
        "Machine: {} ({cores} cores; {}), LibTorch threads: {}.\n",
        aligner_model::cpu::model_name(),
        aligner_model::cpu::vector_flags(),
        ours.get("threads").unwrap_or(&Value::Null)
    );
    let _ = writeln!(s, "| measurement | aligner-rs | transformers | ratio |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for (ours_key, reference_key, label) in ROWS {
        let a = ours.get(*ours_key).and_then(Value::as_f64);
        let b = (!reference_key.is_empty())
            .then(|| reference.get(*reference_key).and_then(Value::as_f64))
            .flatten();
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into());
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "–".into(),
        };
        let _ = writeln!(s, "| {label} | {} | {} | {ratio} |", fmt(a), fmt(b));
    }
    s.push_str(&render_roofline_and_quality(ours));
    s
}

/// Share of the memory-bandwidth roofline of each decode measurement (weight bytes read per
/// token times tokens/s over the measured read bandwidth) and the quality of the packed formats.
fn render_roofline_and_quality(ours: &Map<String, Value>) -> String {
    let f = |k: &str| ours.get(k).and_then(Value::as_f64);
    let mut s = String::new();
    let Some(bandwidth) = f("read_gb_s") else {
        return s;
    };
    let _ = writeln!(
        s,
        "\nDecode against the memory-bandwidth roofline (measured read bandwidth {bandwidth:.1} GB/s, \
         a sum over a 512 MiB tensor; a decoding step reads every weight once) and quality of the \
         packed formats against the f32 model on a fixed ~200-token text, fed 8 tokens at a time \
         so that the quantised kernels run:\n"
    );
    let _ = writeln!(
        s,
        "| weights | MB read / token | decode tok/s | GB/s | share of roofline | perplexity | top-1 agreement with f32 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, label) in [
        ("f32", "f32 (Llama)"),
        ("bf16", "bf16 (Llama)"),
        ("dense", "packed dense f32"),
        ("int8", "packed int8"),
        ("int4", "packed int4"),
    ] {
        let (Some(bytes), Some(tps)) = (
            f(&format!("weight_bytes_per_token_{name}")),
            f(&format!("decode_tok_s_{name}")),
        ) else {
            continue;
        };
        let gbs = bytes * tps / 1e9;
        let ppl = f(&format!("ppl_{name}"))
            .or(if name == "f32" { f("ppl_f32") } else { None })
            .map_or_else(|| "–".into(), |v| format!("{v:.3}"));
        let agree = f(&format!("top1_agree_{name}"))
            .map_or_else(|| "–".into(), |v| format!("{:.1}%", v * 100.0));
        let _ = writeln!(
            s,
            "| {label} | {:.1} | {tps:.1} | {gbs:.1} | {:.0}% | {ppl} | {agree} |",
            bytes / 1e6,
            gbs / bandwidth * 100.0
        );
    }
    s
}

/// "upstream int4, aligners int8, float activations" (or "bf16 weights" for runs that recorded
/// only a dtype).
fn weights_phrase(stream: &Map<String, Value>) -> String {
    let get = |k: &str| stream.get(k).and_then(Value::as_str);
    let dtype = get("dtype").unwrap_or("?").to_lowercase();
    match (get("upstream_weights"), get("aligner_weights")) {
        (Some(u), Some(a)) => {
            format!("upstream weights {u}, aligner weights {a}, {dtype} activations")
        }
        _ => format!("{dtype} weights"),
    }
}

/// Where the Stream Aligner part of the document begins.
const STREAM_HEADING: &str = "\n## Stream Aligner latency\n";

/// The Stream Aligner section: wall time per mode, same models and questions, one run.
fn render_stream(stream: &Map<String, Value>) -> String {
    let short = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|a| a.rsplit("../").next())
            .unwrap_or("?")
            .to_owned()
    };
    let f = |v: Option<&Value>| v.and_then(Value::as_f64);
    let mode = |m: &str, k: &str| f(stream.get(m).and_then(|v| v.get(k)));
    let num = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.2}"));
    let mut s = String::new();
    let _ = writeln!(s, "{STREAM_HEADING}");
    let _ = writeln!(
        s,
        "Written by the same command from `examples/bench_stream.rs`: {} fixed arithmetic word \
         problems, the embedded SmolLM2-135M-Instruct as upstream (math system prompt, greedy, at \
         most {} tokens), `{}` as Stream Aligner and `{}` as whole-answer Aligner, {}, a fresh upstream and aligner for every \
         run. The reference loop is the published one (16 rounds, whole continuations of up to \
         the same number of tokens, sampled as published).\n",
        stream.get("questions").unwrap_or(&Value::Null),
        stream.get("max_tokens").unwrap_or(&Value::Null),
        short(stream.get("stream_aligner_dir")),
        short(stream.get("whole_aligner_dir")),
        weights_phrase(stream),
    );
    let _ = writeln!(
        s,
        "| mode | wall s / question | first sentence s | upstream tokens | aligner tokens | sentences changed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (key, label) in [
        ("stream", "Stream Aligner (ours)"),
        ("upstream", "upstream alone"),
        ("aligner", "whole-answer Aligner"),
        ("reference", "published reference loop"),
        (
            "overlapped",
            "Stream Aligner, overlapped (`run_overlapped`; both models on this CPU)",
        ),
    ] {
        let int = |k: &str| mode(key, k).map_or_else(|| "–".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {}/{} |",
            num(mode(key, "wall_s_per_question")),
            num(mode(key, "first_sentence_s")),
            int("upstream_tokens"),
            int("aligner_tokens"),
            int("changed"),
            int("sentences"),
        );
    }
    if let Some(batch) = stream.get("batch").and_then(Value::as_object) {
        let get = |m: &str, k: &str| f(batch.get(m).and_then(|v| v.get(k)));
        let slots = get("stream", "slots").map_or_else(|| "?".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "\nAll the questions at once (`StreamBatch`, {slots} slots: one state machine per \
             question, the upstream's decoding steps shared through `CausalLm::decode_step`) \
             against the same runs one at a time above:\n\n\
             | mode | batch wall s | one at a time s | speed-up | upstream tok/s |\n\
             |---|---:|---:|---:|---:|"
        );
        for (key, label) in [("stream", "Stream Aligner"), ("upstream", "upstream alone")] {
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} |",
                num(get(key, "wall_s")),
                num(get(key, "one_at_a_time_s")),
                get(key, "speedup").map_or_else(|| "–".into(), |v| format!("{v:.2}x")),
                get(key, "upstream_tok_s").map_or_else(|| "–".into(), |v| format!("{v:.1}")),
            );
        }
    }
    let ratio = |k: &str| f(stream.get(k)).map_or_else(|| "–".into(), |v| format!("{v:.2}x"));
    let _ = writeln!(
        s,
        "\n| ratio | measured | goal |\n|---|---:|---:|\n\
         | stream / upstream alone (wall) | {} | <= 1.5x |\n\
         | reference loop / stream (wall) | {} | >= 5x |\n\
         | first corrected sentence / whole-answer Aligner latency | {} | <= 0.2x |",
        ratio("stream_vs_upstream"),
        ratio("reference_vs_stream"),
        ratio("first_sentence_vs_whole"),
    );
    if let Some(same) = stream.get("overlapped_same_answers") {
        let _ = writeln!(
            s,
            "\nThe overlapped loop with both models on the same CPU cores: {} of upstream alone, \
             answers equal to the sequential loop's for {same} of {} questions (it prepares the \
             aligner's prompt in a separate pass, which can flip near-ties). The two threads \
             compete for the cores, so here it is slower than the sequential loop; it is meant \
             for an upstream that runs elsewhere (below).",
            ratio("overlapped_vs_upstream"),
            stream.get("questions").unwrap_or(&Value::Null),
        );
    }
    s
}

/// The overlapped loop against the sequential one with a remote-like upstream.
fn render_overlap(overlap: &Map<String, Value>) -> String {
    let f = |m: &str, k: &str| {
        overlap
            .get(m)
            .and_then(|v| v.get(k))
            .and_then(Value::as_f64)
    };
    let num = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.2}"));
    let int = |k: &str| overlap.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "\n## Stream Aligner with an upstream elsewhere\n");
    let _ = writeln!(
        s,
        "Written by the same command from `examples/bench_overlap.rs`. The upstream is \
         simulated: a completions endpoint on 127.0.0.1 streaming, at {} ms per chunk of about \
         one token, the answers the embedded SmolLM2-135M-Instruct wrote to the first three \
         questions above (after any accepted text it goes on with the next of its own \
         sentences). It costs no local CPU, as a large upstream on other machines would not. \
         The aligner is the shipped Stream Aligner (packed int8) on this CPU, through \
         `RemoteUpstream`; best of the runs per question. As it writes its own next sentence \
         whatever the correction, its answers keep their full length (the local upstream's get \
         shorter after corrections), so compare the two loops with each other, not with the \
         table above.\n",
        int("token_ms")
    );
    let _ = writeln!(
        s,
        "| mode | wall s / question | vs upstream alone | first sentence s |\n|---|---:|---:|---:|"
    );
    for (key, label) in [
        (
            "upstream",
            "upstream alone (sentence by sentence, no aligner)",
        ),
        ("sequential", "Stream Aligner, sequential (`run`)"),
        (
            "overlapped",
            "Stream Aligner, overlapped (`run_overlapped`)",
        ),
    ] {
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} |",
            num(f(key, "wall_s_per_question")),
            f(key, "vs_upstream").map_or_else(|| "–".into(), |v| format!("{v:.2}x")),
            num(f(key, "first_sentence_s")),
        );
    }
    let prepared = overlap.get("prepare").and_then(Value::as_bool) != Some(false);
    let _ = writeln!(
        s,
        "\nDrafts written ahead while the aligner checked the sentence before: {} used, {} \
         dropped (the aligner changed the sentence they continued). Answers equal to the \
         sequential loop's: {} of {} ({}).",
        int("drafts_ahead_used"),
        int("drafts_ahead_dropped"),
        int("same_answers"),
        int("questions"),
        if prepared {
            "the aligner's prompt is prepared in a separate pass, which can flip near-ties; \
             `CorrectorConfig::prepare = false` keeps the sequential answers exactly"
        } else {
            "run with `--no-prepare`: the aligner's passes are those of the sequential loop"
        },
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_section_is_found_up_to_the_next_heading() {
        let doc = "# B\n\n## Stream\nx\n\n## Aligning server\n\nrows\n\n## Later\ny\n";
        let server = OWN_SECTIONS[2];
        assert_eq!(section(doc, server), Some("## Aligning server\n\nrows\n\n"));
        let last = "# B\n\n## Aligning server\n\nrows\n";
        assert_eq!(section(last, server), Some("## Aligning server\n\nrows\n"));
        assert_eq!(section("# B\n\n## Stream\n", server), None);
    }
}
