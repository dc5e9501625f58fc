//! Measurements hearth makes of itself: retrieval quality on a real corpus
//! ([`retrieval`]), and `hearth bench` ([`runner`]): every topology under
//! the same workload ([`workload`]), timed request by request ([`load`]),
//! with HDR percentiles ([`stats`]), memory and CPU from `/proc`
//! ([`procs`]), written up as JSON, Markdown and SVG ([`report`]).

pub mod load;
pub mod micro;
pub mod procs;
pub mod report;
pub mod retrieval;
pub mod runner;
pub mod stats;
pub mod workload;
