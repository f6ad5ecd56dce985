//! Build script shared by every crate that links LibTorch through `tch`.
//!
//! It records LibTorch's `lib/` folder as the run-time search path (rpath) of the crate's own
//! tests, examples and benches, so that `cargo test` and `cargo run --example` work with no
//! `LD_LIBRARY_PATH` export. `LIBTORCH` comes from the environment or from `.cargo/config.toml`.

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
}
