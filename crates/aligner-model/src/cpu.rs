//! Every choice that depends on the CPU, in one place: which instruction set the block kernels
//! use, and the row limits at which a pass moves between the block kernels, the weight-first
//! dense product and LibTorch's plain one.
//!
//! The path is detected once per process. The environment variable [`CPU_PATH_ENV`]
//! (`ALIGNER_CPU`) can hold it lower, so that one machine runs the code of every path its CPU can
//! execute (the tests do so, once per path, in `.ci/run`):
//!
//! | `ALIGNER_CPU` | block kernels | tuning |
//! |---|---|---|
//! | unset, empty, `auto` or `native` | the best the CPU has | that path's |
//! | `avx512` | AVX2 (there are no AVX-512 kernels) | AVX-512's: short passes of at most 8 rows on the blocks, `x w^T` dense products, native bf16 where the CPU has it |
//! | `avx2` | AVX2 + FMA + F16C | AVX2's: short passes of up to 16 rows on the blocks, `w x^T` dense products of 2-128 rows, no native bf16 |
//! | `portable` | the scalar Rust loops | as `avx2` |
//!
//! A path above what the CPU executes is held to the detected one ([`requested`] tells what was
//! asked). LibTorch's own kernels (MKL, oneDNN) choose their instruction set themselves: to run a
//! whole AVX-512 machine as an AVX2 one, also set `MKL_ENABLE_INSTRUCTIONS=AVX2`.
//!
//! ```
//! use aligner_model::cpu::{self, CpuPath};
//!
//! let path = cpu::path();
//! assert!(path <= cpu::detected());
//! println!("kernels: {path}, short passes up to {} rows", cpu::tuning().short_pass_rows);
//! ```

use std::str::FromStr;
use std::sync::OnceLock;

use crate::Error;

/// The environment variable that holds the CPU path lower than detected.
pub const CPU_PATH_ENV: &str = "ALIGNER_CPU";

/// The instruction-set paths, from the most portable up; each implies the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuPath {
    /// Scalar Rust: any CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F as well (and so MKL's AVX-512 code path).
    Avx512,
}

impl CpuPath {
    /// Every path, lowest first.
    pub const ALL: [CpuPath; 3] = [CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512];

    /// The name `ALIGNER_CPU` takes.
    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Portable => "portable",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for CpuPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CpuPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "portable" | "scalar" | "generic" => Ok(CpuPath::Portable),
            "avx2" => Ok(CpuPath::Avx2),
            "avx512" | "avx512f" => Ok(CpuPath::Avx512),
            _ => Err(Error::InvalidArgument(format!(
                "unknown CPU path `{s}` in {CPU_PATH_ENV} (portable, avx2, avx512, auto)"
            ))),
        }
    }
}

/// What `ALIGNER_CPU` asks for: `Ok(None)` when unset, empty, `auto` or `native`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the variable for any other unknown value. [`path`] then
/// keeps the detected path (and says so once on standard error).
pub fn requested() -> Result<Option<CpuPath>, Error> {
    parse_request(std::env::var(CPU_PATH_ENV).ok().as_deref())
}

fn parse_request(value: Option<&str>) -> Result<Option<CpuPath>, Error> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("auto") || v.eq_ignore_ascii_case("native") => Ok(None),
        Some(v) => v.parse().map(Some),
    }
}

