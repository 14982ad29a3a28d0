//! Equality lookups through a hash index, for kept plans.
//!
//! A kept plan's filter that compares a column of a memory table with a
//! parameter or a constant (`WHERE id = $1`, alone or among terms joined by
//! `AND`) is answered through a hash index of that column, as Postgres
//! answers it through a primary key's index: the rows the index gives are
//! checked against the whole filter, then projected. The index is built at
//! the plan's [`BUILD_AT`]th execution (a statement run once or twice pays
//! no more than its filter), lives as long as the kept plan (which holds
//! the batches it indexes, see `kept_plans`), and takes its memory from
//! the session's memory pool. Integer columns (except `UInt64`) and string
//! columns are indexed. The filter runs as planned while there is no index,
//! for a value of another type, where the pool has no room for the index,
//! or where the value matches more than an eighth of the rows.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ParamValues, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// The execution of a kept plan at which its indexes are built: Postgres
/// too plans a prepared statement with its values five times before it
/// settles on a generic plan.
pub(crate) const BUILD_AT: usize = 5;

/// `plan` with each filter it can answer through an index (see the module)
/// replaced by a [`LookupExec`].
pub(crate) fn with_lookups(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match LookupExec::over(&node) {
            Some(lookup) => Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// A filter over a memory table, answered through a hash index of the
/// column it compares with a value.
#[derive(Debug)]
pub(crate) struct LookupExec {
    /// The filter it stands for: its properties, and what runs while there
    /// is no index.
    filter: Arc<dyn ExecutionPlan>,
    /// The value the indexed column is compared with: a parameter's marker
    /// or a literal.
    value: Arc<dyn PhysicalExpr>,
    /// What the filter does with the rows the index finds.
    check: Arc<Check>,
    /// The memory table's batches, per partition (all their columns).
    partitions: Arc<Vec<Vec<RecordBatch>>>,
    /// The indexed column, among all the batches' columns.
    column: usize,
    /// Each partition's index, once built (`None`: it cannot be); shared
    /// by every copy of the kept plan.
    indexes: Arc<Vec<OnceLock<Option<Index>>>>,
    /// Executions of each partition so far, of every copy.
    executions: Arc<Vec<AtomicUsize>>,
}

/// A filter's work on the rows an index finds.
#[derive(Debug, Clone)]
struct Check {
    /// The columns of the batches the filter reads (the scan's
    /// projection), and their schema.
    scanned: Vec<usize>,
    input: SchemaRef,
    /// The filter's predicate, over `input`'s columns.
    predicate: Arc<dyn PhysicalExpr>,
    /// Whether the predicate is the comparison the index answers and
    /// nothing else: the rows found need no check.
    exact: bool,
    /// The filter's projection of its input's columns.
    projection: Option<Vec<usize>>,
    /// The columns of the batches the filter outputs, when `exact`.
    output: Vec<usize>,
    /// The filter's row limit.
    fetch: Option<usize>,
}

impl LookupExec {
    /// A lookup for `node` when it is a filter directly over a memory scan
    /// comparing one of its integer or string columns with a value.
    fn over(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let filter = node.downcast_ref::<FilterExec>()?;
        let scan = filter.input().downcast_ref::<DataSourceExec>()?;
        let memory = scan.data_source().downcast_ref::<MemorySourceConfig>()?;
        if scan.fetch().is_some() {
            return None;
        }
        let (input_column, value) = compared_column(filter.predicate())?;
        let column = match memory.projection() {
            Some(p) => *p.get(input_column)?,
            None => input_column,
        };
        if !indexable(memory.original_schema().fields().get(column)?.data_type()) {
            return None;
        }
        let partitions = memory.partitions().to_vec();
        let projection = filter.projection().as_ref().map(|p| p.to_vec());
        let scanned: Vec<usize> = match memory.projection() {
            Some(p) => p.clone(),
            None => (0..memory.original_schema().fields().len()).collect(),
        };
        let output = match &projection {
            Some(p) => p
                .iter()
                .map(|i| scanned.get(*i).copied())
                .collect::<Option<Vec<_>>>()?,
            None => scanned.clone(),
        };
        let exact = filter
            .predicate()
            .downcast_ref::<BinaryExpr>()
            .is_some_and(|b| *b.op() == Operator::Eq);
        Some(Self {
            filter: Arc::clone(node),
            value,
            check: Arc::new(Check {
                scanned,
                input: filter.input().schema(),
                predicate: Arc::clone(filter.predicate()),
                exact,
                projection,
                output,
                fetch: filter.fetch(),
            }),
            column,
            indexes: Arc::new(partitions.iter().map(|_| OnceLock::new()).collect()),
            executions: Arc::new(partitions.iter().map(|_| AtomicUsize::new(0)).collect()),
            partitions: Arc::new(partitions),
        })
    }

    /// This lookup with the markers in its filter replaced by the values
    /// in `params` (the index is shared).
    pub(crate) fn with_values(
        &self,
        params: Option<&ParamValues>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bound = |e: &Arc<dyn PhysicalExpr>| crate::kept_plans::bind(e, params);
        let predicate = bound(&self.check.predicate)?;
        let filter = self
            .filter
            .downcast_ref::<FilterExec>()
            .ok_or_else(|| DataFusionError::Internal("a lookup stands for a filter".into()))?;
        let filter = FilterExecBuilder::from(filter)
            .with_predicate(Arc::clone(&predicate))
            .build()?;
        Ok(Arc::new(Self {
            filter: Arc::new(filter),
            value: bound(&self.value)?,
            check: Arc::new(Check {
                predicate,
                ..(*self.check).clone()
            }),
            column: self.column,
            partitions: Arc::clone(&self.partitions),
            indexes: Arc::clone(&self.indexes),
            executions: Arc::clone(&self.executions),
        }))
    }

    /// The index of `partition`, built at the [`BUILD_AT`]th execution.
    fn index(&self, partition: usize, context: &TaskContext) -> Option<&Index> {
        let execution = self
            .executions
            .get(partition)?
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let index = self.indexes.get(partition)?;
        match index.get() {
            Some(built) => built.as_ref(),
            None if execution >= BUILD_AT => index
                .get_or_init(|| {
                    Index::build(
                        self.partitions.get(partition)?,
                        self.column,
                        context.memory_pool(),
                    )
                })
                .as_ref(),
            None => None,
        }
    }
}

impl Check {
    /// The rows of `batches` at `positions`, columns `columns` of them,
    /// as a batch of `schema`.
    fn rows(
        batches: &[RecordBatch],
        positions: &[Position],
        columns: &[usize],
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let missing = || DataFusionError::Internal("an index names a missing row".into());
        let mut parts = Vec::new();
        for run in positions.chunk_by(|a, b| a.batch == b.batch) {
            let source = batches.get(run[0].batch as usize).ok_or_else(missing)?;
            let column = |c: usize| source.columns().get(c).ok_or_else(missing);
            let arrays = match run {
                [one] => columns
                    .iter()
                    .map(|c| Ok(column(*c)?.slice(one.row as usize, 1)))
                    .collect::<Result<Vec<_>>>()?,
                _ => {
                    let rows = UInt32Array::from_iter_values(run.iter().map(|p| p.row));
                    columns
                        .iter()
                        .map(|c| Ok(take(column(*c)?, &rows, None)?))
                        .collect::<Result<Vec<_>>>()?
                }
            };
            parts.push(RecordBatch::try_new_with_options(
                Arc::clone(schema),
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(run.len())),
            )?);
        }
        Ok(match parts.len() {
            1 => parts.swap_remove(0),
            _ => concat_batches(schema, &parts)?,
        })
    }

    /// The filter's answer over the rows at `positions`: those it keeps,
    /// projected, as a batch of `schema`.
    fn answer(
        &self,
        batches: &[RecordBatch],
        positions: &[Position],
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        if self.exact {
            return Self::rows(batches, positions, &self.output, schema);
        }
        let candidates = Self::rows(batches, positions, &self.scanned, &self.input)?;
        let mask = self
            .predicate
            .evaluate(&candidates)?
            .into_array(candidates.num_rows())?;
        let kept = filter_record_batch(&candidates, mask.as_boolean())?;
        // The filter's schema, as its own batches have it.
        let columns = match &self.projection {
            Some(p) => p
                .iter()
                .map(|i| kept.columns().get(*i).cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| DataFusionError::Internal("a projection past the columns".into()))?,
            None => kept.columns().to_vec(),
        };
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(kept.num_rows())),
        )?)
    }
}

