//! The `rollupd` command line; everything it does lives in the library.

mod cli;

/// mimalloc keeps freed memory for reuse where glibc's malloc unmaps large buffers, which
/// made every file's fold fault its pages in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("rollupd: {e:#}");
        std::process::exit(1);
    }
}
