//! What the command line offers beyond the daemon: configuration, the service
//! definitions, the first-run demo and sample data.

pub mod config;
pub mod demo;
pub mod gen;
pub mod service;
