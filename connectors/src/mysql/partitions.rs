//! Table statistics and parallel scans of one large MySQL/MariaDB table.
//!
//! Sizes come from `information_schema.tables` (`TABLE_ROWS`, `DATA_LENGTH`,
//! InnoDB's estimates), so DataFusion orders joins by them as for PostgreSQL.
//! A plain scan of a table at least `partition_min_mb` large whose primary key
//! starts with an integer column is cut into N ranges of that column between its
//! minimum and maximum (`key < b1`, `key >= b1 AND key < b2`, …, `key >= bN-1`),
//! one statement each, which N workers read at once over N connections; InnoDB
//! stores rows in primary-key order, so each range is a contiguous read. The first
//! and last ranges are open, so rows added after planning are still read. A table
//! without such a key is read by one statement.

use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion::sql::sqlparser::dialect::MySqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use crate::pushdown::{table_and_qualifier, table_select, Partitioner};

pub(crate) struct KeyRanges {
    pub pool: Pool,
    pub database: String,
    pub partitions: usize,
    pub min_bytes: u64,
}

const INTEGER_TYPES: [&str; 5] = ["tinyint", "smallint", "mediumint", "int", "bigint"];

/// The statement's table as (database, table, qualifier), when it reads exactly one.
fn single_table(sql: &str, default_db: &str) -> Option<(Query, String, String, String)> {
    let mut parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok()?;
    let Some(Statement::Query(mut query)) = parsed.pop() else {
        return None;
    };
    let (name, qualifier) = table_select(&mut query).and_then(|s| table_and_qualifier(s))?;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect();
    let (db, table) = match parts.as_slice() {
        [db, table] => (db.clone(), table.clone()),
        [table] => (default_db.to_string(), table.clone()),
        _ => return None,
    };
    Some((*query, db, table, qualifier))
}

#[async_trait]
impl Partitioner for KeyRanges {
    async fn split(&self, sql: &str) -> Result<Vec<String>> {
        let unsplit = Ok(vec![sql.to_string()]);
        if self.partitions < 2 {
            return unsplit;
        }
        let Some((query, db, table, qualifier)) = single_table(sql, &self.database) else {
            return unsplit;
        };
        let bounds = match self.key_bounds(&db, &table).await {
            Ok(Some(b)) => b,
            Ok(None) => return unsplit,
            Err(e) => {
                // An unreachable server is reported by the statement itself.
                tracing::debug!(table = %table, error = %e, "not split into key ranges");
                return unsplit;
            }
        };
        let (key, low, high) = bounds;
        let ranges = key_ranges(low, high, self.partitions);
        if ranges.len() < 2 {
            return unsplit;
        }
        range_statements(&query, &qualifier, &key, &ranges)
    }

