//! A session's state kept between statements.
//!
//! DataFusion's `SessionContext::state()` copies the whole session state —
//! every function table (hundreds of names), every setting, every rule
//! list — for each statement, and `DataFrame::execute_stream` copies the
//! function tables once more into a `TaskContext`; for a small query
//! (`SELECT 1`, a point lookup) those copies and their drops were about
//! half of the CPU it took. A session keeps one copy, and its task context,
//! from one statement to the next, and makes a new one only when the
//! session changed: a setting (`SET` replaces the session's shared options,
//! which the copy compares by address), a function added or dropped, or
//! any statement that is not a query (DDL, `PREPARE`, …) having run.

use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionContext;

/// A copy of a session's state and the task context made from it.
pub(crate) struct CachedState {
    pub state: SessionState,
    pub task: Arc<TaskContext>,
    /// Which copy this is: plans made with an earlier one are stale.
    pub generation: u64,
}

/// The copy a session plans its queries on (one per session; clones of a
/// `Quiver` share it).
#[derive(Default)]
pub(crate) struct StateCache {
    kept: Mutex<Option<CachedState>>,
    /// Copies made so far.
    made: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("cached", &self.lock().is_some())
            .finish()
    }
}

impl StateCache {
    fn lock(&self) -> MutexGuard<'_, Option<CachedState>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's state for one statement (its start time set now):
    /// the kept copy while `ctx` has not changed since it was made, else a
    /// new copy. Give it back with [`StateCache::put`]; a statement that
    /// runs meanwhile on the same session makes its own.
    pub fn take(&self, ctx: &SessionContext) -> CachedState {
        let mut kept = self.take_unstarted(ctx);
        kept.state.mark_start_execution();
        kept
    }

    /// As [`StateCache::take`], without setting the statement's start
    /// time: for a statement that may run a kept plan and not plan at all.
    /// Whoever plans on it must call `mark_start_execution` first (`now()`
    /// is folded while planning).
    pub fn take_unstarted(&self, ctx: &SessionContext) -> CachedState {
        let kept = self.lock().take();
        match kept {
            Some(kept) if unchanged(ctx, &kept.state) => kept,
            _ => {
                let state = ctx.state();
                let task = Arc::new(TaskContext::from(&state));
                let generation = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                CachedState {
                    state,
                    task,
                    generation,
                }
            }
        }
    }

    /// Keeps `state` for the session's next statement.
    pub fn put(&self, state: CachedState) {
        *self.lock() = Some(state);
    }

    /// Drops the kept copy: the session may have changed in a way the
    /// comparison cannot see.
    pub fn forget(&self) {
        *self.lock() = None;
    }
}

/// Whether `copy` still stands for `ctx`'s state. `SET` (and every other
/// change of an option) replaces the options the copy shares with the
/// session, so the addresses differ; functions are compared by count
/// (registering or dropping one outside [`StateCache::forget`]'s callers).
fn unchanged(ctx: &SessionContext, copy: &SessionState) -> bool {
    let current = ctx.state_ref();
    let current = current.read();
    Arc::ptr_eq(current.config().options(), copy.config().options())
        && current.scalar_functions().len() == copy.scalar_functions().len()
        && current.aggregate_functions().len() == copy.aggregate_functions().len()
        && current.window_functions().len() == copy.window_functions().len()
        && current.table_functions().len() == copy.table_functions().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_lasts_until_the_session_changes() {
        let ctx = SessionContext::new();
        let cache = StateCache::default();
        let first = cache.take(&ctx);
        let options = Arc::clone(first.state.config().options());
        cache.put(first);
        // Unchanged: the same copy comes back.
        let again = cache.take(&ctx);
        assert!(Arc::ptr_eq(again.state.config().options(), &options));
        assert_eq!(again.generation, 1);
        cache.put(again);
        // A setting changed: a new copy that sees it.
        ctx.sql("SET datafusion.execution.batch_size = 100")
            .await
            .expect("set");
        let after_set = cache.take(&ctx);
        assert!(!Arc::ptr_eq(after_set.state.config().options(), &options));
        assert_eq!(after_set.generation, 2);
        assert_eq!(after_set.state.config().batch_size(), 100);
        assert_eq!(after_set.task.session_config().batch_size(), 100);
        cache.put(after_set);
        // A function registered: a new copy that has it.
        ctx.register_udf(
            datafusion::logical_expr::ScalarUDF::from(
                datafusion::functions::string::upper::UpperFunc::new(),
            )
            .with_aliases(["shout"]),
        );
        let after_udf = cache.take(&ctx);
        assert!(after_udf.state.scalar_functions().contains_key("shout"));
        cache.put(after_udf);
        // Forgotten: a new copy even though nothing changed.
        let kept = Arc::clone(&cache.lock().as_ref().expect("kept").task);
        cache.forget();
        let fresh = cache.take(&ctx);
        assert!(!Arc::ptr_eq(&fresh.task, &kept));
    }
}
