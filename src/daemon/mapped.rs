//! The process's allocator: the C library's, except that large buffers (from
//! 2 MiB on) get mappings of their own, aligned so that the kernel backs them with
//! huge pages where it offers them (Linux's transparent huge pages, asked for per
//! mapping). An update allocates and frees buffers of megabytes file after file (a
//! chunk's text, its parsed columns, its partials); in 4 KiB pages each megabyte costs
//! 256 page faults, and those faults were a quarter of a cold build's CPU. A huge page
//! is one fault. Only whole 2 MiB stretches inside a mapping become huge pages, so a
//! buffer holds at most the pages it touches, as before.
//!
//! Growing a large buffer moves its pages into a larger mapping (no copy). Freeing one
//! unmaps it at once, so that memory goes back to the system as soon as it is free,
//! unless [`keep_freed`] has freed mappings kept for reuse (up to a bound): a few from
//! the process's start, many once a daemon's first update is done, so that each query's
//! large buffers do not pay the page faults of fresh memory again (see `memory`).
//! Elsewhere than on Linux this is the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// The global allocator (see the module's doc); `main` installs it.
pub struct Allocator;

/// From now on keeps up to `bytes` of freed large buffers for reuse (0: none), giving
/// back those kept before.
pub fn keep_freed(bytes: usize) {
    #[cfg(target_os = "linux")]
    linux::keep_freed(bytes);
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

#[cfg(not(target_os = "linux"))]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        System.realloc(ptr, layout, new_size)
    }
}

/// The allocator on Linux: mappings of its own for large buffers.
#[cfg(target_os = "linux")]
mod linux {
    use super::{GlobalAlloc, Layout, System};

    /// Buffers from this size on get their own mapping.
    const LARGE: usize = 2 << 20;

    /// A huge page: mappings start at a multiple of it.
    const HUGE: usize = 2 << 20;

    /// A page.
    const PAGE: usize = 4 << 10;

