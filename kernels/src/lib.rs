//! hearth's CPU hot loops: the code whose speed decides hearth's speed on
//! a CPU, on plain buffers, with no knowledge of requests, configs or
//! files. It is its own crate so that debug and test builds compile it at
//! `-O3` (see the workspace `Cargo.toml`) while the rest of hearth, which
//! only orchestrates these loops, builds unoptimised and fast.
//!
//! - [`simd`]: dot products, CPU feature checks, polynomial `exp`.
//! - [`quant`]: matrix products against quantized weights
//!   ([`quant::QMatrix`]: Q4_1, Q8_0, Q5_0, Q4_0 of [`q4_0`], the K-quants
//!   of [`kquant`] (Q4_K, Q5_K and Q6_K), and the 16-bit floats of
//!   [`wide`] (F16, BF16)), eight activation rows at a time on AVX-512
//!   VNNI for Q4_1 and Q8_0 (`rows8`), the K-quants repacked sixteen
//!   weight rows to a panel there (`panel`), BF16 and F16 packed sixteen
//!   columns to a panel on AVX-512 ([`wide_panels`]).
//! - [`decoder`]: a llama-style decoder's per-token arithmetic (RMSNorm,
//!   RoPE, SwiGLU, attention over a sequence's cache).
//! - [`bert`]: the BERT encoder on buffers ([`bert::HostBert`]), its
//!   products in bf16 on CPUs with AVX512-BF16 ([`wide_panels`]).
//! - [`graph`]: exact top-k and the HNSW index ([`graph::Hnsw`]): its
//!   parallel build, search, and file form.
//!
//! Dependencies point one way: hearth uses this crate, never the reverse.

pub mod bert;
mod blocks;
pub mod decoder;
pub mod graph;
pub mod kquant;
mod panel;
pub mod q4_0;
pub mod quant;
mod rows8;
pub mod simd;
pub mod wide;
pub mod wide_panels;

/// What a kernel refuses: a shape or a model it cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The weights or inputs do not fit the kernel.
    #[error("{0}")]
    Model(String),
    /// A tensor operation failed while reading weights.
    #[error(transparent)]
    Compute(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
