//! CPU kernels for convolutional networks, channels-last (NHWC) f32:
//! pointwise (1×1) and dense convolutions as one matrix product each
//! (the `gemm` crate: runtime-dispatched AVX2/AVX-512, all cores),
//! depthwise convolutions with explicit SIMD (`pulp`, runtime-dispatched),
//! bias and ReLU6 fused into each, a residual added inside the product.
//!
//! Batch-norm is folded into the convolution before it at load time
//! ([`fold_batch_norm`]), so inference runs convolution + bias only.
//! Candle's generic `conv2d` runs a grouped (depthwise) convolution as one
//! small convolution per channel, which is what made a naive port two
//! orders of magnitude slower than the hardware.

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// A feature map, `n × h × w × c`, channels innermost.
#[derive(Debug, Clone, PartialEq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Nhwc {
    /// Zeros of the given shape.
    pub fn zeros(n: usize, h: usize, w: usize, c: usize) -> Self {
        Self {
            n,
            h,
            w,
            c,
            data: vec![0.0; n * h * w * c],
        }
    }

    /// Pixels (`n · h · w`), the rows of a pointwise product.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// The activation after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Self::None => v,
            Self::Relu6 => v.clamp(0.0, 6.0),
            Self::Relu => v.max(0.0),
        }
    }

    fn apply_all(self, data: &mut [f32]) {
        if self != Self::None {
            data.par_chunks_mut(1 << 14)
                .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = self.apply(*v)));
        }
    }
}

/// `dst (m×n) += a (m×k) · b (k×n)`, all row-major, on every core.
#[allow(unsafe_code)]
pub fn matmul_acc(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(dst.len(), m * n, "matmul_acc: destination size");
    assert_eq!(a.len(), m * k, "matmul_acc: left operand size");
    assert_eq!(b.len(), k * n, "matmul_acc: right operand size");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the three slices hold exactly m·n, m·k and k·n elements
    // (asserted above), row-major with the strides given, and `dst` is
    // borrowed mutably, so it aliases neither operand. gemm computes
    // dst := 1·dst + 1·(a·b) within those bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// A 1×1 convolution: weights `cin × cout`, bias `cout`.
#[derive(Debug, Clone)]
pub struct Pointwise {
    pub cin: usize,
    pub cout: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Pointwise {
    /// From PyTorch's `[cout, cin, 1, 1]` (or `[cout, cin]` for a linear
    /// layer) weights, scaled per output channel, plus a bias.
    pub fn from_torch(
        weight: &[f32],
        cout: usize,
        cin: usize,
        scale: &[f32],
        bias: Vec<f32>,
    ) -> Self {
        let mut w = vec![0.0; cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                w[i * cout + o] = weight[o * cin + i] * scale[o];
            }
        }
        Self {
            cin,
            cout,
            weight: w,
            bias,
        }
    }

    /// `act(x · W + b [+ residual])`.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, act: Activation) -> Nhwc {
        product(
            (x.n, x.h, x.w),
            &x.data,
            self.cin,
            &self.weight,
            &self.bias,
            residual,
            act,
        )
    }
}

/// `act(inputs · weight + bias [+ residual])` as one feature map of shape
/// `shape × bias.len()`: the destination starts as the bias (plus the
/// residual), the product accumulates into it, the activation runs in
/// place. `inputs` holds `n·h·w` rows of `k` values.
fn product(
    (n, h, w): (usize, usize, usize),
    inputs: &[f32],
    k: usize,
    weight: &[f32],
    bias: &[f32],
    residual: Option<&Nhwc>,
    act: Activation,
) -> Nhwc {
    let rows = n * h * w;
    let cout = bias.len();
    let mut data = Vec::with_capacity(rows * cout);
    match residual {
        Some(r) => {
            debug_assert_eq!(r.data.len(), rows * cout);
            data.extend(
                r.data
                    .chunks_exact(cout)
                    .flat_map(|px| px.iter().zip(bias).map(|(a, b)| a + b)),
            );
        }
        None => {
            for _ in 0..rows {
                data.extend_from_slice(bias);
            }
        }
    }
    matmul_acc(&mut data, inputs, weight, rows, k, cout);
    act.apply_all(&mut data);
    Nhwc {
        n,
        h,
        w,
        c: cout,
        data,
    }
}

