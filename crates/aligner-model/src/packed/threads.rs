//! Threads of a quantised pass: rayon's workers run it, LibTorch keeps to one thread meanwhile.

/// A value moved to another thread while the thread that owns it waits (see [`on_workers`]).
struct AssertSend<T>(T);

// SAFETY: only used by `on_workers`, whose caller blocks until the closure has returned, so
// the wrapped borrows are used by one thread at a time and never outlive the call.
unsafe impl<T> Send for AssertSend<T> {}

/// Runs `f` on one of rayon's worker threads and waits for it. The block kernels' parallel
/// loops inside then fork and join among the workers directly, instead of each loop (four per
/// layer) handing its work from this thread to the pool and putting this thread to sleep until
/// it is done. LibTorch calls in `f` run on the worker with one intra-op thread and without
/// gradients, as the caller's would.
pub(super) fn on_workers<R: Send>(f: impl FnOnce() -> R) -> R {
    let f = AssertSend(f);
    rayon::scope(move |_| {
        let f = f;
        let _guard = tch::no_grad_guard();
        let _threads = SerialTorch::new();
        (f.0)()
    })
}

/// Runs LibTorch's own operations on one thread while alive. During a quantised pass the
/// block kernels use rayon's threads; LibTorch's OpenMP workers, which spin for a while after
/// each parallel region, would otherwise take the same cores from them (measured: 30 ms per
/// token instead of 21 on two cores).
///
/// LibTorch's thread count is partly per thread (OpenMP's) and partly process-wide (the value
/// new threads start with), so when two threads run models at once, one of them can start with
/// the single thread another one's guard set, for as long as it lives. That costs speed only.
pub(super) struct SerialTorch(i32);

impl SerialTorch {
    pub(super) fn new() -> Self {
        let threads = tch::get_num_threads();
        if threads != 1 {
            tch::set_num_threads(1);
        }
        Self(threads)
    }
}

impl Drop for SerialTorch {
    fn drop(&mut self) {
        if self.0 != 1 {
            tch::set_num_threads(self.0);
        }
    }
}
