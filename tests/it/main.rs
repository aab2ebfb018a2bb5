//! The daemon end to end: one integration test binary (rust-analyzer style), one module per
//! area. `support` starts an in-process daemon on a temp socket.

mod access;
mod badinput;
mod bench;
mod cache;
mod child;
mod cli;
mod condition_cost;
mod crash;
mod crashloop;
mod errors;
mod faults;
mod fuzz;
mod jobs;
mod knock;
mod lifecycle;
mod load;
mod methods;
mod ops;
mod pressure;
mod readme;
mod reload;
mod support;
mod transport;