/// The best path this CPU executes.
pub fn detected() -> CpuPath {
    static DETECTED: OnceLock<CpuPath> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuPath {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !avx2 {
        CpuPath::Portable
    } else if is_x86_feature_detected!("avx512f") {
        CpuPath::Avx512
    } else {
        CpuPath::Avx2
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuPath {
    CpuPath::Portable
}

/// The path this process runs: the detected one, held lower by `ALIGNER_CPU`.
pub fn path() -> CpuPath {
    static PATH: OnceLock<CpuPath> = OnceLock::new();
    *PATH.get_or_init(|| match requested() {
        Ok(Some(asked)) => asked.min(detected()),
        Ok(None) => detected(),
        Err(e) => {
            eprintln!(
                "aligner-model: {e}; using the detected path `{}`",
                detected()
            );
            detected()
        }
    })
}

/// Whether the block kernels run their AVX2 code (else the portable loops).
#[inline]
pub fn avx2_kernels() -> bool {
    path() >= CpuPath::Avx2
}

/// Most rows of a decoding step (one token per row, one sequence each) that the block kernels
/// take, on every path; more go through the dense copy, one sequence at a time.
pub const QUANT_MAX_ROWS: i64 = 16;

/// The row limits of one path. All are performance choices: results differ between them only in
/// the order of floating-point additions, except where a type documents bit equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Longest pass of several tokens (batch rows times tokens: a verification, a prompt's new
    /// part) on the block kernels; longer ones use the dense copy.
    ///
    /// The block kernels are AVX2 code whose cost grows by about as much for each row as for the
    /// first, while the dense product's grows much more slowly, and on CPUs with AVX-512 MKL's
    /// dense product is about twice as fast as on AVX2 alone. Measured with whole passes of the
    /// packed SmolLM2-135M after a 120-token cache on 2 cores: on AMD Zen 3 (AVX2) the blocks
    /// were faster up to 16 tokens; on Intel Sapphire Rapids (AVX-512) they were even with the
    /// dense copy at 8-10 tokens and 1.7x slower at 16 (140 ms against 80).
    pub short_pass_rows: i64,
    /// The same limit for the LM head. Its matrix is so wide (a row per vocabulary entry) that a
    /// dense product re-packing it on every call loses to the block kernels up to about 40 rows
    /// (measured on SmolLM2's 49152 x 576 head, 2 cores: 21 rows in 21 ms against 37 ms dense,
    /// 32 in 30 against 46, about even at 48).
    pub head_quant_max_rows: i64,
    /// Dense f32 products of this many rows (and at least 2) multiply as `w x^T` rather than
    /// `x w^T`; 0 turns the rule off.
    ///
    /// MKL's AVX2 `sgemm` copies a transposed right operand, the whole weight, into its packed
    /// layout on every call, which costs as much as the product itself when the rows are few;
    /// with the weight as the left operand it does not. Measured on a 2-core AMD Zen 3: the
    /// products alone, weights cold, 1.7x faster at 24-112 rows; whole passes of the packed
    /// SmolLM2-135M 7-26% faster at 17-128 rows (slower at 512). MKL's AVX-512 code path has no
    /// such cost, and there the transposed result costs more than it saves: on a 2-core Intel
    /// Sapphire Rapids whole passes were 10-20% slower at 17-80 rows and twice as slow at 2.
    pub weight_first_max_rows: i64,
}

impl Tuning {
    /// The limits of `path`.
    pub const fn of(path: CpuPath) -> Self {
        match path {
            CpuPath::Avx512 => Tuning {
                short_pass_rows: 8,
                head_quant_max_rows: 40,
                weight_first_max_rows: 0,
            },
            CpuPath::Portable | CpuPath::Avx2 => Tuning {
                short_pass_rows: 16,
                head_quant_max_rows: 40,
                weight_first_max_rows: 128,
            },
        }
    }

    /// Whether a dense f32 product of `rows` rows on the CPU multiplies as `w x^T`.
    pub fn weight_first(&self, rows: i64) -> bool {
        (2..=self.weight_first_max_rows).contains(&rows)
    }
}

/// The limits of the path this process runs.
pub fn tuning() -> Tuning {
    Tuning::of(path())
}

/// Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX, read from `/proc/cpuinfo` on
/// Linux; assumed absent elsewhere), and the path in force is AVX-512. Without it, LibTorch
/// emulates bf16 matrix products and they run many times slower than f32 (about 20 times on an
/// AVX2 CPU).
pub fn native_bf16() -> bool {
    static NATIVE: OnceLock<bool> = OnceLock::new();
    path() == CpuPath::Avx512 && *NATIVE.get_or_init(|| cpu_flags_have_bf16(cpuinfo()))
}

/// The environment variable that picks the dtype of packed CPU models' dense copies (the weights
/// of long passes): `f32`, `bf16`, or unset / `auto` for [`bf16_dense_copies`]'s choice.
pub const DENSE_COPY_ENV: &str = "ALIGNER_DENSE_COPY";

/// Whether packed CPU models with f32 activations keep the dense copy of their layers' weights,
/// which long passes (prompts, long verifications) multiply with, in bf16 rather than f32.
///
/// By default they do where the CPU computes bf16 natively ([`native_bf16`]): there LibTorch's
/// bf16 products (oneDNN, on AMX tiles where the CPU has them) are several times faster than its
/// f32 ones, and the copy takes half the memory. Measured on a 2-core Intel Sapphire Rapids
/// (AMX), one thread, SmolLM2-135M's projections at 80 rows: 0.22 ms against 1.01 ms for the
/// 576 x 1536 one, 4.6x. Activations stay f32: a long pass casts its input to bf16 and each
/// product's result back, so only the weights and the products' inputs are rounded. Elsewhere
/// bf16 is emulated and slower than f32, so the copy stays f32. [`DENSE_COPY_ENV`] overrides the
/// choice either way (the tests run both on every machine); an unknown value keeps the default
/// and is reported once on standard error.
pub fn bf16_dense_copies() -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    *BF16.get_or_init(|| {
        let value = std::env::var(DENSE_COPY_ENV).unwrap_or_default();
        parse_dense_copy(&value)
            .unwrap_or_else(|e| {
                eprintln!("aligner-model: {e}; using the default");
                None
            })
            .unwrap_or_else(native_bf16)
    })
}

/// `Some(true)` for `bf16`, `Some(false)` for `f32`, `None` for the default (empty or `auto`).
fn parse_dense_copy(value: &str) -> Result<Option<bool>, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(None),
        "bf16" => Ok(Some(true)),
        "f32" => Ok(Some(false)),
        _ => Err(Error::InvalidArgument(format!(
            "unknown {DENSE_COPY_ENV} value `{value}` (f32, bf16, auto)"
        ))),
    }
}

