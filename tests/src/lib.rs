//! Harness for Quiver's end-to-end tests: real `quiver` processes, real Flight SQL
//! clients, and single-node DataFusion as the reference.

pub mod browser;
pub mod compare;
pub mod moto;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

/// The workspace's `target/<profile>` folder, found from this test executable.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The `quiver` binary built from this workspace.
pub fn quiver_bin() -> PathBuf {
    let bin = target_dir().join("quiver");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

/// TPC-H scale 0.1, generated once by `quiver gen-tpch` and shared by all tests.
pub fn tpch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    DIR.get_or_init(|| {
        let _guard = LOCK.lock();
        let dir = target_dir().join("quiver-test-data").join("tpch-sf0.1");
        let status = Command::new(quiver_bin())
            .args(["gen-tpch", "--scale", "0.1", "--out"])
            .arg(&dir)
            .status()
            .expect("run quiver gen-tpch");
        assert!(status.success(), "quiver gen-tpch failed");
        dir
    })
    .clone()
}

/// The cluster secret every process the tests start shares (tests may override it).
pub const CLUSTER_SECRET: &str = "quiver-tests-cluster-secret-0123456789";
pub const CLUSTER_SECRET_VAR: &str = "QUIVER_CLUSTER_SECRET";

/// A Flight client to a worker whose calls carry the tests' cluster credentials.
pub async fn worker_client(addr: &str) -> Result<quiver_worker::WorkerClient> {
    let key = quiver_proto::ClusterKey::from_secret(CLUSTER_SECRET)?;
    Ok(quiver_worker::cluster_auth::worker_client(
        &format!("http://{addr}"),
        quiver_worker::ClusterCredentials::new(Some(key)),
    )?)
}

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    /// The address the process printed when ready.
    pub addr: String,
    /// What it printed up to then (the other doors' addresses, ...).
    pub lines: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    /// The `host:port` of the line that starts with `marker` (`... <scheme>://host:port/...`).
    pub fn printed(&self, marker: &str) -> Option<String> {
        let line = self.lines.iter().find_map(|l| l.strip_prefix(marker))?;
        let rest = line.trim().split("://").nth(1)?;
        Some(rest.split('/').next().unwrap_or(rest).to_string())
    }

    /// The PostgreSQL port's address (`server.postgres_listen`).
    pub fn postgres_addr(&self) -> String {
        self.printed("quiver: PostgreSQL listening on")
            .expect("the server printed its PostgreSQL address")
    }

    /// The HTTP listener's address (`server.http_listen`).
    pub fn http_addr(&self) -> String {
        self.printed("quiver: web console at")
            .expect("the server printed its console address")
    }

    /// Sends SIGTERM and waits up to `within` for a clean exit (then SIGKILL).
    /// Returns whether it exited on its own.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `quiver` with `args` and waits for the line `<marker> <scheme>://<addr>`.
fn spawn_ready(
    args: &[&str],
    marker: &str,
    envs: &[(&str, &str)],
    dir: Option<tempfile::TempDir>,
) -> Result<Process> {
    let mut cmd = Command::new(quiver_bin());
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("QUIVER_LOG").is_none() {
        cmd.env("QUIVER_LOG", "warn");
    }
    // Coordinators and workers of the tests share one cluster secret.
    cmd.env(CLUSTER_SECRET_VAR, CLUSTER_SECRET);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("spawn quiver")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = tx.send(line.trim().to_string());
            line.clear();
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut lines = vec![];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(&marker) {
                    let addr = rest
                        .trim()
                        .split("://")
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    return Ok(Process {
                        child,
                        addr,
                        lines,
                        _dir: dir,
                    });
                }
                lines.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("quiver {args:?} did not become ready (exit status {status:?})")
            }
        }
    }
}

