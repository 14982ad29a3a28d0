//! `DECLARE name CURSOR FOR query`, `FETCH [FORWARD] [n | ALL] [FROM] name`
//! and `CLOSE name | ALL`: a cursor keeps its query's stream open and each
//! `FETCH` reads the next rows from it, so a client (psycopg's named
//! cursors, psql's `\set FETCH_COUNT`) walks a large result in pieces while
//! the server holds one batch at most. Cursors only go forward (`NO
//! SCROLL`); a cursor declared `WITHOUT HOLD` (the default) closes when the
//! transaction ends, as in Postgres.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pgwire::error::PgWireResult;

use crate::errors::{pg_error, to_pg};

/// A cursor statement, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCommand {
    /// `DECLARE name … CURSOR [WITH[OUT] HOLD] FOR query`.
    Declare {
        /// The cursor's name.
        name: String,
        /// Whether it outlives the transaction (`WITH HOLD`).
        hold: bool,
        /// The query, as written.
        query: String,
    },
    /// `FETCH …`: `count` rows, or all that are left.
    Fetch {
        /// The cursor's name.
        name: String,
        /// Rows to fetch; `None` for `ALL`.
        count: Option<usize>,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Close {
        /// The cursor's name.
        name: Option<String>,
    },
}

/// A name as Postgres folds it: quoted names keep their case.
fn ident(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => word.to_ascii_lowercase(),
    }
}

/// Parses a cursor statement; `None` when `sql` is not one, an error
/// for a form that is not supported (backward fetches).
pub fn parse(sql: &str) -> Option<PgWireResult<CursorCommand>> {
    let body = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = body.split_whitespace().collect();
    let first = words.first()?.to_ascii_lowercase();
    match first.as_str() {
        "declare" => {
            let name = ident(words.get(1)?);
            let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
            let cursor_at = lower.iter().position(|w| w == "cursor")?;
            let for_at = cursor_at + lower[cursor_at..].iter().position(|w| w == "for")?;
            let options = &lower[2..cursor_at];
            if options.iter().any(|w| w == "scroll") && !options.iter().any(|w| w == "no") {
                return Some(Err(pg_error(
                    "0A000",
                    "cursors here only go forward: declare them NO SCROLL (the default)",
                )));
            }
            let hold = lower[cursor_at..for_at]
                .windows(2)
                .any(|w| w == ["with", "hold"]);
            // The query is what follows the word FOR, as written.
            let mut offset = 0;
            for (i, w) in words.iter().enumerate() {
                let at = body[offset..].find(w).map_or(offset, |p| offset + p);
                offset = at + w.len();
                if i == for_at {
                    break;
                }
            }
            let query = body[offset..].trim().to_string();
            if query.is_empty() {
                return Some(Err(pg_error("42601", "DECLARE … CURSOR FOR needs a query")));
            }
            Some(Ok(CursorCommand::Declare { name, hold, query }))
        }
        "fetch" => {
            let mut rest: Vec<&str> = words[1..].to_vec();
            let mut count = Some(1);
            if let Some(w) = rest.first().map(|w| w.to_ascii_lowercase()) {
                match w.as_str() {
                    "next" => {
                        rest.remove(0);
                    }
                    "forward" => {
                        rest.remove(0);
                        if let Some(n) = rest.first().map(|w| w.to_ascii_lowercase()) {
                            if n == "all" {
                                count = None;
                                rest.remove(0);
                            } else if let Ok(n) = n.parse::<usize>() {
                                count = Some(n);
                                rest.remove(0);
                            }
                        }
                    }
                    "all" => {
                        count = None;
                        rest.remove(0);
                    }
                    "prior" | "first" | "last" | "absolute" | "relative" | "backward" => {
                        return Some(Err(pg_error(
                            "0A000",
                            format!(
                                "FETCH {} is not supported: cursors here only go forward",
                                w.to_ascii_uppercase()
                            ),
                        )));
                    }
                    n => {
                        if let Ok(n) = n.parse::<usize>() {
                            count = Some(n);
                            rest.remove(0);
                        }
                    }
                }
            }
            if rest
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("from") || w.eq_ignore_ascii_case("in"))
            {
                rest.remove(0);
            }
            match rest.as_slice() {
                [name] => Some(Ok(CursorCommand::Fetch {
                    name: ident(name),
                    count,
                })),
                _ => Some(Err(pg_error(
                    "42601",
                    format!("cannot read the FETCH in: {body}"),
                ))),
            }
        }
        "close" => match words.get(1..)? {
            [all] if all.eq_ignore_ascii_case("all") => {
                Some(Ok(CursorCommand::Close { name: None }))
            }
            [name] => Some(Ok(CursorCommand::Close {
                name: Some(ident(name)),
            })),
            _ => None,
        },
        _ => None,
    }
}

