//! `EnginePool`: the engine's memory pool. DataFusion's `FairSpillPool`
//! (the operators that can spill share what the others leave), naming its
//! top five consumers in its errors, except that `RepartitionExec`'s
//! reservations are counted and never refused.
//!
//! DataFusion 55's `RepartitionExec` writes a batch it cannot reserve to a
//! spill file and sends its reader a marker; when two of its inputs spill
//! at once, the reader can wait for ever on the older file while the
//! batch it needs is in the newer one, and the query stops without an
//! error (apache/datafusion#24883, fixed after 55 by #24891; a 5M × 1M
//! hash join under 36–38 MB, or a `count(DISTINCT …)` under 2 MB, stopped
//! so here). Never refusing its reservations keeps it off that path. What
//! it buffers (a batch or so per input and output partition: its channels
//! close their gate when every one holds a batch) may take the pool past
//! its limit by that much. It still counts: the operators that cannot
//! spill (a hash join's build side, `InferenceExec`) see it and fail with
//! "Resources exhausted" sooner; those that can (sorts, aggregates) keep
//! their share of what the unspillable leave, as `FairSpillPool` gives
//! each spiller whatever the others hold. [`SessionPool`] (a server
//! connection's limit) never refuses these reservations either. To be
//! removed with the move past DataFusion 55.
//!
//! [`SessionPool`]: crate::session_pool::SessionPool

use std::fmt;

use datafusion::common::Result;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

/// The engine's memory pool: see the module's documentation.
#[derive(Debug)]
pub struct EnginePool {
    inner: TrackConsumersPool<FairSpillPool>,
}

impl EnginePool {
    /// A pool of `limit` bytes (`usize::MAX`: no limit).
    pub fn new(limit: usize) -> Self {
        Self {
            inner: TrackConsumersPool::new(FairSpillPool::new(limit), TOP_CONSUMERS),
        }
    }
}

/// Consumers named in a "Resources exhausted" error.
const TOP_CONSUMERS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(5) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// Whether `consumer` is a `RepartitionExec`'s buffer, whose reservations
/// are never refused (not its `[Merge n]` reservation, which does not
/// spill).
pub(crate) fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .is_some_and(|rest| !rest.starts_with("Merge"))
}

impl fmt::Display for EnginePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl MemoryPool for EnginePool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn repartitions_are_counted_and_never_refused_others_are() {
        let pool: Arc<dyn MemoryPool> = Arc::new(EnginePool::new(1000));
        let repartition = MemoryConsumer::new("RepartitionExec[0]")
            .with_can_spill(true)
            .register(&pool);
        let sort = MemoryConsumer::new("ExternalSorter[0]")
            .with_can_spill(true)
            .register(&pool);
        let join = MemoryConsumer::new("HashJoinInput[0]").register(&pool);
        let merge = MemoryConsumer::new("RepartitionExec[Merge 0]").register(&pool);
        assert!(merge.try_grow(1500).is_err());
        repartition.try_grow(1500).unwrap();
        assert_eq!(pool.reserved(), 1500);
        let err = join.try_grow(10).unwrap_err().to_string();
        assert!(err.contains("Resources exhausted"), "{err}");
        assert!(err.contains("RepartitionExec[0]"), "{err}");
        // A spiller still has its share of what the unspillable leave:
        // (1000 - 0) / 2 consumers that can spill.
        sort.try_grow(500).unwrap();
        assert!(sort.try_grow(1).is_err());
        sort.shrink(500);
        repartition.shrink(1500);
        join.try_grow(600).unwrap();
        assert!(join.try_grow(401).is_err());
        assert_eq!(pool.reserved(), 600);
        assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(1000)));
    }
}
