//! prefsd (placeholder doc, rewritten below as the crate grows)

pub mod api;
pub mod cli;
pub mod config;
mod error;
pub mod eval;
pub mod jobs;
pub mod model;
pub mod resolve;
pub mod rpc;
pub mod server;
pub mod store;

pub use error::Error;
