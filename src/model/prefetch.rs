//! Reading rows out of order: a hint that asks the CPU to fetch a value into its cache
//! some steps before it is read, so that the misses of rows spread over a file overlap
//! instead of being waited for one after another.

/// How many steps ahead a row read out of order is fetched.
pub const AHEAD: usize = 16;

/// Asks the CPU to fetch `*at` into its cache (nothing for `None`, or on a CPU without
/// such a hint).
#[inline(always)]
pub fn prefetch<T>(at: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(at) = at {
        // SAFETY: a prefetch reads nothing and never faults; `at` is valid anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (at as *const T).cast::<i8>(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
