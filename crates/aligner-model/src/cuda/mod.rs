//! CUDA kernels of the decode path, compiled at run time with NVRTC and launched with `cudarc`
//! on LibTorch's current stream, on the device memory of LibTorch tensors.
//!
//! The kernels live in `kernels.cu` beside this file ([`SOURCE`]) and need no header:
//!
//! | kernel | computes | LibTorch equivalent (what the GPU tests compare with) |
//! |---|---|---|
//! | `q4_1_matvec` | `y = x W^T` for up to [`MAX_ROWS`] rows, `W` in Q4_1 blocks | `x.matmul(&w.dequantize().tr())` |
//! | `q8_0_matvec` | the same with Q8_0 blocks | the same |
//! | `rms_norm_residual` | `h = x + residual` (kept), `h / rms(h) * weight` | `h * (h.pow(2).mean(-1) + eps).rsqrt() * weight` |
//! | `rotary` | Llama's rotary embedding in place, from cos/sin tables | `x * cos + rotate_half(x) * sin` |
//!
//! Nothing here needs a CUDA toolkit at build time: `cudarc` loads the driver (`libcuda.so`) and
//! NVRTC (`libnvrtc.so.13`, from the `nvidia-cuda-nvrtc` wheel beside torch) when first used, and
//! a missing library is an [`Error::Cuda`], never a panic. [`compile`] runs without a GPU, so the
//! CPU tests check that the source compiles to PTX for the GPU host's architecture.
//!
//! The stream is LibTorch's current one (`aoti_torch_get_current_cuda_stream`, the stable C
//! function of `libtorch_cuda.so`), so a kernel is ordered with the LibTorch operations around it
//! and no synchronisation is needed between them.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use tch::{Device, Kind, Tensor};

use crate::qmatmul::{BLOCK, Q4Matrix, Q8Matrix};
use crate::{Error, Result};

/// The kernels' CUDA C++ source.
pub const SOURCE: &str = include_str!("kernels.cu");

/// The kernels [`SOURCE`] defines, by name.
pub const KERNELS: [&str; 4] = ["q4_1_matvec", "q8_0_matvec", "rms_norm_residual", "rotary"];

/// The most activation rows one matrix-vector product takes (the kernels keep one accumulator
/// per row in registers); more are taken [`MAX_ROWS`] at a time.
pub const MAX_ROWS: usize = 16;

/// Threads per block of the matrix-vector products: 8 warps, one weight row each.
const MATVEC_THREADS: u32 = 256;
/// Threads per block of the RMSNorm (one block per row).
const NORM_THREADS: u32 = 256;
/// Threads per block of the rotary embedding (one thread per pair of values).
const ROTARY_THREADS: u32 = 256;

fn cuda_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cuda(format!("{what}: {e}"))
}

/// Compiles [`SOURCE`] to PTX for a GPU of compute capability `major.minor` (an H100 is 9.0).
/// Needs NVRTC only, not a GPU.
///
/// # Errors
/// [`Error::Cuda`]: NVRTC is not found (its folders are named), or the compiler's log.
pub fn compile(major: u32, minor: u32) -> Result<String> {
    load_nvrtc()?;
    let options = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            format!("-DMAX_ROWS={MAX_ROWS}"),
        ],
        name: Some("kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options)
        .map_err(|e| cuda_error("compiling kernels.cu with NVRTC", e))?;
    Ok(ptx.to_src())
}

/// Where NVRTC is looked for besides the loader's own search path: the `nvidia/cu13/lib` folder
/// of the Python environment whose torch this binary was built or runs with.
fn nvidia_lib_folders() -> Vec<PathBuf> {
    let torch_libs = std::env::var_os("LIBTORCH")
        .map(|d| PathBuf::from(d).join("lib"))
        .into_iter()
        .chain(option_env!("ALIGNER_LIBTORCH_LIB").map(PathBuf::from));
    torch_libs
        .filter_map(|lib| lib.canonicalize().ok())
        // <site-packages>/torch/lib -> <site-packages>/nvidia/cu13/lib
        .filter_map(|lib| Some(lib.parent()?.parent()?.join("nvidia/cu13/lib")))
        .filter(|d| d.is_dir())
        .collect()
}