/// TensorFlow's `SAME` padding for one dimension: output `ceil(in / s)`,
/// the total padding split with the odd pixel after.
pub fn same_padding(input: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + k).saturating_sub(input);
    (out, total / 2)
}

/// Where a convolution's window starts: output size and padding before,
/// per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow's `SAME` (EfficientNet's checkpoints, converted from TF).
    Same,
    /// PyTorch's symmetric zero padding of this many pixels.
    Symmetric(usize),
}

impl Padding {
    pub fn geometry(self, h: usize, w: usize, k: usize, stride: usize) -> Geometry {
        match self {
            Self::Same => {
                let (out_h, pad_top) = same_padding(h, k, stride);
                let (out_w, pad_left) = same_padding(w, k, stride);
                Geometry {
                    out_h,
                    out_w,
                    pad_top,
                    pad_left,
                }
            }
            Self::Symmetric(p) => Geometry {
                out_h: (h + 2 * p).saturating_sub(k) / stride + 1,
                out_w: (w + 2 * p).saturating_sub(k) / stride + 1,
                pad_top: p,
                pad_left: p,
            },
        }
    }
}

/// A dense k×k convolution (a stem or a ResNet layer), as im2col + one
/// product: weights `(k·k·cin) × cout`, rows ordered (ky, kx, ci).
#[derive(Debug, Clone)]
pub struct Dense {
    pub k: usize,
    pub stride: usize,
    pub padding: Padding,
    pub cin: usize,
    pub cout: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    /// From PyTorch's `[cout, cin, k, k]` weights, scaled per output
    /// channel, plus a bias.
    #[allow(clippy::too_many_arguments)]
    pub fn from_torch(
        weight: &[f32],
        cout: usize,
        cin: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        scale: &[f32],
        bias: Vec<f32>,
    ) -> Self {
        let mut w = vec![0.0; k * k * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let row = (ky * k + kx) * cin + i;
                        w[row * cout + o] = weight[((o * cin + i) * k + ky) * k + kx] * scale[o];
                    }
                }
            }
        }
        Self {
            k,
            stride,
            padding,
            cin,
            cout,
            weight: w,
            bias,
        }
    }

    /// `act(conv(x) + b [+ residual])`.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, act: Activation) -> Nhwc {
        if self.k == 1 && self.stride == 1 {
            // The input is its own patch matrix.
            return product(
                (x.n, x.h, x.w),
                &x.data,
                self.cin,
                &self.weight,
                &self.bias,
                residual,
                act,
            );
        }
        let g = self.padding.geometry(x.h, x.w, self.k, self.stride);
        let cols = self.k * self.k * self.cin;
        let rows = x.n * g.out_h * g.out_w;
        let mut patches = vec![0.0f32; rows * cols];
        patches
            .par_chunks_mut(g.out_w * cols)
            .enumerate()
            .for_each(|(row_index, dst)| {
                let (b, oy) = (row_index / g.out_h, row_index % g.out_h);
                let image = &x.data[b * x.h * x.w * x.c..(b + 1) * x.h * x.w * x.c];
                for ox in 0..g.out_w {
                    let patch = &mut dst[ox * cols..(ox + 1) * cols];
                    for ky in 0..self.k {
                        let iy = (oy * self.stride + ky) as isize - g.pad_top as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..self.k {
                            let ix = (ox * self.stride + kx) as isize - g.pad_left as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            let src = (iy as usize * x.w + ix as usize) * x.c;
                            let at = (ky * self.k + kx) * self.cin;
                            patch[at..at + self.cin].copy_from_slice(&image[src..src + self.cin]);
                        }
                    }
                }
            });
        product(
            (x.n, g.out_h, g.out_w),
            &patches,
            cols,
            &self.weight,
            &self.bias,
            residual,
            act,
        )
    }
}

