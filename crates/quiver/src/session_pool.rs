//! `SessionPool`: one session's view of the engine's memory pool. Every
//! reservation a session's queries make goes to the shared pool (whose
//! limit and spilling policy hold for everyone), and is also counted for
//! the session: what one connection of `quiver serve` holds, and, with a
//! limit (`server.connection_memory_limit`), more than that is refused for
//! that connection only.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{Result, resources_datafusion_err};

use crate::engine_pool::is_repartition;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};

/// A session's share of the engine's memory pool.
#[derive(Debug)]
pub struct SessionPool {
    shared: Arc<dyn MemoryPool>,
    held: AtomicUsize,
    limit: Option<usize>,
}

impl SessionPool {
    /// Counts the session's reservations in `shared`, refusing those that
    /// would take the session over `limit` bytes.
    pub fn new(shared: Arc<dyn MemoryPool>, limit: Option<usize>) -> Self {
        Self {
            shared,
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes the session's queries hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The session's limit, if it has one.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl fmt::Display for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionPool(held {} of {})", self.held(), self.shared)
    }
}

impl MemoryPool for SessionPool {
    fn name(&self) -> &str {
        "SessionPool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.held.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.held.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        // As the engine's pool: see `engine_pool`.
        if is_repartition(reservation.consumer()) {
            self.grow(reservation, additional);
            return Ok(());
        }
        if let Some(limit) = self.limit {
            // Reserve the session's share first, so that two partitions
            // growing at once cannot both pass the check.
            let before = self.held.fetch_add(additional, Ordering::Relaxed);
            if before.saturating_add(additional) > limit {
                self.held.fetch_sub(additional, Ordering::Relaxed);
                return Err(resources_datafusion_err!(
                    "Failed to allocate additional {} for {}: this connection's queries hold {} of its {} (server.connection_memory_limit)",
                    human_readable_size(additional),
                    reservation.consumer().name(),
                    human_readable_size(before),
                    human_readable_size(limit)
                ));
            }
            if let Err(e) = self.shared.try_grow(reservation, additional) {
                self.held.fetch_sub(additional, Ordering::Relaxed);
                return Err(e);
            }
            return Ok(());
        }
        self.shared.try_grow(reservation, additional)?;
        self.held.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    /// What the session holds (the engine's pool reports everyone's).
    fn reserved(&self) -> usize {
        self.held()
    }

    fn memory_limit(&self) -> MemoryLimit {
        let shared = self.shared.memory_limit();
        match (self.limit, shared) {
            (Some(mine), MemoryLimit::Finite(all)) => MemoryLimit::Finite(mine.min(all)),
            (Some(mine), _) => MemoryLimit::Finite(mine),
            (None, shared) => shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn sessions_count_their_own_and_share_the_limit() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a = Arc::new(SessionPool::new(Arc::clone(&shared), Some(300)));
        let b = Arc::new(SessionPool::new(Arc::clone(&shared), None));
        let pool_a: Arc<dyn MemoryPool> = a.clone();
        let pool_b: Arc<dyn MemoryPool> = b.clone();
        let ra = MemoryConsumer::new("a").register(&pool_a);
        let rb = MemoryConsumer::new("b").register(&pool_b);
        ra.try_grow(200).unwrap();
        rb.try_grow(500).unwrap();
        assert_eq!((a.held(), b.held(), shared.reserved()), (200, 500, 700));
        // Over the session's limit: refused, nothing counted.
        let err = ra.try_grow(200).unwrap_err().to_string();
        assert!(err.contains("server.connection_memory_limit"), "{err}");
        assert_eq!((a.held(), shared.reserved()), (200, 700));
        // Over the engine's: refused by the shared pool, nothing counted.
        assert!(rb.try_grow(400).is_err());
        assert_eq!((b.held(), shared.reserved()), (500, 700));
        ra.shrink(100);
        drop(rb);
        assert_eq!((a.held(), b.held(), shared.reserved()), (100, 0, 100));
    }

    #[test]
    fn a_connection_limit_never_refuses_a_repartition_either() {
        let shared: Arc<dyn MemoryPool> = Arc::new(crate::engine_pool::EnginePool::new(1000));
        let session = Arc::new(SessionPool::new(Arc::clone(&shared), Some(100)));
        let pool: Arc<dyn MemoryPool> = session.clone();
        let repartition = MemoryConsumer::new("RepartitionExec[1]")
            .with_can_spill(true)
            .register(&pool);
        let sort = MemoryConsumer::new("ExternalSorter[1]")
            .with_can_spill(true)
            .register(&pool);
        repartition.try_grow(2000).unwrap();
        assert_eq!((session.held(), shared.reserved()), (2000, 2000));
        let err = sort.try_grow(1).unwrap_err().to_string();
        assert!(err.contains("server.connection_memory_limit"), "{err}");
        drop(repartition);
        assert_eq!((session.held(), shared.reserved()), (0, 0));
    }
}
