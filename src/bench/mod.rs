//! Measurements hearth makes of itself: retrieval quality on a real corpus
//! ([`retrieval`]), the micro-benchmarks against peers ([`micro`]), and
//! `hearth bench` ([`runner`]): every topology under the same workload
//! ([`workload`]), each topology brought up by [`launched`], timed request
//! by request ([`load`]), the scenarios
//! beyond it ([`scenarios`]), with HDR percentiles ([`stats`]), memory and
//! CPU from `/proc` ([`procs`]), the machine it ran on ([`machine`]), kept
//! as [`results`] and written up as JSON, Markdown and SVG ([`report`]).
//! [`shapes`] writes random-weight LLMs of real models' shapes for speed runs.

pub mod drafts;
pub mod launched;
pub mod load;
pub mod machine;
pub mod micro;
pub mod procs;
pub mod report;
pub mod results;
pub mod retrieval;
pub mod runner;
pub mod scenarios;
pub mod shapes;
pub mod stats;
pub mod workload;