impl DisplayAs for LookupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LookupExec: index on column {} for {}",
            self.column, self.check.predicate
        )
    }
}

impl ExecutionPlan for LookupExec {
    fn name(&self) -> &str {
        "LookupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.filter.properties()
    }

    /// None: the scan it reads is its own.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.check.predicate)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "LookupExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(index) = self.index(partition, &context) else {
            return self.filter.execute(partition, context);
        };
        let Some(value) = crate::kept_plans::constant_value(&self.value) else {
            return self.filter.execute(partition, context);
        };
        // `column = NULL` holds for no row.
        let positions: &[Position] = if value.is_null() {
            &[]
        } else {
            match index.positions(&value) {
                Some(found) if found.len() <= index.rows / 8 + 1 => found,
                _ => return self.filter.execute(partition, context),
            }
        };
        // The rows found, a batch at a time, checked and projected as the
        // filter would; at most `fetch` of them.
        let size = context.session_config().batch_size().max(1);
        let chunks: Vec<Vec<Position>> = positions.chunks(size).map(<[_]>::to_vec).collect();
        let check = Arc::clone(&self.check);
        let partitions = Arc::clone(&self.partitions);
        let schema = self.schema();
        let output = Arc::clone(&schema);
        let mut left = check.fetch.unwrap_or(usize::MAX);
        let stream = futures::stream::iter(chunks).filter_map(move |chunk| {
            let answer = if left == 0 {
                None
            } else {
                let batches = partitions.get(partition).map_or(&[][..], Vec::as_slice);
                match check.answer(batches, &chunk, &output) {
                    Ok(b) if b.num_rows() == 0 => None,
                    Ok(b) => {
                        let b = b.slice(0, b.num_rows().min(left));
                        left -= b.num_rows();
                        Some(Ok(b))
                    }
                    Err(e) => Some(Err(e)),
                }
            };
            futures::future::ready(answer)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The column `predicate` (or one of its terms joined by `AND`) compares
/// for equality with a value (a literal or a parameter's marker), and
/// that value.
fn compared_column(predicate: &Arc<dyn PhysicalExpr>) -> Option<(usize, Arc<dyn PhysicalExpr>)> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    match binary.op() {
        Operator::And => compared_column(binary.left()).or_else(|| compared_column(binary.right())),
        Operator::Eq => {
            let pair = |column: &Arc<dyn PhysicalExpr>, value: &Arc<dyn PhysicalExpr>| {
                let column = column.downcast_ref::<Column>()?;
                let is_value = value.downcast_ref::<Literal>().is_some()
                    || crate::kept_plans::is_marker(value);
                is_value.then(|| (column.index(), Arc::clone(value)))
            };
            pair(binary.left(), binary.right()).or_else(|| pair(binary.right(), binary.left()))
        }
        _ => None,
    }
}

fn indexable(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Utf8 | LargeUtf8 | Utf8View
    )
}

