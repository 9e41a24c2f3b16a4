//! A hostile-input battery against real processes, bounded in count and time:
//! random bytes as Flight SQL commands, tickets and actions to the coordinator and
//! to a worker (with and without the cluster's credentials), and SQL generated from
//! a small grammar, nested deeply. After every round both processes must still
//! answer; zero crashes is the pass mark. Inputs come from a fixed seed, so a
//! failure repeats.

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{Any, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{Action, FlightDescriptor, Ticket};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use prost::Message;
use quiver_tests::*;
use tonic::transport::Channel;

/// Wall-clock budget of each battery.
const BUDGET: Duration = Duration::from_secs(30);

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7; 32]),
    )
}

fn sample<T: std::fmt::Debug>(runner: &mut TestRunner, strategy: &impl Strategy<Value = T>) -> T {
    strategy.new_tree(runner).expect("a value").current()
}

/// SQL expressions from a small grammar; `prop_recursive` nests them.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (-1000i64..1000).prop_map(|n| n.to_string()),
        "[a-z_]{1,8}".prop_map(|s| s),
        Just("n_nationkey".to_string()),
        Just("NULL".to_string()),
        "'[^']{0,6}'".prop_map(|s| s),
        Just("1e308 * 1e308".to_string()),
        Just("'\u{0}\u{ffff}'".to_string()),
    ];
    leaf.prop_recursive(24, 256, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec![
                    "+", "-", "*", "/", "%", "AND", "OR", "=", "<", "||", "LIKE"
                ]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("NOT ({a})")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("CASE WHEN {a} THEN {b} ELSE NULL END")),
            (
                prop::sample::select(vec![
                    "abs", "upper", "length", "coalesce", "sum", "count", "nope"
                ]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            inner.clone().prop_map(|a| format!("(SELECT {a})")),
            (inner.clone(), prop::collection::vec(inner.clone(), 1..6))
                .prop_map(|(a, l)| format!("{a} IN ({})", l.join(", "))),
            inner.clone().prop_map(|a| format!("CAST({a} AS BIGINT)")),
        ]
    })
}

/// Whole statements: generated expressions in queries, deep wrappers, and noise.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => expr().prop_map(|e| format!("SELECT {e} FROM nation")),
        2 => (expr(), expr()).prop_map(|(a, b)| format!("SELECT {a} FROM nation WHERE {b} GROUP BY 1 ORDER BY 1 LIMIT 3")),
        // Deep nesting of one shape, from harmless to far past any limit.
        2 => (prop::sample::select(vec!["(", "(SELECT ", "NOT (", "abs(", "[", "CASE WHEN TRUE THEN ("]), 1usize..60_000).prop_map(|(open, depth)| {
            let close = match open { "[" => "]", _ => ")" };
            format!("SELECT {}1{}", open.repeat(depth), close.repeat(depth))
        }),
        1 => (1usize..2_000).prop_map(|n| format!("SELECT {}", vec!["1"; n].join(" - "))),
        1 => "\\PC{0,200}".prop_map(|s| s),
        1 => prop::collection::vec(prop::sample::select(vec!["SELECT", "FROM", "WHERE", "(", ")", ",", "*", "nation", "'", "\"", "--", "/*", ";", "JOIN", "ON"]), 0..80)
            .prop_map(|w| w.join(" ")),
    ]
}

