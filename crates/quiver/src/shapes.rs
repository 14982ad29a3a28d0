//! The shape of a simple query: its text with the literals taken out.
//!
//! Clients that do not prepare statements send the same query again and
//! again with other constants (`SELECT name FROM customers WHERE id = 42`,
//! then `… = 7`). Postgres parses and plans each; so did Quiver, and for a
//! point query over a memory table parsing and planning took most of the
//! time. A session that planned a statement whose filters compare a column
//! with constants keeps its generic plan (see `kept_plans`) by the
//! statement's *shape*: its tokens, whitespace and comments left out, each
//! number or string literal a slot. A later statement of the same shape
//! takes the generic plan with its own literals as the parameters' values,
//! and is not parsed or planned.
//!
//! Which literal gives which parameter is learned when the shape is first
//! planned, and proved by planning it once more with those literals
//! changed: the plan must come out the same with the changed values as its
//! parameters (a constant from a view's definition that happens to equal a
//! literal of the query fails this). A literal that is no parameter
//! (`LIMIT 5`, a constant in the select list) must be the same text for a
//! statement to take the shape's plan. A literal the generic plan's
//! parameter type would read otherwise than DataFusion reads it (`1.5`
//! where the plan took `1`, a number past `i64`, a string with a
//! backslash) makes the statement be planned as written.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// A statement's tokens and which of them are literals.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The tokens without whitespace and comments, literals as slots: the
    /// same for statements that differ only in their literals.
    pub key: String,
    /// Every token, whitespace included (the text can be made again).
    tokens: Vec<Token>,
    /// Where the literals are in `tokens`, in the order written.
    literals: Vec<usize>,
}

/// Where a shape's generic plan takes its parameters from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapping {
    /// For each parameter (`$1`, `$2`, …): the literal (by its place among
    /// the statement's literals) and the parameter's type.
    pub parameters: Vec<(usize, DataType)>,
    /// The other literals, which a statement must repeat as they are.
    pub fixed: Vec<(usize, Token)>,
}

impl Shape {
    /// The shape of `sql` in `dialect` (the session's SQL dialect); `None`
    /// when it does not tokenize or has no literal.
    pub fn of(sql: &str, dialect: &str) -> Option<Shape> {
        let dialect = dialect_from_str(dialect)?;
        let tokens = Tokenizer::new(dialect.as_ref(), sql)
            .with_unescape(false)
            .tokenize()
            .ok()?;
        let mut key = String::with_capacity(sql.len());
        let mut literals = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                Token::Whitespace(_) => continue,
                Token::Number(..) => {
                    literals.push(i);
                    key.push_str("?n");
                }
                Token::SingleQuotedString(_) => {
                    literals.push(i);
                    key.push_str("?s");
                }
                other => key.push_str(&other.to_string()),
            }
            key.push('\u{1f}');
        }
        (!literals.is_empty()).then_some(Shape {
            key,
            tokens,
            literals,
        })
    }

    fn literal(&self, n: usize) -> Option<&Token> {
        self.tokens.get(*self.literals.get(n)?)
    }

    /// Which literals give `values` (a generic plan's parameters' values,
    /// in order): each value must be what exactly one literal reads as in
    /// the value's type, and no literal may give two; `None` otherwise.
    pub fn mapping(&self, values: &[ScalarValue]) -> Option<Mapping> {
        let mut parameters = Vec::with_capacity(values.len());
        for value in values {
            let data_type = value.data_type();
            let mut matching = (0..self.literals.len()).filter(|&n| {
                self.literal(n).and_then(|t| read(t, &data_type)).as_ref() == Some(value)
            });
            let n = matching.next()?;
            if matching.next().is_some() || parameters.iter().any(|(m, _)| *m == n) {
                return None;
            }
            parameters.push((n, data_type));
        }
        let fixed = (0..self.literals.len())
            .filter(|n| !parameters.iter().any(|(m, _)| m == n))
            .map(|n| Some((n, self.literal(n)?.clone())))
            .collect::<Option<Vec<_>>>()?;
        Some(Mapping { parameters, fixed })
    }

    /// The statement again with each parameter's literal changed, and the
    /// values those literals now give.
    pub fn changed(&self, mapping: &Mapping) -> Option<(String, Vec<ScalarValue>)> {
        let mut tokens = self.tokens.clone();
        let mut values = Vec::with_capacity(mapping.parameters.len());
        for (n, data_type) in &mapping.parameters {
            let place = *self.literals.get(*n)?;
            let token = tokens.get_mut(place)?;
            let other = match read(token, data_type)? {
                ScalarValue::Int64(Some(v)) => {
                    Token::Number(v.checked_add(1).unwrap_or(v - 1).to_string(), false)
                }
                ScalarValue::UInt64(Some(v)) => {
                    Token::Number(v.checked_add(1).unwrap_or(v - 1).to_string(), false)
                }
                ScalarValue::Float64(Some(v)) => Token::Number(format!("{:?}", v + 1.0), false),
                ScalarValue::Utf8(Some(_)) => match token {
                    Token::SingleQuotedString(raw) => Token::SingleQuotedString(format!("{raw}q")),
                    _ => return None,
                },
                _ => return None,
            };
            values.push(read(&other, data_type)?);
            *token = other;
        }
        let sql = tokens.iter().map(ToString::to_string).collect();
        Some((sql, values))
    }

    /// The parameters' values this statement gives, when it repeats the
    /// fixed literals of `mapping` and each parameter's literal reads in
    /// its type as DataFusion reads it.
    pub fn values(&self, mapping: &Mapping) -> Option<Vec<ScalarValue>> {
        for (n, token) in &mapping.fixed {
            if self.literal(*n)? != token {
                return None;
            }
        }
        mapping
            .parameters
            .iter()
            .map(|(n, data_type)| read(self.literal(*n)?, data_type))
            .collect()
    }
}

