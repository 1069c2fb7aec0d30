//! The `rollupd` command line; everything it does lives in the library.

mod cli;

#[global_allocator]
static ALLOCATOR: rollupd::daemon::mapped::Allocator = rollupd::daemon::mapped::Allocator;

fn main() {
    rollupd::daemon::memory::at_start();
    if let Err(e) = cli::run() {
        // A reader that stops reading early (`rollupd man | head`) is no failure.
        let closed = |c: &(dyn std::error::Error + 'static)| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        };
        if e.chain().any(closed) {
            std::process::exit(0);
        }
        eprintln!("rollupd: {e:#}");
        std::process::exit(1);
    }
}
