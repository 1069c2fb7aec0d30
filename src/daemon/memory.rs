//! How the daemon's allocator keeps freed memory: a large answer builds columns, groups
//! and encoded batches of tens of megabytes, and with the C library's defaults each is
//! a fresh mapping given back when freed, so every large query pays page faults on all
//! of its memory again. Heap allocations up to `MMAP_MAX` and keeping up to
//! `KEEP_FREED` freed at the top of a heap let the next query reuse the pages; the
//! daemon's resident memory then stays near its peak instead of shrinking after each
//! answer. An update (a build's folds and merges free far more than any query holds)
//! gives the freed memory back when it ends, so an idle daemon holds what queries need.

/// Allocations from this size on get their own mapping (the largest the C library
/// allows for heap allocations).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_MAX: libc::c_int = 32 << 20;

/// Freed memory a heap keeps before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_FREED: libc::c_int = 1 << 30;

/// Sets the allocator's thresholds (glibc only; elsewhere the defaults stay). Called
/// before the daemon starts its threads.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes the allocator's tuning parameters.
        let set = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_MAX) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED) == 1
        };
        if !set {
            tracing::warn!("the allocator's thresholds could not be set; the defaults stay");
        }
    }
}

/// Gives the memory the allocator keeps freed back to the system (glibc only). Called
/// after each update.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory at the heaps' tops and in their holes.
    unsafe {
        libc::malloc_trim(0);
    }
}
