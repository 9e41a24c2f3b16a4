//! Parallel scans of one large PostgreSQL table: the table's heap pages are cut
//! into N ranges and each range is read by its own statement
//! (`ctid >= '(first,0)' AND ctid < '(next,0)'`, a TID range scan since
//! PostgreSQL 14), so N workers read the table at once over N connections.
//!
//! Page ranges work for every table, with or without a primary key, and each
//! statement reads only its own pages. The first range has no lower bound and the
//! last no upper bound, so rows in pages added after planning are still read.
//! Each statement runs in its own snapshot: rows written while the scan runs may
//! be seen by one range and not another, as with any multi-connection reader.

use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use deadpool_postgres::Pool;

use crate::pushdown::{table_and_qualifier, table_select, Partitioner};

pub(crate) struct PageRanges {
    pub pool: Pool,
    /// Most statements one scan is split into.
    pub partitions: usize,
    /// Tables smaller than this on disk are read by one statement.
    pub min_bytes: u64,
    /// PostgreSQL's estimates of statements' results.
    pub estimates: super::estimates::Estimates,
}

#[async_trait]
impl Partitioner for PageRanges {
    async fn split(&self, sql: &str) -> Result<Vec<String>> {
        let unsplit = Ok(vec![sql.to_string()]);
        if self.partitions < 2 {
            return unsplit;
        }
        let dialect = PostgreSqlDialect {};
        let Ok(mut parsed) = Parser::parse_sql(&dialect, sql) else {
            return unsplit;
        };
        let Some(Statement::Query(mut query)) = parsed.pop() else {
            return unsplit;
        };
        let Some((table, qualifier)) =
            table_select(&mut query).and_then(|s| table_and_qualifier(s))
        else {
            return unsplit;
        };
        let pages = match self.pages(&table.to_string()).await {
            Ok(p) => p,
            Err(e) => {
                // Views and foreign tables have no pages; an unreachable server is
                // reported by the statement itself.
                tracing::debug!(table = %table, error = %e, "not split into page ranges");
                return unsplit;
            }
        };
        let ranges = page_ranges(pages, self.partitions);
        if ranges.len() < 2 {
            return unsplit;
        }
        range_statements(&query, &qualifier, &ranges)
    }

    async fn result_size(&self, sql: &str) -> Option<(u64, u64)> {
        self.estimates.of(sql).await
    }

    async fn table_size(&self, sql: &str) -> Option<(Option<u64>, u64)> {
        let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        let Some(Statement::Query(mut query)) = parsed.pop() else {
            return None;
        };
        let (table, _) = table_select(&mut query).and_then(|s| table_and_qualifier(s))?;
        let client = self.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT reltuples::bigint, pg_relation_size(oid) FROM pg_class WHERE oid = $1::text::regclass",
                &[&table.to_string()],
            )
            .await
            .ok()?;
        let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
        // reltuples is -1 until the table is first analyzed.
        Some((u64::try_from(rows).ok(), u64::try_from(bytes).unwrap_or(0)))
    }
}

/// One statement per page range: `query` with the range ANDed into its WHERE.
fn range_statements(
    query: &Query,
    qualifier: &str,
    ranges: &[(Option<u64>, Option<u64>)],
) -> Result<Vec<String>> {
    let column = format!("{qualifier}.ctid");
    crate::pushdown::range_statements(query, &PostgreSqlDialect {}, &column, ranges, |page| {
        format!("'({page},0)'::tid")
    })
}

impl PageRanges {
    /// Heap pages of the table, or 0 when it is smaller than the split threshold.
    async fn pages(&self, table: &str) -> std::result::Result<u64, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT pg_relation_size($1::text::regclass), current_setting('block_size')::bigint",
                &[&table],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (bytes, block): (i64, i64) = (row.get(0), row.get(1));
        if (bytes as u64) < self.min_bytes || block <= 0 {
            return Ok(0);
        }
        Ok(bytes as u64 / block as u64)
    }
}

/// `partitions` contiguous page ranges covering `[0, pages)`, open at both ends.
fn page_ranges(pages: u64, partitions: usize) -> Vec<(Option<u64>, Option<u64>)> {
    let n = (partitions as u64).min(pages);
    if n < 2 {
        return vec![(None, None)];
    }
    let bound = |i: u64| pages * i / n;
    (0..n)
        .map(|i| ((i > 0).then(|| bound(i)), (i + 1 < n).then(|| bound(i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_page_once_and_are_open_at_the_ends() {
        for pages in [0u64, 1, 2, 3, 7, 100, 12345] {
            for n in [1usize, 2, 3, 4, 8] {
                let ranges = page_ranges(pages, n);
                assert_eq!(ranges.first().map(|r| r.0), Some(None));
                assert_eq!(ranges.last().map(|r| r.1), Some(None));
                // Each range starts where the previous one ended.
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].1, pair[1].0, "{pages} pages, {n} parts: {ranges:?}");
                    assert!(pair[1].0.is_some_and(|b| b > 0 && b < pages));
                }
                assert!(ranges.len() <= n.max(1));
            }
        }
        assert_eq!(
            page_ranges(100, 4),
            vec![
                (None, Some(25)),
                (Some(25), Some(50)),
                (Some(50), Some(75)),
                (Some(75), None)
            ]
        );
    }

    fn parse(sql: &str) -> Query {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .pop()
        {
            Some(Statement::Query(q)) => *q,
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn ranges_are_anded_into_the_innermost_table_select() {
        let mut q = parse(
            r#"SELECT x."a" FROM (SELECT "t"."a" FROM "public"."t" AS "t" WHERE ("t"."a" > 1 OR "t"."a" < 0)) AS x"#,
        );
        let (table, qualifier) = table_select(&mut q)
            .and_then(|s| table_and_qualifier(s))
            .expect("one table");
        assert_eq!(
            (table.to_string().as_str(), qualifier.as_str()),
            (r#""public"."t""#, r#""t""#)
        );
        let out = range_statements(&q, &qualifier, &[(None, Some(5)), (Some(5), None)])
            .expect("statements");
        assert_eq!(out.len(), 2);
        assert!(
            out[0].contains(r#"WHERE ("t"."a" > 1 OR "t"."a" < 0) AND "t".ctid < '(5,0)'::tid"#),
            "{}",
            out[0]
        );
        assert!(
            out[1].contains(r#"AND "t".ctid >= '(5,0)'::tid)"#),
            "{}",
            out[1]
        );
        // The outer query is untouched.
        assert!(
            out[1].starts_with(r#"SELECT x."a" FROM (SELECT"#),
            "{}",
            out[1]
        );

        let mut bare = parse(r#"SELECT "a" FROM "s"."big""#);
        let (_, qualifier) = table_select(&mut bare)
            .and_then(|s| table_and_qualifier(s))
            .expect("one table");
        let out = range_statements(&bare, &qualifier, &[(Some(1), Some(2))]).expect("statements");
        assert_eq!(
            out[0],
            r#"SELECT "a" FROM "s"."big" WHERE "s"."big".ctid >= '(1,0)'::tid AND "s"."big".ctid < '(2,0)'::tid"#
        );
    }

    #[test]
    fn joins_and_grouped_reads_have_no_table_select() {
        for sql in [
            r#"SELECT * FROM a JOIN b ON a.x = b.x"#,
            r#"SELECT * FROM a, b"#,
            r#"SELECT 1 UNION SELECT 2"#,
        ] {
            assert!(table_select(&mut parse(sql)).is_none(), "{sql}");
        }
    }
}