/// A depthwise k×k convolution: weights `(k·k) × c`, bias `c`.
#[derive(Debug, Clone)]
pub struct Depthwise {
    pub k: usize,
    pub stride: usize,
    pub padding: Padding,
    pub c: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Depthwise {
    /// From PyTorch's `[c, 1, k, k]` weights, scaled per channel, plus a
    /// bias.
    pub fn from_torch(
        weight: &[f32],
        c: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        scale: &[f32],
        bias: Vec<f32>,
    ) -> Self {
        let mut w = vec![0.0; k * k * c];
        for ch in 0..c {
            for tap in 0..k * k {
                w[tap * c + ch] = weight[ch * k * k + tap] * scale[ch];
            }
        }
        Self {
            k,
            stride,
            padding,
            c,
            weight: w,
            bias,
        }
    }

    /// `act(depthwise(x) + b)`, one output row per task.
    pub fn forward(&self, x: &Nhwc, act: Activation) -> Nhwc {
        debug_assert_eq!(x.c, self.c);
        let g = self.padding.geometry(x.h, x.w, self.k, self.stride);
        let mut out = Nhwc::zeros(x.n, g.out_h, g.out_w, self.c);
        let row_len = g.out_w * self.c;
        let arch = pulp::Arch::new();
        out.data
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(row_index, dst)| {
                let (b, oy) = (row_index / g.out_h, row_index % g.out_h);
                let image = &x.data[b * x.h * x.w * x.c..(b + 1) * x.h * x.w * x.c];
                arch.dispatch(DepthwiseRow {
                    conv: self,
                    image,
                    h: x.h,
                    w: x.w,
                    geometry: g,
                    oy,
                    act,
                    dst,
                });
            });
        out
    }
}

/// One output row of a depthwise convolution, vectorised across channels.
struct DepthwiseRow<'a> {
    conv: &'a Depthwise,
    image: &'a [f32],
    h: usize,
    w: usize,
    geometry: Geometry,
    oy: usize,
    act: Activation,
    dst: &'a mut [f32],
}

impl WithSimd for DepthwiseRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            conv,
            image,
            h,
            w,
            geometry: g,
            oy,
            act,
            dst,
        } = self;
        let c = conv.c;
        let zero = simd.splat_f32s(0.0);
        let six = simd.splat_f32s(6.0);
        for (ox, out) in dst.chunks_exact_mut(c).enumerate() {
            out.copy_from_slice(&conv.bias);
            let (out_v, out_t) = S::as_mut_simd_f32s(out);
            for ky in 0..conv.k {
                let iy = (oy * conv.stride + ky) as isize - g.pad_top as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..conv.k {
                    let ix = (ox * conv.stride + kx) as isize - g.pad_left as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = (iy as usize * w + ix as usize) * c;
                    let tap = ky * conv.k + kx;
                    let (x_v, x_t) = S::as_simd_f32s(&image[src..src + c]);
                    let (w_v, w_t) = S::as_simd_f32s(&conv.weight[tap * c..(tap + 1) * c]);
                    for ((o, a), b) in out_v.iter_mut().zip(x_v).zip(w_v) {
                        *o = simd.mul_add_f32s(*a, *b, *o);
                    }
                    for ((o, a), b) in out_t.iter_mut().zip(x_t).zip(w_t) {
                        *o = a.mul_add(*b, *o);
                    }
                }
            }
            match act {
                Activation::None => {}
                Activation::Relu6 => {
                    for o in out_v.iter_mut() {
                        *o = simd.min_f32s(simd.max_f32s(*o, zero), six);
                    }
                }
                Activation::Relu => {
                    for o in out_v.iter_mut() {
                        *o = simd.max_f32s(*o, zero);
                    }
                }
            }
            for o in out_t.iter_mut() {
                *o = act.apply(*o);
            }
        }
    }
}

/// How bytes become a network's input: `byte · scale − shift` per
/// channel, i.e. `(byte / 255 − mean) / std` with mean and std on the 0–1
/// scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputScaling {
    scale: [f32; 3],
    shift: [f32; 3],
}