    async fn table_size(&self, sql: &str) -> Option<(Option<u64>, u64)> {
        let (_, db, table, _) = single_table(sql, &self.database)?;
        let mut conn = self.pool.get_conn().await.ok()?;
        let row: Option<(Option<u64>, Option<u64>)> = conn
            .exec_first(
                "SELECT TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await
            .ok()?;
        let (rows, bytes) = row?;
        Some((rows, bytes.unwrap_or(0)))
    }
}

impl KeyRanges {
    /// The first primary-key column and its minimum and maximum, when the table is
    /// large enough and that column is an integer.
    async fn key_bounds(
        &self,
        db: &str,
        table: &str,
    ) -> std::result::Result<Option<(String, i64, i64)>, String> {
        let mut conn = self.pool.get_conn().await.map_err(|e| e.to_string())?;
        let size: Option<Option<u64>> = conn
            .exec_first(
                "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_TYPE = 'BASE TABLE'",
                (db, table),
            )
            .await
            .map_err(|e| e.to_string())?;
        if size.flatten().unwrap_or(0) < self.min_bytes {
            return Ok(None);
        }
        let key: Option<(String, String)> = conn
            .exec_first(
                "SELECT k.COLUMN_NAME, c.DATA_TYPE FROM information_schema.KEY_COLUMN_USAGE k
                   JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA
                     AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
                 WHERE k.TABLE_SCHEMA = ? AND k.TABLE_NAME = ? AND k.CONSTRAINT_NAME = 'PRIMARY'
                   AND k.ORDINAL_POSITION = 1",
                (db, table),
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some((key, data_type)) = key else {
            return Ok(None);
        };
        if !INTEGER_TYPES.contains(&data_type.to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        let quoted = |s: &str| format!("`{}`", s.replace('`', "``"));
        let bounds: Option<(Option<i64>, Option<i64>)> = conn
            .query_first(format!(
                "SELECT CAST(MIN({k}) AS SIGNED), CAST(MAX({k}) AS SIGNED) FROM {}.{}",
                quoted(db),
                quoted(table),
                k = quoted(&key)
            ))
            .await
            .map_err(|e| e.to_string())?;
        Ok(match bounds {
            Some((Some(low), Some(high))) => Some((key, low, high)),
            _ => None,
        })
    }
}

/// Up to `partitions` contiguous ranges over `[low, high]`, open at both ends;
/// each bound is where the next range starts.
fn key_ranges(low: i64, high: i64, partitions: usize) -> Vec<(Option<i64>, Option<i64>)> {
    let span = (high as i128) - (low as i128) + 1;
    let n = (partitions as i128).min(span).max(1);
    if n < 2 {
        return vec![(None, None)];
    }
    let bound = |i: i128| (low as i128 + span * i / n) as i64;
    (0..n)
        .map(|i| ((i > 0).then(|| bound(i)), (i + 1 < n).then(|| bound(i + 1))))
        .collect()
}

fn range_statements(
    query: &Query,
    qualifier: &str,
    key: &str,
    ranges: &[(Option<i64>, Option<i64>)],
) -> Result<Vec<String>> {
    let column = format!("{qualifier}.`{}`", key.replace('`', "``"));
    crate::pushdown::range_statements(query, &MySqlDialect {}, &column, ranges, i64::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_the_keys_once_and_are_open_at_the_ends() {
        for (low, high) in [
            (1i64, 1i64),
            (1, 2),
            (0, 99),
            (-50, 50),
            (i64::MIN, i64::MAX),
            (7, 100_000),
        ] {
            for n in [1usize, 2, 3, 4, 8] {
                let ranges = key_ranges(low, high, n);
                assert_eq!(ranges.first().map(|r| r.0), Some(None));
                assert_eq!(ranges.last().map(|r| r.1), Some(None));
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].1, pair[1].0, "{low}..{high} in {n}: {ranges:?}");
                    assert!(pair[1].0.is_some_and(|b| b > low && b <= high));
                }
                assert!(ranges.len() <= n);
            }
        }
        assert_eq!(
            key_ranges(1, 100, 4),
            vec![
                (None, Some(26)),
                (Some(26), Some(51)),
                (Some(51), Some(76)),
                (Some(76), None)
            ]
        );
    }

    #[test]
    fn ranges_go_into_the_table_select_with_its_qualifier() {
        let sql = "SELECT `t`.`a` FROM `db`.`big` AS `t` WHERE (`t`.`a` > 1)";
        let (query, db, table, qualifier) = single_table(sql, "other").expect("one table");
        assert_eq!((db.as_str(), table.as_str()), ("db", "big"));
        let out = range_statements(
            &query,
            &qualifier,
            "id",
            &[(None, Some(5)), (Some(5), None)],
        )
        .expect("statements");
        assert!(
            out[0].ends_with("WHERE (`t`.`a` > 1) AND `t`.`id` < 5"),
            "{}",
            out[0]
        );
        assert!(out[1].ends_with("AND `t`.`id` >= 5"), "{}", out[1]);
        let (_, db, _, _) = single_table("SELECT a FROM plain", "mine").expect("one table");
        assert_eq!(db, "mine");
    }
}
