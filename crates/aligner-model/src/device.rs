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

/// The first CUDA device if LibTorch sees one, else the CPU.
pub fn auto_device() -> Device {
    Device::cuda_if_available()
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_device(s: &str) -> Result<Device, Error> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(auto_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown device `{other}` (cpu, cuda, cuda:N, auto)"
                ))
            }),
    }
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
        assert_eq!(parse_device("cuda:2").unwrap(), Device::Cuda(2));
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
    }

    #[test]
    fn cuda_computes_bf16_natively() {
        assert!(native_bf16(Device::Cuda(0)));
        assert_eq!(native_bf16(Device::Cpu), crate::cpu::native_bf16());
    }
}
