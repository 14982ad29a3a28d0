//! asyncpg's type introspection.
//!
//! Before asyncpg decodes a column (or encodes a parameter) of a type it
//! has no built-in codec for (every array but `oid[]` and `text[]`, so
//! `float4[]` embeddings), it asks the server about the type with one long
//! query: a recursive CTE over `pg_type`, whose columns for domains and
//! composite types are correlated scalar subqueries. DataFusion 55 plans
//! those but cannot execute them (`Physical plan does not support logical
//! expression ScalarSubquery`). That query is recognised here and run as
//! an equivalent one written with joins: the same columns, in the same
//! order, from the same catalog tables, for the type oids asyncpg passes.
//!
//! Two things are not word for word Postgres: a domain's base type is
//! its `typbasetype` (Postgres follows domains over domains to the root;
//! the catalog's domains all sit on base types), and the `*_name`
//! columns come from `format_type` (Postgres casts to `regtype`, which
//! prints the same names, and `-` for oid 0).
//!
//! asyncpg decodes the answer with its built-in codecs, which cover
//! `oid[]` and `text[]` but not `int4[]`: the parameter and the
//! `attrtypoids` column are announced as `oid[]` (DataFusion has no oid
//! type; the catalog's oids are Int32).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::metadata::FieldMetadata;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};

use crate::encode::OID_ALIAS_KEY;

/// Words that only asyncpg's introspection query has together.
const MARKERS: [&str; 3] = ["typeinfo_tree", "attrtypoids", "range_subtype"];

/// Quiver's equivalent of asyncpg's type introspection query, when `sql`
/// is that query.
pub fn introspection(sql: &str) -> Option<&'static str> {
    MARKERS
        .iter()
        .all(|m| sql.contains(m))
        .then_some(INTROSPECTION)
}

/// Whether `sql` is Quiver's introspection query (as [`introspection`]
/// gave it): its parameter is an `oid[]`.
pub fn is_introspection(sql: &str) -> bool {
    sql == INTROSPECTION
}

/// `plan` with its Int32 list columns marked as `oid[]` (field metadata
/// that [`crate::encode::pg_field_type`] reads).
pub fn mark_oid_arrays(plan: LogicalPlan) -> Result<LogicalPlan> {
    let oid = FieldMetadata::from(BTreeMap::from([(
        OID_ALIAS_KEY.to_string(),
        "oid".to_string(),
    )]));
    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            match field.data_type() {
                DataType::List(item) if item.data_type() == &DataType::Int32 => {
                    column.alias_with_metadata(field.name(), Some(oid.clone()))
                }
                _ => column,
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// The columns asyncpg reads (`oid`, `ns`, `name`, `kind`, `basetype`,
/// `elemtype`, `elemdelim`, `range_subtype`, `attrtypoids`, `attrnames`,
/// `depth`, `basetype_name`, `elemtype_name`, `range_subtype_name`) for
/// the types in `$1` (`oid[]`) and, recursively, their elements, range
/// subtypes, base types and attributes; deepest first.
const INTROSPECTION: &str = "
WITH RECURSIVE
attrs AS (
    SELECT c.reltype AS typ,
           CAST(array_agg(ia.atttypid ORDER BY ia.attnum) AS oid[]) AS attrtypoids,
           array_agg(CAST(ia.attname AS TEXT) ORDER BY ia.attnum) AS attrnames
    FROM pg_catalog.pg_attribute ia
    JOIN pg_catalog.pg_class c ON ia.attrelid = c.oid
    WHERE ia.attnum > 0 AND NOT ia.attisdropped
    GROUP BY c.reltype
),
typeinfo AS (
    SELECT t.oid AS oid, ns.nspname AS ns, t.typname AS name, t.typtype AS kind,
           CASE WHEN t.typtype = 'd' THEN t.typbasetype END AS basetype,
           t.typelem AS elemtype, elem_t.typdelim AS elemdelim,
           range_t.rngsubtype AS range_subtype,
           CASE WHEN t.typtype = 'c' THEN a.attrtypoids END AS attrtypoids,
           CASE WHEN t.typtype = 'c' THEN a.attrnames END AS attrnames
    FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_namespace ns ON ns.oid = t.typnamespace
    LEFT JOIN pg_catalog.pg_type elem_t
        ON t.typlen = -1 AND t.typelem <> 0 AND t.typelem = elem_t.oid
    LEFT JOIN pg_catalog.pg_range range_t ON t.oid = range_t.rngtypid
    LEFT JOIN attrs a ON a.typ = t.oid
),
tree AS (
    SELECT ti.*, 0 AS depth
    FROM typeinfo ti
    WHERE array_has(CAST($1 AS oid[]), ti.oid)
    UNION ALL
    SELECT ti.*, tt.depth + 1 AS depth
    FROM typeinfo ti
    JOIN tree tt
        ON ti.oid = tt.elemtype OR ti.oid = tt.range_subtype OR ti.oid = tt.basetype
           OR array_has(tt.attrtypoids, ti.oid)
)
SELECT DISTINCT tree.*,
       CASE WHEN tree.basetype = 0 THEN '-' ELSE format_type(tree.basetype, NULL) END
           AS basetype_name,
       CASE WHEN tree.elemtype = 0 THEN '-' ELSE format_type(tree.elemtype, NULL) END
           AS elemtype_name,
       CASE WHEN tree.range_subtype = 0 THEN '-' ELSE format_type(tree.range_subtype, NULL) END
           AS range_subtype_name
FROM tree
ORDER BY depth DESC
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asyncpgs_query_is_replaced() {
        let asyncpg = "WITH RECURSIVE typeinfo_tree(oid, ns, name, kind, basetype, elemtype, \
                       elemdelim, range_subtype, attrtypoids, attrnames, depth) AS (…)";
        assert!(introspection(asyncpg).is_some());
        assert!(introspection("SELECT typname FROM pg_type").is_none());
        assert!(introspection("SELECT 'typeinfo_tree'").is_none());
    }
}
