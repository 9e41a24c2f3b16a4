//! `COPY … TO 'target' (FORMAT parquet, PARTITION_BY (a, b), COMPRESSION zstd)`:
//! the option list DuckDB and PostgreSQL users write, rewritten into DataFusion's
//! own `STORED AS … PARTITIONED BY (…) OPTIONS (…)` before parsing. Statements
//! in DataFusion's form pass unchanged.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

/// The statement in DataFusion's COPY syntax, if it is a COPY with an option list;
/// an option list that cannot be read is an error that names the option.
pub fn rewrite_copy_options(sql: &str) -> Result<Option<String>, String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(None);
    };
    let tokens: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let is_word =
        |t: &TokenWithSpan, k: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == k);
    if !tokens.first().is_some_and(|t| is_word(t, Keyword::COPY)) {
        return Ok(None);
    }
    // The TO at depth 0, then the target literal, then '('.
    let mut depth = 0i32;
    let mut at = None;
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 0 && is_word(t, Keyword::TO) => {
                at = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(to) = at else { return Ok(None) };
    let (Some(target), Some(open)) = (tokens.get(to + 1), tokens.get(to + 2)) else {
        return Ok(None);
    };
    if !matches!(target.token, Token::SingleQuotedString(_)) || open.token != Token::LParen {
        return Ok(None);
    }
    // The matching ')' and nothing but ';' after it.
    let mut depth = 0;
    let mut close = None;
    for (i, t) in tokens.iter().enumerate().skip(to + 2) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return Err("the COPY option list has no closing ')'".into());
    };
    if tokens[close + 1..]
        .iter()
        .any(|t| !matches!(t.token, Token::SemiColon | Token::EOF))
    {
        return Ok(None);
    }
    let items = split_items(&tokens[to + 3..close]);
    let (mut stored_as, mut partitioned, mut options) = (None, None, vec![]);
    for item in items {
        let Some(first) = item.first() else { continue };
        let key = token_text(first).to_ascii_lowercase();
        let rest = &item[1..];
        match key.as_str() {
            "format" => stored_as = Some(single(rest, "FORMAT")?.to_ascii_uppercase()),
            "partition_by" | "partition" => {
                let rest = if key == "partition" {
                    rest.strip_prefix_word("by")
                        .ok_or("PARTITION must be followed by BY")?
                } else {
                    rest
                };
                let cols: Vec<String> = rest
                    .iter()
                    .filter(|t| !matches!(t.token, Token::LParen | Token::RParen | Token::Comma))
                    .map(|t| token_text(t))
                    .collect();
                if cols.is_empty() {
                    return Err(
                        "PARTITION_BY needs a list of columns, e.g. PARTITION_BY (year)".into(),
                    );
                }
                partitioned = Some(cols);
            }
            _ => {
                let value = single(rest, &key)?;
                let name = match key.as_str() {
                    "header" => "format.has_header".to_string(),
                    "delimiter" | "delim" | "sep" => "format.delimiter".to_string(),
                    "row_group_size" => "format.max_row_group_size".to_string(),
                    k if k.contains('.') => k.to_string(),
                    k => format!("format.{k}"),
                };
                options.push(format!(
                    "'{}' '{}'",
                    name.replace('\'', "''"),
                    value.replace('\'', "''")
                ));
            }
        }
    }
    let head = &sql[..offset(sql, open)];
    let mut out = head.trim_end().to_string();
    if let Some(f) = stored_as {
        out.push_str(&format!(" STORED AS {f}"));
    }
    if let Some(cols) = partitioned {
        // DataFusion takes these names as written (it does not unquote them).
        out.push_str(&format!(" PARTITIONED BY ({})", cols.join(", ")));
    }
    if !options.is_empty() {
        out.push_str(&format!(" OPTIONS ({})", options.join(", ")));
    }
    Ok(Some(out))
}

trait StripWord<'a> {
    fn strip_prefix_word(self, word: &str) -> Option<&'a [&'a TokenWithSpan]>;
}