/// Makes `libnvrtc.so.13` loadable by name for `cudarc`: it already is when the loader finds
/// it (the GPU kit sets `LD_LIBRARY_PATH`); else it is loaded from [`nvidia_lib_folders`], its
/// built-in headers library first, so that later look-ups by name find the loaded copies.
fn load_nvrtc() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: probing for the library runs no code of ours; cudarc loads it the same way.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Ok(());
            }
            let folders = nvidia_lib_folders();
            for folder in &folders {
                let nvrtc = folder.join("libnvrtc.so.13");
                if !nvrtc.is_file() {
                    continue;
                }
                // The built-in headers library carries the toolkit's minor version in its name.
                let builtins = std::fs::read_dir(folder)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("libnvrtc-builtins.so.13"))
                    });
                for path in builtins.into_iter().chain([nvrtc]) {
                    // SAFETY: NVIDIA's compiler libraries have no initialisers that depend on
                    // the process; they stay loaded for its lifetime.
                    match unsafe { libloading::Library::new(&path) } {
                        Ok(lib) => std::mem::forget(lib),
                        Err(e) => return Err(format!("loading {}: {e}", path.display())),
                    }
                }
                return Ok(());
            }
            Err(format!(
                "NVRTC (libnvrtc.so.13) not found on the library path nor in {folders:?}: install \
                 the `nvidia-cuda-nvrtc` wheel beside torch, or add its lib folder to \
                 LD_LIBRARY_PATH"
            ))
        })
        .clone()
        .map_err(Error::Cuda)
}

