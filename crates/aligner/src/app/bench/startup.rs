//! Start-up of the main command as a user sees it: the `stream_align` process is started
//! `rounds` times with the pack cache and `rounds` times without it (`ALIGNER_PACK_CACHE=off`:
//! load in f32, merge, quantise, as before the cache), the two alternating, and each run
//! measures
//! - the time from starting the process to the first byte of the answer on its stdout (the
//!   first sentence the aligner accepted: the main command streams sentences, not tokens);
//! - the part of it before the stream loop started (process start, LibTorch, loading both
//!   models, tokenizers): that time less the loop's own `first_sentence_ms` from its record;
//! - the process's wall time and its peak resident memory (`wait4`'s `ru_maxrss`).
//!
//! The cache is a fresh folder, filled by one unmeasured run first, so the measured runs with
//! the cache are warm starts. The JSON keys are `with_cache` and `without_cache`, each with
//! `first_output_s`, `startup_s`, `wall_s` and `peak_rss_mib` as `[median, min, max]`, plus
//! `packs_mib` (the size of the two pack files: the blocks and the dense copies the packed
//! models map).

use crate::data::file::WrapFileError as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use aligner_serve::bench::{machine_now, spread};
use serde_json::json;

use super::Bench;
use crate::app::{Error, Result};

/// The heading of the section `bench_startup --doc` writes into docs/benchmarks.md.
pub const HEADING: &str = "## Start-up of the main command";

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `stream_align` binary.
    pub program: PathBuf,
    /// Its arguments (the README's main command's).
    pub args: Vec<String>,
    /// Measured runs per setting.
    pub rounds: usize,
}

/// One process run.
#[derive(Debug, Clone, Copy)]
struct Run {
    first_output_s: f64,
    startup_s: f64,
    wall_s: f64,
    peak_rss_mib: f64,
}

/// Starts `program` once with `cache` as the pack cache and measures it.
fn run_once(options: &Options, cache: &str, records: &Path) -> Result<Run> {
    let io = |e| Error::io(&options.program, e);
    let start = Instant::now();
    let mut child = Command::new(&options.program)
        .args(&options.args)
        .arg("--records")
        .arg(records)
        .env(crate::model::packed::PACK_CACHE_ENV, cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Invalid(format!("{}: no stdout", options.program.display())))?;
    let mut first = [0u8; 1];
    let got = stdout.read(&mut first).map_err(io)?;
    let first_output_s = start.elapsed().as_secs_f64();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).map_err(io)?;
    let (status, peak_kib) = wait_with_peak_rss(&mut child).map_err(io)?;
    let wall_s = start.elapsed().as_secs_f64();
    if !status.success() || got == 0 {
        return Err(Error::Invalid(format!(
            "{} {} failed ({status}) or printed nothing",
            options.program.display(),
            options.args.join(" ")
        )));
    }
    let text = crate::data::file::read_text(records)?;
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or(""))
        .map_err(|e| Error::json(records, e))?;
    let loop_first = record["summary"]["first_sentence_ms"]
        .as_f64()
        .ok_or_else(|| Error::Invalid(format!("{}: no first_sentence_ms", records.display())))?
        / 1e3;
    Ok(Run {
        first_output_s,
        startup_s: first_output_s - loop_first,
        wall_s,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    })
}

/// Waits for `child` and returns its exit status and peak resident set in KiB.
#[cfg(target_os = "linux")]
fn wait_with_peak_rss(
    child: &mut std::process::Child,
) -> std::io::Result<(std::process::ExitStatus, i64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills; the pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; reaping the child here is fine, as `Child` is not
    // waited on again.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage.ru_maxrss))
}

/// Elsewhere the peak is not measured (reported as 0).
#[cfg(not(target_os = "linux"))]
fn wait_with_peak_rss(
    child: &mut std::process::Child,
) -> std::io::Result<(std::process::ExitStatus, i64)> {
    Ok((child.wait()?, 0))
}

/// Runs the benchmark; `progress` gets a line per run.
///
/// # Errors
/// A run that fails or prints nothing, or an unreadable record.
pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Bench> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io(Path::new("temporary folder"), e))?;
    let packs = tmp.path().join("packs");
    let packs_arg = packs.display().to_string();
    let records = tmp.path().join("records.jsonl");
    progress("filling the pack cache (one unmeasured run)");
    run_once(options, &packs_arg, &records)?;
    let packs_mib = std::fs::read_dir(&packs)
        .map_err(|e| Error::io(&packs, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .sum::<f64>();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        for (name, cache, runs) in [
            ("with the pack cache", packs_arg.as_str(), &mut with),
            ("without it", "off", &mut without),
        ] {
            let r = run_once(options, cache, &records)?;
            progress(&format!(
                "round {}/{} {name}: first output {:.2} s (start-up {:.2} s), exit {:.2} s, peak RSS {:.0} MiB",
                round + 1,
                options.rounds,
                r.first_output_s,
                r.startup_s,
                r.wall_s,
                r.peak_rss_mib
            ));
            runs.push(r);
        }
    }
    Ok(report(&with, &without, packs_mib, options))
}

