//! Matrix multiplication against quantized weights on the CPU: Q4_1 and
//! Q8_0 (and Q5_0, widened to Q8_0) here with AVX2 dot products, Q4_0 in
//! [`crate::q4_0`], Q4_K, Q5_K and Q6_K in [`crate::kquant`] (repacked to
//! the panels of [`crate::panel`] on CPUs with AVX-512 VNNI), F16 and BF16
//! in [`crate::wide`]. candle 0.11 runs Q4_1 through
//! its generic scalar code, which made it the largest cost of every forward
//! pass (the default LLM's layers are all Q4_1; its output matrix is Q8_0).
//!
//! The numerics are ggml's (`ggml_vec_dot_q4_1_q8_1`,
//! `ggml_vec_dot_q8_0_q8_0`): each row of activations is quantized to 8-bit
//! blocks of 32 (an f16 scale `d`, and for Q4_1 `s = d * sum(q)`); a Q4_1
//! block's dot product is `d_w * d_x * sum(q_w * q_x) + m_w * s_x`, a Q8_0
//! block's `d_w * d_x * sum(q_w * q_x)`, summed in the same lanes and order
//! as ggml's AVX2 code, so greedy output follows llama.cpp's where logits
//! nearly tie. Scales are widened to f32 once, at load, so the inner loop
//! converts nothing.
//!
//! Work is split over output columns on candle's CPU thread pool, the one
//! its own quantized kernels use, so hearth never runs two pools at once.

use crate::blocks::{BlockQ4, BlockQ8, QK};
use crate::kquant::{
    dot_q4_k, dot_q5_k, dot_q6_k, quantize_q8_k, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};
use crate::panel::{self, PanelQ4K, PanelQ4_0, PanelQ5K, PanelQ6K};
use crate::q4_0::{self, GroupQ4_0, GroupX};
use crate::rows8::{self, Dot8Fn, Rows8};
use crate::simd::hsum;
use crate::wide::{self, Kind};
use crate::wide_panels::{Bf16, Bf16Panels, F16Panels, Format, F16};
use crate::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

/// The weights' blocks, row-major, the same number for every row: blocks
/// of 32 or 256 (the K-quants) weights, groups of 16 Q4_0 blocks, or single
/// 16-bit floats.
enum Blocks {
    Q4_1(Vec<BlockQ4>),
    /// Q8_0, and Q5_0 widened to it at load (see [`QMatrix::from_qtensor`]).
    Q8_0(Vec<BlockQ8>),
    Q4_0(Vec<GroupQ4_0>),
    /// Q4_0 repacked to panels (pairs of blocks), where the CPU has the
    /// panel kernels (AVX-512 VNNI) and the shape allows.
    Q4_0Panels(Vec<PanelQ4_0>),
    Q4K(Vec<BlockQ4K>),
    /// Q4_K repacked sixteen rows to a panel, where the CPU has the panel
    /// kernel (AVX-512 VNNI) and the row count allows.
    Q4KPanels(Vec<PanelQ4K>),
    Q5K(Vec<BlockQ5K>),
    /// Q5_K repacked to panels, likewise.
    Q5KPanels(Vec<PanelQ5K>),
    Q6K(Vec<BlockQ6K>),
    /// Q6_K repacked to panels, likewise.
    Q6KPanels(Vec<PanelQ6K>),
    /// F16 or BF16 bits.
    Wide(Kind, Vec<u16>),
    /// BF16 packed sixteen rows to a panel for `vdpbf16ps`, where the CPU
    /// has AVX512-BF16 and the shape allows.
    Bf16Panels(Bf16Panels),
    /// F16 packed sixteen rows to a panel, where the CPU has AVX-512 and
    /// the shape allows.
    F16Panels(F16Panels),
}

impl Blocks {
    fn len(&self) -> usize {
        match self {
            Self::Q4_1(b) => b.len(),
            Self::Q8_0(b) => b.len(),
            Self::Q4_0(b) => b.len(),
            Self::Q4_0Panels(b) => b.len() * panel::ROWS,
            Self::Q4K(b) => b.len(),
            Self::Q4KPanels(b) => b.len() * panel::ROWS,
            Self::Q5K(b) => b.len(),
            Self::Q6K(b) => b.len(),
            Self::Q5KPanels(b) => b.len() * panel::ROWS,
            Self::Q6KPanels(b) => b.len() * panel::ROWS,
            Self::Wide(_, b) => b.len(),
            Self::Bf16Panels(b) => b.n() * b.k(),
            Self::F16Panels(b) => b.n() * b.k(),
        }
    }

    /// How many a row of `k` weights takes.
    fn per_row(&self, k: usize) -> usize {
        match self {
            Self::Q4_1(_) | Self::Q8_0(_) => k / QK,
            Self::Q4_0(_) => q4_0::groups_per_row(k),
            Self::Q4_0Panels(_) => k / (2 * QK),
            Self::Q4K(_)
            | Self::Q4KPanels(_)
            | Self::Q5KPanels(_)
            | Self::Q5K(_)
            | Self::Q6K(_)
            | Self::Q6KPanels(_) => k / QK_K,
            Self::Wide(..) | Self::Bf16Panels(_) | Self::F16Panels(_) => k,
        }
    }

    /// Whether the activations go in as 8-bit blocks of 32 (Q8_0/Q8_1).
    fn takes_q8(&self) -> bool {
        matches!(
            self,
            Self::Q4_1(_) | Self::Q8_0(_) | Self::Q4_0(_) | Self::Q4_0Panels(_)
        )
    }

    /// Whether the activations go in as Q8_K blocks of 256.
    fn takes_q8_k(&self) -> bool {
        matches!(
            self,
            Self::Q4K(_)
                | Self::Q4KPanels(_)
                | Self::Q5K(_)
                | Self::Q5KPanels(_)
                | Self::Q6K(_)
                | Self::Q6KPanels(_)
        )
    }

    /// Output columns per work item: a panel (two for the 16-bit floats),
    /// or four rows.
    fn unit(&self) -> usize {
        match self {
            Self::Q4KPanels(_) | Self::Q5KPanels(_) | Self::Q6KPanels(_) | Self::Q4_0Panels(_) => {
                panel::ROWS
            }
            Self::Bf16Panels(_) | Self::F16Panels(_) => F16Panels::UNIT,
            _ => 4,
        }
    }
}