/// The compiled kernels on one CUDA device.
pub struct Kernels {
    ordinal: usize,
    launches: std::sync::atomic::AtomicU64,
    context: Arc<CudaContext>,
    q4_1: CudaFunction,
    q8_0: CudaFunction,
    rms_norm: CudaFunction,
    rotary: CudaFunction,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

type CurrentStream = unsafe extern "C" fn(i32, *mut *mut c_void) -> i32;

impl Kernels {
    /// Compiles the kernels for CUDA device `ordinal` and loads them into the primary context,
    /// the one LibTorch uses.
    ///
    /// # Errors
    /// [`Error::Cuda`]: no CUDA backend in this LibTorch, no driver, no such device, or NVRTC.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !crate::device::load_cuda_backend()? {
            return Err(Error::Cuda(
                "this LibTorch has no CUDA backend (libtorch_cuda.so)".into(),
            ));
        }
        // SAFETY: probing for the driver library runs no code of ours.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Cuda(
                "no CUDA driver (libcuda.so) on this machine".into(),
            ));
        }
        let context = CudaContext::new(ordinal)
            .map_err(|e| cuda_error(&format!("CUDA device {ordinal}"), e))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| cuda_error("compute capability", e))?;
        let ptx = compile(major as u32, minor as u32)?;
        let module = context
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| cuda_error("loading the kernels' PTX", e))?;
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| cuda_error(&format!("kernel `{name}`"), e))
        };
        Ok(Self {
            ordinal,
            launches: std::sync::atomic::AtomicU64::new(0),
            q4_1: function(KERNELS[0])?,
            q8_0: function(KERNELS[1])?,
            rms_norm: function(KERNELS[2])?,
            rotary: function(KERNELS[3])?,
            context,
        })
    }

    /// The CUDA device the kernels run on.
    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// Kernel launches so far: how a caller (or a test) sees that work ran on these kernels.
    pub fn launches(&self) -> u64 {
        self.launches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_launch(&self) {
        self.launches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// LibTorch's current stream on this device, borrowed.
    fn stream(&self) -> Result<Arc<cudarc::driver::CudaStream>> {
        static SYMBOL: OnceLock<std::result::Result<CurrentStream, String>> = OnceLock::new();
        let current = SYMBOL
            .get_or_init(|| {
                let this = libloading::os::unix::Library::this();
                // SAFETY: the symbol is AOTInductor's C function of libtorch_cuda.so with this
                // signature (device index, out stream) -> error code.
                unsafe { this.get::<CurrentStream>(b"aoti_torch_get_current_cuda_stream\0") }
                    .map(|s| *s)
                    .map_err(|e| format!("aoti_torch_get_current_cuda_stream: {e}"))
            })
            .clone()
            .map_err(Error::Cuda)?;
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; the function only writes it.
        let code = unsafe { current(self.ordinal as i32, &mut raw) };
        if code != 0 {
            return Err(Error::Cuda(format!(
                "LibTorch's current stream on cuda:{} (error {code})",
                self.ordinal
            )));
        }
        // SAFETY: LibTorch owns the stream and keeps it for the process; it belongs to the
        // primary context `self.context` holds, and work on it is ordered with LibTorch's.
        Ok(unsafe { self.context.wrap_borrowed_stream(raw as _) })
    }

    fn check(&self, name: &str, t: &Tensor, kind: Kind) -> Result<u64> {
        check_operand(name, t, kind, self.device())
    }

    /// `x W^T` for `x` `(n, cols)` f32 on this device and `W` a [`CudaQ4Matrix`]: `(n, rows)`.
    ///
    /// # Errors
    /// An operand on another device, of another kind or shape, or not contiguous; a launch
    /// failure.
    pub fn q4_1_matvec(&self, w: &CudaQ4Matrix, x: &Tensor) -> Result<Tensor> {
        let d = self.check("q4_1 scales", &w.d, Kind::Half)?;
        let m = self.check("q4_1 minima", &w.m, Kind::Half)?;
        let qs = self.check("q4_1 codes", &w.qs, Kind::Uint8)?;
        if qs % 16 != 0 {
            return Err(Error::Cuda("q4_1 codes are not 16-byte aligned".into()));
        }
        self.launch_matvec(&self.q4_1, &[d, m, qs], w.rows, w.cols, x)
    }

    /// `x W^T` for `W` a [`CudaQ8Matrix`]; see [`Kernels::q4_1_matvec`].
    ///
    /// # Errors
    /// As [`Kernels::q4_1_matvec`].
    pub fn q8_0_matvec(&self, w: &CudaQ8Matrix, x: &Tensor) -> Result<Tensor> {
        let d = self.check("q8_0 scales", &w.d, Kind::Half)?;
        let qs = self.check("q8_0 codes", &w.qs, Kind::Int8)?;
        self.launch_matvec(&self.q8_0, &[d, qs], w.rows, w.cols, x)
    }

    fn launch_matvec(
        &self,
        function: &CudaFunction,
        weights: &[u64],
        rows: usize,
        cols: usize,
        x: &Tensor,
    ) -> Result<Tensor> {
        let n = matvec_rows(&x.size(), cols)?;
        let x = self.check("activations", x, Kind::Float)?;
        let out = Tensor::empty([n as i64, rows as i64], (Kind::Float, self.device()));
        let y = out.data_ptr() as u64;
        let stream = self.stream()?;
        let (rows_i, blocks_i) = (to_i32(rows)?, to_i32(cols / BLOCK)?);
        for first in (0..n).step_by(MAX_ROWS) {
            let count = to_i32((n - first).min(MAX_ROWS))?;
            let x_at = x + (first * cols * 4) as u64;
            let y_at = y + (first * rows * 4) as u64;
            let mut launch = stream.launch_builder(function);
            for w in weights {
                launch.arg(w);
            }
            launch
                .arg(&x_at)
                .arg(&y_at)
                .arg(&rows_i)
                .arg(&blocks_i)
                .arg(&count);
            // SAFETY: the pointers are the contiguous device buffers checked above, of the sizes
            // the kernel reads and writes for these arguments.
            unsafe { launch.launch(matvec_config(rows)) }
                .map_err(|e| cuda_error("launching a matrix-vector product", e))?;
            self.count_launch();
        }
        Ok(out)
    }

    /// RMSNorm over the last dimension of `x` `(.., hidden)`, after adding `x` into `residual`
    /// when given (which then holds the sum, as a pre-norm transformer's residual stream does).
    ///
    /// # Errors
    /// Operands that differ in shape, device or kind (f32), or are not contiguous.
    pub fn rms_norm(
        &self,
        x: &Tensor,
        residual: Option<&mut Tensor>,
        weight: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let shape = x.size();
        let hidden = *shape
            .last()
            .ok_or_else(|| Error::InvalidArgument("rms_norm of a scalar".into()))?;
        if weight.size() != [hidden] {
            return Err(Error::InvalidArgument(format!(
                "rms_norm: weight of shape {:?} for rows of {hidden}",
                weight.size()
            )));
        }
        let x_ptr = self.check("rms_norm input", x, Kind::Float)?;
        let w_ptr = self.check("rms_norm weight", weight, Kind::Float)?;
        let (r_ptr, add) = match residual {
            Some(r) => {
                if r.size() != shape {
                    return Err(Error::InvalidArgument(format!(
                        "rms_norm: residual of shape {:?} for input {shape:?}",
                        r.size()
                    )));
                }
                (self.check("rms_norm residual", r, Kind::Float)?, 1i32)
            }
            None => (0u64, 0i32),
        };
        let out = x.empty_like();
        let rows = x.numel() / hidden.max(1) as usize;
        if rows == 0 {
            return Ok(out);
        }
        let out_ptr = out.data_ptr() as u64;
        let (hidden_i, eps_f) = (to_i32(hidden as usize)?, eps as f32);
        let stream = self.stream()?;
        let mut launch = stream.launch_builder(&self.rms_norm);
        launch
            .arg(&x_ptr)
            .arg(&r_ptr)
            .arg(&out_ptr)
            .arg(&w_ptr)
            .arg(&hidden_i)
            .arg(&eps_f)
            .arg(&add);
        let config = LaunchConfig {
            grid_dim: (to_u32(rows)?, 1, 1),
            block_dim: (NORM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: checked contiguous f32 buffers of `rows * hidden` values (weight: `hidden`).
        unsafe { launch.launch(config) }.map_err(|e| cuda_error("launching rms_norm", e))?;
        self.count_launch();
        Ok(out)
    }

    /// Rotates `x` `(rows, heads, head_dim)` in place by Llama's rotary embedding at
    /// `positions` (one per row), reading `cos` and `sin` tables `(positions, head_dim / 2)`.
    ///
    /// # Errors
    /// A position outside the tables, or operands that do not fit.
    pub fn rotary(
        &self,
        x: &mut Tensor,
        cos: &Tensor,
        sin: &Tensor,
        positions: &[i64],
    ) -> Result<()> {
        let (rows, heads, head_dim) = match x.size()[..] {
            [r, h, d] => (r, h, d),
            ref other => {
                return Err(Error::InvalidArgument(format!(
                    "rotary: input of shape {other:?}, expected (rows, heads, head_dim)"
                )));
            }
        };
        rotary_table_rows(&cos.size(), &sin.size(), head_dim, positions, rows)?;
        let x_ptr = self.check("rotary input", x, Kind::Float)?;
        let c_ptr = self.check("rotary cos", cos, Kind::Float)?;
        let s_ptr = self.check("rotary sin", sin, Kind::Float)?;
        let total = (rows * heads * head_dim / 2) as usize;
        if total == 0 {
            return Ok(());
        }
        let positions = Tensor::from_slice(positions).to_device(self.device());
        let p_ptr = positions.data_ptr() as u64;
        let (rows_i, heads_i, dim_i) = (
            to_i32(rows as usize)?,
            to_i32(heads as usize)?,
            to_i32(head_dim as usize)?,
        );
        let stream = self.stream()?;
        let mut launch = stream.launch_builder(&self.rotary);
        launch
            .arg(&x_ptr)
            .arg(&c_ptr)
            .arg(&s_ptr)
            .arg(&p_ptr)
            .arg(&rows_i)
            .arg(&heads_i)
            .arg(&dim_i);
        let config = LaunchConfig {
            grid_dim: (to_u32(total.div_ceil(ROTARY_THREADS as usize))?, 1, 1),
            block_dim: (ROTARY_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: checked contiguous buffers; every position indexes a row of the tables.
        unsafe { launch.launch(config) }.map_err(|e| cuda_error("launching rotary", e))?;
        self.count_launch();
        // `positions` is freed by LibTorch's caching allocator on the same stream, after the
        // kernel that reads it.
        drop(positions);
        Ok(())
    }
}

fn to_i32(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::InvalidArgument(format!("{v} exceeds a kernel's i32 range")))
}

fn to_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument(format!("{v} exceeds a grid's range")))
}

/// The device pointer of `t` after checking that it is contiguous, of `kind`, on `device`.
fn check_operand(name: &str, t: &Tensor, kind: Kind, device: Device) -> Result<u64> {
    if t.device() != device {
        return Err(Error::InvalidArgument(format!(
            "{name} is on {:?}, the kernels on {device:?}",
            t.device()
        )));
    }
    if t.kind() != kind {
        return Err(Error::InvalidArgument(format!(
            "{name} is {:?}, expected {kind:?}",
            t.kind()
        )));
    }
    if !t.is_contiguous() {
        return Err(Error::InvalidArgument(format!("{name} is not contiguous")));
    }
    Ok(t.data_ptr() as u64)
}

/// Activation rows of a matrix-vector product: `x` must be `(n, cols)` with `n >= 1`.
fn matvec_rows(shape: &[i64], cols: usize) -> Result<usize> {
    match shape {
        [n, c] if *c as usize == cols && *n > 0 => Ok(*n as usize),
        _ => Err(Error::InvalidArgument(format!(
            "matrix-vector product: activations of shape {shape:?}, expected (rows >= 1, {cols})"
        ))),
    }
}

/// One warp per weight row, [`MATVEC_THREADS`] threads per block.
fn matvec_config(rows: usize) -> LaunchConfig {
    let warps_per_block = MATVEC_THREADS as usize / 32;
    LaunchConfig {
        grid_dim: (rows.div_ceil(warps_per_block) as u32, 1, 1),
        block_dim: (MATVEC_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Checks the rotary operands' shapes and positions; returns the tables' rows.
fn rotary_table_rows(
    cos: &[i64],
    sin: &[i64],
    head_dim: i64,
    positions: &[i64],
    rows: i64,
) -> Result<i64> {
    if head_dim % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "rotary: odd head_dim {head_dim}"
        )));
    }
    let table = match cos {
        [n, h] if *h == head_dim / 2 && cos == sin => *n,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "rotary: cos {cos:?} and sin {sin:?} tables, expected (positions, {})",
                head_dim / 2
            )));
        }
    };
    if positions.len() as i64 != rows {
        return Err(Error::InvalidArgument(format!(
            "rotary: {} positions for {rows} rows",
            positions.len()
        )));
    }
    if let Some(p) = positions.iter().find(|&&p| p < 0 || p >= table) {
        return Err(Error::InvalidArgument(format!(
            "rotary: position {p} outside the tables' {table} rows"
        )));
    }
    Ok(table)
}