/// Runs `quiver serve` with `config` when it is expected to fail at start; returns
/// whether it exited successfully and its stderr. `env`: Some sets a variable, None removes it.
pub fn serve_until_exit(config: &str, env: &[(&str, Option<&str>)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(quiver_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run quiver");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a coordinator with `config` (TOML; `server.listen` is forced to a free port).
pub fn start_coordinator(config: &str) -> Result<Process> {
    start_coordinator_with_env(config, &[])
}

pub fn start_coordinator_with_env(config: &str, envs: &[(&str, &str)]) -> Result<Process> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quiver.toml");
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().into_owned();
    spawn_ready(
        &["serve", "--config", &path, "--listen", "127.0.0.1:0"],
        "quiver: Flight SQL listening on",
        envs,
        Some(dir),
    )
}

/// Starts a `quiver worker` process on a free loopback port.
pub fn start_worker(id: &str) -> Result<Process> {
    start_worker_with(id, &[], &[])
}

/// Starts a `quiver worker` with extra arguments and environment.
pub fn start_worker_with(id: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Process> {
    let mut all = vec!["worker", "--listen", "127.0.0.1:0", "--id", id];
    all.extend_from_slice(args);
    spawn_ready(&all, "quiver: worker listening on", envs, None)
}

/// The `[[source]]` section mounting the TPC-H folder as `quiver.tpch`.
pub fn tpch_source() -> String {
    format!(
        "[[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {:?}\nformat = \"parquet\"\n",
        tpch_dir().to_string_lossy()
    )
}

/// Creates a CA and a server certificate for 127.0.0.1 and localhost with the
/// openssl CLI: `ca.crt`, `server.crt`, `server.key` in `dir`.
pub fn make_certs(dir: &std::path::Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=quiver-test-ca",
        "-days",
        "2",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    Ok(())
}

/// `[server.tls]` with the certificate and key `make_certs` wrote into `dir`.
pub fn tls_section(dir: &std::path::Path) -> String {
    format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        dir.join("server.crt").display().to_string(),
        dir.join("server.key").display().to_string()
    )
}

/// The Python of target/venv (scripts/setup-python.sh), with the tests' clients.
pub fn python() -> PathBuf {
    let python = std::env::var_os("QUIVER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir()
                .join("..")
                .join("venv")
                .join("bin")
                .join("python")
        });
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh first",
        python.display()
    );
    python
}

/// Runs `tests/python/<name>` with [`python()`]; returns what it printed, or panics
/// with its output and errors when it fails.
pub fn python_script(name: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The Python of target/dbt-venv, where scripts/setup-python.sh installs dbt.
pub fn dbt_python() -> PathBuf {
    venv_python("dbt-venv")
}

/// The Python of target/superset-venv, where scripts/setup-python.sh installs
/// Apache Superset and Quiver's engine spec for it.
pub fn superset_python() -> PathBuf {
    venv_python("superset-venv")
}

fn venv_python(venv: &str) -> PathBuf {
    let python = target_dir()
        .join("..")
        .join(venv)
        .join("bin")
        .join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh first",
        python.display()
    );
    python
}

/// A Flight SQL client connected to `addr` (host:port).
pub async fn client(addr: &str) -> Result<FlightSqlServiceClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