/// A row of a partition: its batch and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    batch: u32,
    row: u32,
}

/// The rows of one value.
#[derive(Debug)]
enum Rows {
    One(Position),
    Many(Vec<Position>),
}

impl Rows {
    fn add(&mut self, p: Position) {
        match self {
            Rows::One(first) => *self = Rows::Many(vec![*first, p]),
            Rows::Many(all) => all.push(p),
        }
    }

    fn as_slice(&self) -> &[Position] {
        match self {
            Rows::One(p) => std::slice::from_ref(p),
            Rows::Many(all) => all,
        }
    }
}

#[derive(Debug)]
enum Keys {
    Ints(HashMap<i64, Rows>),
    Strings(HashMap<Box<str>, Rows>),
}

/// One partition's index of a column: the rows of each non-null value.
#[derive(Debug)]
struct Index {
    keys: Keys,
    /// The partition's rows.
    rows: usize,
    /// Its memory, in the session's pool.
    _reservation: MemoryReservation,
}

impl Index {
    /// The index of `column` in `batches`; `None` where the column cannot
    /// be indexed or `pool` has no room for it.
    fn build(batches: &[RecordBatch], column: usize, pool: &Arc<dyn MemoryPool>) -> Option<Self> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let strings = matches!(
            batches.first()?.schema().field(column).data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let text: usize = if strings {
            batches
                .iter()
                .map(|b| b.column(column).get_array_memory_size())
                .sum()
        } else {
            0
        };
        // A table entry (key, rows, control byte) per row, the table at
        // most half full, plus the strings' bytes.
        let entry = if strings {
            std::mem::size_of::<(Box<str>, Rows)>()
        } else {
            std::mem::size_of::<(i64, Rows)>()
        } + 1;
        let reservation = MemoryConsumer::new("kept plan index").register(pool);
        reservation.try_grow(rows * entry * 2 + text).ok()?;
        let mut keys = if strings {
            Keys::Strings(HashMap::with_capacity(rows))
        } else {
            Keys::Ints(HashMap::with_capacity(rows))
        };
        u32::try_from(batches.len()).ok()?;
        for (batch_no, batch) in (0u32..).zip(batches) {
            // Every row's number fits the position's `u32`.
            u32::try_from(batch.num_rows()).ok()?;
            let values = batch.column(column);
            match &mut keys {
                Keys::Ints(map) => {
                    let values = cast(values, &DataType::Int64).ok()?;
                    for (v, row) in values.as_primitive::<Int64Type>().iter().zip(0u32..) {
                        let Some(v) = v else { continue };
                        let p = Position {
                            batch: batch_no,
                            row,
                        };
                        map.entry(v)
                            .and_modify(|rows| rows.add(p))
                            .or_insert(Rows::One(p));
                    }
                }
                Keys::Strings(map) => {
                    let values = cast(values, &DataType::Utf8).ok()?;
                    for (v, row) in values.as_string::<i32>().iter().zip(0u32..) {
                        let Some(v) = v else { continue };
                        let p = Position {
                            batch: batch_no,
                            row,
                        };
                        // Looked up first: a key is copied only when new.
                        match map.get_mut(v) {
                            Some(rows) => rows.add(p),
                            None => {
                                map.insert(v.into(), Rows::One(p));
                            }
                        }
                    }
                }
            }
        }
        Some(Self {
            keys,
            rows,
            _reservation: reservation,
        })
    }

