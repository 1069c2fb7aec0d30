//! How the daemon's allocator keeps freed memory. A large answer builds columns, groups
//! and encoded batches of tens of megabytes; with the C library's defaults each is a
//! fresh mapping given back when freed, so every large query pays page faults on all of
//! its memory again. Once an update ends, the memory it freed goes back to the system,
//! and from then on heap allocations up to `MMAP_MAX` and up to `KEEP_FREED` of freed
//! memory at the top of a heap are kept, so the next query reuses the pages. The first
//! update (the cold build, whose folds and merges free far more than any query holds)
//! runs with the defaults; an idle daemon holds what its queries needed.

/// Allocations from this size on get their own mapping (the largest the C library
/// allows for heap allocations).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_MAX: libc::c_int = 32 << 20;

/// Freed memory a heap keeps before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_FREED: libc::c_int = 1 << 30;

/// Gives the memory the allocator holds freed back to the system, and has it keep what
/// queries free from then on (glibc only; elsewhere nothing changes). Called after each
/// update.
pub fn after_update() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static TUNED: std::sync::Once = std::sync::Once::new();
        // SAFETY: `malloc_trim` only returns free memory at the heaps' tops and in their
        // holes; `mallopt` only changes the allocator's tuning parameters.
        unsafe {
            libc::malloc_trim(0);
        }
        TUNED.call_once(|| {
            let set = unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_MAX) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED) == 1
            };
            if !set {
                tracing::warn!("the allocator's thresholds could not be set; the defaults stay");
            }
        });
    }
}
