//! One remote Flight SQL service: its channel (TLS when asked), its credentials
//! (a bearer token, or Basic through the handshake, whose token is kept), a limit
//! on calls in flight, and reading a `FlightInfo`'s endpoints.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::FlightInfo;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::FlightSqlSource;
use crate::env::EnvString;

#[derive(Clone)]
enum Credentials {
    None,
    Token(String),
    Basic { user: String, password: String },
}

/// Everything needed to call one remote service; cheap to clone.
#[derive(Clone)]
pub(crate) struct Remote {
    pub source: String,
    url: String,
    channel: Channel,
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
    /// The token the last Basic handshake returned.
    token: Arc<Mutex<Option<String>>>,
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
}

/// `grpc://` → `http://`, `grpc+tls://` → `https://` (tonic's schemes).
fn http_url(url: &str) -> std::result::Result<(String, bool), String> {
    if let Some(rest) = url.strip_prefix("grpc+tls://") {
        Ok((format!("https://{rest}"), true))
    } else if let Some(rest) = url
        .strip_prefix("grpc+tcp://")
        .or_else(|| url.strip_prefix("grpc://"))
    {
        Ok((format!("http://{rest}"), false))
    } else if url.starts_with("http://") {
        Ok((url.to_string(), false))
    } else if url.starts_with("https://") {
        Ok((url.to_string(), true))
    } else {
        Err(format!(
            "url '{url}' must start with grpc:// or grpc+tls://"
        ))
    }
}

impl Remote {
    pub fn new(source: &str, cfg: &FlightSqlSource) -> std::result::Result<Self, String> {
        let expose = |v: &Option<EnvString>| v.as_ref().map(|s| s.expose().to_string());
        let credentials = match (
            expose(&cfg.token),
            expose(&cfg.username),
            expose(&cfg.password),
        ) {
            (Some(token), None, None) => Credentials::Token(token),
            (None, Some(user), password) => Credentials::Basic {
                user,
                password: password.unwrap_or_default(),
            },
            (None, None, None) => Credentials::None,
            (None, None, Some(_)) => return Err("password is set but username is not".into()),
            (Some(_), _, _) => return Err("set either token or username/password, not both".into()),
        };
        let (_, tls) = http_url(&cfg.url)?;
        let tls = match (tls, &cfg.tls_ca_file) {
            (false, Some(_)) => return Err("tls_ca_file needs a grpc+tls:// url".into()),
            (false, None) => None,
            (true, None) => Some(ClientTlsConfig::new().with_native_roots()),
            (true, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
                Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            }
        };
        let connect_timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
        let timeout = (cfg.statement_timeout_secs > 0)
            .then(|| Duration::from_secs(cfg.statement_timeout_secs));
        let channel = endpoint(&cfg.url, tls.clone(), connect_timeout, timeout)?.connect_lazy();
        Ok(Self {
            source: source.to_string(),
            url: cfg.url.clone(),
            channel,
            tls,
            credentials,
            token: Arc::default(),
            permits: Arc::new(Semaphore::new(cfg.pool_size.max(1))),
            connect_timeout,
            timeout,
        })
    }

    /// An error of this source; an unreachable service reads as `08006`.
    pub fn error(&self, what: &str, status: &dyn std::fmt::Display) -> DataFusionError {
        let text = status.to_string();
        if text.contains("transport error")
            || text.contains("Connection refused")
            || text.contains("dns error")
            || text.contains("Timeout expired")
            || text.contains("deadline has elapsed")
        {
            return crate::Unreachable::error(
                &self.source,
                "flightsql",
                &format!("{}: {text}", self.url),
            );
        }
        DataFusionError::External(
            format!("source '{}' (flightsql): {what}: {text}", self.source).into(),
        )
    }

    /// Waits for a free call slot.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }

    /// A client on `channel` with this source's credentials (handshaking once for Basic).
    async fn client_on(&self, channel: Channel) -> Result<FlightSqlServiceClient<Channel>> {
        let mut client = FlightSqlServiceClient::new(channel);
        match &self.credentials {
            Credentials::None => {}
            Credentials::Token(t) => client.set_token(t.clone()),
            Credentials::Basic { user, password } => {
                let known = self.token.lock().clone();
                match known {
                    Some(t) => client.set_token(t),
                    None => {
                        client
                            .handshake(user, password)
                            .await
                            .map_err(|e| self.error("login failed", &e))?;
                        if let Some(t) = client.token() {
                            *self.token.lock() = Some(t.clone());
                        }
                    }
                }
            }
        }
        Ok(client)
    }

    pub async fn client(&self) -> Result<FlightSqlServiceClient<Channel>> {
        self.client_on(self.channel.clone()).await
    }

    /// Runs `call` with a client; a rejected (expired) Basic token is renewed once.
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(FlightSqlServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, arrow_flight::error::FlightError>>,
    {
        let first = call(self.client().await?).await;
        match first {
            Err(e)
                if matches!(self.credentials, Credentials::Basic { .. })
                    && e.to_string().contains("Unauthenticated") =>
            {
                *self.token.lock() = None;
                call(self.client().await?)
                    .await
                    .map_err(|e| self.error(what, &e))
            }
            other => other.map_err(|e| self.error(what, &e)),
        }
    }

    /// The rows of every endpoint of `info`: read in parallel, or one after another
    /// when the service says their order matters.
    pub async fn read(&self, info: FlightInfo) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let mut streams = vec![];
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| self.error("bad answer", &"an endpoint without a ticket"))?;
            let location = endpoint
                .location
                .iter()
                .map(|l| l.uri.as_str())
                .find(|u| !u.is_empty() && !u.starts_with("arrow-flight-reuse-connection"));
            let mut client = match location {
                None => self.client().await?,
                Some(uri) => {
                    let channel = endpoint_for(uri, self)?.connect_lazy();
                    self.client_on(channel).await?
                }
            };
            let this = self.clone();
            let stream = client
                .do_get(ticket)
                .await
                .map_err(|e| self.error("reading results failed", &e))?
                .map_err(move |e| this.error("reading results failed", &e));
            streams.push(stream.boxed());
        }
        Ok(if info.ordered {
            futures::stream::iter(streams).flatten().boxed()
        } else {
            futures::stream::select_all(streams).boxed()
        })
    }
}

fn endpoint(
    url: &str,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> std::result::Result<Endpoint, String> {
    let (http, is_tls) = http_url(url)?;
    let mut endpoint = Endpoint::from_shared(http)
        .map_err(|e| format!("invalid url '{url}': {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    if is_tls {
        // A TLS location of a plaintext service is checked against the system's roots.
        let tls = tls.unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("tls for '{url}': {e}"))?;
    }
    Ok(endpoint)
}

/// An endpoint's own location (another worker of the remote service), with the
/// source's TLS settings when the location uses TLS.
fn endpoint_for(uri: &str, remote: &Remote) -> Result<Endpoint> {
    endpoint(
        uri,
        remote.tls.clone(),
        remote.connect_timeout,
        remote.timeout,
    )
    .map_err(|e| remote.error("bad endpoint location", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_tonic_schemes() {
        assert_eq!(http_url("grpc://h:1"), Ok(("http://h:1".into(), false)));
        assert_eq!(http_url("grpc+tcp://h:1"), Ok(("http://h:1".into(), false)));
        assert_eq!(http_url("grpc+tls://h:1"), Ok(("https://h:1".into(), true)));
        assert!(http_url("h:1").is_err());
    }
}