    /// The rows holding `value`; `None` when `value` is not of the
    /// column's kind (integer or string).
    fn positions(&self, value: &ScalarValue) -> Option<&[Position]> {
        use ScalarValue::*;
        let found = match (&self.keys, value) {
            (Keys::Ints(map), Int8(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Ints(map), Int16(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Ints(map), Int32(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Ints(map), Int64(Some(v))) => map.get(v),
            (Keys::Ints(map), UInt8(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Ints(map), UInt16(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Ints(map), UInt32(Some(v))) => map.get(&i64::from(*v)),
            (Keys::Strings(map), Utf8(Some(v)) | LargeUtf8(Some(v)) | Utf8View(Some(v))) => {
                map.get(v.as_str())
            }
            _ => return None,
        };
        Some(found.map_or(&[], Rows::as_slice))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::logical_expr::LogicalPlan;
    use futures::TryStreamExt;

    use super::*;
    use crate::Quiver;

    async fn batches(
        quiver: &Quiver,
        plan: &LogicalPlan,
        params: Vec<ScalarValue>,
    ) -> Vec<RecordBatch> {
        quiver
            .execute_bound(plan.clone(), Some(ParamValues::from(params)))
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows")
    }

    async fn rows(quiver: &Quiver, plan: &LogicalPlan, params: Vec<ScalarValue>) -> String {
        let batches = batches(quiver, plan, params).await;
        pretty_format_batches(&batches).expect("format").to_string()
    }

    async fn count(quiver: &Quiver, plan: &LogicalPlan, params: Vec<ScalarValue>) -> usize {
        let batches = batches(quiver, plan, params).await;
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// How many kept lookups there are, and how many of their partitions
    /// have an index.
    fn lookups(quiver: &Quiver) -> (usize, usize) {
        let mut found = (0, 0);
        for plan in quiver.kept.physical_plans() {
            let _ = plan.apply(|node| {
                if let Some(lookup) = node.downcast_ref::<LookupExec>() {
                    found.0 += 1;
                    found.1 += lookup
                        .indexes
                        .iter()
                        .filter(|i| matches!(i.get(), Some(Some(_))))
                        .count();
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        found
    }

    fn int(v: i64) -> ScalarValue {
        ScalarValue::Int64(Some(v))
    }

    fn text(v: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(v.to_string()))
    }

    #[tokio::test]
    async fn equality_filters_on_memory_tables_are_answered_through_an_index() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect(
                "CREATE TABLE p AS SELECT value AS id, value % 7 AS grp, 'n' || (value % 50) AS name \
                 FROM generate_series(1, 3000) AS s(value)",
            )
            .await
            .expect("table");
        let by_id = quiver
            .create_logical_plan("SELECT name, id FROM p WHERE id = $1")
            .await
            .expect("plan");
        // Each execution its own row, before and after the index is built.
        for id in 1..=(BUILD_AT as i64 + 4) {
            let got = rows(&quiver, &by_id, vec![int(id * 97)]).await;
            assert!(
                got.contains(&format!("| n{} ", (id * 97) % 50))
                    && got.contains(&format!(" {} |", id * 97)),
                "{id}: {got}"
            );
            assert_eq!(got.lines().count(), 5, "one row: {got}");
        }
        let (kept, indexed) = lookups(&quiver);
        assert_eq!(kept, 1);
        assert!(indexed >= 1, "an index once built");
        // A value no row holds, and NULL: no rows.
        assert_eq!(count(&quiver, &by_id, vec![int(99_999)]).await, 0);
        assert_eq!(
            count(&quiver, &by_id, vec![ScalarValue::Int64(None)]).await,
            0
        );

        // While one execution holds the plan's parameter slots (a cursor),
        // another runs a copy with its value in the lookup.
        let open = quiver
            .execute_bound(by_id.clone(), Some(ParamValues::from(vec![int(7)])))
            .await
            .expect("open");
        assert!(
            rows(&quiver, &by_id, vec![int(8)])
                .await
                .contains("| n8   | 8  |")
        );
        let first: Vec<RecordBatch> = open.try_collect().await.expect("rows");
        let first = pretty_format_batches(&first).expect("format").to_string();
        assert!(first.contains("| n7   | 7  |"), "{first}");

        // A string column, under an aggregate.
        let by_name = quiver
            .create_logical_plan("SELECT count(*) AS n FROM p WHERE name = $1")
            .await
            .expect("plan");
        for _ in 0..BUILD_AT + 1 {
            assert!(
                rows(&quiver, &by_name, vec![text("n7")])
                    .await
                    .contains("| 60 |")
            );
        }
        assert!(
            rows(&quiver, &by_name, vec![text("nobody")])
                .await
                .contains("| 0 |")
        );

        // A conjunction: the index gives the candidates, the whole filter
        // decides; a row limit still holds.
        let both = quiver
            .create_logical_plan("SELECT id FROM p WHERE name = $1 AND grp = $2 LIMIT 3")
            .await
            .expect("plan");
        for _ in 0..BUILD_AT + 1 {
            let got = rows(&quiver, &both, vec![text("n7"), int(0)]).await;
            // name n7 and a multiple of 7: 7, 357, 707, … (7 + 350k).
            assert_eq!(count(&quiver, &both, vec![text("n7"), int(0)]).await, 3);
            for line in got.lines().skip(3).filter(|l| l.starts_with("| ")) {
                let id: i64 = line
                    .trim_matches(|c| c == '|' || c == ' ')
                    .parse()
                    .expect("id");
                assert_eq!((id % 50, id % 7), (7, 0), "{got}");
            }
        }

        // A value most rows hold: the filter as planned, all its rows.
        let by_group = quiver
            .create_logical_plan("SELECT count(*) AS n FROM p WHERE grp = $1")
            .await
            .expect("plan");
        for _ in 0..BUILD_AT + 1 {
            assert!(
                rows(&quiver, &by_group, vec![int(3)])
                    .await
                    .contains("| 429 |")
            );
        }

        // Rows inserted are found: the plan (and its index) is made again.
        quiver
            .collect("INSERT INTO p VALUES (5000, 1, 'new'), (5001, 0, 'n7')")
            .await
            .expect("insert");
        for _ in 0..BUILD_AT + 1 {
            let got = rows(&quiver, &by_id, vec![int(5000)]).await;
            assert!(got.contains("| new  | 5000 |"), "{got}");
            // Rows of one value in two batches.
            assert!(
                rows(&quiver, &by_name, vec![text("n7")])
                    .await
                    .contains("| 61 |")
            );
        }

        // Statements with constants share the generic plan and its index.
        for id in [11, 12, 13, 14, 15, 16, 17] {
            let batches = quiver
                .collect(&format!("SELECT id FROM p WHERE id = {id}"))
                .await
                .expect("query");
            let got = pretty_format_batches(&batches).expect("format").to_string();
            assert!(got.contains(&format!("| {id} ")), "{got}");
        }
    }
}
