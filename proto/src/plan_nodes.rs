//! What Quiver's own plan nodes (the ones [`crate::QuiverCodec`] carries) share.

use std::sync::Arc;

use datafusion::common::{internal_err, Result};
use datafusion::physical_plan::ExecutionPlan;

/// The child of a one-input node, out of `with_new_children`'s list; DataFusion's
/// internal error naming the node when the list does not hold exactly one.
pub fn single_child(
    node: &str,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    match <[_; 1]>::try_from(children) {
        Ok([child]) => Ok(child),
        Err(children) => internal_err!("{node} takes one child, not {}", children.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::single_child;
    use datafusion::physical_plan::empty::EmptyExec;
    use std::sync::Arc;

    #[test]
    fn one_child_or_an_error_naming_the_node() {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let leaf: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
            Arc::new(EmptyExec::new(schema));
        assert!(single_child("X", vec![leaf.clone()]).is_ok());
        let err = single_child("ShuffleWriteExec", vec![leaf.clone(), leaf])
            .expect_err("two children")
            .to_string();
        assert!(
            err.contains("ShuffleWriteExec takes one child, not 2"),
            "{err}"
        );
        assert!(single_child("X", vec![]).is_err());
    }
}
