//! Giving freed heap memory back to the kernel after a burst.
//!
//! glibc's allocator keeps memory a thread freed in that thread's arena for reuse, and on its
//! own returns only the free space at the very top of each heap. So a burst that allocates a lot
//! for a short while leaves the arenas at their peak size long after: measured in the soak
//! (docs/operations.md#soak), the audit writer catching up on a 60 s PostgreSQL outage's backlog
//! left 16.3 MB of heap held for 5.1 MB in use, and resident memory 8 MB above its level before
//! the outage for the rest of the run. `malloc_trim` releases the free pages anywhere in every
//! arena (glibc ≥ 2.8); after it, resident memory was back at its level before the outage.
//!
//! Called at the end of such bursts only, never per call: a trim walks every arena under its
//! lock (a few milliseconds with a large heap). Other allocators (musl) have no such call and
//! return memory on their own terms; there it does nothing. No crate wraps this one libc call.

/// Returns free heap pages to the kernel (glibc), or does nothing (other C libraries).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only reorganises the allocator's free lists
    // under its own locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
