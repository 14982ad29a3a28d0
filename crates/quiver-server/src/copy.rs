//! `COPY (query) TO STDOUT` and `COPY table [(columns)] TO STDOUT`: a
//! result streamed in Postgres' COPY formats, what `psql`'s `\copy … to`
//! and drivers' `copy_expert` / `copy_to` read.
//!
//! Options, in the modern (`WITH (FORMAT csv, HEADER true, DELIMITER ';',
//! NULL 'n/a')`) or the old (`WITH CSV HEADER`, `BINARY`) spelling:
//! `FORMAT text | csv | binary`, `HEADER`, `DELIMITER`, `NULL`. Values are
//! written as Postgres writes them (the same text and binary encodings as
//! rows of a query), one `CopyData` message per row, as the batches finish.
//! `text` escapes backslashes, tabs, newlines and the delimiter and writes
//! NULL as `\N`; `csv` quotes values that need it (and empty strings, so
//! that they differ from NULL, written unquoted and empty); `binary` is
//! Postgres' `PGCOPY` format.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::datatypes::Schema;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt, stream};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;

use crate::encode::{encode_batch, fields};
use crate::errors::{pg_error, to_pg};

/// The three COPY formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated, backslash escapes.
    Text,
    /// Comma-separated, double quotes.
    Csv,
    /// `PGCOPY`: binary values.
    Binary,
}

/// How a `COPY … TO STDOUT` writes its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// The format.
    pub format: CopyFormat,
    /// A first line of column names (text and csv).
    pub header: bool,
    /// Between values: tab (text) or comma (csv) unless set.
    pub delimiter: char,
    /// How NULL is written: `\N` (text) or nothing (csv) unless set.
    pub null: String,
}

impl CopyOptions {
    fn new(format: CopyFormat) -> Self {
        Self {
            format,
            header: false,
            delimiter: if format == CopyFormat::Csv { ',' } else { '\t' },
            null: if format == CopyFormat::Csv {
                String::new()
            } else {
                "\\N".to_string()
            },
        }
    }

    /// `format` in Postgres' CopyOutResponse: 0 text, 1 binary.
    pub fn wire_format(&self) -> i8 {
        i8::from(self.format == CopyFormat::Binary)
    }
}

/// A parsed `COPY … TO STDOUT`: the query whose rows it writes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyToStdout {
    /// The query (`SELECT … FROM table` for the table form).
    pub query: String,
    /// The options.
    pub options: CopyOptions,
}

