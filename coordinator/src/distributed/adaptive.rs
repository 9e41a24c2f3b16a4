//! Adaptive small queries: a query whose inputs are small runs whole, as one
//! fragment on one worker, instead of as stages.
//!
//! Stages pay per-stage latency (scheduling, an exchange written and read) that
//! a query over a few megabytes never earns back. When the files a plan scans add
//! up to at most `workers.single_stage_max_bytes`, the plan goes to the least
//! busy worker as it is: DataFusion runs all its partitions there, with the
//! joins' dynamic filters pruning the probe-side scans as on a single node, and
//! the coordinator only relays the result. `EXPLAIN` shows it as a
//! `RemoteFragmentExec` marked `single_stage`.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use quiver_connectors::SourceScanExec;

/// Bytes of the files `plan` scans (a file, or a byte range of one, that two scans
/// read counts once: the second read comes from the page cache), or `None` when it reads something whose
/// size is unknown or large by construction (a database table split into
/// ranges) or writes (writes keep their own per-task protocol).
pub(super) fn input_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    let (mut bytes, mut known) = (0u64, true);
    let mut seen = std::collections::HashSet::new();
    let _ = plan.apply(|node| {
        let n = node.as_ref();
        if let Some(files) = n.downcast_ref::<DataSourceExec>().and_then(|d| d.data_source().downcast_ref::<FileScanConfig>()) {
            for group in &files.file_groups {
                for file in group.iter() {
                    // A large file is split into byte ranges, one per partition.
                    let (size, range) = match &file.range {
                        Some(r) => (u64::try_from(r.end - r.start).unwrap_or(0), Some((r.start, r.end))),
                        None => (file.object_meta.size, None),
                    };
                    if seen.insert((file.object_meta.location.clone(), range)) {
                        bytes = bytes.saturating_add(size);
                    }
                }
            }
        } else if n.downcast_ref::<SourceScanExec>().is_some_and(|s| s.statements().len() > 1)
            || n.is::<DataSinkExec>()
            || n.is::<quiver_worker::write::WriteFilesExec>()
        {
            known = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    known.then_some(bytes)
}

/// "12.3 MiB".
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
