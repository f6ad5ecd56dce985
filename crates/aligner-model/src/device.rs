//! Choosing where and in which precision a model runs.

use std::str::FromStr;

use tch::{Device, Kind};

use crate::Error;

/// Floating-point precision of a model's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// 32-bit float: exact parity with reference implementations.
    #[default]
    F32,
    /// bfloat16: half the memory, fast on CUDA and on CPUs with AVX-512 BF16 / AMX.
    Bf16,
    /// IEEE half precision (CUDA).
    F16,
}

impl DType {
    /// The LibTorch kind.
    pub fn kind(self) -> Kind {
        match self {
            DType::F32 => Kind::Float,
            DType::Bf16 => Kind::BFloat16,
            DType::F16 => Kind::Half,
        }
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
            other => Err(Error::InvalidArgument(format!(
                "unknown dtype `{other}` (f32, bf16, f16)"
            ))),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
        })
    }
}

/// The first CUDA device if LibTorch sees one (its CUDA backend loaded first, see
/// [`load_cuda_backend`]), else the CPU.
pub fn auto_device() -> Device {
    match load_cuda_backend() {
        Ok(true) => Device::cuda_if_available(),
        _ => Device::Cpu,
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`. Naming a CUDA device loads LibTorch's CUDA backend
/// ([`load_cuda_backend`]); a LibTorch without one, or a backend that does not load, is an
/// error that says so.
pub fn parse_device(s: &str) -> Result<Device, Error> {
    let device = match s.to_ascii_lowercase().as_str() {
        "auto" => return Ok(auto_device()),
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => Device::Cuda(0),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown device `{other}` (cpu, cuda, cuda:N, auto)"
                ))
            })?,
    };
    if !load_cuda_backend()? {
        return Err(Error::InvalidArgument(format!(
            "device `{s}`: this LibTorch has no CUDA backend (libtorch_cuda.so); install a CUDA \
             build of torch"
        )));
    }
    Ok(device)
}

/// Loads LibTorch's CUDA backend, `libtorch_cuda.so`, into the process (once; later calls return
/// the first answer). Its static initialisers register CUDA with LibTorch, after which
/// `Device::Cuda` works. Binaries do not link it: the linker drops it (nothing calls into it
/// directly), and loading it costs a CPU-only run about 0.2 s and hundreds of MB of mapped CUDA
/// libraries, so it is loaded only when a CUDA device is asked for.
///
/// The library is looked up by name (the binary's run path holds the LibTorch it was built
/// with), then in `$LIBTORCH/lib` and the folder the build used.
///
/// # Errors
/// The library exists but does not load (a missing CUDA runtime library, say): the loader's
/// message. `Ok(false)`: no `libtorch_cuda.so` anywhere, a CPU-only LibTorch.
pub fn load_cuda_backend() -> Result<bool, Error> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<Result<bool, String>> = OnceLock::new();
    LOADED
        .get_or_init(open_cuda_backend)
        .clone()
        .map_err(Error::InvalidArgument)
}

#[cfg(target_os = "linux")]
fn open_cuda_backend() -> Result<bool, String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    const NAME: &str = "libtorch_cuda.so";
    if std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains(NAME)) {
        return Ok(true);
    }
    let folders = std::env::var_os("LIBTORCH")
        .map(|d| std::path::PathBuf::from(d).join("lib"))
        .into_iter()
        .chain(option_env!("ALIGNER_LIBTORCH_LIB").map(std::path::PathBuf::from));
    let candidates: Vec<std::ffi::OsString> = std::iter::once(NAME.into())
        .chain(
            folders
                .map(|d| d.join(NAME))
                .filter(|p| p.is_file())
                .map(Into::into),
        )
        .collect();
    let mut failure = None;
    for candidate in &candidates {
        // SAFETY: loading LibTorch's own CUDA library runs its initialisers, which register the
        // CUDA backend with the LibTorch this process already uses; it is never unloaded.
        match unsafe { Library::open(Some(candidate), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(lib) => {
                std::mem::forget(lib);
                return Ok(true);
            }
            Err(e) => {
                let path = std::path::Path::new(candidate);
                if path.is_absolute() {
                    failure = Some(format!("loading {}: {e}", path.display()));
                }
            }
        }
    }
    failure.map_or(Ok(false), Err)
}

#[cfg(not(target_os = "linux"))]
fn open_cuda_backend() -> Result<bool, String> {
    Ok(false)
}

/// Whether `device` computes in bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX on the
/// AVX-512 path ([`crate::cpu::native_bf16`]). Without it, LibTorch emulates bf16 matrix products
/// on the CPU and they run many times slower than f32 (about 20 times on an AVX2 CPU).
pub fn native_bf16(device: Device) -> bool {
    match device {
        Device::Cuda(_) => true,
        Device::Cpu => crate::cpu::native_bf16(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_and_devices_parse() {
        assert_eq!("BF16".parse::<DType>().unwrap(), DType::Bf16);
        assert!("int8".parse::<DType>().is_err());
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        if load_cuda_backend().unwrap() {
            assert_eq!(parse_device("cuda:2").unwrap(), Device::Cuda(2));
        } else {
            let err = parse_device("cuda:2").unwrap_err().to_string();
            assert!(err.contains("no CUDA backend"), "{err}");
        }
        assert!(parse_device("tpu").is_err());
    }

    #[test]
    fn cuda_computes_bf16_natively() {
        assert!(native_bf16(Device::Cuda(0)));
        assert_eq!(native_bf16(Device::Cpu), crate::cpu::native_bf16());
    }
}
