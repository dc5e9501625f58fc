//! The 32-weight blocks the Q4_1, Q8_0 and Q4_0 kernels share: the block
//! size ([`QK`]), one Q4_1 block ([`BlockQ4`]) and one 8-bit block
//! ([`BlockQ8`]: a Q8_0 weight block or a row of Q8_1 activations). Types
//! only; the products are in `quant.rs`, `rows8.rs` and `q4_0.rs`.

pub(crate) const QK: usize = 32;

/// One Q4_1 block: 32 weights `d * q + m`, `q` in 0..16, low nibbles first.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4 {
    pub(crate) d: f32,
    pub(crate) m: f32,
    pub(crate) qs: [u8; QK / 2],
}

/// One 8-bit block of 32 values `d * q`: a Q8_0 weight block, or a row of
/// activations quantized as Q8_1, which also carries `s = d * sum(q)`.
#[derive(Clone, Copy)]
pub(crate) struct BlockQ8 {
    pub(crate) d: f32,
    pub(crate) s: f32,
    pub(crate) qs: [i8; QK],
}