/// A `[n, k]` quantized weight matrix, applied as `x @ W^T`.
pub struct QMatrix {
    n: usize,
    k: usize,
    blocks: Blocks,
}

impl QMatrix {
    /// Whether [`QMatrix::from_qtensor`] takes tensors of this type.
    pub fn supports(dtype: GgmlDType) -> bool {
        matches!(
            dtype,
            GgmlDType::Q4_0
                | GgmlDType::Q4_1
                | GgmlDType::Q8_0
                | GgmlDType::Q5_0
                | GgmlDType::Q4K
                | GgmlDType::Q5K
                | GgmlDType::Q6K
                | GgmlDType::F16
                | GgmlDType::BF16
        )
    }

    /// Take a Q4_0, Q4_1, Q8_0, Q5_0, Q4_K, Q5_K, Q6_K, F16 or BF16 tensor's
    /// blocks (`[n, k]`, `k` a multiple of the block size, and of 32 for
    /// F16 and BF16). Q5_0 blocks are widened to Q8_0's
    /// layout (their 5-bit weights minus 16 as int8 under the same f16
    /// scale): ggml multiplies Q5_0 by Q8_0 activations exactly as it
    /// multiplies Q8_0 weights, so the Q8_0 kernel gives its bits, at 36
    /// bytes per 32 weights instead of 22.
    pub fn from_qtensor(t: &QTensor) -> Result<Self> {
        let dtype = t.dtype();
        if !Self::supports(dtype) {
            return Err(Error::Model(format!(
                "expected Q4_0, Q4_1, Q8_0, Q5_0, Q4_K, Q5_K, Q6_K, F16 or BF16, got {dtype:?}"
            )));
        }
        let (n, k) = t
            .shape()
            .dims2()
            .map_err(|e| Error::Model(format!("{dtype:?} weight: {e}")))?;
        let block = match dtype {
            GgmlDType::F16 | GgmlDType::BF16 => QK,
            _ => dtype.block_size(),
        };
        if !k.is_multiple_of(block) {
            return Err(Error::Model(format!(
                "{dtype:?} row length {k} is not a multiple of {block}"
            )));
        }
        let data = t.data()?;
        let expected = n * k / dtype.block_size() * dtype.type_size();
        if data.len() != expected {
            return Err(Error::Model(format!(
                "{dtype:?} weight [{n}, {k}] holds {} bytes, not {expected}",
                data.len()
            )));
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let bits = || -> Vec<u16> {
            data.chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        let blocks = match dtype {
            GgmlDType::Q4_1 => Blocks::Q4_1(
                data.chunks_exact(20)
                    .map(|b| BlockQ4 {
                        d: half(&b[0..2]),
                        m: half(&b[2..4]),
                        qs: b[4..20].try_into().expect("16 bytes"),
                    })
                    .collect(),
            ),
            GgmlDType::Q8_0 => Blocks::Q8_0(
                data.chunks_exact(34)
                    .map(|b| BlockQ8 {
                        d: half(&b[0..2]),
                        s: 0.0,
                        qs: std::array::from_fn(|i| b[2 + i] as i8),
                    })
                    .collect(),
            ),
            GgmlDType::Q5_0 => Blocks::Q8_0(
                data.chunks_exact(22)
                    .map(|b| {
                        // Low nibbles are weights 0..16, high ones 16..32;
                        // bit i of qh is weight i's fifth bit.
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        let qs = &b[6..22];
                        BlockQ8 {
                            d: half(&b[0..2]),
                            s: 0.0,
                            qs: std::array::from_fn(|i| {
                                let nibble = if i < 16 {
                                    qs[i] & 0x0F
                                } else {
                                    qs[i - 16] >> 4
                                };
                                let high = ((qh >> i) & 1) as u8;
                                ((nibble | (high << 4)) as i8) - 16
                            }),
                        }
                    })
                    .collect(),
            ),
            GgmlDType::Q4_0
                if panel::available()
                    && n.is_multiple_of(panel::ROWS)
                    && k.is_multiple_of(2 * QK) =>
            {
                Blocks::Q4_0Panels(PanelQ4_0::repack(&data, n, k))
            }
            GgmlDType::Q4_0 => Blocks::Q4_0(q4_0::regroup(&data, n, k)),
            GgmlDType::F16 => {
                let bits = bits();
                match F16Panels::from_bits(&bits, n, k).filter(|_| F16::available()) {
                    Some(panels) => Blocks::F16Panels(panels),
                    None => Blocks::Wide(Kind::F16, bits),
                }
            }
            GgmlDType::BF16 => {
                let bits = bits();
                match Bf16Panels::from_bits(&bits, n, k).filter(|_| Bf16::available()) {
                    Some(panels) => Blocks::Bf16Panels(panels),
                    None => Blocks::Wide(Kind::Bf16, bits),
                }
            }
            GgmlDType::Q4K => Blocks::Q4K(
                data.chunks_exact(BlockQ4K::BYTES)
                    .map(BlockQ4K::parse)
                    .collect(),
            ),
            GgmlDType::Q5K => Blocks::Q5K(
                data.chunks_exact(BlockQ5K::BYTES)
                    .map(BlockQ5K::parse)
                    .collect(),
            ),
            _ => Blocks::Q6K(
                data.chunks_exact(BlockQ6K::BYTES)
                    .map(BlockQ6K::parse)
                    .collect(),
            ),
        };
        let count = blocks.len();
        if count != n * blocks.per_row(k) {
            return Err(Error::Model(format!(
                "{dtype:?} weight [{n}, {k}] holds {count} blocks"
            )));
        }
        let panels = panel::available() && n.is_multiple_of(panel::ROWS);
        let blocks = match blocks {
            Blocks::Q4K(b) if panels => Blocks::Q4KPanels(PanelQ4K::repack(&b, n)),
            Blocks::Q5K(b) if panels => Blocks::Q5KPanels(PanelQ5K::repack(&b, n)),
            Blocks::Q6K(b) if panels => Blocks::Q6KPanels(PanelQ6K::repack(&b, n)),
            other => other,
        };
        Ok(Self { n, k, blocks })
    }

    /// Row `j` of the weights as f32, exactly as ggml's `get_rows`
    /// dequantizes it (an embedding lookup), for the types where that is a
    /// plain product or a conversion (Q8_0 and the Q5_0 widened to it, Q4_0,
    /// Q6_K, F16, BF16); None for the others or a row out of range.
    pub fn row(&self, j: usize) -> Option<Vec<f32>> {
        if j >= self.n {
            return None;
        }
        let per_row = self.blocks.len() / self.n;
        let range = j * per_row..(j + 1) * per_row;
        match &self.blocks {
            Blocks::Q8_0(b) => Some(
                b[range]
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
                    .collect(),
            ),
            Blocks::Q6K(b) => Some(b[range].iter().flat_map(BlockQ6K::dequantize).collect()),
            Blocks::Q6KPanels(b) => {
                let kb = self.blocks.per_row(self.k);
                let (p, c) = (j / panel::ROWS, j % panel::ROWS);
                let blocks = &b[p * kb..(p + 1) * kb];
                Some(blocks.iter().flat_map(|b| b.dequantize(c)).collect())
            }
            Blocks::Q4_0(b) => Some(q4_0::dequantize_row(&b[range], self.k)),
            Blocks::Q4_0Panels(b) => {
                let per = self.k / (2 * QK);
                let (p, c) = (j / panel::ROWS, j % panel::ROWS);
                Some(
                    b[p * per..(p + 1) * per]
                        .iter()
                        .flat_map(|b| b.dequantize(c))
                        .collect(),
                )
            }
            Blocks::Wide(kind, b) => Some(b[range].iter().map(|&v| kind.to_f32(v)).collect()),
            Blocks::Bf16Panels(b) => b.row(j),
            Blocks::F16Panels(b) => b.row(j),
            Blocks::Q4_1(_)
            | Blocks::Q4K(_)
            | Blocks::Q4KPanels(_)
            | Blocks::Q5K(_)
            | Blocks::Q5KPanels(_) => None,
        }
    }

    /// `x @ W^T` for `x` of shape `[..., k]` (f32, CPU): shape `[..., n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = Self::forward_many(&[self], x)?;
        Ok(out.pop().expect("one matrix, one product"))
    }

    /// [`forward`](Self::forward) on a plain buffer of rows of `k` values.
    pub fn matmul(&self, input: &[f32]) -> Result<Vec<f32>> {
        let mut out = Self::matmul_many(&[self], input)?;
        Ok(out.pop().expect("one matrix, one product"))
    }

    /// `x @ W^T` for several matrices of the same width (a layer's q/k/v,
    /// or gate/up): `x` is quantized once and every product's columns are
    /// shared out in one dispatch to the thread pool.
    pub fn forward_many(ms: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if let Some(w) = ms.iter().find(|w| w.k != k) {
            return Err(Error::Model(format!(
                "quantized matmul: input width {k}, weight width {}",
                w.k
            )));
        }
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let outs = Self::matmul_many(ms, &input)?;
        Ok(ms
            .iter()
            .zip(outs)
            .map(|(w, out)| {
                let mut shape = dims.clone();
                *shape.last_mut().expect("non-empty") = w.n;
                Tensor::from_vec(out, shape, &Device::Cpu)
            })
            .collect::<candle_core::Result<_>>()?)
    }

    /// [`forward_many`](Self::forward_many) on plain buffers: `input` holds
    /// `m` rows of `k` values; each product is `m` rows of its matrix's `n`.
    pub fn matmul_many(ms: &[&QMatrix], input: &[f32]) -> Result<Vec<Vec<f32>>> {
        let k = ms.first().map_or(0, |w| w.k);
        if let Some(w) = ms.iter().find(|w| w.k != k) {
            return Err(Error::Model(format!(
                "quantized matmul: weight widths {k} and {} in one product",
                w.k
            )));
        }
        if k == 0 || !input.len().is_multiple_of(k) {
            return Err(Error::Model(format!(
                "quantized matmul: {} inputs for rows of width {k}",
                input.len()
            )));
        }
        let m = input.len() / k;
        // The activations, quantized (or rounded) once for each kind of
        // weights present.
        let any = |f: fn(&Blocks) -> bool| ms.iter().any(|w| f(&w.blocks));
        let xq: Vec<BlockQ8> = if any(Blocks::takes_q8) {
            quantize_rows(input)
        } else {
            Vec::new()
        };
        let xk: Vec<BlockQ8K> = if any(Blocks::takes_q8_k) {
            input.chunks_exact(QK_K).map(quantize_q8_k).collect()
        } else {
            Vec::new()
        };
        let sums: Vec<[i32; 4]> = if any(|b| b.takes_q8_k() && b.unit() == panel::ROWS) {
            xk.iter().map(panel::sub_sums).collect()
        } else {
            Vec::new()
        };
        let offsets: Vec<i32> = if any(|b| matches!(b, Blocks::Q4_0Panels(_))) {
            xq.iter().map(panel::offsets).collect()
        } else {
            Vec::new()
        };
        let x4_0: Vec<GroupX> = if any(|b| matches!(b, Blocks::Q4_0(_))) {
            xq.chunks_exact(k / QK)
                .flat_map(|row| q4_0::group_activations(row.iter().map(|b| (b.d, &b.qs))))
                .collect()
        } else {
            Vec::new()
        };
        let wide = |kind: Kind| {
            ms.iter()
                .any(|w| matches!(&w.blocks, Blocks::Wide(w, _) if *w == kind))
        };
        let xh = if wide(Kind::F16) {
            wide::f16_activations(input)
        } else {
            Vec::new()
        };
        let xb = if wide(Kind::Bf16) {
            wide::bf16_activations(input)
        } else {
            Vec::new()
        };
        let xp = if any(|b| matches!(b, Blocks::Bf16Panels(_))) {
            Bf16Panels::activations(input)
        } else {
            Vec::new()
        };
        let xf = if any(|b| matches!(b, Blocks::F16Panels(_))) {
            F16Panels::activations(input)
        } else {
            Vec::new()
        };
        // Batches of rows up to eight at a time where the CPU has the
        // 512-bit kernels: the activations laid out for them once per kind
        // of weights. A single row keeps the one-row kernels.
        let x8 = rows8::kernels().filter(|_| m >= 2);
        let rows8_for = |f: fn(&Blocks) -> bool, unsigned: bool| {
            (x8.is_some() && any(f)).then(|| Rows8::new(&xq, k / QK, unsigned))
        };
        let x8_q4_1 = rows8_for(|b| matches!(b, Blocks::Q4_1(_)), false);
        let x8_q8_0 = rows8_for(|b| matches!(b, Blocks::Q8_0(_)), true);
        let mut outs: Vec<Vec<f32>> = ms.iter().map(|w| vec![0f32; m * w.n]).collect();
        // Columns in groups of 4 (or a panel's 16): each group reads its
        // weight rows once for all m activation rows (which stay in cache).
        // Group g belongs to the first matrix whose cumulative group count
        // exceeds it.
        let mut ends = Vec::with_capacity(ms.len());
        let mut total = 0;
        for w in ms {
            total += w.n.div_ceil(w.blocks.unit());
            ends.push(total);
        }
        let ptrs: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
        let (q4_1, q8_0) = (dot_q4_1(), dot_q8_0());
        let (q4_k, q5_k, q6_k) = (dot_q4_k(), dot_q5_k(), dot_q6_k());
        let q4_0 = q4_0::dots();
        let (p4_k, p5_k, p6_k) = (panel::q4_k(), panel::q5_k(), panel::q6_k());
        let p4_0 = panel::q4_0();
        let (f16s, bf16s) = (wide::f16_kernels(), wide::bf16_kernels());
        candle_core::utils::barrier_pool().execute_chunked(total, |range| {
            for g in range {
                let i = ends.partition_point(|&e| e <= g);
                let local = g - if i == 0 { 0 } else { ends[i - 1] };
                let w = ms[i];
                let out = ptrs[i] as *mut f32;
                match &w.blocks {
                    Blocks::Q4_1(b) => {
                        let by8 = x8.zip(x8_q4_1.as_ref()).map(|(k, x)| (x, k.0));
                        columns_by8(b, w.n, &xq, m, local, out, q4_1, by8)
                    }
                    Blocks::Q8_0(b) => {
                        let by8 = x8.zip(x8_q8_0.as_ref()).map(|(k, x)| (x, k.1));
                        columns_by8(b, w.n, &xq, m, local, out, q8_0, by8)
                    }
                    Blocks::Q4K(b) => columns(b, w.n, &xk, m, local, out, q4_k),
                    Blocks::Q4KPanels(b) => {
                        let kernel = p4_k.expect("panels only where the kernel runs");
                        panel_columns(b, w.n, (&xk, &sums), m, local, out, kernel)
                    }
                    Blocks::Q5KPanels(b) => {
                        let kernel = p5_k.expect("panels only where the kernel runs");
                        panel_columns(b, w.n, (&xk, &sums), m, local, out, kernel)
                    }
                    Blocks::Q6KPanels(b) => {
                        let kernel = p6_k.expect("panels only where the kernel runs");
                        panel_columns(b, w.n, (&xk, &sums), m, local, out, kernel)
                    }
                    Blocks::Q5K(b) => columns(b, w.n, &xk, m, local, out, q5_k),
                    Blocks::Q6K(b) => columns(b, w.n, &xk, m, local, out, q6_k),
                    Blocks::Q4_0(b) => columns(b, w.n, &x4_0, m, local, out, q4_0),
                    Blocks::Q4_0Panels(b) => {
                        let kernel = p4_0.expect("panels only where the kernel runs");
                        panel_columns(b, w.n, (&xq, &offsets), m, local, out, kernel)
                    }
                    Blocks::Wide(Kind::F16, b) => columns_tiled(b, w.n, &xh, m, local, out, f16s),
                    Blocks::Wide(Kind::Bf16, b) => columns_tiled(b, w.n, &xb, m, local, out, bf16s),
                    // SAFETY: panels are made only where the CPU has
                    // AVX512-BF16; `out` holds m * n values and this work
                    // item alone writes panel `local`'s columns.
                    Blocks::Bf16Panels(b) => unsafe { b.columns(local, &xp, m, out) },
                    // SAFETY: as above, with AVX-512 F.
                    Blocks::F16Panels(b) => unsafe { b.columns(local, &xf, m, out) },
                }
            }
        });
        Ok(outs)
    }
}

/// Columns `4g..4g+4` of `x @ W^T` for `m` rows of quantized `x`, written to
/// `out[r * n + j]`. Rows go four at a time through `dots`, which unpacks
/// each weight block once for the four; each row's sum is computed exactly
/// as `dot` computes it alone, so results do not depend on `m`.
fn columns<W, A>(
    w: &[W],
    n: usize,
    xq: &[A],
    m: usize,
    g: usize,
    out: *mut f32,
    (dot, dots): (DotFn<W, A>, Dot4Fn<W, A>),
) {
    let kb = w.len() / n;
    let x = |r: usize| &xq[r * kb..(r + 1) * kb];
    for j in g * 4..(g * 4 + 4).min(n) {
        let row = &w[j * kb..(j + 1) * kb];
        let mut r = 0;
        while r < m {
            // SAFETY (both writes): each (r, j) is written by exactly one
            // work item, and `out` holds m * n values.
            if r + 4 <= m {
                let v = dots(row, [x(r), x(r + 1), x(r + 2), x(r + 3)]);
                for (i, v) in v.into_iter().enumerate() {
                    unsafe { *out.add((r + i) * n + j) = v };
                }
                r += 4;
            } else {
                unsafe { *out.add(r * n + j) = dot(row, x(r)) };
                r += 1;
            }
        }
    }
}

/// A panel kernel over activation blocks `X` with their per-block sums `S`.
type PanelKernel<P, X, S> = fn(&[P], [&[X]; 4], [&[S]; 4], usize, &mut [[f32; panel::ROWS]; 4]);

/// Columns `16p..16p + 16` (panel `p`) of `x @ W^T` for `m` rows of
/// quantized activations (with their per-block sums), four rows at a time.
fn panel_columns<P, X, S>(
    w: &[P],
    n: usize,
    (xs, sums): (&[X], &[S]),
    m: usize,
    p: usize,
    out: *mut f32,
    kernel: PanelKernel<P, X, S>,
) {
    let per = w.len() * panel::ROWS / n;
    let w = &w[p * per..(p + 1) * per];
    // Activation blocks per row.
    let xb = xs.len() / m;
    let mut tile = [[0f32; panel::ROWS]; 4];
    for r in (0..m).step_by(4) {
        let rows = (m - r).min(4);
        // Rows past the end repeat the last one; the kernel ignores them.
        let at = |i: usize| (r + i).min(m - 1) * xb;
        let x = std::array::from_fn(|i| &xs[at(i)..at(i) + xb]);
        let s = std::array::from_fn(|i| &sums[at(i)..at(i) + xb]);
        kernel(w, x, s, rows, &mut tile);
        for (i, row) in tile.iter().enumerate().take(rows) {
            // SAFETY: each (r, j) is written by exactly one work item, and
            // `out` holds m * n values.
            let to = unsafe { out.add((r + i) * n + p * panel::ROWS) };
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), to, panel::ROWS) };
        }
    }
}

