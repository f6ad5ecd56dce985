//! LibTorch's CUDA backend loads when a CUDA device is asked for, wherever LibTorch has one, so
//! that `Device::Cuda` can work; and a CPU-only run does not load it. Checked on any machine, GPU
//! or not, from the libraries this test process has mapped.

use aligner_model::device::{load_cuda_backend, parse_device};

fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("Linux /proc/self/maps")
        .contains(name)
}

#[test]
fn the_cuda_backend_loads_on_request_only() {
    assert!(mapped("libtorch_cpu.so"), "LibTorch itself is mapped");
    assert!(
        !mapped("libtorch_cuda.so"),
        "a CPU-only run does not load the CUDA backend"
    );
    assert_eq!(parse_device("cpu").ok(), Some(tch::Device::Cpu));
    assert!(!mapped("libtorch_cuda.so"));

    let linked = option_env!("ALIGNER_LIBTORCH_LIB").map(std::path::PathBuf::from);
    let has_cuda = linked
        .as_ref()
        .is_some_and(|lib| lib.join("libtorch_cuda.so").is_file());
    let loaded = load_cuda_backend().expect("libtorch_cuda.so loads where it exists");
    assert_eq!(loaded, has_cuda, "LibTorch folder {linked:?}");
    assert_eq!(mapped("libtorch_cuda.so"), has_cuda);
    if has_cuda {
        // LibTorch answers for CUDA now (0 devices on a machine without a GPU), and naming a
        // device works.
        eprintln!(
            "CUDA registered; {} device(s) here",
            tch::Cuda::device_count()
        );
        assert_eq!(parse_device("cuda:1").ok(), Some(tch::Device::Cuda(1)));
    } else {
        assert!(parse_device("cuda").is_err());
    }
}