/// A block matrix on a CUDA device, in either format.
#[derive(Debug)]
pub enum CudaMatrix {
    /// Q4_1 blocks.
    Q4(CudaQ4Matrix),
    /// Q8_0 blocks.
    Q8(CudaQ8Matrix),
}

impl CudaMatrix {
    /// Bytes of weight data (as the CPU matrices count them).
    pub fn bytes(&self) -> usize {
        let blocks = |rows: usize, cols: usize| rows * cols / BLOCK;
        match self {
            Self::Q4(m) => blocks(m.rows, m.cols) * size_of::<crate::qmatmul::BlockQ4>(),
            Self::Q8(m) => blocks(m.rows, m.cols) * size_of::<crate::qmatmul::BlockQ8>(),
        }
    }
}

impl Kernels {
    /// `x W^T` in `W`'s format; see [`Kernels::q4_1_matvec`].
    ///
    /// # Errors
    /// As [`Kernels::q4_1_matvec`].
    pub fn matvec(&self, w: &CudaMatrix, x: &Tensor) -> Result<Tensor> {
        match w {
            CudaMatrix::Q4(m) => self.q4_1_matvec(m, x),
            CudaMatrix::Q8(m) => self.q8_0_matvec(m, x),
        }
    }
}

/// A [`Q4Matrix`]'s scales, minima and codes on a CUDA device (or any device: the CPU tests
/// build it on the CPU to check [`CudaQ4Matrix::dequantize`]).
#[derive(Debug)]
pub struct CudaQ4Matrix {
    rows: usize,
    cols: usize,
    d: Tensor,
    m: Tensor,
    qs: Tensor,
}