/// [`columns`] with the activation rows up to eight at a time through the
/// 512-bit kernels of [`crate::rows8`] where `by8` has them laid out. Each
/// sum is computed as `dot` computes it alone.
#[allow(clippy::too_many_arguments)]
fn columns_by8<W>(
    w: &[W],
    n: usize,
    xq: &[BlockQ8],
    m: usize,
    g: usize,
    out: *mut f32,
    dots: (DotFn<W>, Dot4Fn<W>),
    by8: Option<(&Rows8, Dot8Fn<W>)>,
) {
    let Some((x8, dot8)) = by8 else {
        return columns(w, n, xq, m, g, out, dots);
    };
    let kb = w.len() / n;
    // Groups outside, the four weight rows inside: a group's activations
    // are read from the nearest cache for all four rows.
    for group in 0..x8.groups() {
        for j in g * 4..(g * 4 + 4).min(n) {
            let v = dot8(&w[j * kb..(j + 1) * kb], x8, group);
            for (i, v) in v.into_iter().take(x8.rows(group)).enumerate() {
                // SAFETY: as in `columns`.
                unsafe { *out.add((group * 8 + i) * n + j) = v };
            }
        }
    }
}

/// [`columns`] with four weight rows against four activation rows at a
/// time through `tile`, so each activation load serves four weight rows (a
/// prompt's activations, streamed from cache once per weight row, are
/// otherwise what bounds its speed). Each sum is computed as `dot` computes
/// it alone.
fn columns_tiled<W, A>(
    w: &[W],
    n: usize,
    xq: &[A],
    m: usize,
    g: usize,
    out: *mut f32,
    (dot, dots, tile): (DotFn<W, A>, Dot4Fn<W, A>, TileFn<W, A>),
) {
    if g * 4 + 4 > n || m < 4 {
        return columns(w, n, xq, m, g, out, (dot, dots));
    }
    let kb = w.len() / n;
    let x = |r: usize| &xq[r * kb..(r + 1) * kb];
    let rows: [&[W]; 4] = std::array::from_fn(|i| &w[(g * 4 + i) * kb..(g * 4 + i + 1) * kb]);
    let mut r = 0;
    while r + 4 <= m {
        let v = tile(rows, [x(r), x(r + 1), x(r + 2), x(r + 3)]);
        for (i, col) in v.iter().enumerate() {
            for (q, v) in col.iter().enumerate() {
                // SAFETY: as in `columns`.
                unsafe { *out.add((r + q) * n + g * 4 + i) = *v };
            }
        }
        r += 4;
    }
    for r in r..m {
        for (i, row) in rows.iter().enumerate() {
            // SAFETY: as in `columns`.
            unsafe { *out.add(r * n + g * 4 + i) = dot(row, x(r)) };
        }
    }
}

