//! Users, roles and access rules against a real coordinator: hashed passwords from
//! `quiver passwd`, JWTs, denied tables, column masks and row filters, metadata that
//! hides what a user may not read, system tables for admins, and the audit log.

use std::io::Write;
use std::process::{Command, Stdio};

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::CommandGetTables;
use quiver_tests::*;
use tonic::transport::Channel;

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .expect("a count")
}

/// `quiver passwd` with the password on standard input.
fn passwd(password: &str) -> String {
    let mut child = Command::new(quiver_bin())
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("quiver passwd");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

const JWT_SECRET: &str = "jwt-test-secret-of-the-idp";

fn jwt(sub: &str, roles: &[&str], audience: &str, expires_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": sub, "roles": roles, "aud": audience, "iss": "https://idp.test", "exp": now + expires_in});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("jwt")
}

struct Secured {
    server: Process,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn secured_server() -> anyhow::Result<Secured> {
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.jsonl");
    let config = format!(
        r#"
[server]
audit_log = {audit:?}
[server.auth]
users = {{ root = {{ password = "{root}", roles = ["admin"] }}, bob = {{ password = "{bob}", roles = ["analyst"] }}, eve = "plain-eve" }}
[server.auth.jwt]
hs256_secret = "{JWT_SECRET}"
issuer = "https://idp.test"
audience = "quiver"

[[access.rule]]
roles = ["analyst"]
schema = "tpch"
table = "customer"
row_filter = "c_nationkey = 1"
masks = {{ c_phone = "'***'", c_name = "left(c_name, 4) || '…'" }}
[[access.rule]]
roles = ["analyst"]
schema = "tpch"
table = "n*"
[[access.rule]]
users = ["eve"]
table = "region"
{tpch}"#,
        audit = audit.display().to_string(),
        root = passwd("root-pass"),
        bob = passwd("bob-pass"),
        tpch = tpch_source(),
    );
    Ok(Secured {
        server: start_coordinator(&config)?,
        audit,
        _dir: dir,
    })
}

async fn login(
    addr: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
    let mut c = client(addr).await?;
    c.handshake(user, password).await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_deny_mask_filter_and_hide() -> anyhow::Result<()> {
    let s = secured_server()?;
    let reference = reference_context().await?;
    let mut bob = login(&s.server.addr, "bob", "bob-pass").await?;

    // A table no rule grants: PermissionDenied naming it, and no rows.
    let err = bob
        .execute("SELECT * FROM orders".into(), None)
        .await
        .expect_err("orders is not bob's");
    assert!(
        err.to_string()
            .contains("access denied: user 'bob' may not read table quiver.tpch.orders"),
        "{err}"
    );
    assert!(
        err.to_string().contains("PermissionDenied")
            || format!("{err:?}").contains("PermissionDenied"),
        "{err:?}"
    );
    // Also when the table hides in a subquery or a join.
    let err = query_error(
        &mut bob,
        "SELECT count(*) FROM customer WHERE c_custkey IN (SELECT o_custkey FROM orders)",
    )
    .await;
    assert!(err.contains("quiver.tpch.orders"), "{err}");

    // Row filter: only nation 1's customers; masks replace the columns' values.
    let expected = reference
        .sql("SELECT count(*) FROM customer WHERE c_nationkey = 1")
        .await?
        .collect()
        .await?;
    let n = query(&mut bob, "SELECT count(*) FROM customer").await?;
    assert_eq!(count(&n), count(&expected));
    let rows = query(
        &mut bob,
        "SELECT c_phone, c_name, c_nationkey FROM customer ORDER BY c_custkey LIMIT 5",
    )
    .await?;
    assert!(
        strings(&rows, "c_phone").iter().all(|p| p == "***"),
        "{:?}",
        strings(&rows, "c_phone")
    );
    assert!(
        strings(&rows, "c_name").iter().all(|n| n == "Cust…"),
        "{:?}",
        strings(&rows, "c_name")
    );
    assert!(strings(&rows, "c_nationkey").iter().all(|k| k == "1"));
    // A filter on the masked column sees only the mask; a join keeps the row filter.
    assert_eq!(
        count(
            &query(
                &mut bob,
                "SELECT count(*) FROM customer WHERE c_phone LIKE '1%'"
            )
            .await?
        ),
        0
    );
    let joined = query(
        &mut bob,
        "SELECT DISTINCT n_name FROM customer JOIN nation ON c_nationkey = n_nationkey",
    )
    .await?;
    assert_eq!(strings(&joined, "n_name"), vec!["ARGENTINA".to_string()]);

    // Metadata and information_schema list only what bob may read.
    let info = bob
        .get_tables(CommandGetTables {
            catalog: Some("quiver".into()),
            db_schema_filter_pattern: Some("tpch".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await?;
    let mut listed = strings(&fetch(&mut bob, info).await?, "table_name");
    listed.sort();
    assert_eq!(listed, vec!["customer", "nation"]);
    let tables = query(
        &mut bob,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'tpch' ORDER BY 1",
    )
    .await?;
    assert_eq!(strings(&tables, "table_name"), vec!["customer", "nation"]);

    // System tables: workers are for admins; bob sees his own queries only.
    let err = query_error(&mut bob, "SELECT * FROM system.workers").await;
    assert!(
        err.contains("may not read table quiver.system.workers"),
        "{err}"
    );
    let mut root = login(&s.server.addr, "root", "root-pass").await?;
    assert_eq!(
        row_count(&query(&mut root, "SELECT * FROM system.workers").await?),
        2
    );
    query(&mut root, "SELECT count(*) FROM orders").await?;
    let users = query(&mut bob, "SELECT DISTINCT \"user\" FROM system.queries").await?;
    assert_eq!(strings(&users, "user"), vec!["bob".to_string()]);
    let all = query(
        &mut root,
        "SELECT DISTINCT \"user\" FROM system.queries ORDER BY 1",
    )
    .await?;
    assert_eq!(
        strings(&all, "user"),
        vec!["bob".to_string(), "root".to_string()]
    );
    // The denied query is recorded as such, with the table it wanted.
    let denied = query(
        &mut root,
        "SELECT tables FROM system.queries WHERE state = 'denied'",
    )
    .await?;
    assert!(
        strings(&denied, "tables")
            .iter()
            .any(|t| t.contains("quiver.tpch.orders")),
        "{:?}",
        strings(&denied, "tables")
    );

    // Admin-only actions.
    let err = query_error(&mut bob, "REFRESH").await;
    assert!(err.contains("REFRESH is for administrators"), "{err}");

    // A user whose only rule grants region reads region, nothing else.
    let mut eve = login(&s.server.addr, "eve", "plain-eve").await?;
    assert_eq!(
        row_count(&query(&mut eve, "SELECT * FROM region").await?),
        5
    );
    assert!(query_error(&mut eve, "SELECT * FROM nation")
        .await
        .contains("may not read table quiver.tpch.nation"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_log_in_and_the_audit_log_records_everything() -> anyhow::Result<()> {
    let s = secured_server()?;
    let mut c = client(&s.server.addr).await?;
    c.set_token(jwt("carol", &["analyst"], "quiver", 300));
    let n = query(&mut c, "SELECT count(*) FROM nation").await?;
    assert_eq!(count(&n), 25);
    assert!(query_error(&mut c, "SELECT * FROM orders")
        .await
        .contains("user 'carol' may not read"));

    c.set_token(jwt("carol", &["analyst"], "quiver", -120));
    let err = query_error(&mut c, "SELECT 1").await;
    assert!(
        err.contains("invalid JWT") && err.contains("ExpiredSignature"),
        "{err}"
    );
    c.set_token(jwt("carol", &["analyst"], "someone-else", 300));
    let err = query_error(&mut c, "SELECT 1").await;
    assert!(err.contains("InvalidAudience"), "{err}");

    let mut wrong = client(&s.server.addr).await?;
    assert!(wrong.handshake("bob", "not-bobs").await.is_err());

    // Every query and the failed logins, as JSON lines.
    let text = std::fs::read_to_string(&s.audit)?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let ok = lines
        .iter()
        .find(|l| l["event"] == "query" && l["outcome"] == "finished" && l["user"] == "carol")
        .expect("carol's query");
    assert_eq!(ok["objects"][0], "quiver.tpch.nation");
    assert_eq!(ok["rows"], 1);
    assert!(
        ok["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{ok}"
    );
    let denied = lines
        .iter()
        .find(|l| l["outcome"] == "denied")
        .expect("the denied query");
    assert_eq!(denied["statement"], "SELECT * FROM orders");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "login_failed" && l["user"] == "bob"),
        "{text}"
    );
    assert!(lines.iter().any(|l| l["event"] == "login_failed"
        && l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ExpiredSignature"))));
    assert!(
        !text.contains("bob-pass") && !text.contains("not-bobs"),
        "a password reached the audit log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_run_with_the_readers_rights_and_only_admins_change_them() -> anyhow::Result<()> {
    let s = secured_server()?;
    let mut root = login(&s.server.addr, "root", "root-pass").await?;
    let mut bob = login(&s.server.addr, "bob", "bob-pass").await?;

    let err = bob
        .execute("CREATE VIEW quiver.tpch.n_mine AS SELECT 1".into(), None)
        .await
        .expect_err("bob is no admin");
    assert!(
        err.to_string().contains("access denied") && err.to_string().contains("administrators"),
        "{err}"
    );

    // Named so that bob's rule for `n*` lets him see both views.
    query(
        &mut root,
        "CREATE VIEW quiver.tpch.n_orders AS SELECT o_orderkey FROM quiver.tpch.orders",
    )
    .await?;
    query(
        &mut root,
        "CREATE VIEW quiver.tpch.n_customers AS SELECT c_name, c_phone FROM quiver.tpch.customer",
    )
    .await?;

    // A view does not lend its creator's rights: the table it reads is still denied to bob.
    let err = bob
        .execute("SELECT * FROM quiver.tpch.n_orders".into(), None)
        .await
        .expect_err("orders is not bob's");
    assert!(
        err.to_string()
            .contains("may not read table quiver.tpch.orders"),
        "{err}"
    );
    // Through a view, bob's row filter and masks on customer still apply.
    let rows = query(&mut bob, "SELECT c_phone FROM quiver.tpch.n_customers").await?;
    let expected = query(
        &mut root,
        "SELECT count(*) AS n FROM quiver.tpch.customer WHERE c_nationkey = 1",
    )
    .await?;
    assert_eq!(row_count(&rows).to_string(), strings(&expected, "n")[0]);
    assert!(
        strings(&rows, "c_phone").iter().all(|p| p == "***"),
        "masked through the view"
    );
    Ok(())
}

/// Writes need a rule with `write = true` (admins excepted); what a write reads
/// is checked like any query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_write_right() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    let config = format!(
        r#"
[server.auth]
users = {{ root = {{ password = "{root}", roles = ["admin"] }}, bob = {{ password = "{bob}", roles = ["analyst"] }}, eve = "plain-eve" }}

[[access.rule]]
roles = ["analyst"]
schema = "lake"
table = "mine*"
write = true
[[access.rule]]
roles = ["analyst"]
schema = "tpch"
table = "n*"
[[access.rule]]
users = ["eve"]
schema = "lake"
{tpch}
[[source]]
name = "lake"
kind = "files"
location = {lake:?}
writable = true
"#,
        root = passwd("root-pass"),
        bob = passwd("bob-pass"),
        tpch = tpch_source(),
        lake = lake.display().to_string(),
    );
    let server = start_coordinator(&config)?;
    let mut bob = login(&server.addr, "bob", "bob-pass").await?;
    query(
        &mut bob,
        "CREATE TABLE lake.mine_nations AS SELECT n_nationkey, n_name FROM tpch.nation",
    )
    .await?;
    let other = query_error(
        &mut bob,
        "CREATE TABLE lake.other AS SELECT n_nationkey FROM tpch.nation",
    )
    .await;
    assert!(
        other.contains("may not write") && other.contains("lake.other"),
        "{other}"
    );
    let read = query_error(
        &mut bob,
        "INSERT INTO lake.mine_nations SELECT c_custkey, c_name FROM tpch.customer",
    )
    .await;
    assert!(
        read.contains("may not read") && read.contains("customer"),
        "{read}"
    );

    let mut eve = login(&server.addr, "eve", "plain-eve").await?;
    assert_eq!(
        count(&query(&mut eve, "SELECT count(*) FROM lake.mine_nations").await?),
        25
    );
    let denied = query_error(&mut eve, "INSERT INTO lake.mine_nations VALUES (99, 'X')").await;
    assert!(denied.contains("may not write"), "{denied}");
    let drop = query_error(&mut eve, "DROP TABLE lake.mine_nations").await;
    assert!(drop.contains("may not write"), "{drop}");

    let mut root = login(&server.addr, "root", "root-pass").await?;
    query(&mut root, "INSERT INTO lake.mine_nations VALUES (99, 'X')").await?;
    assert_eq!(
        count(&query(&mut eve, "SELECT count(*) FROM lake.mine_nations").await?),
        26
    );
    Ok(())
}