/// The CPU's model name as `/proc/cpuinfo` gives it (`unknown CPU` where it cannot be read):
/// what benchmark reports name as the machine, with [`vector_flags`].
pub fn model_name() -> String {
    cpuinfo()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".into(), |(_, name)| name.trim().to_owned())
}

/// The CPU's vector extensions that decide matrix-product speed, as `/proc/cpuinfo` names them
/// (for example `avx2, fma, avx512f, avx512_vnni, amx_bf16`; `no AVX2` where none is listed):
/// what benchmark reports name beside the CPU model.
pub fn vector_flags() -> String {
    let flags: Vec<&str> = cpuinfo()
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "amx_bf16",
    ];
    let found: Vec<&str> = wanted.into_iter().filter(|w| flags.contains(w)).collect();
    if found.is_empty() {
        "no AVX2".into()
    } else {
        found.join(", ")
    }
}

/// The text of `/proc/cpuinfo`, read once per process (empty where it cannot be read: other
/// systems than Linux).
fn cpuinfo() -> &'static str {
    static INFO: OnceLock<String> = OnceLock::new();
    INFO.get_or_init(|| std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

/// Whether the `flags` lines of a `/proc/cpuinfo` text list a native bf16 feature.
fn cpu_flags_have_bf16(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| matches!(f, "avx512_bf16" | "amx_bf16"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request(None).unwrap(), None);
        assert_eq!(parse_request(Some(" ")).unwrap(), None);
        assert_eq!(parse_request(Some("Native")).unwrap(), None);
        assert_eq!(
            parse_request(Some("AVX-512")).unwrap(),
            Some(CpuPath::Avx512)
        );
        assert_eq!(parse_request(Some("avx2")).unwrap(), Some(CpuPath::Avx2));
        assert_eq!(
            parse_request(Some("portable")).unwrap(),
            Some(CpuPath::Portable)
        );
        let err = parse_request(Some("sse9")).unwrap_err().to_string();
        assert!(err.contains("ALIGNER_CPU") && err.contains("sse9"), "{err}");
        for p in CpuPath::ALL {
            assert_eq!(p.name().parse::<CpuPath>().unwrap(), p);
        }
    }

    #[test]
    fn dense_copy_requests_parse() {
        assert_eq!(parse_dense_copy("").unwrap(), None);
        assert_eq!(parse_dense_copy(" Auto ").unwrap(), None);
        assert_eq!(parse_dense_copy("BF16").unwrap(), Some(true));
        assert_eq!(parse_dense_copy("f32").unwrap(), Some(false));
        let err = parse_dense_copy("fp8").unwrap_err().to_string();
        assert!(
            err.contains(DENSE_COPY_ENV) && err.contains("`fp8`"),
            "{err}"
        );
        // Without native bf16 the default keeps f32 copies (bf16 would be emulated, slower).
        if std::env::var(DENSE_COPY_ENV).is_err() && !native_bf16() {
            assert!(!bf16_dense_copies());
        }
    }

    /// The path in force is what `ALIGNER_CPU` asked for, held to what the CPU executes; `.ci/run`
    /// relies on this to know which code each of its runs exercised.
    #[test]
    fn the_path_follows_the_request() {
        let asked = requested().expect("ALIGNER_CPU holds a known path");
        let expected = asked.map_or(detected(), |a| a.min(detected()));
        assert_eq!(path(), expected);
        assert_eq!(avx2_kernels(), expected >= CpuPath::Avx2);
        if expected < CpuPath::Avx512 {
            assert!(!native_bf16());
        }
        eprintln!("CPU path: {} (detected {})", path(), detected());
    }

    #[test]
    fn tunings_differ_only_where_measured() {
        let (avx2, avx512) = (Tuning::of(CpuPath::Avx2), Tuning::of(CpuPath::Avx512));
        assert!(avx2.weight_first(2) && avx2.weight_first(128) && !avx2.weight_first(129));
        assert!(!avx2.weight_first(1));
        assert!((1..1000).all(|r| !avx512.weight_first(r)));
        assert_eq!(avx512.short_pass_rows, 8);
        assert_eq!(Tuning::of(CpuPath::Portable), avx2);
        for t in [avx2, avx512] {
            assert!(t.short_pass_rows <= QUANT_MAX_ROWS);
        }
    }

    #[test]
    fn bf16_flags_are_read_from_cpuinfo() {
        let sapphire = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n";
        assert!(cpu_flags_have_bf16(sapphire));
        assert!(!cpu_flags_have_bf16("flags\t\t: avx2 fma\n"));
        assert!(!cpu_flags_have_bf16("flags\t: avx512_bf16x\n"));
    }
}
