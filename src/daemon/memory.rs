//! How the C library's allocator keeps freed memory. Rust buffers of megabytes have
//! mappings of their own (see `mapped`), given back as soon as they are freed; smaller
//! ones, and DuckDB's, come from the C library's heaps, which keep its default, sliding
//! thresholds during the first updates (above all a cold build). A large answer builds
//! many such buffers (groups, encoded batches, DuckDB's vectors), and each query would
//! pay page faults on them again if the heaps gave freed memory back. So once the first update ends,
//! the memory it freed goes back to the system, and from then on heap allocations up to
//! `MMAP_MAX`, up to `KEEP_FREED` of freed memory at the top of a heap and up to
//! `KEEP_MAPPED` of freed large buffers are kept, so the next query reuses the pages; an
//! idle daemon holds what its queries needed. Before that, from the process's start,
//! `KEEP_MAPPED_FIRST` of freed large buffers are kept: the first update (a cold build
//! above all) frees and allocates buffers of megabytes file after file, and a few files'
//! worth of them spares many of their page faults at little cost to its peak.

/// Allocations from this size on get their own mapping (the largest the C library
/// allows for heap allocations).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_MAX: libc::c_int = 32 << 20;

/// Freed memory a heap keeps before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_FREED: libc::c_int = 1 << 30;

/// Freed large buffers (with mappings of their own) kept for reuse.
const KEEP_MAPPED: usize = 512 << 20;

/// Freed large buffers kept for reuse until the first update ends. A cold build of 49
/// files kept 24, 64 or 128 MiB alike: ~1 s less system time of ~27 s of CPU, its peak
/// RSS 0–50 MB higher (256 MiB raised it by 80–140 MB).
const KEEP_MAPPED_FIRST: usize = 64 << 20;

/// Has the allocator keep `KEEP_MAPPED_FIRST` of freed large buffers; called when the
/// process starts.
pub fn at_start() {
    super::mapped::keep_freed(KEEP_MAPPED_FIRST);
}

/// Gives the memory the allocator holds freed back to the system, and has it keep what
/// queries free from then on (the heaps' tuning on glibc only). Called after each update.
pub fn after_update() {
    super::mapped::keep_freed(KEEP_MAPPED);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static TUNED: std::sync::Once = std::sync::Once::new();
        // SAFETY: `malloc_trim` only returns free memory at the heaps' tops and in their
        // holes.
        unsafe {
            libc::malloc_trim(0);
        }
        TUNED.call_once(|| set_thresholds(MMAP_MAX, KEEP_FREED));
    }
}

/// Sets the size from which allocations get their own mapping, and the freed memory a
/// heap's top keeps; says so when the allocator refuses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds(mmap: libc::c_int, trim: libc::c_int) {
    // SAFETY: `mallopt` only changes the allocator's tuning parameters.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    if !set {
        tracing::warn!("the allocator's thresholds could not be set; the defaults stay");
    }
}