/// [`quantize_q8_1`] over every block of `input`, a batch's blocks shared
/// out on candle's barrier pool.
fn quantize_rows(input: &[f32]) -> Vec<BlockQ8> {
    const PIECE: usize = 32;
    let n = input.len() / QK;
    if n < 4 * PIECE {
        return input.chunks_exact(QK).map(quantize_q8_1).collect();
    }
    let mut out: Vec<BlockQ8> = Vec::with_capacity(n);
    let at = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(PIECE), |pieces| {
        for i in pieces.start * PIECE..(pieces.end * PIECE).min(n) {
            let block = quantize_q8_1(&input[i * QK..(i + 1) * QK]);
            // SAFETY: block i is written by one thread only, within capacity.
            unsafe { (at as *mut BlockQ8).add(i).write(block) };
        }
    });
    // SAFETY: every one of the n blocks was written above.
    unsafe { out.set_len(n) };
    out
}

/// ggml's `quantize_row_q8_1` as its AVX2 code computes it: scale by
/// `127 / amax`, round half to even; `d` and `s` are rounded through f16 as
/// ggml stores them. Bit-for-bit agreement here keeps greedy output on
/// llama.cpp's path where logits nearly tie.
fn quantize_q8_1(x: &[f32]) -> BlockQ8 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { quantize_q8_1_avx2(x) };
    }
    quantize_q8_1_portable(x)
}

