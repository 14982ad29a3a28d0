//! The chunks of files a media scan's partitions read, shared by the
//! partitions of one execution: each partition reads its own group first,
//! in order, and one that runs out takes chunks from the end of the
//! fullest other group (work stealing).
//!
//! Groups are balanced by a guess of each file's cost before the scan
//! starts; the guess misses (lossy against lossless, a core busy with
//! another process), and measured, the first partition of an audio scan
//! finished 10–80 ms (3–20%) before the last with the other core idle.
//!
//! Only partitions opened in the same execution (the same `TaskContext`,
//! which DataFusion hands every partition of one run) share: a partition
//! run on its own elsewhere (a distributed engine's task) never takes
//! another's chunks, since that one is not opened here, and a partition
//! opened a second time starts a new execution, so a plan run twice reads
//! every file twice, not once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use datafusion::execution::TaskContext;
use object_store::ObjectMeta;

/// One chunk: the files of one batch.
pub type Chunk = Vec<ObjectMeta>;

/// A chunk is halved near the end only when it holds more bytes than this
/// (a fraction of a millisecond of decoding is not worth a batch of its
/// own, and small scans keep their batches as they were).
const MIN_SPLIT_BYTES: u64 = 256 * 1024;

/// Whether `c` is worth halving.
fn splittable(c: &Chunk) -> bool {
    c.len() > 1 && c.iter().map(|f| f.size).sum::<u64>() > MIN_SPLIT_BYTES
}

/// The chunks of one execution of a scan.
#[derive(Debug)]
pub struct SharedChunks {
    /// Chunks not yet taken, per partition.
    queues: Vec<Mutex<VecDeque<Chunk>>>,
    /// Which partitions this execution has opened.
    opened: Mutex<Vec<bool>>,
    /// The execution's context.
    task: Weak<TaskContext>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedChunks {
    fn new(groups: Vec<Vec<Chunk>>, task: &Arc<TaskContext>) -> Self {
        Self {
            opened: Mutex::new(vec![false; groups.len()]),
            queues: groups
                .into_iter()
                .map(|g| Mutex::new(g.into_iter().collect()))
                .collect(),
            task: Arc::downgrade(task),
        }
    }

    /// The next chunk for `partition`: its own next one, else the last one
    /// of the opened partition with the most left; `None` when all opened
    /// partitions are done. Near the end (fewer chunks left than two per
    /// opened partition, two partitions or more) a chunk of several files
    /// and more than [`MIN_SPLIT_BYTES`] is halved and the other
    /// half left where it was, so that the partitions finish together
    /// rather than one waiting on another's last large chunk.
    pub fn next(&self, partition: usize) -> Option<Chunk> {
        let opened = lock(&self.opened).clone();
        let open = opened.iter().filter(|o| **o).count();
        let own = self.queues.get(partition)?;
        let taken = lock(own).pop_front();
        if let Some(mut c) = taken {
            if splittable(&c) && self.near_the_end(&opened, open) {
                let rest = c.split_off(c.len().div_ceil(2));
                lock(own).push_front(rest);
            }
            return Some(c);
        }
        loop {
            let fullest = self
                .queues
                .iter()
                .zip(&opened)
                .filter(|(_, open)| **open)
                .map(|(q, _)| (lock(q).len(), q))
                .filter(|(left, _)| *left > 0)
                .max_by_key(|(left, _)| *left)
                .map(|(_, q)| q)?;
            // Another partition may have emptied it since it was counted.
            let stolen = lock(fullest).pop_back();
            if let Some(mut c) = stolen {
                if splittable(&c) && self.near_the_end(&opened, open) {
                    let rest = c.split_off(c.len() / 2);
                    lock(fullest).push_back(c);
                    return Some(rest);
                }
                return Some(c);
            }
        }
    }

    /// Whether fewer chunks are left in the opened partitions' queues than
    /// two per opened partition (never with one partition: nothing to
    /// balance).
    fn near_the_end(&self, opened: &[bool], open: usize) -> bool {
        if open < 2 {
            return false;
        }
        let left: usize = self
            .queues
            .iter()
            .zip(opened)
            .filter(|(_, open)| **open)
            .map(|(q, _)| lock(q).len())
            .sum();
        left < 2 * open
    }
}

/// Where a scan keeps the chunks of its current execution.
#[derive(Debug, Default)]
pub struct ChunkSlot(Mutex<Option<Arc<SharedChunks>>>);

impl ChunkSlot {
    /// The chunks `partition` reads in the execution of `task`: those of
    /// the execution the other partitions of `task` opened, else (another
    /// context, or this partition already opened in it) a new execution
    /// with the chunks `make` gives, one list per partition.
    pub fn open(
        &self,
        partition: usize,
        task: &Arc<TaskContext>,
        make: impl FnOnce() -> Vec<Vec<Chunk>>,
    ) -> Arc<SharedChunks> {
        let mut slot = lock(&self.0);
        let current = slot.as_ref().filter(|s| {
            let same_task = s.task.upgrade().is_some_and(|t| Arc::ptr_eq(&t, task));
            same_task && !lock(&s.opened).get(partition).copied().unwrap_or(true)
        });
        let shared = match current {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(SharedChunks::new(make(), task));
                *slot = Some(Arc::clone(&s));
                s
            }
        };
        if let Some(o) = lock(&shared.opened).get_mut(partition) {
            *o = true;
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;

    fn file(name: &str) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(name),
            last_modified: Default::default(),
            size: MIN_SPLIT_BYTES,
            e_tag: None,
            version: None,
        }
    }