impl InputScaling {
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            scale: std.map(|s| 1.0 / (255.0 * s)),
            shift: [0, 1, 2].map(|c| mean[c] / std[c]),
        }
    }

    /// `n` RGB images of `size`², bytes interleaved row by row, as a
    /// normalised feature map.
    pub fn apply(&self, rgb: &[u8], n: usize, size: usize) -> Nhwc {
        let data = rgb
            .chunks_exact(3)
            .flat_map(|px| (0..3).map(move |c| f32::from(px[c]) * self.scale[c] - self.shift[c]))
            .collect();
        Nhwc {
            n,
            h: size,
            w: size,
            c: 3,
            data,
        }
    }
}

/// A classifier's head: the global average of each image's features
/// through the final linear layer; logits, `n × classes`.
pub fn pool_and_classify(x: &Nhwc, fc: &Pointwise) -> Vec<f32> {
    let pooled = Nhwc {
        n: x.n,
        h: 1,
        w: 1,
        c: x.c,
        data: global_average_pool(x),
    };
    fc.forward(&pooled, None, Activation::None).data
}

/// The mean over each image's pixels: `n × c`.
pub fn global_average_pool(x: &Nhwc) -> Vec<f32> {
    let plane = x.h * x.w;
    let mut out = vec![0.0f32; x.n * x.c];
    for (b, dst) in out.chunks_exact_mut(x.c).enumerate() {
        let image = &x.data[b * plane * x.c..(b + 1) * plane * x.c];
        for px in image.chunks_exact(x.c) {
            for (d, v) in dst.iter_mut().zip(px) {
                *d += v;
            }
        }
        let inv = 1.0 / plane as f32;
        dst.iter_mut().for_each(|d| *d *= inv);
    }
    out
}

/// Max pooling, k×k with the given stride and symmetric padding (ResNet's
/// stem); padded pixels never win.
pub fn max_pool(x: &Nhwc, k: usize, stride: usize, pad: usize) -> Nhwc {
    let g = Padding::Symmetric(pad).geometry(x.h, x.w, k, stride);
    let mut out = Nhwc::zeros(x.n, g.out_h, g.out_w, x.c);
    let row_len = g.out_w * x.c;
    out.data
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row_index, dst)| {
            let (b, oy) = (row_index / g.out_h, row_index % g.out_h);
            let image = &x.data[b * x.h * x.w * x.c..(b + 1) * x.h * x.w * x.c];
            for (ox, px) in dst.chunks_exact_mut(x.c).enumerate() {
                px.fill(f32::NEG_INFINITY);
                for ky in 0..k {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= x.h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix < 0 || ix >= x.w as isize {
                            continue;
                        }
                        let src = (iy as usize * x.w + ix as usize) * x.c;
                        for (d, v) in px.iter_mut().zip(&image[src..src + x.c]) {
                            *d = d.max(*v);
                        }
                    }
                }
            }
        });
    out
}

/// Batch-norm statistics of one layer.
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub eps: f32,
}

/// Folds a batch-norm after a bias-free convolution: the per-output-channel
/// scale for its weights and the bias that replaces both.
pub fn fold_batch_norm(bn: BatchNorm<'_>) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = bn
        .gamma
        .iter()
        .zip(bn.var)
        .map(|(g, v)| g / (v + bn.eps).sqrt())
        .collect();
    let bias = bn
        .beta
        .iter()
        .zip(bn.mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, bias)
}

