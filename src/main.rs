//! The `rollupd` command line; everything it does lives in the library.

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("rollupd: {e:#}");
        std::process::exit(1);
    }
}