/// Splits `sql` into words, parentheses, commas and quoted strings (kept
/// with their quotes).
fn tokens(sql: &str) -> PgWireResult<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ';' {
            chars.next();
        } else if c == '(' || c == ')' || c == ',' {
            out.push(c.to_string());
            chars.next();
        } else if c == '\'' || c == '"' {
            let mut word = String::from(c);
            chars.next();
            loop {
                match chars.next() {
                    Some(q) if q == c => {
                        word.push(q);
                        // A doubled quote is one quote inside the string.
                        if chars.peek() == Some(&c) {
                            chars.next();
                            continue;
                        }
                        break;
                    }
                    Some(other) => word.push(other),
                    None => return Err(pg_error("42601", "unterminated quoted string in COPY")),
                }
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&w) = chars.peek() {
                if w.is_whitespace() || "(),;'\"".contains(w) {
                    break;
                }
                word.push(w);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

/// The text of a quoted option value (`';'` → `;`).
fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    inner.replace("''", "'")
}

/// The end of the parenthesised part of `sql` that starts at `open`,
/// skipping quoted strings.
fn matching_paren(sql: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in sql[open..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `sql` as a `COPY … TO STDOUT`, or `None` for any other statement
/// (`COPY … TO 'file'` stays DataFusion's).
pub fn parse(sql: &str) -> Option<PgWireResult<CopyToStdout>> {
    let body = sql.trim().trim_end_matches(';').trim();
    let head = body.get(..4)?;
    if !head.eq_ignore_ascii_case("copy")
        || !body[4..].starts_with(|c: char| c.is_whitespace() || c == '(')
    {
        return None;
    }
    let rest = body[4..].trim_start();
    let (query, after) = if rest.starts_with('(') {
        let open = body.len() - rest.len();
        let close = matching_paren(body, open)?;
        (body[open + 1..close].trim().to_string(), &body[close + 1..])
    } else {
        // `table [(columns)]` up to the word TO.
        let lower = rest.to_ascii_lowercase();
        let to = lower.find(" to ").or_else(|| lower.find(")to "))?;
        let target = rest[..to + 1].trim();
        let (table, columns) = match target.find('(') {
            Some(p) => (
                target[..p].trim(),
                target[p + 1..].trim_end_matches(')').trim(),
            ),
            None => (target, "*"),
        };
        (format!("SELECT {columns} FROM {table}"), &rest[to + 1..])
    };
    let words = match tokens(after) {
        Ok(w) => w,
        Err(e) => return Some(Err(e)),
    };
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    if lower.first().map(String::as_str) != Some("to")
        || lower.get(1).map(String::as_str) != Some("stdout")
    {
        return None;
    }
    Some(parse_options(&words[2..]).map(|options| CopyToStdout { query, options }))
}

fn parse_options(words: &[String]) -> PgWireResult<CopyOptions> {
    let mut format = CopyFormat::Text;
    let mut header = None;
    let mut delimiter = None;
    let mut null = None;
    let mut i = 0;
    let bad = |what: String| pg_error("42601", format!("COPY TO STDOUT: {what}"));
    let value = |i: &mut usize| -> PgWireResult<String> {
        *i += 1;
        if words.get(*i).is_some_and(|w| w.eq_ignore_ascii_case("as")) {
            *i += 1;
        }
        words
            .get(*i)
            .map(|w| unquote(w))
            .ok_or_else(|| bad(format!("{} needs a value", words[*i - 1])))
    };
    while i < words.len() {
        let word = words[i].to_ascii_lowercase();
        match word.as_str() {
            "with" | "(" | ")" | "," => {}
            "format" => {
                format = match value(&mut i)?.to_ascii_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    other => {
                        return Err(bad(format!(
                            "unknown format '{other}' (text, csv or binary)"
                        )));
                    }
                }
            }
            "csv" => format = CopyFormat::Csv,
            "binary" => format = CopyFormat::Binary,
            "header" => {
                let next = words.get(i + 1).map(|w| w.to_ascii_lowercase());
                header = Some(match next.as_deref() {
                    Some("true" | "on" | "1") => {
                        i += 1;
                        true
                    }
                    Some("false" | "off" | "0") => {
                        i += 1;
                        false
                    }
                    _ => true,
                });
            }
            "delimiter" => {
                let d = value(&mut i)?;
                let mut chars = d.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => delimiter = Some(c),
                    _ => return Err(bad("the delimiter must be one character".into())),
                }
            }
            "null" => null = Some(value(&mut i)?),
            other => {
                return Err(pg_error(
                    "0A000",
                    format!(
                        "COPY TO STDOUT: option {other} is not supported (FORMAT, HEADER, DELIMITER and NULL are)"
                    ),
                ));
            }
        }
        i += 1;
    }
    let mut options = CopyOptions::new(format);
    if format == CopyFormat::Binary && (header.is_some() || delimiter.is_some() || null.is_some()) {
        return Err(bad(
            "HEADER, DELIMITER and NULL do not apply to the binary format".into(),
        ));
    }
    options.header = header.unwrap_or(false);
    if let Some(d) = delimiter {
        options.delimiter = d;
    }
    if let Some(n) = null {
        options.null = n;
    }
    Ok(options)
}

/// The fields of a DataRow's body: each value's bytes, `None` for NULL.
fn row_values(data: &[u8]) -> Vec<Option<&[u8]>> {
    let mut values = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let len = i32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let end = (at + len as usize).min(data.len());
            values.push(Some(&data[at..end]));
            at = end;
        }
    }
    values
}

fn push_text(out: &mut BytesMut, value: &[u8], delimiter: char) {
    for &b in value {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            _ if delimiter.is_ascii() && b == delimiter as u8 => {
                out.put_u8(b'\\');
                out.put_u8(b);
            }
            _ => out.put_u8(b),
        }
    }
}

fn push_csv(out: &mut BytesMut, value: &[u8], options: &CopyOptions) {
    let mut delimiter = [0u8; 4];
    let delimiter = options.delimiter.encode_utf8(&mut delimiter).as_bytes();
    let needs_quotes = value.is_empty()
        || value == options.null.as_bytes()
        || value.iter().any(|b| matches!(b, b'"' | b'\n' | b'\r'))
        || value.windows(delimiter.len()).any(|w| w == delimiter);
    if !needs_quotes {
        out.put_slice(value);
        return;
    }
    out.put_u8(b'"');
    for &b in value {
        if b == b'"' {
            out.put_u8(b'"');
        }
        out.put_u8(b);
    }
    out.put_u8(b'"');
}

