// CUDA kernels of aligner-model's decode path, compiled at run time by NVRTC
// (aligner_model::cuda::Kernels). Self-contained: no headers, so any NVRTC compiles it.
//
// Weights stay in GGUF's blocks of 32 inputs, kept as three arrays per matrix as on the CPU
// (aligner_model::qmatmul): f16 scales `d`, f16 minima `m` (Q4_1 only) and the codes, one block
// after the other, row-major. Activations and outputs are f32, row-major.

#define BLOCK 32
#define WARP 32
// MAX_ROWS, the most activation rows one launch of a matrix-vector product takes (a decode
// batch), comes from the compiler's options: aligner_model::cuda::MAX_ROWS is its one place.
#ifndef MAX_ROWS
#error "MAX_ROWS must be defined (-DMAX_ROWS=...), as aligner_model::cuda::compile does"
#endif

__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f;
    asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float warp_sum(float v) {
    #pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// The end of a matrix-vector product: each activation row's sum over the warp, written to
// y[r * rows + row] by lane 0.
__device__ __forceinline__ void store_rows(const float (&acc)[MAX_ROWS], int nx, float* y,
                                           int rows, int row) {
    #pragma unroll
    for (int r = 0; r < MAX_ROWS; ++r) {
        if (r >= nx) break;
        const float total = warp_sum(acc[r]);
        if (threadIdx.x % WARP == 0) y[(long long)r * rows + row] = total;
    }
}

// A Q4_1 block, loaded: w = scale q + min, byte j of the 16 code bytes holding q[j] (low
// nibble) and q[j + 16] (high nibble).
struct Q4_1Block {
    float scale, min;
    unsigned int words[4];

    __device__ __forceinline__ float dot(const float* x) const {
        float dot = 0.0f, sum = 0.0f;
        #pragma unroll
        for (int j = 0; j < BLOCK / 2; ++j) {
            const unsigned int byte = (words[j / 4] >> (8 * (j % 4))) & 0xffu;
            const float lo = x[j], hi = x[j + BLOCK / 2];
            dot += (float)(byte & 0xfu) * lo + (float)(byte >> 4) * hi;
            sum += lo + hi;
        }
        return scale * dot + min * sum;
    }
};

struct Q4_1 {
    const unsigned short* __restrict__ d;
    const unsigned short* __restrict__ m;
    const unsigned char* __restrict__ qs;

    __device__ __forceinline__ Q4_1Block load(long long k) const {
        const uint4 packed = *reinterpret_cast<const uint4*>(qs + k * (BLOCK / 2));
        return {half_to_float(d[k]), half_to_float(m[k]), {packed.x, packed.y, packed.z, packed.w}};
    }
};

// A Q8_0 block, loaded: w = scale q, q a signed byte.
struct Q8_0Block {
    float scale;
    const signed char* q;

    __device__ __forceinline__ float dot(const float* x) const {
        float dot = 0.0f;
        #pragma unroll
        for (int j = 0; j < BLOCK; ++j) dot += (float)q[j] * x[j];
        return scale * dot;
    }
};

struct Q8_0 {
    const unsigned short* __restrict__ d;
    const signed char* __restrict__ qs;

    __device__ __forceinline__ Q8_0Block load(long long k) const {
        return {half_to_float(d[k]), qs + k * BLOCK};
    }
};

// y[r * rows + n] = sum_k w[n, k] x[r * cols + k] for r < nx, w in `Format`'s blocks.
// One warp per weight row; each lane takes every 32nd block of the row, loads it once and
// dots it with every activation row.
template <class Format>
__device__ __forceinline__ void matvec(const Format w, const float* __restrict__ x,
                                       float* __restrict__ y, int rows, int blocks_per_row,
                                       int nx) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    if (row >= rows) return;
    const int cols = blocks_per_row * BLOCK;
    float acc[MAX_ROWS];
    #pragma unroll
    for (int r = 0; r < MAX_ROWS; ++r) acc[r] = 0.0f;
    for (int b = threadIdx.x % WARP; b < blocks_per_row; b += WARP) {
        const auto block = w.load((long long)row * blocks_per_row + b);
        #pragma unroll
        for (int r = 0; r < MAX_ROWS; ++r) {
            if (r >= nx) break;
            acc[r] += block.dot(x + (long long)r * cols + (long long)b * BLOCK);
        }
    }
    store_rows(acc, nx, y, rows, row);
}

extern "C" __global__ void q4_1_matvec(const unsigned short* d, const unsigned short* m,
                                       const unsigned char* qs, const float* x, float* y,
                                       int rows, int blocks_per_row, int nx) {
    matvec(Q4_1{d, m, qs}, x, y, rows, blocks_per_row, nx);
}

extern "C" __global__ void q8_0_matvec(const unsigned short* d, const signed char* qs,
                                       const float* x, float* y, int rows, int blocks_per_row,
                                       int nx) {
    matvec(Q8_0{d, qs}, x, y, rows, blocks_per_row, nx);
}

// RMSNorm of one row per thread block, with an optional residual add first:
// h = x + residual (written back to residual when add_residual), out = h / rms(h) * weight.
// blockDim.x is a multiple of 32, at most 1024.
extern "C" __global__ void rms_norm_residual(const float* __restrict__ x,
                                             float* __restrict__ residual,
                                             float* __restrict__ out,
                                             const float* __restrict__ weight,
                                             int hidden, float eps, int add_residual) {
    __shared__ float partial[1024 / WARP];
    const long long base = (long long)blockIdx.x * hidden;
    float squares = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float h = x[base + i];
        if (add_residual) {
            h += residual[base + i];
            residual[base + i] = h;
        }
        squares += h * h;
    }
    squares = warp_sum(squares);
    if (threadIdx.x % WARP == 0) partial[threadIdx.x / WARP] = squares;
    __syncthreads();
    if (threadIdx.x < WARP) {
        float v = threadIdx.x < blockDim.x / WARP ? partial[threadIdx.x] : 0.0f;
        v = warp_sum(v);
        if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / (float)hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float h = add_residual ? residual[base + i] : x[base + i];
        out[base + i] = h * inv * weight[i];
    }
}

// Rotary position embedding in place, Llama's half-split layout: for i < half = head_dim / 2,
// (a, b) = (v[i], v[i + half]) becomes (a cos - b sin, b cos + a sin), the angle's cos and sin
// read from tables of `half` columns at the row's position. v is (rows, heads, head_dim).
extern "C" __global__ void rotary(float* __restrict__ v,
                                  const float* __restrict__ cos_table,
                                  const float* __restrict__ sin_table,
                                  const long long* __restrict__ positions,
                                  int rows, int heads, int head_dim) {
    const int half = head_dim / 2;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)rows * heads * half) return;
    const int i = index % half;
    const long long head = index / half;
    const int row = head / heads;
    const long long at = positions[row] * half + i;
    const float c = cos_table[at], s = sin_table[at];
    float* h = v + head * head_dim;
    const float a = h[i], b = h[i + half];
    h[i] = a * c - b * s;
    h[i + half] = b * c + a * s;
}