    /// Freed mappings kept for reuse, and how many bytes they hold at most.
    static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Kept {
        maps: [(0, 0); KEPT_MAPS],
        bytes: 0,
        cap: 0,
    });

    /// How many freed mappings are kept at most.
    const KEPT_MAPS: usize = 64;

    /// Freed mappings kept for reuse: (start, length), length 0 for a free slot.
    struct Kept {
        maps: [(usize, usize); KEPT_MAPS],
        bytes: usize,
        cap: usize,
    }

    impl Kept {
        /// The smallest kept mapping of at least `len` bytes, taken out.
        fn take(&mut self, len: usize) -> Option<(usize, usize)> {
            let (i, _) = (self.maps.iter().enumerate())
                .filter(|(_, m)| m.1 > 0 && m.1 >= len)
                .min_by_key(|(_, m)| m.1)?;
            let taken = std::mem::take(&mut self.maps[i]);
            self.bytes -= taken.1;
            Some(taken)
        }

        /// Keeps the mapping if there is room for it.
        fn keep(&mut self, start: usize, len: usize) -> bool {
            let free = self.maps.iter().position(|m| m.1 == 0);
            match free.filter(|_| self.bytes + len <= self.cap) {
                Some(i) => {
                    self.maps[i] = (start, len);
                    self.bytes += len;
                    true
                }
                None => false,
            }
        }
    }

    /// See the public `keep_freed`.
    pub(super) fn keep_freed(bytes: usize) {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        kept.cap = 0;
        while let Some((start, len)) = kept.take(0) {
            // SAFETY: a kept mapping is no buffer's; nothing else refers to it.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
        }
        kept.cap = bytes;
    }

    /// A kept mapping for a buffer of `len` bytes (a multiple of the page), its tail past
    /// them given back; null when none is large enough.
    unsafe fn reuse(len: usize) -> *mut u8 {
        let taken = KEPT.lock().unwrap_or_else(|e| e.into_inner()).take(len);
        let Some((start, kept)) = taken else {
            return std::ptr::null_mut();
        };
        if kept > len {
            libc::munmap((start + len) as *mut libc::c_void, kept - len);
        }
        start as *mut u8
    }

    /// Whether a buffer of this layout has a mapping of its own (a pure function of the
    /// layout, which the allocator is given back at every call).
    fn mapped(layout: &Layout) -> bool {
        layout.size() >= LARGE && layout.align() <= PAGE
    }

    /// The length of the mapping of a buffer of `size` bytes.
    fn mapping_len(size: usize) -> usize {
        size.next_multiple_of(PAGE)
    }

    /// A fresh zeroed mapping of `len` bytes (a multiple of the page) starting at a multiple
    /// of the huge page, marked for huge pages; null when the system has no room.
    unsafe fn map(len: usize) -> *mut u8 {
        let Some(reserve) = len.checked_add(HUGE) else {
            return std::ptr::null_mut();
        };
        let at = libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        // The reservation's head and tail around the aligned mapping go back.
        let (from, end) = (at as usize, at as usize + reserve);
        let start = from.next_multiple_of(HUGE);
        if start > from {
            libc::munmap(at, start - from);
        }
        if end > start + len {
            libc::munmap((start + len) as *mut libc::c_void, end - start - len);
        }
        // Advice only: without transparent huge pages the mapping keeps small ones.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        start as *mut u8
    }

    /// Keeps the mapping of a freed buffer of `size` bytes at `ptr` for reuse, or unmaps it.
    unsafe fn release(ptr: *mut u8, size: usize) {
        let len = mapping_len(size);
        let kept = KEPT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep(ptr as usize, len);
        if !kept {
            libc::munmap(ptr.cast(), len);
        }
    }

    /// The mapping at `ptr` for `old` bytes, made room for `new` (> `old`) bytes: its pages
    /// moved without copying into a kept mapping (whose pages past them stay) or a fresh
    /// one; null (the old one intact) when the system has no room.
    unsafe fn grow(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
        let (old_len, new_len) = (mapping_len(old), mapping_len(new));
        if new_len == old_len {
            return ptr;
        }
        let to = match reuse(new_len) {
            p if p.is_null() => map(new_len),
            p => p,
        };
        if to.is_null() {
            return to;
        }
        let moved = libc::mremap(
            ptr.cast(),
            old_len,
            old_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.cast::<libc::c_void>(),
        );
        if moved == libc::MAP_FAILED {
            libc::munmap(to.cast(), new_len);
            return std::ptr::null_mut();
        }
        to
    }

    /// The mapping at `ptr` for `old` bytes, cut to `new` (≤ `old`, still mapped) bytes.
    unsafe fn shrink(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
        let (old_len, new_len) = (mapping_len(old), mapping_len(new));
        if new_len < old_len {
            libc::munmap(ptr.add(new_len).cast(), old_len - new_len);
        }
        ptr
    }

    unsafe impl GlobalAlloc for super::Allocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if !mapped(&layout) {
                return System.alloc(layout);
            }
            let len = mapping_len(layout.size());
            match reuse(len) {
                p if p.is_null() => map(len),
                p => p,
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if !mapped(&layout) {
                return System.alloc_zeroed(layout);
            }
            // A fresh mapping reads as zeros; a kept one is cleared, which costs less than
            // the fresh one's page faults.
            let len = mapping_len(layout.size());
            match reuse(len) {
                p if p.is_null() => map(len),
                p => {
                    p.write_bytes(0, layout.size());
                    p
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            match mapped(&layout) {
                true => release(ptr, layout.size()),
                false => System.dealloc(ptr, layout),
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            match (mapped(&layout), mapped(&new)) {
                (false, false) => System.realloc(ptr, layout, new_size),
                (true, true) if new_size > layout.size() => grow(ptr, layout.size(), new_size),
                (true, true) => shrink(ptr, layout.size(), new_size),
                // Across the threshold: a new buffer, the bytes kept copied over.
                _ => {
                    let to = self.alloc(new);
                    if !to.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    to
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::daemon::mapped::Allocator;

        /// Buffers on both sides of the threshold, grown and shrunk across it, keep their
        /// bytes, and large ones start on a huge page.
        #[test]
        fn buffers_keep_their_bytes_across_the_threshold() {
            let a = Allocator;
            for (from, to) in [
                (1 << 10, 3 << 20),
                (3 << 20, 9 << 20),
                (9 << 20, 5 << 20),
                (5 << 20, 1 << 20),
                (LARGE, LARGE + 1),
            ] {
                unsafe {
                    let layout = Layout::from_size_align(from, 64).unwrap();
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    if mapped(&layout) {
                        assert_eq!(p as usize % HUGE, 0);
                    }
                    for i in (0..from).step_by(997) {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, to);
                    assert!(!q.is_null());
                    for i in (0..from.min(to)).step_by(997) {
                        assert_eq!(*q.add(i), (i % 251) as u8, "byte {i} of {from} -> {to}");
                    }
                    *q.add(to - 1) = 7;
                    a.dealloc(q, Layout::from_size_align(to, 64).unwrap());
                }
            }
        }

        /// A freed buffer kept is handed out again for one no larger, its tail given back.
        #[test]
        fn kept_mappings_are_reused_best_fit() {
            let mut kept = Kept {
                maps: [(0, 0); KEPT_MAPS],
                bytes: 0,
                cap: 10 << 20,
            };
            assert!(kept.keep(1 << 30, 4 << 20));
            assert!(kept.keep(2 << 30, 6 << 20));
            assert!(!kept.keep(3 << 30, 2 << 20), "over the cap");
            assert_eq!(kept.take(5 << 20), Some((2 << 30, 6 << 20)));
            assert_eq!(kept.take(5 << 20), None);
            assert_eq!(kept.take(0), Some((1 << 30, 4 << 20)));
            assert_eq!((kept.take(0), kept.bytes), (None, 0));
        }

        /// With freed buffers kept, a zeroed buffer reads as zeros and a grown one keeps
        /// its bytes, whichever kept mapping they got.
        #[test]
        fn large_buffers_from_kept_mappings_hold_what_they_should() {
            let a = Allocator;
            keep_freed(64 << 20);
            unsafe {
                let layout = Layout::from_size_align(4 << 20, 8).unwrap();
                let dirty = a.alloc(layout);
                dirty.write_bytes(0xff, layout.size());
                a.dealloc(dirty, layout);
                let p = a.alloc_zeroed(layout);
                assert!((0..layout.size()).step_by(4093).all(|i| *p.add(i) == 0));
                a.dealloc(p, layout);
                let big = Layout::from_size_align(12 << 20, 8).unwrap();
                let dirty = a.alloc(big);
                dirty.write_bytes(0xff, big.size());
                a.dealloc(dirty, big);
                let p = a.alloc(layout);
                for i in (0..layout.size()).step_by(997) {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, layout, big.size());
                assert!((0..layout.size())
                    .step_by(997)
                    .all(|i| *q.add(i) == (i % 251) as u8));
                *q.add(big.size() - 1) = 7;
                a.dealloc(q, big);
            }
            keep_freed(0);
        }
    }
}
