//! How `EXPLAIN ANALYZE` lists the tasks of a stage and the fragments of a root:
//! worker, rows, bytes, spill, time and attempts of each.

use std::fmt;

/// What `EXPLAIN ANALYZE` shows of one task or fragment.
pub(super) struct Run<'a> {
    pub worker: &'a str,
    pub rows: u64,
    pub bytes: u64,
    pub spilled: u64,
    pub elapsed_ms: u64,
    pub attempts: u32,
}

/// `, ran=[t0@worker-1 rows=.. bytes=.. spill=.. time=..ms, ...]`, once anything ran.
pub(super) fn write_runs<'a>(
    f: &mut fmt::Formatter,
    prefix: char,
    runs: impl Iterator<Item = Option<Run<'a>>>,
    missing: &str,
) -> fmt::Result {
    let runs: Vec<_> = runs.collect();
    if runs.iter().all(Option::is_none) {
        return Ok(());
    }
    write!(f, ", ran=[")?;
    for (i, run) in runs.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        match run {
            Some(r) => {
                write!(
                    f,
                    "{sep}{prefix}{i}@{} rows={} bytes={} spill={} time={}ms",
                    r.worker, r.rows, r.bytes, r.spilled, r.elapsed_ms
                )?;
                if r.attempts > 1 {
                    write!(f, " attempts={}", r.attempts)?;
                }
            }
            None => write!(f, "{sep}{prefix}{i} {missing}")?,
        }
    }
    write!(f, "]")
}
