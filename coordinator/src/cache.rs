//! The results cache: answers of read-only statements kept in memory, so a
//! dashboard that sends the same query again gets it without touching a source.
//!
//! The key is the user and the bound, access-checked logical plan as text (so
//! formatting, `?` vs `$1` and parameter values are normalized by the planner),
//! plus the datasets generation: any view or acceleration change makes older
//! entries unreachable. An accelerated copy's refresh also drops the entries that
//! read it at once. Statements that read system or catalog tables, or call
//! non-deterministic functions (`now()`, `random()`), are never cached. Memory is
//! bounded by `cache.max_bytes` (least recently used go first); entries expire
//! after `cache.ttl_secs`.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use lru::LruCache;

use crate::catalog::config::CacheConfig;

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    bytes: usize,
    created: Instant,
    /// The tables it read, for invalidation and `system.queries`.
    pub tables: Vec<String>,
}

#[derive(Debug)]
pub struct ResultsCache {
    enabled: bool,
    max_bytes: usize,
    max_entry_bytes: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
    /// Statement text (with user and generation) → key, for statements without
    /// parameters: a repeat is answered without being planned again.
    aliases: Mutex<LruCache<String, String>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<String, Arc<Entry>>,
    bytes: usize,
}

impl ResultsCache {
    pub fn new(config: &CacheConfig) -> Self {
        let cap = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
        Self {
            enabled: config.enabled && config.max_bytes.0 > 0,
            max_bytes: cap(config.max_bytes.0),
            max_entry_bytes: cap(config.max_entry_bytes.0.min(config.max_bytes.0)),
            ttl: Duration::from_secs_f64(config.ttl_secs.max(0.0)),
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            aliases: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(MAX_ALIASES).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cached answer under `key`, if it is there and fresh; counts a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let found = self.fresh(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers that the statement text `text_key` planned to `key`.
    pub fn alias(&self, text_key: String, key: String) {
        {
            let mut a = self.aliases.lock();
            a.put(text_key, key);
        }
    }

    /// The answer of a statement seen before under `text_key`, without planning it;
    /// counts a hit when found (a miss is counted by the planned lookup that follows).
    pub fn get_by_text(&self, text_key: &str) -> Option<Arc<Entry>> {
        let key = self.aliases.lock().get(text_key).cloned()?;
        let entry = self.fresh(&key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// [`Self::get_by_text`] without counting (a Flight SQL `GetFlightInfo` asks for the schema).
    pub fn peek_by_text(&self, text_key: &str) -> Option<SchemaRef> {
        let key = self.aliases.lock().peek(text_key).cloned()?;
        self.fresh(&key).map(|e| e.schema.clone())
    }

    /// The entry under `key` if it is younger than the TTL; an older one is dropped.
    fn fresh(&self, key: &str) -> Option<Arc<Entry>> {
        let mut inner = self.inner.lock();
        let entry = inner.entries.get(key).cloned()?;
        if entry.created.elapsed() <= self.ttl {
            return Some(entry);
        }
        inner.entries.pop(key);
        inner.bytes -= entry.bytes;
        None
    }

    /// The largest answer kept.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// Keeps an answer, evicting the least recently used ones beyond the budget.
    pub fn put(
        &self,
        key: String,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        tables: Vec<String>,
    ) {
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        if bytes > self.max_entry_bytes {
            return;
        }
        let mut inner = self.inner.lock();
        let entry = Arc::new(Entry {
            schema,
            batches,
            bytes,
            created: Instant::now(),
            tables,
        });
        if let Some(old) = inner.entries.put(key, entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, e)) => inner.bytes -= e.bytes,
                None => break,
            }
        }
    }

    /// Drops every answer that read `table` (`catalog.schema.table`).
    pub fn invalidate_reading(&self, table: &str) {
        let mut inner = self.inner.lock();
        let stale: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.tables.iter().any(|t| t == table))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(e) = inner.entries.pop(&k) {
                inner.bytes -= e.bytes;
            }
        }
    }

    /// Memory the answers take now, and how many there are.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.bytes, inner.entries.len())
    }

    #[cfg(test)]
    fn with_limits(max_bytes: usize, ttl: Duration) -> Self {
        let config = CacheConfig {
            enabled: true,
            max_bytes: crate::config::ByteSize(max_bytes as u64),
            max_entry_bytes: crate::config::ByteSize(max_bytes as u64),
            ttl_secs: ttl.as_secs_f64(),
        };
        Self::new(&config)
    }
}

/// Statement texts remembered for [`ResultsCache::get_by_text`].
const MAX_ALIASES: usize = 10_000;

/// The text key of a statement without parameters: user, generation and the text as sent.
pub fn text_key(user: Option<&str>, sql: &str, generation: u64) -> String {
    format!("{}\u{0}{generation}\u{0}{sql}", user.unwrap_or(""))
}

/// The key of `plan` run by `user` while the datasets are at `generation`.
pub fn key(user: Option<&str>, plan: &LogicalPlan, generation: u64) -> String {
    format!(
        "{}\u{0}{generation}\u{0}{}",
        user.unwrap_or(""),
        plan.display_indent()
    )
}

/// Whether the answer of `plan` may be cached: it reads no system or catalog
/// tables (`objects` are the tables it reads) and calls only deterministic functions.
pub fn cacheable(plan: &LogicalPlan, objects: &[String]) -> bool {
    if objects.is_empty() || objects.iter().any(|o| crate::reserved::is_catalog_table(o)) {
        return false;
    }
    let mut deterministic = true;
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            let _ = e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        deterministic = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(if deterministic {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    deterministic
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(n: i64) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .expect("batch");
        (schema, vec![b])
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let (_, one) = batch(1000);
        let size = one[0].get_array_memory_size();
        let cache = ResultsCache::with_limits(size * 3, Duration::from_secs(60));
        for i in 0..10 {
            let (schema, b) = batch(1000);
            cache.put(format!("k{i}"), schema, b, vec!["c.s.t".into()]);
            assert!(cache.usage().0 <= size * 3);
        }
        assert_eq!(cache.usage().1, 3);
        assert!(cache.get("k0").is_none(), "the oldest went first");
        assert!(cache.get("k9").is_some());
        cache.invalidate_reading("c.s.t");
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn entries_expire() {
        let cache = ResultsCache::with_limits(1 << 20, Duration::from_millis(0));
        let (schema, b) = batch(10);
        cache.put("k".into(), schema, b, vec![]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get("k").is_none());
        assert_eq!(cache.usage().0, 0);
    }
}