impl CudaQ4Matrix {
    /// Copies `w`'s blocks to `device`, unchanged.
    pub fn upload(w: &Q4Matrix, device: Device) -> Self {
        let (d, m) = (w.scales(), w.minima());
        let codes: Vec<u8> = w.codes().iter().flatten().copied().collect();
        Self {
            rows: w.rows(),
            cols: w.cols(),
            d: Tensor::from_slice(d).to_device(device),
            m: Tensor::from_slice(m).to_device(device),
            qs: Tensor::from_slice(&codes).to_device(device),
        }
    }

    /// The weights `(rows, cols)` in f32, computed with LibTorch operations from the blocks:
    /// the reference the kernel is tested against.
    pub fn dequantize(&self) -> Tensor {
        let blocks = (self.rows * self.cols / BLOCK) as i64;
        let qs = self.qs.view([blocks, (BLOCK / 2) as i64]);
        let codes = Tensor::cat(
            &[qs.bitwise_and(15), qs.bitwise_right_shift_tensor_scalar(4)],
            1,
        )
        .to_kind(Kind::Float);
        let d = self.d.to_kind(Kind::Float).unsqueeze(1);
        let m = self.m.to_kind(Kind::Float).unsqueeze(1);
        (codes * d + m).view([self.rows as i64, self.cols as i64])
    }
}

