//! glibc malloc settings for Quiver's pipelines, whose decoding threads,
//! blocking-pool threads and model workers make and free buffers of
//! megabytes (file reads, decoded images, activations) many times a
//! second.
//!
//! glibc gives a thread that finds the arenas in use an arena of its own,
//! up to eight per core, and each arena keeps what is freed into it for
//! reuse: the process ends up holding the high-water mark of every arena.
//! And it serves a buffer from its own mapping (returned to the system when
//! freed) only from a threshold that it raises to the largest such buffer
//! freed so far (up to 32 MB): after the first 4 MB batch is freed, the
//! buffers below 4 MB all stay in the arenas.
//!
//! Measured over 10,000 JPEGs into ViT-B/32 at 16 partitions under a
//! 512 MB limit (`cargo bench -p quiver-benches --bench inference`), peak
//! RSS: on an H100 machine (16 cores, model on the GPU) 1,102–1,144 MB
//! with one arena per core, 946 MB with two, 826 MB with two and buffers of
//! 256 KB and up returned when freed (against 864 MB of limit + weights);
//! on 2 cores with the model on the CPU, returning buffers cost 8% and 30%
//! of the run time in two pairs of runs (the forward pass's activations are
//! such buffers, reused at once when kept), so that part applies only once
//! a model is on a GPU.

/// Buffers from this size are returned to the system when freed, once a
/// model runs on a GPU ([`return_freed_buffers`]).
pub const GPU_MMAP_THRESHOLD: usize = 256 * 1024;

/// The arenas [`limit_malloc_arenas`] allows on `cores` cores: one per
/// eight cores, at least two (glibc's default is eight per core). Small
/// allocations come from each thread's own cache whatever the arenas, so
/// few arenas cost little waiting: on the 16-core machine, two arenas ran
/// the pipeline as fast as sixteen.
pub fn arenas_for(cores: usize) -> usize {
    (cores / 8).max(2)
}

/// Caps glibc malloc's arenas ([`arenas_for`] the machine's cores). Call
/// it first thing in `main`, before the runtime starts its threads: a
/// thread keeps the arena it was given. A `MALLOC_ARENA_MAX` in the
/// environment, which glibc reads itself, is left to stand. True when the
/// cap took; false where `MALLOC_ARENA_MAX` is set and on other C
/// libraries (musl, macOS), which have no arenas to cap.
pub fn limit_malloc_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    set_malloc_option(MallocOption::ArenaMax, arenas_for(cores))
}

/// Has glibc return buffers of [`GPU_MMAP_THRESHOLD`] and more to the
/// system when they are freed, instead of keeping them in its arenas.
/// Quiver's model loader calls it when a model is first placed on a GPU,
/// where the host's large buffers are media on its way to the device; on
/// the CPU the activations are such buffers, and keeping them is faster.
/// A `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the
/// environment is left to stand. True when the setting took.
pub fn return_freed_buffers() -> bool {
    if thresholds_in_environment() {
        return false;
    }
    set_malloc_option(MallocOption::MmapThreshold, GPU_MMAP_THRESHOLD)
}

/// Whether the environment sets glibc's thresholds, which glibc reads
/// itself.
fn thresholds_in_environment() -> bool {
    std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
}

/// The `mallopt` parameters set here.
#[derive(Debug, Clone, Copy)]
enum MallocOption {
    ArenaMax,
    MmapThreshold,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_option(option: MallocOption, value: usize) -> bool {
    let param = match option {
        MallocOption::ArenaMax => libc::M_ARENA_MAX,
        MallocOption::MmapThreshold => libc::M_MMAP_THRESHOLD,
    };
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt sets one of malloc's tuning parameters under
    // malloc's own lock, with no effect on memory in use; an allocation in
    // another thread meanwhile reads the old value or the new one.
    #[allow(unsafe_code)]
    let set = unsafe { libc::mallopt(param, value) };
    set == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_option(_option: MallocOption, _value: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_arenas_up_to_sixteen_cores_then_one_per_eight() {
        assert_eq!(arenas_for(1), 2);
        assert_eq!(arenas_for(2), 2);
        assert_eq!(arenas_for(16), 2);
        assert_eq!(arenas_for(24), 3);
        assert_eq!(arenas_for(64), 8);
    }

    /// Whether glibc gave the buffer at `ptr` a mapping of its own: the
    /// IS_MMAPPED bit (2) of the size word before every glibc chunk; a
    /// property of this buffer alone, whatever other threads allocate.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mapped(ptr: *const u8) -> bool {
        // SAFETY: the word before a live glibc allocation is its chunk's
        // size field, readable while the allocation is.
        #[allow(unsafe_code)]
        let size_field = unsafe { ptr.cast::<usize>().sub(1).read() };
        size_field & 2 != 0
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn after_return_freed_buffers_a_buffer_below_the_largest_freed_is_mapped() {
        if thresholds_in_environment() {
            return;
        }
        // Whether a buffer of `size` (more than the arena has free) gets a
        // mapping of its own, after 8 MB were freed: which raises glibc's
        // own threshold to 8 MB.
        let mapped_when_made = |size: usize| {
            drop(std::hint::black_box(vec![1u8; 8 << 20]));
            let buffer = std::hint::black_box(vec![1u8; size]);
            mapped(buffer.as_ptr())
        };
        assert!(!mapped_when_made(1 << 20), "glibc's default mapped 1 MB");
        assert!(return_freed_buffers());
        assert!(mapped_when_made(3 << 20), "3 MB were not mapped");
    }
}
