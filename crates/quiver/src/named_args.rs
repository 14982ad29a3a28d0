//! Named arguments of table functions: `video_frames('v.mp4', fps => 1)`.
//!
//! DataFusion 55 plans only positional arguments in `FROM f(…)`; Quiver's
//! table functions already take options as `'name=value'` strings, so a
//! named argument `name => value` is rewritten into that string before
//! planning (`fps => 1.0` becomes `'fps=1.0'`, `frame_format => 'jpeg'`
//! becomes `'frame_format=jpeg'`).

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, VisitMut, VisitorMut,
};

struct NamedArgs;

impl VisitorMut for NamedArgs {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            args: Some(args), ..
        } = factor
        {
            for arg in &mut args.args {
                if let FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(value),
                    ..
                } = arg
                {
                    let text = match value {
                        SqlExpr::Value(v) => match &v.value {
                            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                                s.clone()
                            }
                            other => other.to_string(),
                        },
                        other => other.to_string(),
                    };
                    let option = format!("{}={text}", name.value.to_ascii_lowercase());
                    *arg = FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(
                        Value::SingleQuotedString(option).into(),
                    )));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Rewrites the named arguments of table functions in `statement` into
/// `'name=value'` strings.
pub fn rewrite(statement: &mut Statement) {
    match statement {
        Statement::Statement(s) => {
            let _ = s.visit(&mut NamedArgs);
        }
        Statement::CopyTo(copy) => {
            if let CopyToSource::Query(q) = &mut copy.source {
                let _ = q.visit(&mut NamedArgs);
            }
        }
        Statement::Explain(explain) => rewrite(&mut explain.statement),
        Statement::CreateExternalTable(_) | Statement::Reset(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn rewritten(sql: &str) -> String {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        let mut s = statements.pop_front().expect("one statement");
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn named_arguments_become_option_strings() {
        assert_eq!(
            rewritten("SELECT * FROM video_frames('a.mp4', fps => 0.5, frame_format => 'jpeg')"),
            "SELECT * FROM video_frames('a.mp4', 'fps=0.5', 'frame_format=jpeg')"
        );
        assert_eq!(
            rewritten("EXPLAIN SELECT * FROM read_audio('a/', On_Error => 'skip')"),
            "EXPLAIN SELECT * FROM read_audio('a/', 'on_error=skip')"
        );
        assert_eq!(
            rewritten("COPY (SELECT * FROM video_frames('v/', keyframes_only => true)) TO 'o/'"),
            "COPY (SELECT * FROM video_frames('v/', 'keyframes_only=true')) TO o/"
        );
    }
}