/// An open cursor: its stream and the rows read but not yet fetched.
pub struct Cursor {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    pending: Option<RecordBatch>,
    hold: bool,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("schema", &self.schema)
            .field("hold", &self.hold)
            .finish()
    }
}

impl Cursor {
    /// A cursor over `stream`.
    pub fn new(stream: SendableRecordBatchStream, hold: bool) -> Self {
        Self {
            schema: stream.schema(),
            stream,
            pending: None,
            hold,
        }
    }

    /// The next `count` rows (all that are left with `None`), as one batch.
    pub async fn fetch(&mut self, count: Option<usize>) -> PgWireResult<RecordBatch> {
        let want = count.unwrap_or(usize::MAX);
        let mut parts = vec![];
        let mut have = 0usize;
        while have < want {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => match self.stream.next().await {
                    Some(b) => b.map_err(to_pg)?,
                    None => break,
                },
            };
            let take = batch.num_rows().min(want - have);
            if take < batch.num_rows() {
                self.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
            have += take;
            parts.push(batch.slice(0, take));
        }
        concat_batches(&self.schema, &parts).map_err(|e| to_pg(e.into()))
    }
}

/// One connection's open cursors, by name.
#[derive(Debug, Default)]
pub struct Cursors(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>>);

impl Cursors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Cursor>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `name`; a cursor of that name must not be open.
    pub fn declare(&self, name: &str, cursor: Cursor) -> PgWireResult<()> {
        let mut open = self.lock();
        if open.contains_key(name) {
            return Err(pg_error(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        open.insert(name.to_string(), Arc::new(tokio::sync::Mutex::new(cursor)));
        Ok(())
    }

    /// The cursor `name`.
    pub fn get(&self, name: &str) -> PgWireResult<Arc<tokio::sync::Mutex<Cursor>>> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| pg_error("34000", format!("cursor \"{name}\" does not exist")))
    }

    /// The schema of the cursor `name`.
    pub fn schema(&self, name: &str) -> PgWireResult<SchemaRef> {
        let cursor = self.get(name)?;
        cursor
            .try_lock()
            .map(|c| Arc::clone(&c.schema))
            .map_err(|_| pg_error("55000", format!("cursor \"{name}\" is in use")))
    }

    /// Closes `name` (all with `None`).
    pub fn close(&self, name: Option<&str>) -> PgWireResult<()> {
        let mut open = self.lock();
        match name {
            None => open.clear(),
            Some(n) => {
                if open.remove(n).is_none() {
                    return Err(pg_error("34000", format!("cursor \"{n}\" does not exist")));
                }
            }
        }
        Ok(())
    }

    /// Closes the cursors declared without `WITH HOLD` (a transaction
    /// ended).
    pub fn end_transaction(&self) {
        self.lock()
            .retain(|_, c| c.try_lock().map_or(true, |c| c.hold));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_send() {
        let declare = |sql: &str| match parse(sql) {
            Some(Ok(c)) => c,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(
            declare("DECLARE \"Big\" NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1 AS for_x"),
            CursorCommand::Declare {
                name: "Big".into(),
                hold: false,
                query: "SELECT 1 AS for_x".into()
            }
        );
        assert_eq!(
            declare("declare c cursor with hold for\n  select * from t;"),
            CursorCommand::Declare {
                name: "c".into(),
                hold: true,
                query: "select * from t".into()
            }
        );
        assert_eq!(
            declare("FETCH FORWARD 100 FROM \"Big\""),
            CursorCommand::Fetch {
                name: "Big".into(),
                count: Some(100)
            }
        );
        assert_eq!(
            declare("fetch all in c"),
            CursorCommand::Fetch {
                name: "c".into(),
                count: None
            }
        );
        assert_eq!(
            declare("FETCH c"),
            CursorCommand::Fetch {
                name: "c".into(),
                count: Some(1)
            }
        );
        assert_eq!(
            declare("FETCH 7 c"),
            CursorCommand::Fetch {
                name: "c".into(),
                count: Some(7)
            }
        );
        assert_eq!(declare("CLOSE ALL"), CursorCommand::Close { name: None });
        assert!(matches!(parse("FETCH BACKWARD 1 FROM c"), Some(Err(_))));
        assert!(matches!(
            parse("DECLARE c SCROLL CURSOR FOR SELECT 1"),
            Some(Err(_))
        ));
        assert!(parse("SELECT 1").is_none());
    }
}
