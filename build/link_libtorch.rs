//! Build script shared by every crate that links LibTorch through `tch`.
//!
//! It records LibTorch's `lib/` folder as the run-time search path (rpath) of the crate's own
//! tests, examples and benches, so that `cargo test` and `cargo run --example` work with no
//! `LD_LIBRARY_PATH` export. `LIBTORCH` comes from the environment or from `.cargo/config.toml`.
//!
//! `ALIGNER_LIBTORCH_LIB` records that folder for `aligner_model::device::load_cuda_backend`,
//! which loads LibTorch's CUDA backend (`libtorch_cuda.so`) when a CUDA device is asked for.
//! The linker's default `--as-needed` drops that library from every binary (nothing calls into
//! it directly), and linking it with `--no-as-needed` would cost every CPU-only run about 0.2 s
//! and 390 MB of mapped CUDA libraries at start-up (measured on a test binary here).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux") || target.contains("apple") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rustc-env=ALIGNER_LIBTORCH_LIB={}", lib.display());
}