/// Runs `sql` through GetFlightInfo + DoGet and collects the batches.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// Reads every endpoint of a FlightInfo (a query's, or a metadata call's).
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<Vec<RecordBatch>> {
    let mut out = vec![];
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .ok_or_else(|| anyhow!("endpoint without ticket"))?;
        let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

/// Runs `sql` and returns the error message, failing if the query succeeds.
pub async fn query_error(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> String {
    match query(client, sql).await {
        Ok(b) => panic!(
            "query {sql:?} should fail, returned {} rows",
            b.iter().map(|b| b.num_rows()).sum::<usize>()
        ),
        Err(e) => format!("{e:#}"),
    }
}

/// The values of `column` across `batches`, as text.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    use arrow::array::{Array, StringArray};
    let mut out = vec![];
    for b in batches {
        let col = b
            .column_by_name(column)
            .unwrap_or_else(|| panic!("column {column}"));
        let col =
            arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast to text");
        let col = col.as_any().downcast_ref::<StringArray>().expect("strings");
        out.extend((0..col.len()).map(|i| col.value(i).to_string()));
    }
    out
}

/// Total number of rows.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The TPC-H query text `q{n}.sql` from tests/tpch.
pub fn tpch_query(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tpch")
        .join(format!("q{n}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Single-node DataFusion over the same Parquet folders: the reference answers.
pub async fn reference_context() -> Result<datafusion::prelude::SessionContext> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let ctx = SessionContext::new();
    let dir = tpch_dir();
    for table in [
        "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
    ] {
        let path = format!("{}/{table}/", dir.display());
        ctx.register_parquet(table, &path, ParquetReadOptions::default())
            .await?;
    }
    Ok(ctx)
}

/// The PostgreSQL test instance started by scripts/services.sh.
pub mod pg {
    use std::process::Command;

    pub const PORT: &str = "54329";
    pub const URL: &str = "postgres://quiver:${QUIVER_TEST_PG_PASSWORD}@127.0.0.1:54329/quiver";
    pub const PASSWORD: &str = "quiver";

    /// Runs SQL with psql as the test user; panics with psql's message on failure.
    pub fn psql(sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                PORT,
                "-U",
                "quiver",
                "-d",
                "quiver",
                "-v",
                "ON_ERROR_STOP=1",
                "-qtA",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql (scripts/services.sh installs PostgreSQL)");
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's statement log (log_statement = all).
    pub fn log() -> String {
        let path = super::target_dir()
            .join("..")
            .join("services")
            .join("pg")
            .join("server.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The most recent pushed-down statement (Quiver reads through COPY) containing `needle`.
    pub fn last_copy(needle: &str) -> String {
        log()
            .lines()
            .rev()
            .find(|l| l.contains(needle) && l.contains("COPY"))
            .unwrap_or_default()
            .to_string()
    }

    /// Runs scripts/services.sh with `arg` (start, or stop-postgres).
    pub fn services(arg: &str) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("services.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(arg)
            .status()
            .expect("run services.sh");
        assert!(status.success(), "services.sh {arg} failed");
    }

    /// The `[[source]]` section mounting PostgreSQL's `schema` as `quiver.<name>`.
    pub fn source(name: &str, schema: &str) -> String {
        format!("[[source]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{URL}\"\nremote_schema = \"{schema}\"\n")
    }
}

/// The MariaDB test instance started by scripts/services.sh.
pub mod my {
    use std::process::Command;

    pub const URL: &str = "mysql://quiver:${QUIVER_TEST_MY_PASSWORD}@127.0.0.1:33069/quiver";
    pub const PASSWORD: &str = "quiver";

    /// Runs SQL with the mariadb client as the test user; panics with its message on failure.
    pub fn sql(statements: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                "33069",
                "-u",
                "quiver",
                "-D",
                "quiver",
                "-N",
                "-B",
                "-e",
                statements,
            ])
            .env("MYSQL_PWD", PASSWORD)
            .output()
            .expect("run mariadb (scripts/services.sh installs MariaDB)");
        assert!(
            out.status.success(),
            "mariadb failed: {}\n{statements}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's general query log.
    pub fn log() -> String {
        let path = super::target_dir()
            .join("..")
            .join("services")
            .join("mariadb")
            .join("general.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The `[[source]]` section mounting the test database as `quiver.<name>`.
    pub fn source(name: &str) -> String {
        format!("[[source]]\nname = \"{name}\"\nkind = \"mysql\"\nurl = \"{URL}\"\n")
    }
}

/// The first value of the first column `sql` returns, as Arrow displays it.
pub async fn scalar(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<String> {
    let rows = query(client, sql).await?;
    let batch = rows
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| anyhow::anyhow!("{sql} returned no rows"))?;
    Ok(arrow::util::display::array_value_to_string(
        batch.column(0),
        0,
    )?)
}

/// Waits until [`scalar`] of `sql` is `expected`, for at most `within`; an error
/// (a table or worker not there yet) counts as "not yet".
pub async fn wait_for_value(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    expected: &str,
    within: std::time::Duration,
) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let got = scalar(client, sql).await.map_err(|e| format!("{e:#}"));
        if got.as_deref() == Ok(expected) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{sql} gave {got:?}, not {expected:?}, within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Fragments a worker has completed, from its `stats` action.
pub async fn completed_fragments(addr: &str) -> Result<u64> {
    worker_stat(addr, 3).await
}

/// Waits until `check` answers true, asking every 100 ms; an error names `what`
/// once `limit` has passed. For conditions the system reaches on its own (a health
/// round, a drain), so a test waits as long as needed and no longer.
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Fragments a worker is running now.
pub async fn running_fragments(addr: &str) -> Result<u64> {
    worker_stat(addr, 2).await
}

/// One numeric field of the worker's `WorkerStats` answer.
pub async fn worker_stat(addr: &str, wanted: u8) -> Result<u64> {
    let mut c = worker_client(addr).await?;
    let mut stream = c
        .do_action(arrow_flight::Action {
            r#type: "stats".into(),
            body: Default::default(),
        })
        .await?
        .into_inner();
    let body = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stats"))?
        .body;
    // WorkerStats field 3 (completed_fragments) is a varint; decode the message by hand
    // to keep this test independent of Quiver's crates.
    let mut i = 0;
    while i < body.len() {
        let tag = body[i];
        i += 1;
        let (field, wire) = (tag >> 3, tag & 7);
        let mut value: u64 = 0;
        let mut shift = 0;
        match wire {
            0 => loop {
                let b = body[i];
                i += 1;
                value |= ((b & 0x7f) as u64) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            },
            // Skipped: length-delimited (strings), 64-bit (doubles), 32-bit.
            2 => {
                let len = body[i] as usize;
                i += 1 + len;
                continue;
            }
            1 => {
                i += 8;
                continue;
            }
            5 => {
                i += 4;
                continue;
            }
            _ => anyhow::bail!("unexpected wire type {wire}"),
        }
        if field == wanted {
            return Ok(value);
        }
    }
    Ok(0)
}

/// A counter from the coordinator's `/metrics` page.
pub fn metric(http: &str, name: &str) -> Result<u64> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(http)?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut page = String::new();
    conn.read_to_string(&mut page)?;
    page.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| anyhow!("no {name} in {page}"))
}