/// One line of text or csv values, newline included.
fn line(values: &[Option<&[u8]>], options: &CopyOptions) -> Bytes {
    let mut out = BytesMut::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            let mut d = [0u8; 4];
            out.put_slice(options.delimiter.encode_utf8(&mut d).as_bytes());
        }
        match (value, options.format) {
            (None, _) => out.put_slice(options.null.as_bytes()),
            (Some(v), CopyFormat::Csv) => push_csv(&mut out, v, options),
            (Some(v), _) => push_text(&mut out, v, options.delimiter),
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// `PGCOPY\n\377\r\n\0`, no flags, no header extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The rows of `stream` as COPY data in `options`' format: one message a
/// row (the header, if any, joins the first), the binary trailer last.
pub fn copy_data(
    stream: SendableRecordBatchStream,
    options: &CopyOptions,
) -> (
    usize,
    impl futures::Stream<Item = PgWireResult<CopyData>> + Send + 'static,
) {
    let schema: Arc<Schema> = stream.schema();
    let columns = schema.fields().len();
    let binary = options.format == CopyFormat::Binary;
    let value_format = if binary {
        FieldFormat::Binary
    } else {
        FieldFormat::Text
    };
    let fields: Arc<Vec<FieldInfo>> = Arc::new(fields(schema.as_ref(), |_| value_format));
    let mut preamble = BytesMut::new();
    if binary {
        preamble.put_slice(BINARY_HEADER);
    } else if options.header {
        let names: Vec<Option<&[u8]>> = fields.iter().map(|f| Some(f.name().as_bytes())).collect();
        preamble.put_slice(&line(&names, options));
    }
    let options = options.clone();
    let rows = stream
        .map_err(to_pg)
        .and_then(move |batch| {
            let fields = Arc::clone(&fields);
            async move { encode_batch(&batch, &fields) }
        })
        .map_ok(|rows| stream::iter(rows.into_iter().map(Ok::<_, PgWireError>)))
        .try_flatten()
        .map_ok(move |row| {
            if binary {
                let mut out = BytesMut::with_capacity(2 + row.data.len());
                out.put_i16(row.field_count);
                out.put_slice(&row.data);
                out.freeze()
            } else {
                line(&row_values(&row.data), &options)
            }
        });
    // The header (binary signature or column names) travels with the
    // first row, or alone when there is none; pgwire appends the binary
    // trailer.
    let preamble = Arc::new(std::sync::Mutex::new(
        Some(preamble.freeze()).filter(|p| !p.is_empty()),
    ));
    let first = Arc::clone(&preamble);
    let joined = rows.map_ok(move |data| {
        let header = first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match header {
            Some(header) => {
                let mut out = BytesMut::with_capacity(header.len() + data.len());
                out.put_slice(&header);
                out.put_slice(&data);
                out.freeze()
            }
            None => data,
        }
    });
    let unsent =
        stream::once(async move { preamble.lock().unwrap_or_else(|e| e.into_inner()).take() })
            .filter_map(|header| async move { header.map(Ok) });
    let data = joined.chain(unsent).map_ok(CopyData::new);
    (columns, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_psql_and_drivers_send() {
        let c =
            parse("COPY (SELECT 1, 'a') TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';')")
                .expect("copy")
                .expect("ok");
        assert_eq!(c.query, "SELECT 1, 'a'");
        assert_eq!(c.options.format, CopyFormat::Csv);
        assert!(c.options.header);
        assert_eq!(c.options.delimiter, ';');
        let c = parse("copy t (a, b) to stdout with csv header null 'n/a'")
            .expect("copy")
            .expect("ok");
        assert_eq!(c.query, "SELECT a, b FROM t");
        assert_eq!(c.options.null, "n/a");
        let c = parse("COPY t TO STDOUT BINARY").expect("copy").expect("ok");
        assert_eq!(c.query, "SELECT * FROM t");
        assert_eq!(c.options.format, CopyFormat::Binary);
        let c = parse("COPY (SELECT ')' AS p) TO STDOUT")
            .expect("copy")
            .expect("ok");
        assert_eq!(c.query, "SELECT ')' AS p");
        assert_eq!(c.options, CopyOptions::new(CopyFormat::Text));
        assert!(parse("COPY t TO 'out.csv'").is_none());
        assert!(parse("SELECT 1").is_none());
        assert!(
            parse("COPY t TO STDOUT (FORMAT xml)")
                .expect("copy")
                .is_err()
        );
        assert!(
            parse("COPY t TO STDOUT (FORCE_QUOTE *)")
                .expect("copy")
                .is_err()
        );
    }

    #[test]
    fn escapes_as_postgres_does() {
        let text = CopyOptions::new(CopyFormat::Text);
        let line_of = |values: &[Option<&str>], o: &CopyOptions| {
            let v: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
            String::from_utf8(line(&v, o).to_vec()).expect("utf8")
        };
        assert_eq!(
            line_of(&[Some("a\tb"), None, Some("c\\d\n")], &text),
            "a\\tb\t\\N\tc\\\\d\\n\n"
        );
        let csv = CopyOptions::new(CopyFormat::Csv);
        assert_eq!(
            line_of(&[Some("a,b"), None, Some(""), Some("say \"hi\"")], &csv),
            "\"a,b\",,\"\",\"say \"\"hi\"\"\"\n"
        );
    }
}
