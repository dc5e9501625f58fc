//! Measurements hearth makes of itself. For now: retrieval quality on a real
//! corpus ([`retrieval`]), the index against exact search.

pub mod retrieval;