/// Softmax of each row of `logits` (`rows × classes`), in place.
pub fn softmax_rows(logits: &mut [f32], classes: usize) {
    for row in logits.chunks_exact_mut(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The `k` largest entries of `row`, largest first: (index, value).
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    if k == 0 {
        return vec![];
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().map(|i| (i, row[i])).collect()
}

/// `x (rows × k) · wᵀ + bias` for a few rows, with `w` in PyTorch's
/// `[n, k]` layout: each weight row is read once and dotted with every
/// input row (vectorised, rows of `w` spread over all cores). For the
/// one-token steps of a decoder, where a general matrix product spends its
/// time packing the weights it then uses once.
pub fn few_rows_matmul_t(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
) -> Vec<f32> {
    let n = w.len().checked_div(k).unwrap_or(0);
    let mut out = vec![0f32; rows * n];
    // Output transposed while computing (`n × rows`), so that each task
    // owns a contiguous block.
    let mut t = vec![0f32; n * rows];
    let arch = pulp::Arch::new();
    t.par_chunks_mut(rows.max(1) * 256)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let first = chunk * 256;
            for (j, cell) in dst.chunks_exact_mut(rows.max(1)).enumerate() {
                let o = first + j;
                let row_w = &w[o * k..(o + 1) * k];
                for (r, c) in cell.iter_mut().enumerate() {
                    *c = arch.dispatch(Dot {
                        a: &x[r * k..(r + 1) * k],
                        b: row_w,
                    }) + bias.map_or(0.0, |b| b[o]);
                }
            }
        });
    for o in 0..n {
        for r in 0..rows {
            out[r * n + o] = t[o * rows + r];
        }
    }
    out
}

