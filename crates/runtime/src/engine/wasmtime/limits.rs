//! The resource limiter of every store: `--memory` bounds everything the guest can make the host
//! allocate for it, all its linear memories and tables together (per store: a command, one request,
//! one container's guest), and the number of instances, memories and tables it may create. A denied
//! growth is remembered, so that a guest that then fails is reported as out of memory rather than as a
//! bare trap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::ResourceLimiter;

use crate::SandboxPolicy;

/// What one table element costs the host: a pointer (funcref and externref tables alike).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();
/// Table elements allowed without a memory cap (wasmtime's own default bound).
const MAX_TABLE_ELEMENTS: usize = 10_000_000;
/// Core instances a store may create (a component made by the WASI adapter has a handful).
pub(crate) const MAX_INSTANCES: usize = 1000;
/// Linear memories a store may create (each reserves address space when it is made).
pub(crate) const MAX_MEMORIES: usize = 100;
/// Tables a store may create.
pub(crate) const MAX_TABLES: usize = 1000;
/// Resources (handles: streams, fields, requests, buckets) a guest may hold in the host's table at once,
/// at most; under a memory cap, fewer (see [`max_resources`]).
pub(crate) const MAX_RESOURCES: usize = 100_000;
/// Resources a guest may always hold, whatever its memory cap (as `ulimit -n` is 1024).
pub(crate) const MIN_RESOURCES: usize = 1024;
/// The most host memory one resource can hold: a header map (wasi:http `fields`) and an outgoing body's
/// buffer are each bounded to this.
pub(crate) const RESOURCE_BYTES: usize = 64 << 10;

/// How many resources a guest under `policy` may hold: host memory held for it through them stays
/// within its memory cap (or [`MIN_RESOURCES`] × [`RESOURCE_BYTES`], 64 MiB, if that is larger). Without
/// this, 100,000 full header maps were 12.8 GB of host memory under `--memory 64M`.
pub(crate) fn max_resources(policy: &SandboxPolicy) -> usize {
    match policy.limits.memory {
        Some(cap) => (usize::try_from(cap).unwrap_or(usize::MAX) / RESOURCE_BYTES).clamp(MIN_RESOURCES, MAX_RESOURCES),
        None => MAX_RESOURCES,
    }
}

/// Bounds a store's memories and tables together and remembers whether the bound was hit.
pub(crate) struct MemoryLimiter {
    max_bytes: Option<usize>,
    /// Bytes of the store's memories and tables, as last granted.
    used: usize,
    hit: Arc<AtomicBool>,
}

impl MemoryLimiter {
    pub(crate) fn new(policy: &SandboxPolicy) -> MemoryLimiter {
        MemoryLimiter {
            max_bytes: policy.limits.memory.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            used: 0,
            hit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Tells, after the store is gone, whether a growth was denied.
    pub(crate) fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }

    /// Grants growing something from `current` to `desired` bytes if the total stays under the cap.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if self.max_bytes.is_some_and(|max| total > max) {
            self.hit.store(true, Ordering::SeqCst);
            return false;
        }
        self.used = total;
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if self.max_bytes.is_none() {
            return Ok(desired <= MAX_TABLE_ELEMENTS);
        }
        Ok(self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(bytes: u64) -> MemoryLimiter {
        let mut p = SandboxPolicy::default();
        p.limits.memory = Some(bytes);
        MemoryLimiter::new(&p)
    }

    #[test]
    fn the_resource_table_holds_no_more_host_memory_than_the_cap() {
        let with = |cap: Option<u64>| {
            let mut p = SandboxPolicy::default();
            p.limits.memory = cap;
            max_resources(&p)
        };
        assert_eq!(with(Some(64 << 20)), 1024);
        assert_eq!(with(Some(4 << 30)), 65_536);
        assert_eq!(with(Some(1 << 20)), MIN_RESOURCES, "a tiny cap still leaves ulimit -n's worth");
        assert_eq!(with(Some(u64::MAX)), MAX_RESOURCES);
        assert_eq!(with(None), MAX_RESOURCES);
    }

    #[test]
    fn memories_count_together_against_the_cap() {
        let mut l = capped(64 << 20);
        let page56 = 56 << 20;
        assert!(l.memory_growing(0, page56, None).unwrap());
        assert!(!l.memory_growing(0, page56, None).unwrap(), "a second 56 MiB memory must not fit in 64 MiB");
        assert!(l.hit.load(Ordering::SeqCst));
        // Growing the first one within the cap still works: only the difference counts.
        assert!(l.memory_growing(page56, 60 << 20, None).unwrap());
    }

    #[test]
    fn tables_count_against_the_same_cap() {
        let mut l = capped(1 << 20);
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(!l.table_growing(1000, 10_000_000, None).unwrap());
        assert!(l.hit.load(Ordering::SeqCst));
        let mut free = MemoryLimiter::new(&SandboxPolicy::default());
        assert!(free.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(!free.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }
}
