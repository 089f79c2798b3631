//! Freed memory handed back to the system.
//!
//! glibc's allocator (the image's) keeps the pages of freed allocations inside its heaps and
//! gives back by itself only what lies at the top of a heap. After a burst of ScanRequests has
//! been reconciled and deleted, the objects, response bodies and buffers of the burst are freed
//! but their pages stay with the process: about 8 MiB after 1,000 requests, which the next
//! burst reuses only in part. `malloc_trim` returns every free page of every heap; see
//! docs/benchmarks.md, "Churn".

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages are handed back: soon after a burst, and rarely enough that the pages
/// of a steady load are not given back and faulted in again all the time.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Trims every [`TRIM_INTERVAL`] until `shutdown`.
pub async fn trim_periodically(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // A trim walks the allocator's free lists under its locks: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Gives the free pages of the allocator's heaps back to the system; nothing where the
/// allocator is not glibc's.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions: it takes the allocator's own locks and only
    // releases pages that no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of this process resident in memory.
    fn rss_bytes() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_back_the_pages_of_freed_small_allocations() {
        // Many small blocks (below the mmap threshold, so inside a heap), then all but the
        // last freed: the last pins the top of the heap, so glibc gives nothing back by itself.
        let blocks: Vec<Vec<u8>> = (0..100_000).map(|i| vec![i as u8; 1000]).collect();
        let pin = vec![1u8; 1000];
        drop(blocks);
        let before = rss_bytes();
        trim();
        let after = rss_bytes();
        assert!(
            before.saturating_sub(after) > 50 * 1024 * 1024,
            "RSS {before} -> {after} bytes"
        );
        drop(pin);
    }
}
