//! The configuration's `[tables.*]`: tables made once, when the engine
//! opens, and seen by every session (every Postgres connection) under the
//! same provider — an `in_memory` table is read once and its rows are
//! shared, not copied per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::prelude::SessionContext;

use crate::config::TableDeclaration;

/// The tables every session of an engine sees.
#[derive(Default)]
pub(crate) struct SharedTables {
    tables: RwLock<Vec<(String, Arc<dyn TableProvider>)>>,
    /// What the in-memory tables hold, by name, reserved in the engine's
    /// pool for as long as the engine lives (or until replaced).
    held: Mutex<HashMap<String, MemoryReservation>>,
}

impl std::fmt::Debug for SharedTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.read().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("SharedTables")
            .field("tables", &names)
            .finish()
    }
}

impl SharedTables {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(String, Arc<dyn TableProvider>)>> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes table `name` as declared, in `scratch` (a session of its own,
    /// so that a table of the same name elsewhere does not stop it), as
    /// `CREATE EXTERNAL TABLE` would, reading an `in_memory` table's rows
    /// into memory reserved in `pool`; it replaces a shared table of that
    /// name. Errors name the table.
    pub async fn create(
        &self,
        scratch: &SessionContext,
        pool: &Arc<dyn MemoryPool>,
        name: &str,
        table: &TableDeclaration,
    ) -> Result<Arc<dyn TableProvider>> {
        let context = |e: DataFusionError| e.context(format!("table {name} ([tables.{name}])"));
        table.check(name).map_err(|(key, value, reason)| {
            DataFusionError::Configuration(format!("invalid value {value:?} for {key}: {reason}"))
        })?;
        // A shared table of that name, which this one replaces.
        scratch.deregister_table(name).map_err(context)?;
        scratch
            .sql(&create_statement(name, table))
            .await
            .map_err(context)?;
        let mut held = None;
        let provider = if table.in_memory {
            let (rows, reservation) = read_into_memory(scratch, pool, name)
                .await
                .map_err(context)?;
            held = Some(reservation);
            rows
        } else {
            scratch.table_provider(name).await.map_err(context)?
        };
        // A table replaced no longer holds its reservation (sessions made
        // before may still read its rows until they end).
        let mut reservations = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held {
            Some(held) => reservations.insert(name.to_string(), held),
            None => reservations.remove(name),
        };
        drop(reservations);
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        tables.retain(|(n, _)| n != name);
        tables.push((name.to_string(), Arc::clone(&provider)));
        Ok(provider)
    }

    /// Registers the tables in a new session.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        for (name, provider) in self.read().iter() {
            ctx.register_table(name.as_str(), Arc::clone(provider))?;
        }
        Ok(())
    }
}

/// `CREATE EXTERNAL TABLE` for a declared table (its name is a plain
/// lower-case identifier, checked by the config's validation).
fn create_statement(name: &str, table: &TableDeclaration) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = format!(
        "CREATE EXTERNAL TABLE {name} STORED AS {} LOCATION {}",
        table.format.to_ascii_uppercase(),
        quote(&table.location)
    );
    if !table.options.is_empty() {
        let options: Vec<String> = table
            .options
            .iter()
            .map(|(k, v)| format!("{} {}", quote(k), quote(v)))
            .collect();
        sql.push_str(&format!(" OPTIONS ({})", options.join(", ")));
    }
    sql
}

