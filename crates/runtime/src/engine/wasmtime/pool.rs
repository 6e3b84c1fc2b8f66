//! The pooling allocator for engines that run many instances (serve, the shim's HTTP components):
//! sized from the limits, halved while the host refuses the address space, on-demand as the last resort.

use wasmtime::Config;

use super::outcome::{engine_err, root_cause};
use super::{Allocator, PoolOptions};
use crate::Result;

/// The address space the pool's linear memories may reserve at 4 GiB each: a quarter of x86-64's
/// 128 TiB user space (1,000 instances take 16 TiB).
const WIDE_BUDGET: u64 = 32 << 40;

/// An engine with the pooling allocator, halving the pool while the host refuses the address space
/// (a small VM, `ulimit -v`, overcommit off), then falling back to on-demand allocation.
///
/// Each linear memory is reserved at 4 GiB (plus a 32 MiB guard) when the pool's memories fit
/// [`WIDE_BUDGET`] that way: then a 32-bit memory needs no bounds checks, as under `wasmtime serve`.
/// Otherwise (thousands of instances) at the memory cap, which is what lets them fit, with explicit
/// bounds checks: Cranelift then compiles more code (the componentize-py hello took 10.5 s to its
/// first answer instead of 8.2 s) and it runs a few percent slower. Either way `--memory` is the
/// limiter's to enforce, not the reservation's.
pub(super) fn pooled_engine(config: &mut Config, pool: PoolOptions) -> Result<(wasmtime::Engine, Allocator)> {
    use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};
    let max_memory = pool.max_memory.max(64 << 10).div_ceil(64 << 10) * (64 << 10);
    let mut instances = pool.instances.max(1);
    loop {
        let memories = instances.saturating_mul(4);
        let mut p = PoolingAllocationConfig::default();
        // A component built with the WASI adapter has a handful of core instances and two or
        // three memories and tables; leave room for more.
        p.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(memories)
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset the first MiB of a returning memory and table with memset instead of madvise:
            // no page faults and TLB shootdowns for the next instance (measured: a fresh request
            // 39-52 us -> 22-26 us with the C hello guest).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 20)
            // On Linux >= 6.7 PAGEMAP_SCAN finds the pages the guest really dirtied, so only those
            // are reset instead of everything below the MiB (older kernels: the plain memset).
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        let wide = u64::from(memories).saturating_mul((4 << 30) + (32 << 20)) <= WIDE_BUDGET && max_memory <= 4 << 30;
        if wide {
            config.memory_reservation(4 << 30).memory_guard_size(32 << 20);
            if let Ok(engine) = wasmtime::Engine::new(config) {
                return Ok((engine, Allocator::Pooling(instances)));
            }
        }
        config.memory_reservation(max_memory).memory_guard_size(64 << 10);
        match wasmtime::Engine::new(config) {
            Ok(engine) => return Ok((engine, Allocator::Pooling(instances))),
            Err(e) if instances > 1 => {
                tracing::warn!(instances, "cannot reserve a pool of this size ({}); trying half", root_cause(&e));
                instances /= 2;
            }
            Err(e) => {
                tracing::warn!("no pooling allocator ({}); allocating instances on demand", root_cause(&e));
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                return Ok((wasmtime::Engine::new(config).map_err(engine_err)?, Allocator::OnDemand));
            }
        }
    }
}