    fn groups() -> Vec<Vec<Chunk>> {
        vec![
            vec![vec![file("a1")], vec![file("a2")], vec![file("a3")]],
            vec![vec![file("b1")]],
        ]
    }

    fn names(c: Option<Chunk>) -> Vec<String> {
        c.unwrap_or_default()
            .iter()
            .map(|m| m.location.to_string())
            .collect()
    }

    #[test]
    fn a_partition_that_runs_out_takes_from_the_end_of_another() {
        let slot = ChunkSlot::default();
        let task = Arc::new(TaskContext::default());
        let p0 = slot.open(0, &task, groups);
        let p1 = slot.open(1, &task, || panic!("the same execution"));
        assert!(Arc::ptr_eq(&p0, &p1));
        assert_eq!(names(p1.next(1)), ["b1"]);
        // Own chunks first, then the last of partition 0's.
        assert_eq!(names(p1.next(1)), ["a3"]);
        assert_eq!(names(p0.next(0)), ["a1"]);
        assert_eq!(names(p0.next(0)), ["a2"]);
        assert!(p0.next(0).is_none());
        assert!(p1.next(1).is_none());
    }

    #[test]
    fn near_the_end_chunks_are_halved() {
        let slot = ChunkSlot::default();
        let task = Arc::new(TaskContext::default());
        let many = |p: &str| (1..=4).map(|i| file(&format!("{p}{i}"))).collect::<Chunk>();
        let p0 = slot.open(0, &task, || {
            vec![vec![many("a"), many("c")], vec![many("b")]]
        });
        let p1 = slot.open(1, &task, || panic!("the same execution"));
        // Fewer than two chunks left per partition: each chunk taken is
        // halved, its later half left at the head of its queue.
        assert_eq!(names(p0.next(0)), ["a1", "a2"]);
        assert_eq!(names(p1.next(1)), ["b1", "b2"]);
        assert_eq!(names(p1.next(1)), ["b3"]);
        assert_eq!(names(p1.next(1)), ["b4"]);
        // Partition 1 is out: it takes the later half of partition 0's last
        // chunk, and partition 0 goes on in order.
        assert_eq!(names(p1.next(1)), ["c3", "c4"]);
        assert_eq!(names(p0.next(0)), ["a3"]);
        assert_eq!(names(p0.next(0)), ["a4"]);
        assert_eq!(names(p0.next(0)), ["c1"]);
        assert_eq!(names(p1.next(1)), ["c2"]);
        assert!(p0.next(0).is_none());
        assert!(p1.next(1).is_none());
    }

    #[test]
    fn small_chunks_are_not_halved() {
        let slot = ChunkSlot::default();
        let task = Arc::new(TaskContext::default());
        let tiny = |n: &str| ObjectMeta {
            size: 10,
            ..file(n)
        };
        let p0 = slot.open(0, &task, || vec![vec![vec![tiny("a"), tiny("b")]], vec![]]);
        slot.open(1, &task, || panic!("the same execution"));
        assert_eq!(names(p0.next(0)), ["a", "b"]);
    }

    #[test]
    fn a_partition_alone_never_takes_another_ones_files() {
        // A distributed engine runs partition 1 on its own.
        let slot = ChunkSlot::default();
        let task = Arc::new(TaskContext::default());
        let p1 = slot.open(1, &task, groups);
        assert_eq!(names(p1.next(1)), ["b1"]);
        assert!(p1.next(1).is_none());
    }

    #[test]
    fn a_second_run_or_another_context_reads_everything_again() {
        let slot = ChunkSlot::default();
        let task = Arc::new(TaskContext::default());
        let first = slot.open(0, &task, groups);
        while first.next(0).is_some() {}
        // Partition 0 again in the same context: a new execution.
        let again = slot.open(0, &task, groups);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(names(again.next(0)), ["a1"]);
        // Another context: a new execution too.
        let other = Arc::new(TaskContext::default());
        let third = slot.open(1, &other, groups);
        assert!(!Arc::ptr_eq(&again, &third));
        assert_eq!(names(third.next(1)), ["b1"]);
    }
}