/// Every row of table `name`, read once into a memory table whose batches
/// are reserved in `pool` (refused when they do not fit its limit).
async fn read_into_memory(
    ctx: &SessionContext,
    pool: &Arc<dyn MemoryPool>,
    name: &str,
) -> Result<(Arc<dyn TableProvider>, MemoryReservation)> {
    let df = ctx.table(name).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let partitions = df.collect_partitioned().await?;
    let bytes: usize = partitions
        .iter()
        .flatten()
        .map(|b| b.get_array_memory_size())
        .sum();
    let held = MemoryConsumer::new(format!("table {name} (in_memory)")).register(pool);
    held.try_grow(bytes)?;
    let rows = MemTable::try_new(schema, partitions)?;
    Ok((Arc::new(rows), held))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    use crate::{Quiver, QuiverConfig, TableDeclaration};

    fn declare(format: &str, location: &std::path::Path, in_memory: bool) -> TableDeclaration {
        TableDeclaration {
            format: format.to_string(),
            location: location.display().to_string(),
            options: Default::default(),
            in_memory,
        }
    }

    async fn count(quiver: &Quiver, sql: &str) -> i64 {
        let batches = quiver.collect(sql).await.expect(sql);
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    #[tokio::test]
    async fn config_tables_are_seen_by_every_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::sample::generate(dir.path()).expect("sample");
        let mut config = QuiverConfig::default();
        config.tables.insert(
            "customers".into(),
            declare("csv", &dir.path().join("customers.csv"), true),
        );
        config.tables.insert(
            "orders".into(),
            declare("parquet", &dir.path().join("orders"), false),
        );
        let err = Quiver::builder()
            .config(config.clone())
            .build()
            .expect_err("build cannot make tables");
        assert!(err.to_string().contains("QuiverBuilder::open"), "{err}");

        let engine = Quiver::builder().config(config).open().await.expect("open");
        let customers = dir.path().join("customers.csv");
        let expected = count(
            &engine,
            &format!("SELECT count(*) FROM read_csv('{}')", customers.display()),
        )
        .await;
        assert!(expected > 0);
        // The in-memory table's rows are reserved in the engine's pool.
        assert!(engine.memory_held() > 0, "nothing reserved");
        let (a, b) = (engine.new_session().unwrap(), engine.new_session().unwrap());
        for session in [&engine, &a, &b] {
            assert_eq!(
                count(session, "SELECT count(*) FROM customers").await,
                expected
            );
            assert!(count(session, "SELECT count(*) FROM orders").await > 0);
        }
        // A session's own table of another name stays its own.
        a.collect("CREATE TABLE mine AS VALUES (1)")
            .await
            .expect("create");
        assert!(b.collect("SELECT * FROM mine").await.is_err());
        // Sharing a table again replaces it, for sessions made afterwards.
        engine
            .share_table(
                "customers",
                &declare("parquet", &dir.path().join("products.parquet"), true),
            )
            .await
            .expect("replace");
        let held_before = engine.memory_held();
        let c = engine.new_session().unwrap();
        let products = count(&c, "SELECT count(*) FROM customers").await;
        assert_ne!(products, expected);
        assert_eq!(
            count(&engine, "SELECT count(*) FROM customers").await,
            products
        );
        // Replaced by a table read from its file each time: nothing held.
        engine
            .share_table(
                "customers",
                &declare("csv", &dir.path().join("customers.csv"), false),
            )
            .await
            .expect("replace again");
        assert!(held_before > 0);
        assert_eq!(engine.memory_held(), 0);
    }

    #[tokio::test]
    async fn a_table_that_cannot_be_made_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = QuiverConfig::default();
        config.tables.insert(
            "missing".into(),
            declare("parquet", &dir.path().join("nothing-here.parquet"), false),
        );
        let err = Quiver::builder()
            .config(config)
            .open()
            .await
            .expect_err("no such file");
        assert!(err.to_string().contains("[tables.missing]"), "{err}");
        let engine = Quiver::builder().build().expect("engine");
        let err = engine
            .share_table("Bad Name", &declare("csv", dir.path(), false))
            .await
            .expect_err("bad name");
        assert!(err.to_string().contains("lower-case"), "{err}");
        let err = engine
            .share_table("pics", &declare("images", dir.path(), true))
            .await
            .expect_err("images in memory");
        assert!(err.to_string().contains("in_memory"), "{err}");
    }
}
