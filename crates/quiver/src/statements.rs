//! Splits a SQL script into statements, keeping where each one starts, so
//! that errors can point at `file:line:col`. Understands `--` and `/* */`
//! comments (nested, as Postgres does), single-quoted strings with `''`,
//! `E'…'` escapes, double-quoted identifiers and `$tag$…$tag$` strings.

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text, without the terminating `;`, trimmed.
    pub sql: String,
    /// 1-based line of its first character in the script.
    pub line: usize,
    /// 1-based column (in characters) of its first character.
    pub column: usize,
}

impl Statement {
    /// Maps a 1-based (line, column) inside [`Self::sql`] to the script.
    pub fn script_position(&self, line: usize, column: usize) -> (usize, usize) {
        if line <= 1 {
            (self.line, self.column + column.saturating_sub(1))
        } else {
            (self.line + line - 1, column)
        }
    }
}

/// Splits `script` at top-level semicolons. Statements that hold only
/// comments or white space are dropped. A statement left open at the end (an
/// unterminated string or comment, or no final `;`) is still returned, so the
/// parser can report it.
pub fn split_statements(script: &str) -> Vec<Statement> {
    scan(script).0
}

/// The statements of `script`, and whether it ends cleanly: after a `;`,
/// outside any string or comment.
fn scan(script: &str) -> (Vec<Statement>, bool) {
    let mut unclosed = false;
    let chars: Vec<char> = script.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    let (mut line, mut col) = (1usize, 1usize);
    // Start of the current statement's first significant character.
    let mut start: Option<(usize, usize, usize)> = None;

    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize, chars: &[char]| {
        for _ in 0..n {
            if *i >= chars.len() {
                return;
            }
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };

    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col, 1, &chars);
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    advance(&mut i, &mut line, &mut col, 2, &chars);
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    advance(&mut i, &mut line, &mut col, 2, &chars);
                    if depth == 0 {
                        break;
                    }
                } else {
                    advance(&mut i, &mut line, &mut col, 1, &chars);
                }
            }
            unclosed |= depth > 0;
            continue;
        }
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, 1, &chars);
            continue;
        }
        if c == ';' {
            if let Some((s, l, cl)) = start.take() {
                out.push(Statement {
                    sql: chars[s..i].iter().collect::<String>().trim().to_string(),
                    line: l,
                    column: cl,
                });
            }
            advance(&mut i, &mut line, &mut col, 1, &chars);
            continue;
        }
        if start.is_none() {
            start = Some((i, line, col));
        }
        match c {
            '\'' | '"' => {
                let escapes = c == '\'' && i > 0 && matches!(chars[i - 1], 'e' | 'E');
                advance(&mut i, &mut line, &mut col, 1, &chars);
                unclosed = true;
                while i < chars.len() {
                    if escapes && chars[i] == '\\' {
                        advance(&mut i, &mut line, &mut col, 2, &chars);
                    } else if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            advance(&mut i, &mut line, &mut col, 2, &chars);
                        } else {
                            advance(&mut i, &mut line, &mut col, 1, &chars);
                            unclosed = false;
                            break;
                        }
                    } else {
                        advance(&mut i, &mut line, &mut col, 1, &chars);
                    }
                }
            }
            '$' => {
                // $tag$ … $tag$ (tag may be empty); a lone `$1` is a parameter.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|ch| !(ch.is_alphanumeric() || *ch == '_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e)
                        if chars[e] == '$'
                            && !chars.get(i + 1).is_some_and(|ch| ch.is_ascii_digit()) =>
                    {
                        let tag: Vec<char> = chars[i..=e].to_vec();
                        advance(&mut i, &mut line, &mut col, tag.len(), &chars);
                        while i < chars.len() && !chars[i..].starts_with(&tag) {
                            advance(&mut i, &mut line, &mut col, 1, &chars);
                        }
                        unclosed = i >= chars.len();
                        advance(&mut i, &mut line, &mut col, tag.len(), &chars);
                    }
                    _ => advance(&mut i, &mut line, &mut col, 1, &chars),
                }
            }
            _ => advance(&mut i, &mut line, &mut col, 1, &chars),
        }
    }
    let complete = start.is_none() && !unclosed;
    if let Some((s, l, cl)) = start {
        let sql = chars[s..].iter().collect::<String>().trim().to_string();
        out.push(Statement {
            sql,
            line: l,
            column: cl,
        });
    }
    (out, complete)
}

/// True when `text` ends a statement: its last significant character is a
/// top-level `;` (used by the shell to know when to stop reading lines).
pub fn is_complete(text: &str) -> bool {
    let (statements, complete) = scan(text);
    complete && !statements.is_empty()
}

/// Finds `Line: L, Column: C` in a parser error message.
pub fn error_position(message: &str) -> Option<(usize, usize)> {
    let at = message.find("Line: ")?;
    let rest = &message[at + 6..];
    let line_end = rest.find(|c: char| !c.is_ascii_digit())?;
    let line: usize = rest[..line_end].parse().ok()?;
    let rest = rest[line_end..].strip_prefix(", Column: ")?;
    let col_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let col: usize = rest[..col_end].parse().ok()?;
    Some((line, col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_positions() {
        let s = "-- intro; not a statement\nSELECT 1;\n  SELECT 'a;b' /* ; */ ;\n\nselect \"x;\" from t";
        let st = split_statements(s);
        assert_eq!(st.len(), 3);
        assert_eq!(st[0].sql, "SELECT 1");
        assert_eq!((st[0].line, st[0].column), (2, 1));
        assert_eq!(st[1].sql, "SELECT 'a;b' /* ; */");
        assert_eq!((st[1].line, st[1].column), (3, 3));
        assert_eq!(st[2].sql, "select \"x;\" from t");
        assert_eq!(st[2].line, 5);
    }

    #[test]
    fn quotes_escapes_and_dollar_strings() {
        let st = split_statements("SELECT 'it''s;'; SELECT E'a\\';b'; SELECT $$x;y$$; SELECT $1;");
        let sqls: Vec<&str> = st.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sqls,
            vec![
                "SELECT 'it''s;'",
                "SELECT E'a\\';b'",
                "SELECT $$x;y$$",
                "SELECT $1"
            ]
        );
    }

    #[test]
    fn comments_only_and_nested_comments() {
        assert!(split_statements("-- nothing\n/* a /* b */ ; */\n;;").is_empty());
    }

    #[test]
    fn unterminated_input_is_kept() {
        let st = split_statements("SELECT 1; SELECT 'open");
        assert_eq!(st.len(), 2);
        assert_eq!(st[1].sql, "SELECT 'open");
    }

    #[test]
    fn completeness() {
        assert!(is_complete("select 1;"));
        assert!(is_complete("select 1;  -- done"));
        assert!(!is_complete("select 1"));
        assert!(!is_complete("select ';"));
        assert!(!is_complete("select 1 /* ; "));
    }

    #[test]
    fn positions_map_back_to_script() {
        let st = &split_statements("\n\n   SELECT\n  nope FROM")[0];
        assert_eq!(st.script_position(1, 4), (3, 7));
        assert_eq!(st.script_position(2, 3), (4, 3));
        assert_eq!(
            error_position("sql parser error: Expected: end, found: x at Line: 2, Column: 17"),
            Some((2, 17))
        );
    }
}