struct Dot<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (a, at) = S::as_simd_f32s(self.a);
        let (b, bt) = S::as_simd_f32s(self.b);
        let mut acc = [simd.splat_f32s(0.0); 4];
        let mut chunks_a = a.chunks_exact(4);
        let mut chunks_b = b.chunks_exact(4);
        for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
            for i in 0..4 {
                acc[i] = simd.mul_add_f32s(ca[i], cb[i], acc[i]);
            }
        }
        for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
            acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
        }
        let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut total = simd.reduce_sum_f32s(sum);
        for (x, y) in at.iter().zip(bt) {
            total += x * y;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SplitMix;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix::new(seed);
        (0..n).map(|_| r.next_f32(1.0)).collect()
    }

    /// A direct NCHW-free reference convolution (groups 1 or c).
    #[allow(clippy::too_many_arguments)]
    fn reference_conv(
        x: &Nhwc,
        weight: &[f32],
        cout: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        depthwise: bool,
        bias: &[f32],
    ) -> Nhwc {
        let g = padding.geometry(x.h, x.w, k, stride);
        let mut out = Nhwc::zeros(x.n, g.out_h, g.out_w, cout);
        let cin_per = if depthwise { 1 } else { x.c };
        for b in 0..x.n {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for o in 0..cout {
                        let mut acc = bias[o] as f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - g.pad_top as isize;
                                let ix = (ox * stride + kx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                for i in 0..cin_per {
                                    let ci = if depthwise { o } else { i };
                                    let v = x.data
                                        [((b * x.h + iy as usize) * x.w + ix as usize) * x.c + ci];
                                    let wv = weight[((o * cin_per + i) * k + ky) * k + kx];
                                    acc += (v * wv) as f64;
                                }
                            }
                        }
                        out.data[((b * g.out_h + oy) * g.out_w + ox) * cout + o] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-4, "element {i}: {x} vs {y}");
        }
    }

    fn input(n: usize, h: usize, w: usize, c: usize) -> Nhwc {
        Nhwc {
            n,
            h,
            w,
            c,
            data: random(n * h * w * c, 7),
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0));
        assert_eq!(same_padding(56, 5, 2), (28, 1));
        assert_eq!(same_padding(14, 5, 1), (14, 2));
        assert_eq!(same_padding(7, 3, 1), (7, 1));
    }

    #[test]
    fn depthwise_matches_direct_convolution() {
        // 19 channels: a SIMD body and a scalar tail.
        for (k, stride, padding) in [
            (3, 1, Padding::Same),
            (5, 2, Padding::Same),
            (3, 2, Padding::Symmetric(1)),
        ] {
            let x = input(2, 9, 11, 19);
            let weight = random(19 * k * k, 3);
            let bias = random(19, 4);
            let conv =
                Depthwise::from_torch(&weight, 19, k, stride, padding, &[1.0; 19], bias.clone());
            let got = conv.forward(&x, Activation::None);
            let want = reference_conv(&x, &weight, 19, k, stride, padding, true, &bias);
            assert_eq!((got.h, got.w), (want.h, want.w));
            close(&got.data, &want.data);
            let relu6 = conv.forward(&x, Activation::Relu6);
            let clamped: Vec<f32> = want.data.iter().map(|v| v.clamp(0.0, 6.0)).collect();
            close(&relu6.data, &clamped);
        }
    }

    #[test]
    fn dense_and_pointwise_match_direct_convolution() {
        let x = input(2, 8, 7, 5);
        for (k, stride, padding) in [
            (3, 2, Padding::Same),
            (7, 2, Padding::Symmetric(3)),
            (1, 1, Padding::Same),
        ] {
            let weight = random(6 * 5 * k * k, 11);
            let bias = random(6, 12);
            let conv =
                Dense::from_torch(&weight, 6, 5, k, stride, padding, &[1.0; 6], bias.clone());
            let got = conv.forward(&x, None, Activation::None);
            let want = reference_conv(&x, &weight, 6, k, stride, padding, false, &bias);
            close(&got.data, &want.data);
        }
        // A residual is added before the activation.
        let weight = random(5 * 5, 13);
        let pw = Pointwise::from_torch(&weight, 5, 5, &[1.0; 5], vec![0.0; 5]);
        let plain = pw.forward(&x, None, Activation::None);
        let with = pw.forward(&x, Some(&x), Activation::Relu);
        let want: Vec<f32> = plain
            .data
            .iter()
            .zip(&x.data)
            .map(|(a, b)| (a + b).max(0.0))
            .collect();
        close(&with.data, &want);
    }

    #[test]
    fn folded_batch_norm_equals_batch_norm_after_the_convolution() {
        let x = input(1, 5, 5, 3);
        let weight = random(4 * 3 * 9, 21);
        let (gamma, beta, mean) = (random(4, 22), random(4, 23), random(4, 24));
        let var: Vec<f32> = random(4, 25).iter().map(|v| v.abs() + 0.1).collect();
        let bn = BatchNorm {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            var: &var,
            eps: 1e-3,
        };
        let (scale, bias) = fold_batch_norm(bn);
        let folded = Dense::from_torch(&weight, 4, 3, 3, 1, Padding::Same, &scale, bias).forward(
            &x,
            None,
            Activation::None,
        );
        let plain = reference_conv(&x, &weight, 4, 3, 1, Padding::Same, false, &[0.0; 4]);
        let want: Vec<f32> = plain
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let o = i % 4;
                (v - mean[o]) / (var[o] + 1e-3).sqrt() * gamma[o] + beta[o]
            })
            .collect();
        close(&folded.data, &want);
    }

    #[test]
    fn few_rows_product_matches_a_plain_one() {
        let (rows, k, n) = (3, 37, 300);
        let x = random(rows * k, 31);
        let w = random(n * k, 32);
        let bias = random(n, 33);
        let got = few_rows_matmul_t(&x, &w, Some(&bias), rows, k);
        let mut want = vec![0f32; rows * n];
        for r in 0..rows {
            for o in 0..n {
                want[r * n + o] =
                    bias[o] + (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum::<f32>();
            }
        }
        close(&got, &want);
    }

    #[test]
    fn pooling_softmax_and_top_k() {
        let x = Nhwc {
            n: 1,
            h: 2,
            w: 2,
            c: 2,
            data: vec![1.0, -1.0, 3.0, -2.0, 5.0, -3.0, 7.0, -4.0],
        };
        assert_eq!(global_average_pool(&x), vec![4.0, -2.5]);
        let pooled = max_pool(&x, 3, 2, 1);
        assert_eq!(
            (pooled.h, pooled.w, pooled.data.clone()),
            (1, 1, vec![7.0, -1.0])
        );
        let mut logits = vec![1.0, 3.0, 2.0, 3.0];
        softmax_rows(&mut logits, 4);
        assert!((logits.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let top = top_k(&logits, 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
    }
}
