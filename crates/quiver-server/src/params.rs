//! Parameter types the client declares, given to DataFusion's planner.
//!
//! A Parse message may name each `$n`'s type (psycopg sends `bool` for
//! `True`, `int2`…`int8` for integers; tokio-postgres leaves them to the
//! server). Postgres plans with those types; DataFusion's planner only
//! infers types from context, so `SELECT $1` stays untyped. Quiver writes a
//! declared type into the statement as a cast (`CAST($1 AS BOOLEAN)`) before
//! planning. Parameters of unknown type are Postgres' `unknown`, which it
//! resolves as text where nothing else decides: when planning fails over
//! such parameters (`$1 || $2`), Quiver plans again with them as text.

use pgwire::api::Type;

/// The SQL type a declared parameter type is cast to, for the types
/// DataFusion's SQL knows.
fn sql_type(ty: &Type) -> Option<&'static str> {
    Some(match *ty {
        Type::BOOL => "BOOLEAN",
        Type::INT2 => "SMALLINT",
        Type::INT4 => "INT",
        Type::INT8 => "BIGINT",
        Type::FLOAT4 => "REAL",
        Type::FLOAT8 => "DOUBLE",
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => "VARCHAR",
        Type::BYTEA => "BYTEA",
        Type::DATE => "DATE",
        Type::TIMESTAMP => "TIMESTAMP",
        _ => return None,
    })
}

/// `sql` with every `$n` outside strings, quoted names and comments
/// replaced by `cast(n)` where it gives one.
fn rewrite(sql: &str, cast: impl Fn(usize) -> Option<&'static str>) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let skip_to = match c {
            b'\'' | b'"' => {
                // To the closing quote (a doubled quote stays inside).
                let mut j = i + 1;
                while j < bytes.len() {
                    if bytes[j] == c {
                        if bytes.get(j + 1) == Some(&c) {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                Some((j + 1).min(bytes.len()))
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                Some(sql[i..].find('\n').map_or(bytes.len(), |n| i + n))
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => Some(
                sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2),
            ),
            _ => None,
        };
        if let Some(end) = skip_to {
            out.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        if c == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let before_ok =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if digits > 0 && before_ok {
                let token = &sql[i..i + 1 + digits];
                let n: usize = token[1..].parse().unwrap_or(0);
                match cast(n) {
                    Some(t) => out.push_str(&format!("CAST({token} AS {t})")),
                    None => out.push_str(token),
                }
                i += 1 + digits;
                continue;
            }
        }
        // Copy one whole character.
        let len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + len]);
        i += len;
    }
    out
}

/// `sql` with the declared parameter types as casts (`types[n - 1]` for
/// `$n`); `None` when no declared type applies.
pub fn with_declared_types(sql: &str, types: &[Option<Type>]) -> Option<String> {
    let cast = |n: usize| {
        types
            .get(n.wrapping_sub(1))
            .cloned()
            .flatten()
            .and_then(|t| sql_type(&t))
    };
    (1..=types.len())
        .any(|n| cast(n).is_some())
        .then(|| rewrite(sql, cast))
}

/// `sql` with the parameters of no declared type as text.
pub fn with_unknown_as_text(sql: &str, types: &[Option<Type>]) -> String {
    rewrite(sql, |n| {
        let declared = types
            .get(n.wrapping_sub(1))
            .cloned()
            .flatten()
            .filter(|t| *t != Type::UNKNOWN);
        match declared {
            Some(t) => sql_type(&t),
            None => Some("VARCHAR"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_declared_parameters_outside_strings() {
        let types = [Some(Type::BOOL), None, Some(Type::INT8)];
        assert_eq!(
            with_declared_types("SELECT $1, $2 || '$3', $3 -- $1\nFROM t", &types).as_deref(),
            Some("SELECT CAST($1 AS BOOLEAN), $2 || '$3', CAST($3 AS BIGINT) -- $1\nFROM t")
        );
        assert_eq!(with_declared_types("SELECT $1", &[None]), None);
        assert_eq!(
            with_declared_types("SELECT $1", &[Some(Type::UNKNOWN)]),
            None
        );
        assert_eq!(
            with_unknown_as_text("SELECT $1 || $2, \"a$1\"", &[None, Some(Type::INT4)]),
            "SELECT CAST($1 AS VARCHAR) || CAST($2 AS INT), \"a$1\""
        );
    }
}
