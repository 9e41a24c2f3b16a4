//! The doors clients come in through, all over the same engine:
//!
//! - [`flight_sql`]: Arrow Flight SQL (ADBC, JDBC, pyarrow, `quiver sql`), `server.listen`;
//! - [`pgwire`]: the PostgreSQL protocol (psql, BI tools, psycopg, SQLAlchemy), `server.postgres_listen`;
//! - [`http`]: `POST /v1/sql`, the web console and `/metrics`, `server.http_listen`.
//!
//! [`run`] is what they share: the query log, admission, limits and cancellation;
//! [`limits`] keeps idle and slow connections from starving them.

pub mod flight_sql;
pub mod http;
pub mod limits;
pub mod pgwire;
pub mod run;
pub mod tls;