/// The value of literal `token` as DataFusion reads it, when that is of
/// type `data_type`: a number as `i64`, else `u64`, else `f64` (floats as
/// decimals, a session setting, are never read here); a string as text,
/// `''` being a quote (a string with a backslash is not read).
fn read(token: &Token, data_type: &DataType) -> Option<ScalarValue> {
    match (token, data_type) {
        (Token::Number(text, false), _) if text.contains('_') => None,
        (Token::Number(text, false), DataType::Int64) => text
            .parse::<i64>()
            .ok()
            .map(|v| ScalarValue::Int64(Some(v))),
        (Token::Number(text, false), DataType::UInt64) => {
            if text.parse::<i64>().is_ok() {
                return None;
            }
            text.parse::<u64>()
                .ok()
                .map(|v| ScalarValue::UInt64(Some(v)))
        }
        (Token::Number(text, false), DataType::Float64) => {
            if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() {
                return None;
            }
            text.parse::<f64>()
                .ok()
                .map(|v| ScalarValue::Float64(Some(v)))
        }
        (Token::SingleQuotedString(raw), DataType::Utf8) if !raw.contains('\\') => {
            Some(ScalarValue::Utf8(Some(raw.replace("''", "'"))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Shape {
        Shape::of(sql, "postgresql").expect(sql)
    }

    #[test]
    fn statements_differing_in_literals_share_a_shape() {
        let a = shape("SELECT name FROM t WHERE id = 42 AND name <> 'it''s' LIMIT 5");
        let b = shape("select  name from t\n where id = 7 and name <> 'x' -- why\n LIMIT 6");
        let c = shape("SELECT name FROM t WHERE id = 42 AND name <> 'x' LIMIT 5");
        assert_eq!(a.key, c.key);
        assert_ne!(a.key, b.key, "keywords in another case are another shape");
        assert!(Shape::of("SELECT 1 +", "postgresql").is_some());
        assert!(Shape::of("SELECT name FROM t", "postgresql").is_none());

        let values = [
            ScalarValue::Int64(Some(42)),
            ScalarValue::Utf8(Some("it's".into())),
        ];
        let mapping = a.mapping(&values).expect("mapping");
        assert_eq!(
            mapping.parameters,
            vec![(0, DataType::Int64), (1, DataType::Utf8)]
        );
        assert_eq!(mapping.fixed, vec![(2, Token::Number("5".into(), false))]);
        assert_eq!(a.values(&mapping).expect("values"), values.to_vec());
        assert_eq!(
            c.values(&mapping).expect("values"),
            vec![
                ScalarValue::Int64(Some(42)),
                ScalarValue::Utf8(Some("x".into()))
            ]
        );
        // Another LIMIT, a float where the plan took an integer, a number
        // past i64, a backslash: planned as written.
        for other in [
            "SELECT name FROM t WHERE id = 42 AND name <> 'x' LIMIT 6",
            "SELECT name FROM t WHERE id = 4.5 AND name <> 'x' LIMIT 5",
            "SELECT name FROM t WHERE id = 99999999999999999999 AND name <> 'x' LIMIT 5",
            "SELECT name FROM t WHERE id = 1 AND name <> 'a\\b' LIMIT 5",
            "SELECT name FROM t WHERE id = 1_000 AND name <> 'x' LIMIT 5",
        ] {
            let s = shape(other);
            assert_eq!(s.key, a.key, "{other}");
            assert!(s.values(&mapping).is_none(), "{other}");
        }

        let (sql, changed) = a.changed(&mapping).expect("changed");
        assert_eq!(
            sql,
            "SELECT name FROM t WHERE id = 43 AND name <> 'it''sq' LIMIT 5"
        );
        assert_eq!(
            changed,
            vec![
                ScalarValue::Int64(Some(43)),
                ScalarValue::Utf8(Some("it'sq".into()))
            ]
        );
    }

    #[test]
    fn a_value_two_literals_could_give_is_not_mapped() {
        let s = shape("SELECT 3 AS k, name FROM t WHERE id = 3");
        assert!(s.mapping(&[ScalarValue::Int64(Some(3))]).is_none());
        // A value no literal gives (a negative number: `-` is a token).
        let s = shape("SELECT name FROM t WHERE id = -3");
        assert!(s.mapping(&[ScalarValue::Int64(Some(-3))]).is_none());
        let s = shape("SELECT name FROM t WHERE score > 2.5");
        let mapping = s
            .mapping(&[ScalarValue::Float64(Some(2.5))])
            .expect("float");
        let (sql, values) = s.changed(&mapping).expect("changed");
        assert_eq!(sql, "SELECT name FROM t WHERE score > 3.5");
        assert_eq!(values, vec![ScalarValue::Float64(Some(3.5))]);
    }
}
