//! How the process's allocator keeps freed memory. Updates (above all a cold build)
//! allocate and free buffers of every size from kilobytes to tens of megabytes, file
//! after file; with the C library's sliding threshold, freed buffers below its latest
//! high mark stay in the heaps, so `before_updates` fixes the threshold low: buffers from
//! `UPDATE_MMAP` on get mappings of their own, given back as soon as they are freed
//! (measured: ~0.1 GB less at a cold build's peak, at the same wall time). A large answer,
//! though, builds columns, groups and encoded batches of tens of megabytes, and with
//! mappings each query would pay page faults on all of its memory again. So once the
//! first update ends, the memory it freed goes back to the system, and from then on heap
//! allocations up to `MMAP_MAX` and up to `KEEP_FREED` of freed memory at the top of a
//! heap are kept, so the next query reuses the pages; an idle daemon holds what its
//! queries needed.

/// While updates run first: allocations from this size on get their own mapping, and
/// freed memory past it at the top of a heap goes back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const UPDATE_MMAP: libc::c_int = 1 << 20;

/// Allocations from this size on get their own mapping (the largest the C library
/// allows for heap allocations).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_MAX: libc::c_int = 32 << 20;

/// Freed memory a heap keeps before giving it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEEP_FREED: libc::c_int = 1 << 30;

/// Has the allocator give large freed buffers back at once, for the updates that come
/// first (a cold build); called once, before them (glibc only; elsewhere nothing changes).
pub fn before_updates() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_thresholds(UPDATE_MMAP, UPDATE_MMAP);
}

/// Gives the memory the allocator holds freed back to the system, and has it keep what
/// queries free from then on (glibc only; elsewhere nothing changes). Called after each
/// update.
pub fn after_update() {
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
