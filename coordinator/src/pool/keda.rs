//! KEDA's external-scaler gRPC API (`externalscaler.ExternalScaler`, see
//! `proto/keda/externalscaler.proto`), served on `server.keda_listen`, so that a
//! KEDA `ScaledObject` sizes the worker Deployment by what the coordinator's
//! autoscaler wants: one worker per `workers.busy_fragments` running or waiting
//! fragments, between `workers.min` and `workers.max` (see
//! [`WorkerPool::wanted_workers`]).
//!
//! The metric is `quiver_workers_wanted` with target 1, so KEDA's HPA asks for
//! exactly that many replicas; `IsActive` is true while anything runs or waits,
//! which lets KEDA scale the workers to zero when idle. The messages are declared
//! with prost derives (the field numbers are KEDA's), and the service is routed by
//! hand, as tonic's generated code would: that keeps protoc out of the build.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

use super::WorkerPool;

/// The metric KEDA reads.
pub const METRIC: &str = "quiver_workers_wanted";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScaledObjectRef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(map = "string, string", tag = "3")]
    pub scaler_metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IsActiveResponse {
    #[prost(bool, tag = "1")]
    pub result: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetMetricSpecResponse {
    #[prost(message, repeated, tag = "1")]
    pub metric_specs: Vec<MetricSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricSpec {
    #[prost(string, tag = "1")]
    pub metric_name: String,
    #[prost(int64, tag = "2")]
    pub target_size: i64,
    #[prost(double, tag = "3")]
    pub target_size_float: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetMetricsRequest {
    #[prost(message, optional, tag = "1")]
    pub scaled_object_ref: Option<ScaledObjectRef>,
    #[prost(string, tag = "2")]
    pub metric_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetMetricsResponse {
    #[prost(message, repeated, tag = "1")]
    pub metric_values: Vec<MetricValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricValue {
    #[prost(string, tag = "1")]
    pub metric_name: String,
    #[prost(int64, tag = "2")]
    pub metric_value: i64,
    #[prost(double, tag = "3")]
    pub metric_value_float: f64,
}

/// How often `StreamIsActive` looks for a change.
const STREAM_TICK: Duration = Duration::from_millis(500);

/// The external scaler over one worker pool.
#[derive(Clone)]
pub struct KedaScaler {
    pool: Arc<WorkerPool>,
}

impl KedaScaler {
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        Self { pool }
    }

    fn active(&self) -> bool {
        self.pool.load() > 0
    }

    fn spec(&self) -> GetMetricSpecResponse {
        let spec = MetricSpec {
            metric_name: METRIC.into(),
            target_size: 1,
            target_size_float: 1.0,
        };
        GetMetricSpecResponse {
            metric_specs: vec![spec],
        }
    }

    fn metrics(&self, asked: &str) -> Result<GetMetricsResponse, Status> {
        if !asked.is_empty() && asked != METRIC && !asked.ends_with(METRIC) {
            return Err(Status::not_found(format!(
                "unknown metric '{asked}'; this scaler reports '{METRIC}'"
            )));
        }
        let wanted = self.pool.wanted_workers() as i64;
        let value = MetricValue {
            metric_name: METRIC.into(),
            metric_value: wanted,
            metric_value_float: wanted as f64,
        };
        Ok(GetMetricsResponse {
            metric_values: vec![value],
        })
    }

    /// The routed gRPC service, for `tonic::transport::Server::add_service`.
    pub fn into_service(self) -> ExternalScalerServer {
        ExternalScalerServer { scaler: self }
    }
}

/// `externalscaler.ExternalScaler` over HTTP/2.
#[derive(Clone)]
pub struct ExternalScalerServer {
    scaler: KedaScaler,
}

impl NamedService for ExternalScalerServer {
    const NAME: &'static str = "externalscaler.ExternalScaler";
}

struct IsActive(KedaScaler);
impl UnaryService<ScaledObjectRef> for IsActive {
    type Response = IsActiveResponse;
    type Future = BoxFuture<Response<IsActiveResponse>, Status>;
    fn call(&mut self, _: Request<ScaledObjectRef>) -> Self::Future {
        let result = self.0.active();
        Box::pin(async move { Ok(Response::new(IsActiveResponse { result })) })
    }
}

struct MetricSpecCall(KedaScaler);
impl UnaryService<ScaledObjectRef> for MetricSpecCall {
    type Response = GetMetricSpecResponse;
    type Future = BoxFuture<Response<GetMetricSpecResponse>, Status>;
    fn call(&mut self, _: Request<ScaledObjectRef>) -> Self::Future {
        let spec = self.0.spec();
        Box::pin(async move { Ok(Response::new(spec)) })
    }
}

struct Metrics(KedaScaler);
impl UnaryService<GetMetricsRequest> for Metrics {
    type Response = GetMetricsResponse;
    type Future = BoxFuture<Response<GetMetricsResponse>, Status>;
    fn call(&mut self, request: Request<GetMetricsRequest>) -> Self::Future {
        let answer = self.0.metrics(&request.get_ref().metric_name);
        Box::pin(async move { answer.map(Response::new) })
    }
}

type ActiveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

/// Sends the current state at once, then each change.
struct StreamIsActive(KedaScaler);
impl ServerStreamingService<ScaledObjectRef> for StreamIsActive {
    type Response = IsActiveResponse;
    type ResponseStream = ActiveStream;
    type Future = BoxFuture<Response<ActiveStream>, Status>;
    fn call(&mut self, _: Request<ScaledObjectRef>) -> Self::Future {
        let scaler = self.0.clone();
        let changes = futures::stream::unfold(None::<bool>, move |last| {
            let scaler = scaler.clone();
            async move {
                loop {
                    let now = scaler.active();
                    if last != Some(now) {
                        return Some((Ok(IsActiveResponse { result: now }), Some(now)));
                    }
                    tokio::time::sleep(STREAM_TICK).await;
                }
            }
        });
        Box::pin(async move { Ok(Response::new(Box::pin(changes) as ActiveStream)) })
    }
}

impl<B> Service<http::Request<B>> for ExternalScalerServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let scaler = self.scaler.clone();
        match req.uri().path() {
            "/externalscaler.ExternalScaler/IsActive" => Box::pin(async move {
                Ok(Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(IsActive(scaler), req)
                    .await)
            }),
            "/externalscaler.ExternalScaler/GetMetricSpec" => Box::pin(async move {
                Ok(Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(MetricSpecCall(scaler), req)
                    .await)
            }),
            "/externalscaler.ExternalScaler/GetMetrics" => Box::pin(async move {
                Ok(Grpc::new(tonic_prost::ProstCodec::default())
                    .unary(Metrics(scaler), req)
                    .await)
            }),
            "/externalscaler.ExternalScaler/StreamIsActive" => Box::pin(async move {
                Ok(Grpc::new(tonic_prost::ProstCodec::default())
                    .server_streaming(StreamIsActive(scaler), req)
                    .await)
            }),
            // StreamMetricSpec is optional: KEDA falls back to GetMetricSpec.
            other => {
                let status = Status::unimplemented(format!("{other} is not served by this scaler"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Serves the scaler on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener, pool: Arc<WorkerPool>) {
    let service = KedaScaler::new(pool).into_service();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the KEDA external scaler stopped");
        }
    });
}
