//! Integration tests: the engine and the real binary on temp folders, checked against
//! DuckDB over the raw CSV files.

mod oracle;
mod util;

mod bad_input;
mod cache;
mod cli;
mod crash;
mod daemon;
mod differential;
mod failpoints;
mod faults;
mod history;
mod hostile;
mod input;
mod insight;
mod invalid;
mod layout;
mod service;
mod serving;
mod stream;
mod subscribe;

#[test]
fn oracle_self_check() {
    oracle::self_check();
}
