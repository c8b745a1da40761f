//! How the daemon's allocator is tuned.
//!
//! glibc gives threads that allocate at the same time arenas of their own, up to
//! eight per CPU, and memory freed in one arena is not reused by another. The
//! daemon has many short-lived threads (libvirt calls, image work) handling
//! screen-sized buffers, so free memory ends up spread over arenas that each
//! keep some. Measured with 32 VNC mirrors under 32 clients (`cargo bench
//! --bench screenshots`): peak RSS 156 MB with glibc's default, 147 MB with two
//! arenas, at no cost in throughput. Two is plenty for a process whose heavy
//! allocations are a few large buffers.

/// Caps glibc's malloc arenas, and keeps screen-sized buffers out of the heap.
/// Call before the first thread is started.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tunables of the allocator; called before any
    // other thread exists, nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // glibc raises its mmap threshold to the size of each mapped block
        // freed (up to 32 MiB), after which screen-sized buffers (decoded
        // screens, JPEG scratch) come from the heap and stay resident once
        // freed. A fixed threshold maps every block of 1 MiB or more and
        // unmaps it when freed.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