/// A [`Q8Matrix`]'s scales and codes on a device; see [`CudaQ4Matrix`].
#[derive(Debug)]
pub struct CudaQ8Matrix {
    rows: usize,
    cols: usize,
    d: Tensor,
    qs: Tensor,
}

impl CudaQ8Matrix {
    /// Copies `w`'s blocks to `device`, unchanged.
    pub fn upload(w: &Q8Matrix, device: Device) -> Self {
        let d = w.scales();
        let codes: Vec<i8> = w.codes().iter().flatten().copied().collect();
        Self {
            rows: w.rows(),
            cols: w.cols(),
            d: Tensor::from_slice(d).to_device(device),
            qs: Tensor::from_slice(&codes).to_device(device),
        }
    }

    /// The weights `(rows, cols)` in f32 by LibTorch operations; see [`CudaQ4Matrix::dequantize`].
    pub fn dequantize(&self) -> Tensor {
        let blocks = (self.rows * self.cols / BLOCK) as i64;
        let codes = self.qs.view([blocks, BLOCK as i64]).to_kind(Kind::Float);
        (codes * self.d.to_kind(Kind::Float).unsqueeze(1))
            .view([self.rows as i64, self.cols as i64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    #[test]
    fn the_kernels_compile_to_ptx_for_the_gpu_host() {
        // The GPU host is an H100 (9.0); an older card (8.0) compiles too.
        for (major, minor) in [(9, 0), (8, 0)] {
            let ptx = match compile(major, minor) {
                Ok(ptx) => ptx,
                Err(e) if nvidia_lib_folders().is_empty() => {
                    eprintln!("skipped: no NVRTC beside this LibTorch ({e})");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            assert!(
                ptx.contains(&format!(".target sm_{major}{minor}")),
                "{ptx:.300}"
            );
            for kernel in KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{kernel} missing"
                );
            }
        }
    }

    #[test]
    fn dequantized_blocks_equal_the_cpu_matrices() {
        let w = matrix(8, 64);
        let q4 = Q4Matrix::from_f32(&w, 8, 64).unwrap();
        let got = Vec::<f32>::try_from(
            CudaQ4Matrix::upload(&q4, Device::Cpu)
                .dequantize()
                .flatten(0, -1),
        )
        .unwrap();
        assert_eq!(got, q4.dequantize());
        let q8 = Q8Matrix::from_f32(&w, 8, 64).unwrap();
        let got = Vec::<f32>::try_from(
            CudaQ8Matrix::upload(&q8, Device::Cpu)
                .dequantize()
                .flatten(0, -1),
        )
        .unwrap();
        assert_eq!(got, q8.dequantize());
    }

    #[test]
    fn operands_are_checked_before_any_launch() {
        let cpu = Tensor::zeros([2, 64], (Kind::Float, Device::Cpu));
        let err = check_operand("activations", &cpu, Kind::Float, Device::Cuda(0)).unwrap_err();
        assert!(err.to_string().contains("activations is on Cpu"), "{err}");
        let err = check_operand("codes", &cpu, Kind::Uint8, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("expected Uint8"), "{err}");
        let err = check_operand("x", &cpu.tr(), Kind::Float, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("not contiguous"), "{err}");
        assert_eq!(matvec_rows(&[3, 64], 64).unwrap(), 3);
        assert!(matvec_rows(&[3, 32], 64).is_err());
        assert!(matvec_rows(&[0, 64], 64).is_err());
        assert!(matvec_rows(&[64], 64).is_err());
        assert_eq!(
            rotary_table_rows(&[10, 4], &[10, 4], 8, &[0, 9], 2).unwrap(),
            10
        );
        let err = rotary_table_rows(&[10, 4], &[10, 4], 8, &[0, 10], 2).unwrap_err();
        assert!(err.to_string().contains("position 10 outside"), "{err}");
        assert!(rotary_table_rows(&[10, 4], &[10, 4], 8, &[0], 2).is_err());
        assert!(rotary_table_rows(&[10, 3], &[10, 3], 8, &[0, 1], 2).is_err());
    }

    #[test]
    fn one_warp_per_weight_row() {
        let c = matvec_config(576);
        assert_eq!(c.block_dim.0 as usize / 32 * c.grid_dim.0 as usize, 576);
        let c = matvec_config(577);
        assert!(c.block_dim.0 as usize / 32 * c.grid_dim.0 as usize >= 577);
    }
}