impl<'a> StripWord<'a> for &'a [&'a TokenWithSpan] {
    fn strip_prefix_word(self, word: &str) -> Option<&'a [&'a TokenWithSpan]> {
        match self.first() {
            Some(t) if token_text(t).eq_ignore_ascii_case(word) => Some(&self[1..]),
            _ => None,
        }
    }
}

/// Items of the list, split at commas outside parentheses.
fn split_items<'a>(tokens: &'a [&'a TokenWithSpan]) -> Vec<&'a [&'a TokenWithSpan]> {
    let mut items = vec![];
    let (mut depth, mut start) = (0, 0);
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                items.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tokens[start..]);
    items.into_iter().filter(|i| !i.is_empty()).collect()
}

fn single(rest: &[&TokenWithSpan], key: &str) -> Result<String, String> {
    match rest {
        [one] => Ok(token_text(one)),
        [] => Err(format!("COPY option {key} needs a value")),
        _ => Err(format!("COPY option {key} takes one value")),
    }
}

fn token_text(t: &TokenWithSpan) -> String {
    match &t.token {
        Token::Word(w) => w.value.clone(),
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Number(n, _) => n.clone(),
        Token::Whitespace(Whitespace::Space) => " ".into(),
        other => other.to_string(),
    }
}

/// Byte offset of a token's start (spans count lines and characters from 1).
fn offset(sql: &str, t: &TokenWithSpan) -> usize {
    let (line, column) = (t.span.start.line as usize, t.span.start.column as usize);
    let mut at = 0;
    for (i, l) in sql.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return at
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        at += l.len();
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duckdb_options_become_datafusion_clauses() {
        let out = rewrite_copy_options("COPY (SELECT a, b FROM t WHERE x IN (1, 2)) TO '/tmp/o/' (FORMAT parquet, PARTITION_BY (a, b), COMPRESSION zstd);")
            .expect("reads")
            .expect("rewritten");
        assert_eq!(out, "COPY (SELECT a, b FROM t WHERE x IN (1, 2)) TO '/tmp/o/' STORED AS PARQUET PARTITIONED BY (a, b) OPTIONS ('format.compression' 'zstd')");
        let csv = rewrite_copy_options(
            "copy t to 's3://b/x.csv' (format csv, header true, delimiter '|')",
        )
        .expect("reads")
        .expect("rewritten");
        assert!(
            csv.ends_with(
                "STORED AS CSV OPTIONS ('format.has_header' 'true', 'format.delimiter' '|')"
            ),
            "{csv}"
        );
        assert!(rewrite_copy_options("copy t to 'x' (partition by (a))")
            .expect("reads")
            .expect("rewritten")
            .contains("PARTITIONED BY (a)"));
    }

    #[test]
    fn other_statements_and_datafusion_syntax_pass() {
        assert_eq!(rewrite_copy_options("SELECT 1"), Ok(None));
        assert_eq!(
            rewrite_copy_options("COPY t TO '/x/' STORED AS PARQUET"),
            Ok(None)
        );
        assert!(rewrite_copy_options("COPY t TO '/x/' (FORMAT)").is_err());
    }

    proptest! {
        /// Whatever columns and options, the rewrite parses as DataFusion's COPY with the same parts.
        #[test]
        fn rewritten_statements_parse(cols in proptest::collection::vec("[a-z][a-z0-9_]{0,6}", 1..4), level in 1u32..9, pad in " {0,3}") {
            use datafusion::sql::parser::{DFParser, Statement};
            let sql = format!("COPY (SELECT 1){pad}TO '/t/o/'{pad}({pad}FORMAT parquet,{pad}PARTITION_BY ({}),{pad}compression 'zstd({level})')", cols.join(", "));
            let out = rewrite_copy_options(&sql).expect("reads").expect("rewritten");
            let parsed = DFParser::parse_sql(&out).expect("parses");
            let Some(Statement::CopyTo(copy)) = parsed.front() else { panic!("not a COPY: {out}") };
            prop_assert_eq!(&copy.partitioned_by, &cols);
            prop_assert_eq!(copy.stored_as.as_deref(), Some("PARQUET"));
            prop_assert_eq!(copy.options.len(), 1);
        }
    }
}
