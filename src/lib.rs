//! prefsd (placeholder doc, rewritten below as the crate grows)

pub mod config;
pub mod eval;
pub mod model;
pub mod resolve;
