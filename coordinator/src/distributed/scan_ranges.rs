//! Even scan partitions across workers.
//!
//! DataFusion splits a file scan into byte ranges of equal size, and a Parquet
//! row group is read by the range that holds its start. A range that runs a few
//! bytes into the next file therefore reads that file's first row group whole:
//! four files of two row groups (1 M and 0.45 M rows) became partitions of 2.55 M,
//! 1.5 M, 1.5 M and 0.45 M rows. On one node the threads share such partitions;
//! here each is placed on a worker, and round-robin placement gave one worker
//! two thirds of the rows. So a range that only starts a file (under an eighth of
//! it) moves to the partition that reads the rest of that file.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with every file scan's short leading ranges moved to the partition that
/// reads the rest of their file.
pub(super) fn even_out_file_starts(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        let Some(groups) = move_file_starts(&config.file_groups) else {
            return Ok(Transformed::no(node));
        };
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build();
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Transformed::yes(exec))
    })
    .map(|t| t.data)
}

/// The groups with each group's last range moved to the next group when it is the
/// start of a file (under an eighth of it) whose rest the next group reads first;
/// `None` when nothing moves. A group is never left empty.
fn move_file_starts(groups: &[FileGroup]) -> Option<Vec<FileGroup>> {
    let mut files: Vec<Vec<PartitionedFile>> = groups.iter().map(|g| g.files().to_vec()).collect();
    let mut moved = vec![false; files.len()];
    for g in 1..files.len() {
        let (before, after) = files.split_at_mut(g);
        let (this, next) = (&mut before[g - 1], &mut after[0]);
        let (Some(last), Some(first)) = (this.last(), next.first_mut()) else {
            continue;
        };
        let (Some(start), Some(rest)) = (&last.range, &mut first.range) else {
            continue;
        };
        let size = i64::try_from(last.object_meta.size).unwrap_or(i64::MAX);
        if this.len() > 1
            && last.object_meta.location == first.object_meta.location
            && start.start == 0
            && rest.start == start.end
            && start.end < size / 8
        {
            rest.start = 0;
            this.pop();
            (moved[g - 1], moved[g]) = (true, true);
        }
    }
    if !moved.contains(&true) {
        return None;
    }
    // Groups that lost or gained a range get no group statistics (they described the old ranges).
    Some(
        files
            .into_iter()
            .zip(groups)
            .zip(moved)
            .map(|((f, old), m)| if m { FileGroup::new(f) } else { old.clone() })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(path: &str, size: u64, start: i64, end: i64) -> PartitionedFile {
        PartitionedFile::new_with_range(path.to_string(), size, start, end)
    }

    fn ranges(groups: &[FileGroup]) -> Vec<Vec<(String, i64, i64)>> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|f| {
                        (
                            f.object_meta.location.to_string(),
                            f.range.as_ref().map_or(0, |r| r.start),
                            f.range.as_ref().map_or(0, |r| r.end),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_range_that_only_starts_a_file_joins_the_rest_of_it() {
        // DataFusion's split of four 1000-byte files into four partitions, each
        // range running 5 bytes into the next file.
        let groups = vec![
            FileGroup::new(vec![range("a", 1000, 0, 1000), range("b", 1000, 0, 5)]),
            FileGroup::new(vec![range("b", 1000, 5, 1000), range("c", 1000, 0, 10)]),
            FileGroup::new(vec![range("c", 1000, 10, 1000), range("d", 1000, 0, 15)]),
            FileGroup::new(vec![range("d", 1000, 15, 1000)]),
        ];
        let moved = move_file_starts(&groups).expect("ranges move");
        let s = |p: &str, a, b| (p.to_string(), a, b);
        assert_eq!(
            ranges(&moved),
            vec![
                vec![s("a", 0, 1000)],
                vec![s("b", 0, 1000)],
                vec![s("c", 0, 1000)],
                vec![s("d", 0, 1000)]
            ]
        );
    }

    #[test]
    fn ranges_that_split_a_file_evenly_stay() {
        // One large file split four ways: each range is a quarter, not a start.
        let groups: Vec<FileGroup> = (0..4)
            .map(|i| FileGroup::new(vec![range("big", 4000, i * 1000, (i + 1) * 1000)]))
            .collect();
        assert!(move_file_starts(&groups).is_none());
        // A start that is a group's only range stays, so no partition is left empty.
        let groups = vec![
            FileGroup::new(vec![range("b", 1000, 0, 5)]),
            FileGroup::new(vec![range("b", 1000, 5, 1000)]),
        ];
        assert!(move_file_starts(&groups).is_none());
    }
}
