//! Logging in on the PostgreSQL port, against the same users as Flight SQL:
//! SCRAM-SHA-256 for users whose config holds a SCRAM verifier (or a plaintext
//! password), the password in the clear for argon2 hashes (which cannot answer
//! SCRAM; use TLS then), nothing when the server has no authentication. A failed
//! login is SQLSTATE 28P01 and goes to the audit log.

use parking_lot::Mutex;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
    METADATA_USER,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::{Connection, Frontend};
use crate::frontends::run::Caller;
use crate::security::authn::PgLogin;
use crate::security::scram;

/// Where one connection's login stands.
#[derive(Default)]
enum Login {
    #[default]
    Started,
    Password,
    ScramFirst(scram::Verifier),
    ScramFinal(Box<scram::Exchange>),
}

#[derive(Default)]
struct LoginState(Mutex<Login>);

pub struct Startup {
    pub(super) frontend: Arc<Frontend>,
    params: DefaultServerParameterProvider,
    pids: RandomPidSecretKeyGenerator,
    /// Connections still logging in, by peer: their flag is set when the login succeeds.
    pending:
        Mutex<std::collections::HashMap<std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>>>,
}

impl Startup {
    pub fn new(frontend: Arc<Frontend>) -> Self {
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = format!("16.6 (Quiver {})", env!("CARGO_PKG_VERSION"));
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        Self {
            frontend,
            params,
            pids: RandomPidSecretKeyGenerator::default(),
            pending: Mutex::default(),
        }
    }

    /// A flag that turns true when the connection from `peer` has logged in.
    pub fn watch(&self, peer: std::net::SocketAddr) -> Arc<std::sync::atomic::AtomicBool> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pending = self.pending.lock();
        // Flags of connections that ended without logging in are only weak leftovers: drop them.
        pending.retain(|_, f| Arc::strong_count(f) > 1);
        pending.insert(peer, flag.clone());
        flag
    }

    /// The login succeeded: the connection gets its catalogs and a cancel key.
    async fn finish<C>(
        &self,
        client: &mut C,
        user: Option<crate::security::authn::User>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let engine = &self.frontend.engine;
        let access = engine.access(user.as_ref());
        let login_name = user.as_ref().map(|u| u.name.clone());
        let login_name = login_name
            .or_else(|| client.metadata().get(METADATA_USER).cloned())
            .unwrap_or_else(|| "quiver".into());
        let startup = client
            .metadata()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "options" | "replication"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (state, settings) =
            super::catalog::connection_state(engine, access.clone(), login_name, startup)
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let (pid, key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let caller = Caller {
            user,
            client: Some(client.socket_addr().to_string()),
            no_cache: false,
        };
        let connection = Arc::new(Connection {
            caller,
            access,
            state,
            settings,
            current: Mutex::default(),
        });
        let registration = self.frontend.register(pid, &key, connection.clone());
        if let Some(flag) = self.pending.lock().remove(&client.socket_addr()) {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        client.session_extensions().insert(connection);
        client.session_extensions().insert(registration);
        finish_authentication(client, &self.params).await
    }
}

/// PostgreSQL's own words, which clients and people recognize.
fn refused(name: &str) -> PgWireError {
    super::errors::fatal(
        "28P01",
        format!("password authentication failed for user \"{name}\""),
    )
}

#[async_trait]
impl StartupHandler for Startup {
    /// A FATAL error (a refused login) is the last message the client gets: the
    /// connection closes right after it, without pgwire's ReadyForQuery, as
    /// PostgreSQL does (clients that wait for the close would otherwise hang).
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self.step(client, message).await {
            Err(e) => {
                let info = pgwire::error::ErrorInfo::from(e);
                if !info.is_fatal() {
                    return Err(PgWireError::UserError(Box::new(info)));
                }
                client
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                client.close().await?;
                Err(PgWireError::IoError(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "login refused; connection closed",
                )))
            }
            ok => ok,
        }
    }
}

impl Startup {
    async fn step<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let login = client
            .session_extensions()
            .get_or_insert_with(LoginState::default);
        let name = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let addr = Some(client.socket_addr());
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.frontend.require_tls && !client.is_secure() {
                    return Err(super::errors::fatal(
                        "28000",
                        "this server accepts only TLS connections: connect with sslmode=require",
                    ));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let name = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let Some(auth) = &self.frontend.auth else {
                    return self.finish(client, None).await;
                };
                let (next, ask) = match auth.pg_login(&name) {
                    PgLogin::Scram(v) => (
                        Login::ScramFirst(v),
                        Authentication::SASL(vec!["SCRAM-SHA-256".into()]),
                    ),
                    PgLogin::Cleartext => (Login::Password, Authentication::CleartextPassword),
                };
                *login.0.lock() = next;
                client
                    .send(PgWireBackendMessage::Authentication(ask))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let Some(auth) = self.frontend.auth.clone() else {
                    return Ok(());
                };
                let current = std::mem::take(&mut *login.0.lock());
                match current {
                    Login::Password => {
                        let password = msg.into_password()?;
                        match auth.login(&name, &password.password, addr) {
                            Ok(user) => self.finish(client, Some(user)).await?,
                            Err(_) => return Err(refused(&name)),
                        }
                    }
                    Login::ScramFirst(verifier) => {
                        let first = msg.into_sasl_initial_response()?;
                        if first.auth_method != "SCRAM-SHA-256" {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(first.auth_method));
                        }
                        let data = first
                            .data
                            .map(|d| String::from_utf8_lossy(&d).into_owned())
                            .unwrap_or_default();
                        let (reply, exchange) =
                            scram::server_first(&verifier, &data).map_err(|why| {
                                auth.refused(&name, addr, &why);
                                refused(&name)
                            })?;
                        *login.0.lock() = Login::ScramFinal(Box::new(exchange));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(Bytes::from(reply)),
                            ))
                            .await?;
                    }
                    Login::ScramFinal(exchange) => {
                        let last = msg.into_sasl_response()?;
                        let last = String::from_utf8_lossy(&last.data).into_owned();
                        match (exchange.server_final(&last), auth.user(&name)) {
                            (Ok(signature), Some(user)) => {
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(Bytes::from(signature)),
                                    ))
                                    .await?;
                                self.finish(client, Some(user)).await?;
                            }
                            (Err(why), _) => {
                                auth.refused(&name, addr, &format!("SCRAM: {why}"));
                                return Err(refused(&name));
                            }
                            (Ok(_), None) => {
                                auth.refused(&name, addr, "unknown user");
                                return Err(refused(&name));
                            }
                        }
                    }
                    Login::Started => return Err(PgWireError::InvalidSASLState),
                }
            }
            _ => {}
        }
        Ok(())
    }
}