/// The same code compiled for AVX2, where rounding is one instruction
/// instead of a call into libm (4% of a decode step).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_q8_1_avx2(x: &[f32]) -> BlockQ8 {
    quantize_q8_1_portable(x)
}

#[inline(always)]
fn quantize_q8_1_portable(x: &[f32]) -> BlockQ8 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    let round_f16 = |v: f32| f16::from_f32(v).to_f32();
    BlockQ8 {
        d: round_f16(d),
        s: round_f16(d * sum as f32),
        qs,
    }
}

/// One weight row against one activation row (`A`: Q8_1/Q8_0 blocks, or
/// Q8_K for the K-quants).
type DotFn<W, A = BlockQ8> = fn(&[W], &[A]) -> f32;
/// One weight row against four activation rows.
type Dot4Fn<W, A = BlockQ8> = fn(&[W], [&[A]; 4]) -> [f32; 4];
/// Four weight rows against four activation rows: `[weight row][activation row]`.
type TileFn<W, A> = fn([&[W]; 4], [&[A]; 4]) -> [[f32; 4]; 4];

fn dot_q4_1() -> (DotFn<BlockQ4>, Dot4Fn<BlockQ4>) {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX2, FMA and AVX-512 VNNI/VL (checked above).
        return (
            |w, x| unsafe { dot_q4_1_vnni(w, x) },
            |w, xs| unsafe { dot_q4_1_vnni_x4(w, xs) },
        );
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return (
            |w, x| unsafe { dot_q4_1_avx2(w, x) },
            |w, xs| unsafe { dot_q4_1_avx2_x4(w, xs) },
        );
    }
    (dot_q4_1_scalar, |w, xs| xs.map(|x| dot_q4_1_scalar(w, x)))
}

