//! The PostgreSQL front end through real clients: Debian's `psql`, Python's
//! psycopg and SQLAlchemy (target/venv), and tokio-postgres for SQLSTATEs,
//! SCRAM and cancel requests.

use std::process::Command;
use std::time::Duration;

use quiver_tests::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

fn config(extra: &str) -> String {
    format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{extra}\n{}",
        tpch_source()
    )
}

fn psql(url: &str, command: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([url, "-X", "-v", "ON_ERROR_STOP=1", "-c", command])
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run psql (scripts/setup-tools.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn py(mode: &str, url: &str) -> String {
    py_with(python(), mode, url)
}

fn py_with(python: std::path::PathBuf, mode: &str, url: &str) -> String {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("pg_client.py");
    let out = Command::new(python)
        .arg(script)
        .args([mode, url])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pg_client.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[test]
fn psql_runs_queries_and_describes_tables() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());

    let (ok, out, err) = psql(&url, "SELECT count(*) AS n FROM nation");
    assert!(ok, "{err}");
    assert!(out.contains(" 25\n") && out.contains("(1 row)"), "{out}");

    let (ok, out, err) = psql(
        &url,
        "SELECT n_name, n_regionkey FROM nation WHERE n_nationkey IN (7, 24) ORDER BY 1",
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("GERMANY") && out.contains("UNITED STATES") && out.contains("(2 rows)"),
        "{out}"
    );

    let (ok, out, err) = psql(&url, "\\dt tpch.*");
    assert!(ok, "\\dt failed: {err}");
    for table in ["lineitem", "nation", "orders", "region"] {
        assert!(out.contains(table), "\\dt does not list {table}:\n{out}");
    }

    let (ok, out, err) = psql(&url, "\\d tpch.lineitem");
    assert!(ok, "\\d lineitem failed: {err}");
    for column in ["l_orderkey", "l_quantity", "l_shipdate", "l_comment"] {
        assert!(out.contains(column), "\\d lineitem lacks {column}:\n{out}");
    }

    // psql's function and view listings run (the catalog has no user functions or views here).
    for command in ["\\df", "\\df abs", "\\dv"] {
        let (ok, out, err) = psql(&url, command);
        assert!(ok, "{command} failed: {err}");
        // psql says "Did not find any relations." on stderr.
        assert!(
            out.contains("List of functions") || err.contains("Did not find any relations"),
            "{command}:\n{out}{err}"
        );
    }

    // A bad statement is an error with its SQLSTATE; the server keeps serving.
    let (ok, _, err) = psql(&url, "SELECT * FROM no_such_table");
    assert!(!ok && err.contains("no_such_table"), "{err}");
    let (ok, out, _) = psql(&url, "SELECT 1 + 1 AS two");
    assert!(ok && out.contains(" 2\n"), "{out}");
    Ok(())
}

/// psycopg, and SQLAlchemy's inspector in 2.0 (psycopg, psycopg2) and 1.4 (psycopg2).
#[test]
fn psycopg_binds_parameters_and_sqlalchemy_inspects() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let out = py("psycopg", &url);
    assert!(out.contains("PSYCOPG OK"), "{out}");
    let out = py("sqlalchemy", &url);
    assert!(out.contains("SQLALCHEMY OK"), "{out}");
    let out = py("sqlalchemy-psycopg2", &url);
    assert!(out.contains("SQLALCHEMY-PSYCOPG2 OK"), "{out}");
    // SQLAlchemy 1.4 with psycopg2, as Superset 6 has them.
    let out = py_with(superset_python(), "sqlalchemy", &url);
    assert!(
        out.contains("SQLAlchemy 1.4") && out.contains("SQLALCHEMY OK"),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates() -> anyhow::Result<()> {
    let extra = "[access]\nadmin_roles = [\"admin\"]\n[[access.rule]]\nschema = \"tpch\"\ntable = \"nation\"\nallow = true\n\
                 [server.auth]\nusers = { ann = \"${QUIVER_TEST_PW}\" }\n";
    let server = start_coordinator_with_env(&config(extra), &[("QUIVER_TEST_PW", "ann-pw")])?;
    let url = format!("postgres://ann:ann-pw@{}/quiver", server.postgres_addr());
    let c = connect(&url).await?;
    let code = |e: tokio_postgres::Error| {
        e.as_db_error().map(|d| {
            (
                d.code().clone(),
                d.message().to_string(),
                d.position().cloned(),
            )
        })
    };

    let (state, message, position) =
        code(c.simple_query("SELECT (1 + FROM nation").await.unwrap_err()).expect("db error");
    assert_eq!(state, SqlState::SYNTAX_ERROR, "{message}");
    assert!(
        position.is_some(),
        "a syntax error names its position: {message}"
    );

    let (state, message, _) = code(
        c.query("SELECT * FROM no_such_table", &[])
            .await
            .unwrap_err(),
    )
    .expect("db error");
    assert_eq!(state, SqlState::UNDEFINED_TABLE, "{message}");
    assert!(message.contains("no_such_table"), "{message}");

    let (state, message, _) =
        code(c.simple_query("SELECT * FROM lineitem").await.unwrap_err()).expect("db error");
    assert_eq!(state, SqlState::INSUFFICIENT_PRIVILEGE, "{message}");
    assert!(message.contains("lineitem"), "{message}");

    let (state, message, _) =
        code(c.simple_query("SELECT nope FROM nation").await.unwrap_err()).expect("db error");
    assert_eq!(state, SqlState::UNDEFINED_COLUMN, "{message}");

    // Failures are in system.queries, whether they failed at Parse or at Execute.
    let mut flight = client(&server.addr).await?;
    flight.handshake("ann", "ann-pw").await?;
    let failed = query(&mut flight, "SELECT state, client FROM quiver.system.queries WHERE sql LIKE '%no_such_table%' AND sql NOT LIKE '%system%'").await?;
    assert_eq!(strings(&failed, "state"), ["failed"]);
    let denied = query(
        &mut flight,
        "SELECT state FROM quiver.system.queries WHERE sql = 'SELECT * FROM lineitem'",
    )
    .await?;
    assert_eq!(strings(&denied, "state"), ["denied"]);

    // The connection is still good, and what the user may read works.
    let rows = c
        .query(
            "SELECT count(*) FROM nation WHERE n_regionkey = $1",
            &[&1i64],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {:?}", e.as_db_error()))?;
    assert_eq!(rows[0].get::<_, i64>(0), 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_use_scram_or_the_password_and_refuse_wrong_ones() -> anyhow::Result<()> {
    let verifier = quiver_coordinator_scram("scram-pw");
    let argon = quiver_passwd(&["passwd"], "argon-pw");
    let extra = format!("[server.auth]\nusers = {{ sam = {verifier:?}, alice = {argon:?}, bob = \"${{QUIVER_TEST_PW}}\" }}\n");
    let server = start_coordinator_with_env(&config(&extra), &[("QUIVER_TEST_PW", "bob-pw")])?;
    let addr = server.postgres_addr();

    for (user, password) in [
        ("sam", "scram-pw"),
        ("alice", "argon-pw"),
        ("bob", "bob-pw"),
    ] {
        let c = connect(&format!("postgres://{user}:{password}@{addr}/quiver")).await?;
        let rows = c.query("SELECT count(*) FROM region", &[]).await?;
        assert_eq!(rows[0].get::<_, i64>(0), 5, "{user}");
    }
    for (user, password) in [
        ("sam", "wrong"),
        ("alice", "wrong"),
        ("bob", "wrong"),
        ("nobody", "x"),
    ] {
        let err = match tokio_postgres::connect(
            &format!("postgres://{user}:{password}@{addr}/quiver"),
            NoTls,
        )
        .await
        {
            Ok(_) => panic!("{user} with a wrong password was let in"),
            Err(e) => e,
        };
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}: not a server error: {err}"));
        assert_eq!(
            db.code(),
            &SqlState::INVALID_PASSWORD,
            "{user}: {}",
            db.message()
        );
    }
    // psql says so in its own words.
    let (ok, _, err) = psql(&format!("postgres://sam:wrong@{addr}/quiver"), "SELECT 1");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    Ok(())
}

/// A SCRAM verifier from `quiver passwd --scram`.
fn quiver_coordinator_scram(password: &str) -> String {
    quiver_passwd(&["passwd", "--scram"], password)
}

fn quiver_passwd(args: &[&str], password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(quiver_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("quiver passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tls_with_the_server_certificate() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let extra = tls_section(certs.path());
    let server = start_coordinator(&config(&extra))?;
    let url = format!(
        "postgres://quiver@{}/quiver?sslmode=verify-full&sslrootcert={}",
        server.postgres_addr().replace("127.0.0.1", "localhost"),
        certs.path().join("ca.crt").display()
    );
    let (ok, out, err) = psql(&url, "SELECT count(*) FROM region");
    assert!(ok && out.contains(" 5\n"), "{out}{err}");
    // Without TLS the client is refused rather than served in the clear.
    let plain = format!(
        "postgres://quiver@{}/quiver?sslmode=disable",
        server.postgres_addr()
    );
    let (ok, _, err) = psql(&plain, "SELECT count(*) FROM region");
    assert!(!ok && err.contains("only TLS"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_query_on_the_workers() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let c = connect(&url).await?;
    let cancel = c.cancel_token();
    // Minutes of work: every pair of lineitem rows of a few orders.
    let slow = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey WHERE a.l_comment < b.l_comment";
    let running = tokio::spawn(async move { c.simple_query(slow).await.map(|_| ()) });
    let mut flight = client(&server.addr).await?;
    // Wait until fragments of it run on the workers.
    let mut started = false;
    for _ in 0..100 {
        let rows = query(
            &mut flight,
            "SELECT count(*) AS n FROM quiver.system.fragments WHERE state = 'running'",
        )
        .await?;
        if strings(&rows, "n") != ["0"] {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started, "the slow query never ran fragments");
    cancel.cancel_query(NoTls).await?;
    let err = tokio::time::timeout(Duration::from_secs(30), running)
        .await??
        .expect_err("the query was cancelled");
    assert_eq!(
        err.as_db_error().map(|d| d.code().clone()),
        Some(SqlState::QUERY_CANCELED),
        "{err}"
    );

    // It is recorded as cancelled, and nothing of it runs on the workers any more.
    let mut quiet = false;
    for _ in 0..100 {
        let states = strings(&query(&mut flight, "SELECT state FROM quiver.system.queries WHERE sql LIKE '%a.l_comment < b.l_comment%' AND sql NOT LIKE '%system.queries%'").await?, "state");
        let running = strings(
            &query(
                &mut flight,
                "SELECT count(*) AS n FROM quiver.system.fragments WHERE state = 'running'",
            )
            .await?,
            "n",
        );
        if states == ["cancelled"] && running == ["0"] {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        quiet,
        "the cancelled query still runs or is not recorded as cancelled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_map_both_ways() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let c = connect(&format!(
        "postgres://quiver@{}/quiver",
        server.postgres_addr()
    ))
    .await?;
    let sql = "SELECT CAST(1 AS SMALLINT) AS i2, CAST(2 AS INT) AS i4, CAST(3 AS BIGINT) AS i8, CAST(1.5 AS REAL) AS f4, \
               CAST(2.5 AS DOUBLE) AS f8, 'x' AS t, true AS b, DATE '2024-02-29' AS d, \
               TIMESTAMP '2024-02-29 12:34:56' AS ts, CAST(12.34 AS DECIMAL(10, 2)) AS n";
    let statement = c.prepare(sql).await?;
    let types: Vec<&str> = statement
        .columns()
        .iter()
        .map(|c| c.type_().name())
        .collect();
    assert_eq!(
        types,
        [
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "text",
            "bool",
            "date",
            "timestamp",
            "numeric"
        ]
    );
    // Binary results decode as those types.
    let row = c.query_one(&statement, &[]).await?;
    assert_eq!(
        (
            row.get::<_, i16>(0),
            row.get::<_, i32>(1),
            row.get::<_, i64>(2)
        ),
        (1, 2, 3)
    );
    assert_eq!((row.get::<_, f32>(3), row.get::<_, f64>(4)), (1.5, 2.5));
    assert_eq!(
        (row.get::<_, String>(5), row.get::<_, bool>(6)),
        ("x".to_string(), true)
    );
    // Text results read as PostgreSQL prints them.
    let text: Vec<String> = c
        .simple_query(sql)
        .await?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .expect("a row");
    assert_eq!(
        text,
        [
            "1",
            "2",
            "3",
            "1.5",
            "2.5",
            "x",
            "t",
            "2024-02-29",
            "2024-02-29 12:34:56.000000",
            "12.34"
        ]
    );

    // Parameters come back as the column types they are compared with.
    let bound = c
        .prepare("SELECT count(*) FROM nation WHERE n_nationkey < $1 AND n_name <> $2")
        .await?;
    let params: Vec<&str> = bound.params().iter().map(|t| t.name()).collect();
    assert_eq!(params, ["int8", "text"]);
    let n: i64 = c.query_one(&bound, &[&10i64, &"BRAZIL"]).await?.get(0);
    assert_eq!(n, 9);
    Ok(())
}

#[test]
fn postgresql_jdbc_driver_reads_metadata_and_binds_question_marks() -> anyhow::Result<()> {
    let extra = "[server.auth]\nusers = { bi = \"${QUIVER_TEST_PW}\" }\n";
    let server = start_coordinator_with_env(&config(extra), &[("QUIVER_TEST_PW", "bi-pw")])?;
    let classes = tempfile::tempdir()?;
    let jar = "/usr/share/java/postgresql.jar";
    let source = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("java")
        .join("PgJdbc.java");
    let out = Command::new("javac")
        .args(["-d"])
        .arg(classes.path())
        .args(["-cp", jar])
        .arg(source)
        .output()?;
    assert!(
        out.status.success(),
        "javac (scripts/setup-tools.sh installs the JDK and the driver): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("jdbc:postgresql://{}/quiver", server.postgres_addr());
    let out = Command::new("java")
        .args([
            "-cp",
            &format!("{jar}:{}", classes.path().display()),
            "PgJdbc",
            &url,
            "bi",
            "bi-pw",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("JDBC OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PostgreSQL 16.6 (Quiver"), "{stdout}");
    Ok(())
}

/// Writes answer with PostgreSQL's command tags, in the simple protocol (psql)
/// and the extended one with a parameter (tokio-postgres' `execute` returns the count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_with_command_tags() -> anyhow::Result<()> {
    let lake = tempfile::tempdir()?;
    let writable = format!(
        "[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n",
        lake.path().display().to_string()
    );
    let server = start_coordinator(&format!("{}{writable}", config("")))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let (ok, out, err) = psql(
        &url,
        "CREATE TABLE lake.nations AS SELECT n_nationkey, n_name FROM nation",
    );
    assert!(ok && out.trim() == "SELECT 25", "{out}{err}");
    let (ok, out, err) = psql(
        &url,
        "INSERT INTO lake.nations SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 5",
    );
    assert!(ok && out.trim() == "INSERT 0 5", "{out}{err}");
    let client = connect(&url).await?;
    let written = client.execute("INSERT INTO lake.nations SELECT n_nationkey, n_name FROM nation WHERE n_nationkey = $1", &[&7i64]).await?;
    assert_eq!(written, 1);
    let n: i64 = client
        .query_one("SELECT count(*) FROM lake.nations", &[])
        .await?
        .get(0);
    assert_eq!(n, 31);
    Ok(())
}

fn drivers(mode: &str, url: &str) -> String {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("pg_drivers.py");
    let out = Command::new(python())
        .arg(script)
        .args([mode, url])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pg_drivers.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// SET/SHOW/RESET, search_path, current_setting, the logged-in user, typed errors (psycopg).
#[test]
fn sessions_keep_their_settings_and_errors_their_kind() -> anyhow::Result<()> {
    let extra = "[server.auth]\nusers = { ann = \"${QUIVER_TEST_PW}\" }\n";
    let server = start_coordinator_with_env(&config(extra), &[("QUIVER_TEST_PW", "ann-pw")])?;
    let url = format!("postgres://ann:ann-pw@{}/quiver", server.postgres_addr());
    assert!(drivers("session", &url).contains("SESSION OK"));
    Ok(())
}

/// COPY … TO STDOUT through psycopg and psycopg2, and psql's \copy.
#[test]
fn copy_to_stdout_streams_text_csv_and_binary() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    assert!(drivers("copy", &url).contains("COPY OK"));
    let (ok, out, err) = psql(
        &url,
        "\\copy (SELECT r_regionkey, r_name FROM region ORDER BY 1) to stdout with csv header",
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("r_regionkey,r_name\n0,AFRICA\n"), "{out}");
    Ok(())
}

/// NULL and typed parameters, and asyncpg (array results, typed parameters).
#[test]
fn parameters_keep_their_types_and_asyncpg_works() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    assert!(drivers("params", &url).contains("PARAMS OK"));
    assert!(drivers("asyncpg", &url).contains("ASYNCPG OK"));
    Ok(())
}

/// A refused login is the last message: the server closes right after FATAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_closes_the_connection_after_fatal() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra = "[server.auth]\nusers = { ann = \"${QUIVER_TEST_PW}\" }\n";
    let server = start_coordinator_with_env(&config(extra), &[("QUIVER_TEST_PW", "ann-pw")])?;
    let mut s = tokio::net::TcpStream::connect(server.postgres_addr()).await?;
    // StartupMessage (protocol 3.0, user ann), then a wrong cleartext or SCRAM answer.
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", "ann"), ("database", "quiver")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    s.write_all(&msg).await?;
    let mut first = [0u8; 5];
    s.read_exact(&mut first).await?;
    assert_eq!(first[0], b'R', "an authentication request comes first");
    let len = u32::from_be_bytes([first[1], first[2], first[3], first[4]]) as usize;
    let mut rest = vec![0u8; len - 4];
    s.read_exact(&mut rest).await?;
    let method = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    // 3: cleartext; 10: SASL. Either way a wrong answer.
    let answer: Vec<u8> = match method {
        10 => {
            let mech = b"SCRAM-SHA-256\0";
            let data = b"n,,n=ann,r=abcdefghijklmnop";
            let mut b = mech.to_vec();
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(data);
            b
        }
        _ => b"wrong\0".to_vec(),
    };
    let mut m = vec![b'p'];
    m.extend_from_slice(&((answer.len() + 4) as u32).to_be_bytes());
    m.extend(answer);
    s.write_all(&m).await?;
    if method == 10 {
        // The server's SASL continue, then a wrong proof.
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut cont = vec![0u8; len - 4];
        s.read_exact(&mut cont).await?;
        let server_first = String::from_utf8_lossy(&cont[4..]).into_owned();
        let nonce = server_first
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .unwrap_or("x")
            .to_string();
        let last = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let mut m = vec![b'p'];
        m.extend_from_slice(&((last.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(last.as_bytes());
        s.write_all(&m).await?;
    }
    let mut all = vec![];
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await??;
    assert_eq!(all.first(), Some(&b'E'), "an ErrorResponse: {all:?}");
    assert!(
        String::from_utf8_lossy(&all).contains("28P01"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
    assert_eq!(
        all.len(),
        len + 1,
        "nothing after the FATAL error (no ReadyForQuery): {all:?}"
    );
    Ok(())
}

/// Superset's time grains and time-range filters (its PostgreSQL engine spec's SQL).
#[test]
fn superset_time_grains_and_filters_group_right() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    assert!(drivers("timegrains", &url).contains("TIMEGRAINS OK"));
    Ok(())
}
