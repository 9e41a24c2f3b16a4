//! The plan node that runs pushed-down SQL in a database, one statement per
//! partition, and its wire form so workers can run those partitions.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use datafusion_federation::sql::SQLExecutor;
use futures::StreamExt;
use prost::Message;
use quiver_proto::NodeCodec;

use crate::config::{SourceConfig, SourceKind};

/// Runs statement `i` in the database for partition `i`.
pub struct SourceScanExec {
    executor: Arc<dyn SQLExecutor>,
    statements: Vec<String>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SourceScanExec {
    pub fn new(executor: Arc<dyn SQLExecutor>, statements: Vec<String>, schema: SchemaRef) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(statements.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { executor, statements, schema, props, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The source (config name) the statements run in.
    pub fn source(&self) -> &str {
        self.executor.name()
    }

    pub fn statements(&self) -> &[String] {
        &self.statements
    }
}

impl fmt::Debug for SourceScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceScanExec").field("source", &self.source()).field("statements", &self.statements).finish()
    }
}

impl DisplayAs for SourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SourceScanExec: source={}", self.source())?;
        match self.statements.as_slice() {
            [one] => write!(f, " sql={one}"),
            many => {
                write!(f, " partitions={}", many.len())?;
                many.iter().enumerate().try_for_each(|(i, s)| write!(f, " sql[{i}]={s}"))
            }
        }
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let sql = self.statements.get(partition).ok_or_else(|| {
            DataFusionError::Internal(format!("source scan has {} partitions, not {partition}", self.statements.len()))
        })?;
        let rows = self.executor.execute(sql, self.schema.clone(), &[])?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let counted = rows.map(move |batch| {
            if let Ok(b) = &batch {
                baseline.record_output(b.num_rows());
            }
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), counted)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// No expressions: the statements carry everything.
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn datafusion::physical_plan::PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

#[derive(Clone, PartialEq, Message)]
struct SourceScanNode {
    #[prost(string, tag = "1")]
    source: String,
    #[prost(string, repeated, tag = "2")]
    statements: Vec<String>,
    /// datafusion-proto's `Schema` message.
    #[prost(bytes = "vec", tag = "3")]
    schema: Vec<u8>,
}

/// Ships [`SourceScanExec`] to workers. A worker connects to the source named in
/// the node with the settings of its own copy of the config (the same file the
/// coordinator reads), so no credentials travel in plans.
pub struct SourceScanCodec {
    sources: Vec<SourceConfig>,
    /// One executor (one connection pool) per source, made on first use.
    executors: Mutex<HashMap<String, Arc<dyn SQLExecutor>>>,
}

impl SourceScanCodec {
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        Self { sources, executors: Mutex::new(HashMap::new()) }
    }

    fn executor(&self, name: &str) -> Result<Arc<dyn SQLExecutor>> {
        let mut executors = self.executors.lock().map_err(|_| DataFusionError::Internal("executor registry poisoned".into()))?;
        if let Some(e) = executors.get(name) {
            return Ok(e.clone());
        }
        let config = self.sources.iter().find(|s| s.name == name).ok_or_else(|| {
            DataFusionError::Plan(format!("this worker's config has no source named '{name}'"))
        })?;
        let unusable = |e: crate::ConnectorError| DataFusionError::External(Box::new(e));
        let executor: Arc<dyn SQLExecutor> = match &config.kind {
            SourceKind::Postgres(pg) => Arc::new(crate::postgres::executor(name, pg).map_err(unusable)?.0),
            SourceKind::Mysql(my) => Arc::new(crate::mysql::executor(name, my).map_err(unusable)?.0),
            SourceKind::Files(_) => {
                return Err(DataFusionError::Plan(format!("source '{name}' holds files, not a database")));
            }
        };
        executors.insert(name.to_string(), executor.clone());
        Ok(executor)
    }
}

impl NodeCodec for SourceScanCodec {
    fn kind(&self) -> &'static str {
        "source_scan"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let scan = node.as_ref().downcast_ref::<SourceScanExec>()?;
        let schema = datafusion_proto::protobuf::Schema::try_from(scan.schema.as_ref());
        Some(schema.map_err(|e| DataFusionError::Internal(e.to_string())).map(|schema| {
            SourceScanNode {
                source: scan.source().to_string(),
                statements: scan.statements.clone(),
                schema: schema.encode_to_vec(),
            }
            .encode_to_vec()
        }))
    }

    fn decode(&self, payload: &[u8], _inputs: &[Arc<dyn ExecutionPlan>], _ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        let malformed = |e: &dyn fmt::Display| DataFusionError::Internal(format!("malformed source scan: {e}"));
        let node = SourceScanNode::decode(payload).map_err(|e| malformed(&e))?;
        let schema = datafusion_proto::protobuf::Schema::decode(node.schema.as_slice()).map_err(|e| malformed(&e))?;
        let schema = Schema::try_from(&schema).map_err(|e| malformed(&e))?;
        Ok(Arc::new(SourceScanExec::new(self.executor(&node.source)?, node.statements, Arc::new(schema))))
    }
}