fn dot_q8_0() -> (DotFn<BlockQ8>, Dot4Fn<BlockQ8>) {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU has AVX2, FMA and AVX-512 VNNI/VL (checked above).
        return (
            |w, x| unsafe { dot_q8_0_vnni(w, x) },
            |w, xs| unsafe { dot_q8_0_vnni_x4(w, xs) },
        );
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return (
            |w, x| unsafe { dot_q8_0_avx2(w, x) },
            |w, xs| unsafe { dot_q8_0_avx2_x4(w, xs) },
        );
    }
    (dot_q8_0_scalar, |w, xs| xs.map(|x| dot_q8_0_scalar(w, x)))
}

fn dot_q4_1_scalar(w: &[BlockQ4], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut acc = 0i32;
        for j in 0..QK / 2 {
            acc += (w.qs[j] & 0x0F) as i32 * x.qs[j] as i32;
            acc += (w.qs[j] >> 4) as i32 * x.qs[j + QK / 2] as i32;
        }
        sum += w.d * x.d * acc as f32 + w.m * x.s;
    }
    sum
}

fn dot_q8_0_scalar(w: &[BlockQ8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let acc: i32 =
            w.qs.iter()
                .zip(&x.qs)
                .map(|(a, b)| *a as i32 * *b as i32)
                .sum();
        sum += w.d * x.d * acc as f32;
    }
    sum
}

/// The AVX2 kernels, generated twice: with `maddubs` + `madd` (AVX2) and
/// with one `vpdpbusd` (AVX-512 VNNI on 256-bit vectors). Both give each
/// 32-bit lane the exact sum of four adjacent u8 x i8 products (the 16-bit
/// pair sums of `maddubs` cannot saturate here: Q4_1 weights are below 16
/// and Q8_0 ones at most 127 in magnitude), so both variants return the same
/// bits, which are ggml's. The `_x4` kernels take four activation rows per
/// weight row: each weight block is loaded and unpacked once, and every
/// row's lanes see exactly the operations they see alone.
#[cfg(target_arch = "x86_64")]
macro_rules! dot_kernels {
    ($features:literal, $q4_1:ident, $q4_1_x4:ident, $q8_0:ident, $q8_0_x4:ident, $sum4:expr) => {
        #[target_feature(enable = $features)]
        unsafe fn $q4_1(w: &[BlockQ4], x: &[BlockQ8]) -> f32 {
            use std::arch::x86_64::*;
            let low = _mm256_set1_epi8(0x0F);
            let mut acc = _mm256_setzero_ps();
            let mut offsets = 0f32;
            for (w, x) in w.iter().zip(x) {
                // 32 weights as bytes: low nibbles (0..16), then high ones (16..32).
                let packed = _mm_loadu_si128(w.qs.as_ptr() as *const __m128i);
                let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
                let qx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                let sums = _mm256_cvtepi32_ps($sum4(qw, qx));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(w.d * x.d), sums, acc);
                offsets += w.m * x.s;
            }
            hsum(acc) + offsets
        }

        #[target_feature(enable = $features)]
        unsafe fn $q4_1_x4(w: &[BlockQ4], xs: [&[BlockQ8]; 4]) -> [f32; 4] {
            use std::arch::x86_64::*;
            let low = _mm256_set1_epi8(0x0F);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut offsets = [0f32; 4];
            let n = w.len().min(xs.iter().map(|x| x.len()).min().unwrap_or(0));
            let [x0, x1, x2, x3] = xs.map(|x| x.as_ptr());
            for b in 0..n {
                let w = &*w.as_ptr().add(b);
                let packed = _mm_loadu_si128(w.qs.as_ptr() as *const __m128i);
                let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
                macro_rules! row {
                    ($x:ident, $acc:ident, $r:literal) => {
                        let x = &*$x.add(b);
                        let qx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                        let sums = _mm256_cvtepi32_ps($sum4(qw, qx));
                        $acc = _mm256_fmadd_ps(_mm256_set1_ps(w.d * x.d), sums, $acc);
                        offsets[$r] += w.m * x.s;
                    };
                }
                row!(x0, a0, 0);
                row!(x1, a1, 1);
                row!(x2, a2, 2);
                row!(x3, a3, 3);
            }
            [
                hsum(a0) + offsets[0],
                hsum(a1) + offsets[1],
                hsum(a2) + offsets[2],
                hsum(a3) + offsets[3],
            ]
        }

        #[target_feature(enable = $features)]
        unsafe fn $q8_0(w: &[BlockQ8], x: &[BlockQ8]) -> f32 {
            use std::arch::x86_64::*;
            let mut acc = _mm256_setzero_ps();
            for (w, x) in w.iter().zip(x) {
                let qw = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
                let qx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                // One operand must be unsigned: |w| times x with w's sign.
                let sums =
                    _mm256_cvtepi32_ps($sum4(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw)));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(w.d * x.d), sums, acc);
            }
            hsum(acc)
        }

        #[target_feature(enable = $features)]
        unsafe fn $q8_0_x4(w: &[BlockQ8], xs: [&[BlockQ8]; 4]) -> [f32; 4] {
            use std::arch::x86_64::*;
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let n = w.len().min(xs.iter().map(|x| x.len()).min().unwrap_or(0));
            let [x0, x1, x2, x3] = xs.map(|x| x.as_ptr());
            for b in 0..n {
                let w = &*w.as_ptr().add(b);
                let qw = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
                let abs_w = _mm256_sign_epi8(qw, qw);
                macro_rules! row {
                    ($x:ident, $acc:ident) => {
                        let x = &*$x.add(b);
                        let qx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                        let sums = _mm256_cvtepi32_ps($sum4(abs_w, _mm256_sign_epi8(qx, qw)));
                        $acc = _mm256_fmadd_ps(_mm256_set1_ps(w.d * x.d), sums, $acc);
                    };
                }
                row!(x0, a0);
                row!(x1, a1);
                row!(x2, a2);
                row!(x3, a3);
            }
            [hsum(a0), hsum(a1), hsum(a2), hsum(a3)]
        }
    };
}

#[cfg(target_arch = "x86_64")]
dot_kernels!(
    "avx2,fma",
    dot_q4_1_avx2,
    dot_q4_1_avx2_x4,
    dot_q8_0_avx2,
    dot_q8_0_avx2_x4,
    |a, b| _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
);
#[cfg(target_arch = "x86_64")]
dot_kernels!(
    "avx2,fma,avx512vnni,avx512vl",
    dot_q4_1_vnni,
    dot_q4_1_vnni_x4,
    dot_q8_0_vnni,
    dot_q8_0_vnni_x4,
    |a, b| _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
);

