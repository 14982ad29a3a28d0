//! Every error a client sees carries a real SQLSTATE, chosen here and only
//! here.
//!
//! | SQLSTATE | when |
//! |---|---|
//! | `42601` syntax_error | the SQL does not parse |
//! | `42P01` undefined_table | a table or view that does not exist |
//! | `42703` undefined_column | a column that does not exist |
//! | `42883` undefined_function | a function that does not exist or takes other arguments |
//! | `22023` invalid_parameter_value | a bad setting, option or argument value |
//! | `53200` out_of_memory | the memory limit was reached |
//! | `57014` query_canceled | the query was cancelled |
//! | `58030` io_error | a file or object store could not be read or written |
//! | `0A000` feature_not_supported | a statement DataFusion does not implement |
//! | `XX000` internal_error | anything else |

use datafusion::common::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};

/// The SQLSTATE of `e`, looking through contexts and wrapped errors.
pub fn sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::Context(_, inner) => sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => sqlstate(inner),
        DataFusionError::Shared(inner) => sqlstate(inner),
        DataFusionError::SQL(..) => "42601",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => "58030",
        DataFusionError::Configuration(_) => "22023",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(inner, _) => {
            let text = inner.to_string();
            if text.contains("No field named") || text.contains("not found") {
                "42703"
            } else {
                "XX000"
            }
        }
        DataFusionError::Plan(msg) | DataFusionError::Execution(msg) => by_message(msg),
        other => by_message(&other.to_string()),
    }
}

fn by_message(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("table '") && m.contains("not found") || m.contains("table not found") {
        "42P01"
    } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
        "42703"
    } else if m.contains("invalid function")
        || m.contains("no function matches")
        || m.contains("function does not exist")
    {
        "42883"
    } else if m.contains("cancel") {
        "57014"
    } else if m.contains("syntax error") || m.contains("expected:") || m.contains("sql parser") {
        "42601"
    } else if m.contains("must be") || m.contains("unknown option") || m.contains("invalid value") {
        "22023"
    } else if m.contains("no files found") || m.contains("not found: no such file") {
        "58030"
    } else {
        "XX000"
    }
}

/// The client-facing error of `e`: severity ERROR, its SQLSTATE and the
/// whole message (contexts included, one per line).
pub fn to_pg(e: DataFusionError) -> PgWireError {
    let code = sqlstate(&e);
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        e.to_string(),
    )))
}

/// An error of our own with a given SQLSTATE.
pub fn pg_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            sqlstate(&DataFusionError::Plan("table 'x' not found".into())),
            "42P01"
        );
        assert_eq!(
            sqlstate(&DataFusionError::Plan(
                "Invalid function 'nope'.\nDid you mean 'now'?".into()
            )),
            "42883"
        );
        assert_eq!(
            sqlstate(&DataFusionError::ResourcesExhausted("x".into())),
            "53200"
        );
        assert_eq!(
            sqlstate(
                &DataFusionError::Plan("table 'x' not found".into()).context("while planning")
            ),
            "42P01"
        );
    }
}
