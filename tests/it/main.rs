//! The daemon end to end: one integration test binary (rust-analyzer style), one module per
//! area. `support` starts an in-process daemon on a temp socket.

mod access;
mod amendments;
mod backup;
mod badinput;
mod bench;
mod bulk_kinds;
mod cache;
mod child;
mod cli;
mod condition_cost;
mod crash;
mod crashloop;
mod errors;
mod export;
mod faults;
mod fleet;
mod fuzz;
mod history;
mod import;
mod jobs;
mod knock;
mod lifecycle;
mod lists;
mod load;
mod merge;
mod methods;
mod ops;
mod pgcluster;
mod pressure;
mod readme;
mod reload;
mod rest;
mod sdk;
mod support;
mod transport;