async fn raw(addr: &str) -> anyhow::Result<FlightServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    Ok(FlightServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// The coordinator still plans and runs queries.
async fn coordinator_alive(addr: &str) -> anyhow::Result<()> {
    let mut c = client(addr).await?;
    anyhow::ensure!(
        row_count(&query(&mut c, "SELECT * FROM nation").await?) == 25,
        "wrong answer after hostile input"
    );
    Ok(())
}

/// Drains a DoGet answer, ignoring what it says.
async fn drain(
    response: Result<tonic::Response<tonic::Streaming<arrow_flight::FlightData>>, tonic::Status>,
) {
    if let Ok(r) = response {
        let mut s = r.into_inner();
        while let Some(item) = s.next().await {
            if item.is_err() {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_survives_hostile_sql_and_flight_messages() -> anyhow::Result<()> {
    // Errors only: every refused input would otherwise be a warning line.
    let mut server = start_coordinator_with_env(&tpch_source(), &[("QUIVER_LOG", "error")])?;
    let mut rng = runner();
    let started = Instant::now();
    let bytes = prop::collection::vec(any::<u8>(), 0..2048);
    let mut rounds = 0;
    while started.elapsed() < BUDGET && rounds < 400 {
        rounds += 1;
        let mut c = raw(&server.addr).await?;
        // Generated SQL through GetFlightInfo and DoGet.
        let sql = sample(&mut rng, &statement());
        let round_started = Instant::now();
        let cmd = CommandStatementQuery {
            query: sql.clone(),
            transaction_id: None,
        };
        if let Ok(info) = c
            .get_flight_info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
            .await
        {
            for endpoint in info.into_inner().endpoint {
                if let Some(ticket) = endpoint.ticket {
                    drain(c.do_get(ticket).await).await;
                }
            }
        }
        // Random bytes as a command, as an Any with a Flight SQL type URL, as a ticket, as an action.
        let noise = sample(&mut rng, &bytes);
        let _ = c
            .get_flight_info(FlightDescriptor::new_cmd(noise.clone()))
            .await;
        let any = Any {
            type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery".into(),
            value: noise.clone().into(),
        };
        let _ = c
            .get_flight_info(FlightDescriptor::new_cmd(any.encode_to_vec()))
            .await;
        let ticket = Any {
            type_url: "type.googleapis.com/arrow.flight.protocol.sql.TicketStatementQuery".into(),
            value: noise.clone().into(),
        };
        drain(
            c.do_get(Ticket {
                ticket: ticket.encode_to_vec().into(),
            })
            .await,
        )
        .await;
        drain(
            c.do_get(Ticket {
                ticket: noise.clone().into(),
            })
            .await,
        )
        .await;
        let kinds = [
            "refresh",
            "scale",
            "health",
            "CreatePreparedStatement",
            "ClosePreparedStatement",
            "\u{0}",
        ];
        let _ = c
            .do_action(Action {
                r#type: kinds[rounds % kinds.len()].into(),
                body: noise.into(),
            })
            .await;
        if let Ok(Some(_)) = server.child.try_wait() {
            anyhow::bail!(
                "the coordinator died on round {rounds}, statement: {}",
                sql.chars().take(300).collect::<String>()
            );
        }
        anyhow::ensure!(
            round_started.elapsed() < Duration::from_secs(20),
            "round {rounds} took {:?}: {}",
            round_started.elapsed(),
            sql.chars().take(300).collect::<String>()
        );
        if rounds % 25 == 0 {
            coordinator_alive(&server.addr).await?;
        }
    }
    coordinator_alive(&server.addr).await?;
    assert!(server.child.try_wait()?.is_none(), "the coordinator exited");
    eprintln!(
        "hostile battery: {rounds} rounds against the coordinator in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_hostile_tickets_and_actions() -> anyhow::Result<()> {
    let mut worker = start_worker_with("hostile", &[], &[("QUIVER_LOG", "error")])?;
    let key = quiver_proto::ClusterKey::from_secret(CLUSTER_SECRET)?;
    let mut rng = runner();
    let started = Instant::now();
    let bytes = prop::collection::vec(any::<u8>(), 0..4096);
    let mut rounds = 0;
    while started.elapsed() < BUDGET && rounds < 400 {
        rounds += 1;
        let noise = sample(&mut rng, &bytes);
        // Without credentials: refused before anything is decoded.
        let mut c = raw(&worker.addr).await?;
        let refused = c
            .do_get(Ticket {
                ticket: noise.clone().into(),
            })
            .await;
        assert!(
            matches!(&refused, Err(s) if s.code() == tonic::Code::Unauthenticated),
            "{refused:?}"
        );
        // With credentials, random sealed tickets: random plans, random exchange keys.
        let mut member = worker_client(&worker.addr).await?;
        let fragment = quiver_proto::FragmentTicket {
            query_id: "hostile".into(),
            fragment_id: 1,
            partition: 0,
            plan: noise.clone(),
            memory_limit: 0,
            for_client: false,
            worker_address: String::new(),
            relay: false,
            string_views: false,
            exchange_scope: String::new(),
        };
        drain(
            member
                .do_get(Ticket {
                    ticket: key.seal(&fragment.encode_to_vec()).into(),
                })
                .await,
        )
        .await;
        drain(
            member
                .do_get(Ticket {
                    ticket: key.seal(&noise).into(),
                })
                .await,
        )
        .await;
        let mut shuffle = b"shuffle:".to_vec();
        shuffle.extend_from_slice(&noise[..noise.len().min(64)]);
        drain(
            member
                .do_get(Ticket {
                    ticket: key.seal(&shuffle).into(),
                })
                .await,
        )
        .await;
        let kinds = ["stats", "release", "health", "nope"];
        let _ = member
            .do_action(Action {
                r#type: kinds[rounds % kinds.len()].into(),
                body: noise.into(),
            })
            .await;
        if let Ok(Some(_)) = worker.child.try_wait() {
            anyhow::bail!("the worker died on round {rounds}");
        }
    }
    assert!(worker.child.try_wait()?.is_none(), "the worker exited");
    let mut health = raw(&worker.addr)
        .await?
        .do_action(Action {
            r#type: "health".into(),
            body: Default::default(),
        })
        .await?
        .into_inner();
    assert_eq!(
        health.message().await?.map(|r| r.body.to_vec()),
        Some(b"ok".to_vec())
    );
    assert!(completed_fragments(&worker.addr).await.is_ok());
    eprintln!(
        "hostile battery: {rounds} rounds against a worker in {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A PostgreSQL startup message for `user` on database `quiver` (protocol 3.0).
fn startup_message(user: &[u8]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [(&b"user"[..], user), (b"database", b"quiver")] {
        body.extend_from_slice(k);
        body.push(0);
        body.extend_from_slice(v);
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

/// Writes `bytes` to `addr`, reads whatever comes back for a moment, and hangs up.
async fn poke(addr: &str, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        return;
    };
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 1 << 16];
    let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_and_http_doors_survive_garbage() -> anyhow::Result<()> {
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let (pg, http) = (server.postgres_addr(), server.http_addr());
    let mut runner = runner();
    let bytes = prop::collection::vec(any::<u8>(), 0..4096);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < BUDGET / 2 {
        // Raw bytes; a valid startup followed by garbage messages; an HTTP request with a random body.
        let noise = sample(&mut runner, &bytes);
        poke(&pg, &noise).await;
        let mut after_startup = startup_message(&sample(
            &mut runner,
            &prop::collection::vec(1u8..=255, 0..40),
        ));
        after_startup.extend(&noise);
        poke(&pg, &after_startup).await;
        poke(&http, &noise).await;
        let mut request = format!(
            "POST /v1/sql HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            noise.len()
        )
        .into_bytes();
        request.extend(&noise);
        poke(&http, &request).await;
        // Generated SQL through a real client: an answer or an error, never a dead server.
        let (c, connection) = tokio_postgres::connect(
            &format!("postgres://quiver@{pg}/quiver"),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(connection);
        let sql = sample(&mut runner, &statement());
        let _ = tokio::time::timeout(Duration::from_secs(20), c.simple_query(&sql)).await;
        let rows = c.query("SELECT count(*) FROM nation", &[]).await?;
        anyhow::ensure!(
            rows[0].get::<_, i64>(0) == 25,
            "wrong answer after hostile input"
        );
        rounds += 1;
    }
    // Both doors still answer, and so does Flight SQL.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-d",
            "SELECT count(*) AS n FROM region",
            &format!("http://{http}/v1/sql"),
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"[{"n":5}]"#);
    coordinator_alive(&server.addr).await?;
    assert!(rounds > 5, "only {rounds} rounds ran");
    Ok(())
}
