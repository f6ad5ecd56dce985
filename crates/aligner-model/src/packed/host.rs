//! The host step: a short pass computed in f32 on the host with the block kernels, reading and
//! writing the KV caches' buffers in place.

use tch::{Device, Kind, Tensor};

use super::QUANT_MAX_ROWS;
use super::model::PackedLlama;
use super::weights::WeightFormat;
use crate::cache::KvCache;
use crate::llama::pass_context;
use crate::{Error, Result, decode};

impl PackedLlama {
    /// A pass of `t` tokens per row computed on the host in f32 with the block kernels, reading
    /// and writing the caches' buffers in place: a few LibTorch calls per pass instead of a few
    /// dozen per layer. The rows are those of every cache in turn (`ids` holds each row's `t`
    /// tokens in order), each attending over its own cache, while the projections run on all
    /// rows' tokens together. With `t > 1` (one sequence's prompt or draft) the caches must
    /// have no padding mask: token `j` sees the cache and tokens `0..=j`. Each token's result
    /// is bit for bit that of feeding the tokens one at a time: the projections give a row the
    /// same bits alone or in a tile, and everything else is computed per token. Returns the
    /// normed hidden states `(rows * t, hidden)`.
    pub(super) fn host_step(
        &self,
        ids: &[i64],
        t: usize,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (width, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let host = |t: &Tensor| Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1]));
        // Per cache: rows, cached length, rotary tables and (with padding) visible positions.
        let mut seqs = Vec::with_capacity(caches.len());
        for cache in caches.iter_mut() {
            let (b, len) = (cache.batch(), cache.len());
            let total = len + t;
            let ctx = pass_context(&self.rotary, self.kind, self.device, t as i64, cache, None);
            let allowed = match cache.key_mask() {
                Some(_) if t > 1 => {
                    return Err(Error::InvalidArgument(
                        "a host pass of several tokens takes caches without padding".into(),
                    ));
                }
                Some(m) => {
                    let mut a = Vec::<bool>::try_from(m.reshape([-1]))?;
                    // A row's new token always sees itself, as on the LibTorch path.
                    a.chunks_exact_mut(total).for_each(|r| r[len] = true);
                    Some(a)
                }
                None => None,
            };
            seqs.push((b, len, host(&ctx.cos)?, host(&ctx.sin)?, allowed));
        }
        let rows = seqs.iter().map(|s| s.0).sum::<usize>() * t;
        let ids = Tensor::from_slice(ids).to_device(self.device);
        let mut x = host(&Tensor::embedding(
            &self.embed_tokens,
            &ids,
            -1,
            false,
            false,
        ))?;
        let mut h = vec![0f32; rows * width];
        let stride = (nh + 2 * nkv) * hd;
        for (i, layer) in self.layers.iter().enumerate() {
            decode::rms_norm(&x, &layer.input_norm.host, eps, &mut h);
            let mut qkv = layer.qkv.matmul_rows(&h, rows)?;
            let mut attn = Vec::with_capacity(rows * nh * hd);
            let mut qkv_rows = qkv.chunks_exact_mut(stride);
            for (cache, (b, len, cos, sin, allowed)) in caches.iter_mut().zip(&seqs) {
                let (b, len) = (*b, *len);
                let total = len + t;
                let (kb, vb) =
                    cache.reserve(i, total, &[b as i64, nkv as i64, 0, hd as i64], Kind::Float);
                let cap = kb.size()[2] as usize;
                // SAFETY: `reserve` returns contiguous f32 CPU buffers of `b * nkv * cap * hd`
                // values, owned by `cache`, which this function borrows mutably: nothing else
                // reads or writes them meanwhile, and the slices die before the buffers can.
                let (keys, values) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(kb.data_ptr().cast::<f32>(), kb.numel()),
                        std::slice::from_raw_parts_mut(vb.data_ptr().cast::<f32>(), vb.numel()),
                    )
                };
                for r in 0..b {
                    // Rotate and cache the row's new keys and values first: token `j` attends
                    // to those of tokens `0..=j`.
                    let mut tokens: Vec<&mut [f32]> = (&mut qkv_rows).take(t).collect();
                    for (j, this) in tokens.iter_mut().enumerate() {
                        let at = (r * t + j) * hd;
                        decode::rope(
                            &mut this[..(nh + nkv) * hd],
                            &cos[at..at + hd],
                            &sin[at..at + hd],
                        );
                        for g in 0..nkv {
                            let at = ((r * nkv + g) * cap + len + j) * hd;
                            keys[at..at + hd]
                                .copy_from_slice(&this[(nh + g) * hd..(nh + g + 1) * hd]);
                            values[at..at + hd].copy_from_slice(
                                &this[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd],
                            );
                        }
                    }
                    let span = r * nkv * cap * hd..(r + 1) * nkv * cap * hd;
                    let kv = decode::KvRow {
                        keys: &keys[span.clone()],
                        values: &values[span],
                        capacity: cap,
                    };
                    let visible = allowed.as_ref().map(|a| &a[r * total..(r + 1) * total]);
                    for (j, this) in tokens.iter().enumerate() {
                        attn.extend(decode::attend(
                            &this[..nh * hd],
                            &kv,
                            len + j + 1,
                            visible,
                            nh,
                            nkv,
                            hd,
                        ));
                    }
                }
            }
            let o = layer.o.matmul_rows(&attn, rows)?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            decode::rms_norm(&x, &layer.post_norm.host, eps, &mut h);
            let act = decode::swiglu(&layer.gate_up.matmul_rows(&h, rows)?, inter);
            let down = layer.down.matmul_rows(&act, rows)?;
            x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
        }
        caches.iter_mut().for_each(|cache| cache.commit(t));
        decode::rms_norm(&x, &self.norm.host, eps, &mut h);
        Ok(Tensor::from_slice(&h).view([rows as i64, width as i64]))
    }

    /// Whether a pass of `rows` tokens in all may run on [`Self::host_step`].
    pub(super) fn host_eligible(&self, rows: usize) -> bool {
        rows as i64 <= QUANT_MAX_ROWS
            && self.device == Device::Cpu
            && self.kind == Kind::Float
            && self.format != WeightFormat::Dense
    }
}