/// Whether the CPU has AVX-512 VNNI on 256-bit vectors (and AVX2 + FMA).
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    crate::simd::has_avx2_fma()
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vl")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(n: usize, k: usize, dtype: GgmlDType) -> (Tensor, QTensor) {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        (w, q)
    }

    /// `rows` rows of `k` activations, quantized.
    fn activations(rows: usize, k: usize) -> Vec<BlockQ8> {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        x.chunks_exact(QK).map(quantize_q8_1).collect()
    }

    /// Random Q4_1 and Q8_0 weights of `n` rows of `k`, as blocks.
    fn random_blocks(n: usize, k: usize) -> (Vec<BlockQ4>, Vec<BlockQ8>) {
        let blocks = |dtype| {
            QMatrix::from_qtensor(&weights(n, k, dtype).1)
                .unwrap()
                .blocks
        };
        match (blocks(GgmlDType::Q4_1), blocks(GgmlDType::Q8_0)) {
            (Blocks::Q4_1(a), Blocks::Q8_0(b)) => (a, b),
            _ => panic!("Q4_1 and Q8_0 blocks expected"),
        }
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn matches_candle_and_the_dequantized_product() {
        let (n, k, m) = (70, 512, 5);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::F16,
            GgmlDType::BF16,
        ] {
            let (w, q) = weights(n, k, dtype);
            let ours = QMatrix::from_qtensor(&q).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).unwrap();
            let got = ours.forward(&x).unwrap();
            assert_eq!(got.dims(), [1, m, n]);
            // candle's own kernel: the same quantized arithmetic, though it
            // multiplies Q4_1's scales in f16 where ggml's AVX2 code (and
            // hearth) use f32, so they agree to f16 precision. For BF16
            // hearth rounds the activations to bf16 as ggml does (8 bits of
            // mantissa) and candle does not.
            let same = QTensor::quantize(&w, dtype).unwrap();
            let candle = candle_core::quantized::QMatMul::from_qtensor(same).unwrap();
            let want = candle_core::Module::forward(&candle, &x).unwrap();
            let diff = max_abs(&(&got - &want).unwrap());
            let scale = max_abs(&want);
            let tolerance = if dtype == GgmlDType::BF16 { 1e-2 } else { 2e-3 };
            assert!(
                diff < tolerance * scale,
                "{dtype:?}: differs from candle by {diff} (max {scale})"
            );
            // And close to the exact product with the dequantized weights.
            let exact = x
                .broadcast_matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
                .unwrap();
            let diff = max_abs(&(&got - &exact).unwrap());
            assert!(
                diff < 0.02 * scale,
                "{dtype:?}: differs from the exact product by {diff}"
            );
        }
    }

    /// The VNNI kernels against the AVX2 ones, bit for bit (on CPUs that
    /// have VNNI; elsewhere the AVX2 ones are what runs).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_and_avx2_kernels_give_the_same_bits() {
        if !has_vnni() {
            eprintln!("this CPU has no AVX-512 VNNI: only the AVX2 kernels run here");
            return;
        }
        let xq = activations(4, 256);
        let rows: [&[BlockQ8]; 4] = std::array::from_fn(|r| &xq[r * 8..(r + 1) * 8]);
        let (q4_1, q8_0) = random_blocks(5, 256);
        for row in q4_1.chunks_exact(8) {
            // SAFETY: has_vnni() implies every feature both need.
            unsafe {
                assert_eq!(
                    dot_q4_1_vnni(row, rows[0]).to_bits(),
                    dot_q4_1_avx2(row, rows[0]).to_bits()
                );
                assert_eq!(dot_q4_1_vnni_x4(row, rows), dot_q4_1_avx2_x4(row, rows));
            }
        }
        for row in q8_0.chunks_exact(8) {
            // SAFETY: as above.
            unsafe {
                assert_eq!(
                    dot_q8_0_vnni(row, rows[0]).to_bits(),
                    dot_q8_0_avx2(row, rows[0]).to_bits()
                );
                assert_eq!(dot_q8_0_vnni_x4(row, rows), dot_q8_0_avx2_x4(row, rows));
            }
        }
    }

    #[test]
    fn each_row_is_the_same_whatever_the_rows_beside_it() {
        // Batches go through tiles of several rows (eight, four, the panels'
        // tiles) and the rest one at a time: every row must come out bit
        // for bit as when alone, for every count up to two groups of eight
        // and one more, for every type of weights. The scheduler relies on
        // it: a sequence's output does not depend on the batch it ran in,
        // and prompt-lookup decoding verifies drafts in one pass with the
        // logits plain decoding would give.
        let (n, k) = (48, 512);
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::F16,
            GgmlDType::BF16,
        ] {
            let (_, q) = weights(n, k, dtype);
            let w = QMatrix::from_qtensor(&q).unwrap();
            let x: Vec<f32> = (0..17 * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 19.0)
                .collect();
            for m in 1..=17 {
                let all = w.matmul(&x[..m * k]).unwrap();
                for r in 0..m {
                    let alone = w.matmul(&x[r * k..(r + 1) * k]).unwrap();
                    assert_eq!(
                        &all[r * n..(r + 1) * n],
                        &alone[..],
                        "{dtype:?}, row {r} of {m}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_four_row_kernels_give_each_row_its_one_row_bits() {
        // On CPUs with the 512-bit kernels, products of several rows never
        // reach the x4 kernels: they are checked here directly.
        let xq = activations(4, 128);
        let rows: [&[BlockQ8]; 4] = std::array::from_fn(|r| &xq[r * 4..(r + 1) * 4]);
        let (q4_1, q8_0) = random_blocks(7, 128);
        let (dot, dots) = dot_q4_1();
        for row in q4_1.chunks_exact(4) {
            assert_eq!(dots(row, rows), rows.map(|x| dot(row, x)));
        }
        let (dot, dots) = dot_q8_0();
        for row in q8_0.chunks_exact(4) {
            assert_eq!(dots(row, rows), rows.map(|x| dot(row, x)));
        }
    }

    #[test]
    fn simd_and_scalar_dots_agree() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let xq: Vec<BlockQ8> = x.chunks_exact(QK).map(quantize_q8_1).collect();
        let close =
            |a: f32, b: f32| assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
        let (_, q) = weights(3, 256, GgmlDType::Q4_1);
        let Blocks::Q4_1(w) = QMatrix::from_qtensor(&q).unwrap().blocks else {
            panic!("Q4_1 blocks expected")
        };
        for row in w.chunks_exact(256 / QK) {
            close(dot_q4_1_scalar(row, &xq), dot_q4_1().0(row, &xq));
        }
        let (_, q) = weights(3, 256, GgmlDType::Q8_0);
        let Blocks::Q8_0(w) = QMatrix::from_qtensor(&q).unwrap().blocks else {
            panic!("Q8_0 blocks expected")
        };
        for row in w.chunks_exact(256 / QK) {
            close(dot_q8_0_scalar(row, &xq), dot_q8_0().0(row, &xq));
        }
    }

    #[test]
    fn quantizes_activations_as_ggml_does() {
        // amax 127 gives id exactly 1: halves round to even, as the AVX2 code's.
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let b = quantize_q8_1(&x);
        assert_eq!((b.d, &b.qs[..4]), (1.0, &[127, 2, -4, 0][..]));
        assert_eq!(b.s, 125.0);
        assert_eq!(quantize_q8_1(&[0.0; QK]).d, 0.0);
    }

    /// `panels` and `rows` (the same weights, `k` inputs) on the same 1 to
    /// 9 activation rows: `(m, panels' products, rows' products)`.
    fn both_products(
        panels: &QMatrix,
        rows: &QMatrix,
        k: usize,
    ) -> Vec<(usize, Vec<f32>, Vec<f32>)> {
        let x: Vec<f32> = (0..9 * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 19.0)
            .collect();
        (1..=9)
            .map(|m| {
                let x = &x[..m * k];
                (m, panels.matmul(x).unwrap(), rows.matmul(x).unwrap())
            })
            .collect()
    }

    /// Where the CPU has the panel kernels, Q4_0 and Q4_K matrices are
    /// repacked to panels; their products must keep the row kernels' bits
    /// (ggml's) for every batch size, and a panel's rows must be the
    /// dequantized rows.
    #[test]
    fn panels_keep_the_row_kernels_bits() {
        if !panel::available() {
            eprintln!("this CPU has no AVX-512 VNNI: no panels here");
            return;
        }
        let (n, k) = (48, 512);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4K] {
            let (_, q) = weights(n, k, dtype);
            let panels = QMatrix::from_qtensor(&q).unwrap();
            assert!(matches!(
                panels.blocks,
                Blocks::Q4_0Panels(_) | Blocks::Q4KPanels(_)
            ));
            let data = q.data().unwrap();
            let blocks = match dtype {
                GgmlDType::Q4_0 => Blocks::Q4_0(q4_0::regroup(&data, n, k)),
                _ => Blocks::Q4K(
                    data.chunks_exact(BlockQ4K::BYTES)
                        .map(BlockQ4K::parse)
                        .collect(),
                ),
            };
            let rows = QMatrix { n, k, blocks };
            for (m, a, b) in both_products(&panels, &rows, k) {
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{dtype:?}, {m} rows");
            }
            if dtype == GgmlDType::Q4_0 {
                let all = q.dequantize(&Device::Cpu).unwrap();
                for j in [0, 17, n - 1] {
                    let want = all.get(j).unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(panels.row(j).unwrap(), want, "row {j}");
                }
            }
        }
    }

    /// BF16 and F16 panels against the tinyBLAS-order row kernels on the
    /// same weights: the same products of the same rounded operands,
    /// summed in another order, so within f32 summation error, for every
    /// batch size; the same results whatever the batch; and the rows
    /// exactly.
    #[test]
    fn wide_panels_agree_with_the_row_kernels() {
        assert!(
            Bf16::available() && F16::available(),
            "this test needs a CPU with AVX-512 BF16 (this project's machines have it)"
        );
        let (n, k) = (48, 512);
        for (dtype, kind) in [(GgmlDType::BF16, Kind::Bf16), (GgmlDType::F16, Kind::F16)] {
            let (_, q) = weights(n, k, dtype);
            let panels = QMatrix::from_qtensor(&q).unwrap();
            assert!(matches!(
                panels.blocks,
                Blocks::Bf16Panels(_) | Blocks::F16Panels(_)
            ));
            let bits: Vec<u16> = q
                .data()
                .unwrap()
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            let rows = QMatrix {
                n,
                k,
                blocks: Blocks::Wide(kind, bits),
            };
            let products = both_products(&panels, &rows, k);
            let alone = &products[0].1;
            for (m, a, b) in &products {
                assert_eq!(
                    a[..n],
                    alone[..],
                    "{dtype:?}, {m} rows: the first row moved"
                );
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * k as f32,
                        "{dtype:?}, {m} rows, {i}: {a} against {b}"
                    );
                }
            }
            let all = q.dequantize(&Device::Cpu).unwrap();
            for j in [0, 17, n - 1] {
                let want = all.get(j).unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(panels.row(j).unwrap(), want, "{dtype:?} row {j}");
            }
        }
    }

    #[test]
    fn rows_are_the_dequantized_rows() {
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::F16,
            GgmlDType::BF16,
        ] {
            let (_, q) = weights(3, 640, dtype);
            let ours = QMatrix::from_qtensor(&q).unwrap();
            let all = q.dequantize(&Device::Cpu).unwrap();
            for j in 0..3 {
                let want = all.get(j).unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(ours.row(j).unwrap(), want, "{dtype:?} row {j}");
            }
            assert!(ours.row(3).is_none());
        }
    }

    #[test]
    fn rejects_other_types_and_widths() {
        let w = Tensor::zeros((4, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q5 = QTensor::quantize(&w, GgmlDType::Q5_1).unwrap();
        assert!(!QMatrix::supports(GgmlDType::Q5_1));
        assert!(QMatrix::from_qtensor(&q5).is_err());
        // 16-bit rows must be whole steps of 32.
        let odd = Tensor::zeros((4, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
        let f16 = QTensor::quantize(&odd, GgmlDType::F16).unwrap();
        assert!(QMatrix::from_qtensor(&f16).is_err());
        let (_, q) = weights(4, 64, GgmlDType::Q4_1);
        let ours = QMatrix::from_qtensor(&q).unwrap();
        let x = Tensor::zeros((1, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(ours.forward(&x).is_err());
    }
}
