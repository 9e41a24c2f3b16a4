//! Mapping DataFusion errors to gRPC statuses with the message a person needs.

use datafusion::error::DataFusionError;
use tonic::{Code, Status};

/// The gRPC code that fits a DataFusion error; the message is DataFusion's, unwrapped
/// of context layers that only repeat "External error:" prefixes.
pub fn from_datafusion(err: &DataFusionError) -> Status {
    let root = err.find_root();
    let code = match root {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Code::InvalidArgument
        }
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::NotImplemented(_) => Code::Unimplemented,
        DataFusionError::External(e) => match e.downcast_ref::<Status>() {
            Some(status) => return Status::new(status.code(), status.message().to_string()),
            None => Code::Internal,
        },
        _ => Code::Internal,
    };
    Status::new(code, err.to_string())
}
