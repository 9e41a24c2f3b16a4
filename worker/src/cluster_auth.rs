//! Cluster authentication on the wire: the client side adds a fresh call token to
//! every request to a worker and seals its tickets; the worker side checks both
//! before it decodes anything. The mechanism itself is [`quiver_proto::cluster`].
//!
//! Without a key (`allow_insecure = true`) calls carry nothing and workers check nothing.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use quiver_proto::{CallVerifier, ClusterAuthError, ClusterKey, CLUSTER_HEADER};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// A Flight client to a worker that authenticates each of its calls.
pub type WorkerClient = FlightServiceClient<InterceptedService<Channel, ClusterCredentials>>;

/// What a cluster member presents: the key, or nothing in an insecure cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterCredentials(Option<ClusterKey>);

impl ClusterCredentials {
    pub fn new(key: Option<ClusterKey>) -> Self {
        Self(key)
    }

    pub fn key(&self) -> Option<&ClusterKey> {
        self.0.as_ref()
    }

    /// The bytes of a ticket as the worker expects them: sealed in a secure cluster.
    pub fn seal(&self, payload: Vec<u8>) -> bytes::Bytes {
        match &self.0 {
            Some(key) => key.seal(&payload).into(),
            None => payload.into(),
        }
    }

    /// A ticket sealed for `ttl` instead of a call's minute: one handed to a client,
    /// who may fetch it a little later (or again, after a broken connection).
    pub fn seal_for(&self, payload: Vec<u8>, ttl: Duration) -> bytes::Bytes {
        match &self.0 {
            Some(key) => key.seal_for(&payload, ttl).into(),
            None => payload.into(),
        }
    }
}

impl tonic::service::Interceptor for ClusterCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let token = key
                .call_token()
                .map_err(|e| Status::internal(e.to_string()))?;
            let value = MetadataValue::try_from(token)
                .map_err(|_| Status::internal("cannot encode the cluster token"))?;
            request.metadata_mut().insert(CLUSTER_HEADER, value);
        }
        Ok(request)
    }
}

/// A lazily connecting client to the worker at `address` (e.g. `http://10.0.0.5:50061`).
pub fn worker_client(
    address: &str,
    credentials: ClusterCredentials,
) -> Result<WorkerClient, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(address.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    Ok(client_over(endpoint.connect_lazy(), credentials))
}

/// A worker client over an existing connection.
pub fn client_over(channel: Channel, credentials: ClusterCredentials) -> WorkerClient {
    FlightServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
}

/// The worker's side: which calls and tickets it accepts.
#[derive(Debug, Clone)]
pub(crate) struct ClusterGuard(Option<Arc<CallVerifier>>);

impl ClusterGuard {
    pub fn new(key: Option<ClusterKey>) -> Self {
        Self(key.map(|k| Arc::new(CallVerifier::new(k))))
    }

    /// Refuses a call without valid, unused cluster credentials.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(verifier) = &self.0 else {
            return Ok(());
        };
        let token = metadata.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok());
        verifier.verify(token).map_err(refused)
    }

    /// The payload of a ticket, once its seal is checked.
    pub fn open<'a>(&self, ticket: &'a [u8]) -> Result<&'a [u8], Status> {
        match &self.0 {
            Some(verifier) => verifier.key().open(ticket).map_err(refused),
            None => Ok(ticket),
        }
    }
}

fn refused(e: ClusterAuthError) -> Status {
    Status::unauthenticated(e.to_string())
}