fn stats(runs: &[Run]) -> serde_json::Value {
    let field = |f: fn(&Run) -> f64| {
        let (median, min, max) = spread(&runs.iter().map(f).collect::<Vec<_>>());
        json!([median, min, max])
    };
    json!({
        "first_output_s": field(|r| r.first_output_s),
        "startup_s": field(|r| r.startup_s),
        "wall_s": field(|r| r.wall_s),
        "peak_rss_mib": field(|r| r.peak_rss_mib),
    })
}

fn report(with: &[Run], without: &[Run], packs_mib: f64, options: &Options) -> Bench {
    let (cpu, cores, load) = machine_now();
    let mut json = serde_json::Map::new();
    json.insert("with_cache".into(), stats(with));
    json.insert("without_cache".into(), stats(without));
    json.insert("packs_mib".into(), packs_mib.into());
    json.insert("rounds".into(), options.rounds.into());
    json.insert("cpu".into(), cpu.clone().into());
    let cell = |v: &serde_json::Value, key: &str, digits: usize| {
        let a = &v[key];
        let f = |i: usize| a[i].as_f64().unwrap_or(f64::NAN);
        format!("{:.digits$} ({:.digits$}–{:.digits$})", f(0), f(1), f(2))
    };
    let (w, wo) = (&json["with_cache"], &json["without_cache"]);
    let mut md = format!(
        "{HEADING}\n\nThe README's main command started as a process, {} rounds alternating with and \
         without the pack cache (`bench_startup`; {cpu}, {cores} cores, load {load}). Median \
         (min–max). \"First output\" is the first accepted sentence on stdout (the main command \
         streams sentences); \"start-up\" is the part of it before the stream loop began.\n\n\
         | | with the pack cache (warm) | without (`ALIGNER_PACK_CACHE=off`) |\n|---|---:|---:|\n",
        options.rounds
    );
    for (label, key, digits) in [
        ("process start → first output (s)", "first_output_s", 2),
        ("of which start-up (s)", "startup_s", 2),
        ("process wall time (s)", "wall_s", 2),
        ("peak RSS (MiB)", "peak_rss_mib", 0),
    ] {
        md.push_str(&format!(
            "| {label} | {} | {} |\n",
            cell(w, key, digits),
            cell(wo, key, digits)
        ));
    }
    let copies = if crate::model::cpu::bf16_dense_copies() {
        "bf16"
    } else {
        "f32"
    };
    md.push_str(&format!(
        "\nThe two packs (upstream int4, aligner int8 with its adapter merged) take {packs_mib:.0} MiB \
         on disk, mapped in place; most of it is the dense copy ({copies} on this CPU: \
         `aligner_model::cpu::bf16_dense_copies`) each packed model keeps of its layers for long \
         passes (prompts), beside its blocks.\n"
    ));
    md.push('\n');
    Bench { json, summary: md }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_medians_and_spreads_of_both_settings() {
        let run = |s: f64| Run {
            first_output_s: s,
            startup_s: s / 2.0,
            wall_s: 2.0 * s,
            peak_rss_mib: 100.0 * s,
        };
        let options = Options {
            program: PathBuf::from("stream_align"),
            args: vec![],
            rounds: 3,
        };
        let bench = report(
            &[run(1.0), run(3.0), run(2.0)],
            &[run(4.0), run(5.0), run(6.0)],
            512.0,
            &options,
        );
        assert_eq!(
            bench.json["with_cache"]["first_output_s"],
            json!([2.0, 1.0, 3.0])
        );
        assert_eq!(
            bench.json["without_cache"]["peak_rss_mib"],
            json!([500.0, 400.0, 600.0])
        );
        assert!(bench.summary.starts_with(HEADING));
        assert!(
            bench
                .summary
                .contains("| of which start-up (s) | 1.00 (0.50–1.50) | 2.50 (2.00–3.00) |")
        );
        assert!(bench.summary.contains("512 MiB"));
    }

    #[test]
    fn a_failing_program_is_an_error_naming_it() {
        let options = Options {
            program: PathBuf::from("false"),
            args: vec![],
            rounds: 1,
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = run_once(&options, "off", &dir.path().join("r.jsonl"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("false") && err.contains("failed"), "{err}");
    }
}
