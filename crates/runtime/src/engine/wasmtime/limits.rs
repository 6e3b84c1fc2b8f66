//! The memory limiter of every store: caps each linear memory at the policy's limit and remembers a
//! denied growth, so that a guest that then fails is reported as out of memory rather than as a bare trap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::ResourceLimiter;

use crate::SandboxPolicy;

/// Caps each linear memory and remembers whether the cap was hit.
pub(crate) struct MemoryLimiter {
    max_memory: Option<usize>,
    hit: Arc<AtomicBool>,
}

impl MemoryLimiter {
    pub(crate) fn new(policy: &SandboxPolicy) -> MemoryLimiter {
        MemoryLimiter {
            max_memory: policy.limits.memory.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            hit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Tells, after the store is gone, whether a growth was denied.
    pub(crate) fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        match self.max_memory {
            Some(max) if desired > max => {
                self.hit.store(true, Ordering::SeqCst);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000_000)
    }
}
