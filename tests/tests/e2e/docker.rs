//! Docker worker pools against the real Docker engine: images built FROM scratch
//! by docker/build-images.sh out of the test build, containers started, scaled,
//! killed, replaced and reaped by the coordinator.

// A static lock serializes the tests that share a server; it is held across
// awaits on purpose, and each test has a runtime of its own, so blocking its
// thread holds up no other task.
#![allow(clippy::await_holding_lock)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::util::pretty::pretty_format_batches;
use arrow_flight::Action;
use quiver_tests::*;

/// One Docker test at a time: they share 2 cores and the engine.
static DOCKER: Mutex<()> = Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    DOCKER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the images from the debug binary once per test run.
fn images() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/build-images.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("--binary")
            .arg(quiver_bin())
            .output()
            .expect("run build-images.sh");
        assert!(
            out.status.success(),
            "build-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    "quiver:latest"
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes whatever a test leaves behind, even when it fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=quiver.cluster={}", self.0);
        for id in docker(&["ps", "-aq", "--filter", &label]).lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        for id in docker(&["network", "ls", "-q", "--filter", &label]).lines() {
            let _ = Command::new("docker").args(["network", "rm", id]).output();
        }
    }
}

/// Containers (ids) and networks carrying the cluster's label.
fn leftovers(cluster: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("label=quiver.cluster={cluster}");
    let lines = |s: String| {
        s.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    };
    (
        lines(docker(&["ps", "-aq", "--no-trunc", "--filter", &label])),
        lines(docker(&[
            "network",
            "ls",
            "--filter",
            &label,
            "--format",
            "{{.Name}}",
        ])),
    )
}

/// SIGTERMs the coordinator, which must then leave no container or network of the cluster.
fn stop_cleanly(mut server: Process, cluster: &str) {
    assert!(
        server.terminate(Duration::from_secs(30)),
        "coordinator did not stop on SIGTERM"
    );
    assert_eq!(
        leftovers(cluster),
        (vec![], vec![]),
        "containers or network left behind"
    );
}

fn cluster_name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

fn config(cluster: &str, min: usize, max: usize, extra: &str) -> String {
    let data = tpch_dir().to_string_lossy().into_owned();
    format!(
        "[workers]\nmode = \"docker\"\nsingle_stage_max_bytes = 0\nimage = \"{}\"\nmin = {min}\nmax = {max}\ncpus = 1.0\nmemory = \"1GiB\"\n\
         cluster = \"{cluster}\"\nvolumes = [\"{data}:{data}:ro\"]\nhealth_interval_secs = 0.5\n{extra}\n{}",
        images(),
        tpch_source()
    )
}

async fn scale(c: &mut Client, size: &str) -> anyhow::Result<()> {
    let mut answers = c
        .do_action(Action {
            r#type: "scale".into(),
            body: size.to_string().into_bytes().into(),
        })
        .await?;
    while answers.message().await?.is_some() {}
    Ok(())
}

type Client = arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_one_to_three_to_one_while_queries_run_and_leaves_nothing() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("scale");
    let _cleanup = Cleanup(cluster.clone());
    let server = start_coordinator(&config(&cluster, 1, 3, "idle_secs = 3600"))?;
    let mut c = client(&server.addr).await?;
    let ready = "SELECT count(*) FROM system.workers WHERE state = 'ready'";
    assert_eq!(scalar(&mut c, ready).await?, "1");

    // From outside the cluster (a client without the cluster's credentials), the worker
    // container refuses every call but its health check.
    let address = scalar(&mut c, "SELECT address FROM system.workers").await?;
    let channel = tonic::transport::Endpoint::from_shared(address.clone())?
        .connect()
        .await?;
    let mut outsider = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let stats = outsider
        .do_action(Action {
            r#type: "stats".into(),
            body: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(stats.code(), tonic::Code::Unauthenticated, "{stats:?}");
    let fragment = outsider
        .do_get(arrow_flight::Ticket {
            ticket: b"shuffle:q/x:0".to_vec().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        fragment.code(),
        tonic::Code::Unauthenticated,
        "{fragment:?}"
    );
    let mut health = outsider
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
    // The same from a container on the cluster's own network: the image's `quiver sql` is a
    // Flight SQL client without the secret.
    let worker_addr = address.trim_start_matches("http://");
    let network = format!("quiver-{cluster}");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            &network,
            images(),
            "sql",
            "--host",
            worker_addr,
            "SELECT 1",
        ])
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("missing cluster credentials"),
        "a container outside the cluster got: {said}"
    );
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            &network,
            images(),
            "health",
            "--addr",
            worker_addr,
        ])
        .output()?;
    assert!(
        out.status.success(),
        "the health check is open: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Queries run the whole time; each must give the reference answer.
    let sql = tpch_query(1);
    let expected = pretty_format_batches(&query(&mut c, &sql).await?)?.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (addr, stop, done, sql, expected) = (
            server.addr.clone(),
            stop.clone(),
            done.clone(),
            sql.clone(),
            expected.clone(),
        );
        tokio::spawn(async move {
            let mut c = client(&addr).await?;
            while !stop.load(Ordering::Relaxed) {
                let got = pretty_format_batches(&query(&mut c, &sql).await?)?.to_string();
                anyhow::ensure!(got == expected, "wrong result while scaling:\n{got}");
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };

    scale(&mut c, "3").await?;
    wait_for_value(&mut c, ready, "3", Duration::from_secs(60)).await?;
    let plan = pretty_format_batches(&query(&mut c, &format!("EXPLAIN {sql}")).await?)?.to_string();
    let placed = (1..=9)
        .filter(|n| plan.contains(&format!("@quiver-{cluster}-worker-{n}")))
        .count();
    assert!(
        placed >= 3,
        "fragments should use all 3 containers:\n{plan}"
    );

    scale(&mut c, "1").await?;
    wait_for_value(
        &mut c,
        "SELECT count(*) FROM system.workers",
        "1",
        Duration::from_secs(60),
    )
    .await?;
    let before = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < before + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await??;
    assert!(done.load(Ordering::Relaxed) >= 3);

    let events = pretty_format_batches(
        &query(
            &mut c,
            "SELECT action, worker, reason FROM system.scaling_events",
        )
        .await?,
    )?
    .to_string();
    for wanted in [
        "start",
        "drain",
        "remove",
        "scaled to 3 on request",
        "scaled to 1 on request",
        "drained",
    ] {
        assert!(events.contains(wanted), "{wanted} missing from\n{events}");
    }
    assert_eq!(
        leftovers(&cluster).0.len(),
        1,
        "one container while the pool has one worker"
    );

    stop_cleanly(server, &cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_container_is_replaced_and_the_query_succeeds() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("kill");
    let _cleanup = Cleanup(cluster.clone());
    let server = start_coordinator(&format!(
        "[server]\ntarget_partitions = 4\n{}",
        config(&cluster, 2, 2, "")
    ))?;
    let mut c = client(&server.addr).await?;
    // Partial aggregates over an expensive filter (an edit distance per
    // row): workers send nothing until they
    // have read all their input, so the kill lands while fragments run.
    let sql = "SELECT l_returnflag, count(*) AS n FROM quiver.tpch.lineitem \
               WHERE levenshtein(l_comment || l_comment, reverse(l_comment) || l_comment) > 40 \
               GROUP BY l_returnflag ORDER BY l_returnflag";
    let expected = pretty_format_batches(&query(&mut c, sql).await?)?.to_string();

    let victim = format!("quiver-{cluster}-worker-1");
    let (addr, sql_owned) = (server.addr.clone(), sql.to_string());
    let running = tokio::spawn(async move {
        let mut c = client(&addr).await?;
        let started = Instant::now();
        let rows = query(&mut c, &sql_owned).await?;
        anyhow::Ok((pretty_format_batches(&rows)?.to_string(), started.elapsed()))
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    docker(&["kill", &victim]);
    let outcome = running.await?;
    if outcome.is_err() {
        eprintln!(
            "{}",
            docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        );
        eprintln!(
            "{}",
            docker(&[
                "inspect",
                "-f",
                "{{.State.OOMKilled}} {{.State.ExitCode}}",
                &format!("quiver-{cluster}-worker-2")
            ])
        );
        let logs = Command::new("docker")
            .args([
                "logs",
                "--tail",
                "20",
                &format!("quiver-{cluster}-worker-2"),
            ])
            .output()?;
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    let (got, took) = outcome?;
    assert_eq!(got, expected, "query through a killed worker");
    assert!(
        took > Duration::from_millis(1000),
        "query finished before the kill ({took:?}); make it slower"
    );

    // The pool replaces the dead container.
    wait_for_value(
        &mut c,
        &format!("SELECT count(*) FROM system.workers WHERE state = 'ready' AND id <> '{victim}'"),
        "2",
        Duration::from_secs(60),
    )
    .await?;
    let events = pretty_format_batches(
        &query(
            &mut c,
            "SELECT action, worker, reason FROM system.scaling_events",
        )
        .await?,
    )?
    .to_string();
    assert!(
        events.contains("replace") && events.contains(&victim),
        "{events}"
    );
    stop_cleanly(server, &cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_reaps_the_workers_of_a_killed_one() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("reap");
    let _cleanup = Cleanup(cluster.clone());
    let cfg = config(&cluster, 2, 2, "");
    let mut first = start_coordinator(&cfg)?;
    let orphans = leftovers(&cluster).0;
    assert_eq!(orphans.len(), 2, "{orphans:?}");
    first.kill(); // SIGKILL: no chance to clean up
    assert_eq!(
        leftovers(&cluster).0,
        orphans,
        "containers outlive a killed coordinator"
    );

    let second = start_coordinator(&cfg)?;
    let now = leftovers(&cluster).0;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.iter().all(|c| !orphans.contains(c)),
        "orphans {orphans:?} still there: {now:?}"
    );
    let mut c = client(&second.addr).await?;
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM quiver.tpch.nation").await?,
        "25"
    );
    stop_cleanly(second, &cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_or_image_missing_is_a_clear_start_error() -> anyhow::Result<()> {
    let _docker = exclusive();
    let start_error = |config: String, env: &[(&str, Option<&str>)]| -> String {
        let (ok, err) = serve_until_exit(&config, env);
        assert!(!ok, "started despite: {config}");
        err
    };
    let cluster = cluster_name("errors");
    let _cleanup = Cleanup(cluster.clone());
    let err = start_error(
        config(&cluster, 1, 1, ""),
        &[("DOCKER_HOST", Some("unix:///nonexistent/docker.sock"))],
    );
    assert!(
        err.contains("Docker is unreachable at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    let err = start_error(
        config(&cluster, 1, 1, "").replace("quiver:latest", "quiver:no-such-tag"),
        &[],
    );
    assert!(
        err.contains("worker image 'quiver:no-such-tag' is not available"),
        "{err}"
    );
    assert_eq!(leftovers(&cluster), (vec![], vec![]));
    Ok(())
}

/// An image whose binary cannot run (a dynamic binary without its loader, what
/// build-images.sh once made under mawk): the start error says how the container
/// ended and what it printed, not only that it has no address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_image_that_cannot_start_says_why() -> anyhow::Result<()> {
    let _docker = exclusive();
    images();
    let context = tempfile::tempdir()?;
    // Any small dynamic binary shows it; copying the debug quiver (~0.9 GB) once
    // filled CI's disk.
    std::fs::copy("/bin/true", context.path().join("quiver"))?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY quiver /quiver\nENTRYPOINT [\"/quiver\"]\n",
    )?;
    let tag = "quiver-broken:test";
    docker(&[
        "build",
        "-q",
        "-t",
        tag,
        &context.path().display().to_string(),
    ]);
    let cluster = cluster_name("broken");
    let _cleanup = Cleanup(cluster.clone());
    let (ok, err) = serve_until_exit(
        &config(&cluster, 1, 1, "").replace("quiver:latest", tag),
        &[],
    );
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    assert!(!ok, "started with workers that cannot run");
    assert!(
        err.contains("exited with code") && err.contains("no such file or directory"),
        "{err}"
    );
    assert_eq!(leftovers(&cluster), (vec![], vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_adds_workers_under_load_and_retires_idle_ones() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("auto");
    let _cleanup = Cleanup(cluster.clone());
    let cfg = config(
        &cluster,
        1,
        2,
        "busy_fragments = 1\ncooldown_secs = 1\nidle_secs = 3",
    );
    let server = start_coordinator(&format!("[server]\ntarget_partitions = 2\n{cfg}"))?;
    let mut c = client(&server.addr).await?;
    let workers = "SELECT count(*) FROM system.workers";
    assert_eq!(scalar(&mut c, workers).await?, "1");

    // Two fragments running on one worker is busy at busy_fragments = 1.
    let addr = server.addr.clone();
    let slow = tokio::spawn(async move {
        let mut c = client(&addr).await?;
        query(
            &mut c,
            "SELECT count(*) FROM quiver.tpch.lineitem WHERE levenshtein(l_comment || l_comment, reverse(l_comment) || l_comment) > 40",
        )
        .await
    });
    wait_for_value(
        &mut c,
        "SELECT count(*) FROM system.workers WHERE state = 'ready'",
        "2",
        Duration::from_secs(60),
    )
    .await?;
    slow.await??;
    // Idle for idle_secs: back to min.
    wait_for_value(&mut c, workers, "1", Duration::from_secs(60)).await?;
    let reasons = pretty_format_batches(
        &query(&mut c, "SELECT action, reason FROM system.scaling_events").await?,
    )?
    .to_string();
    assert!(
        reasons.contains("fragments running on 1 workers (busy at 1 per worker)"),
        "{reasons}"
    );
    assert!(reasons.contains("idle for"), "{reasons}");
    stop_cleanly(server, &cluster);
    Ok(())
}

/// The coordinator image, run as a container with the Docker socket mounted, starts
/// its workers beside it and removes them when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_in_a_container_manages_workers_through_the_socket() -> anyhow::Result<()> {
    let _docker = exclusive();
    images();
    let cluster = cluster_name("inside");
    let _cleanup = Cleanup(cluster.clone());
    let net = format!("quiver-{cluster}-net");
    let coordinator = format!("quiver-{cluster}-coordinator");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _remove = Remove(coordinator.clone());
    docker(&[
        "network",
        "create",
        "--label",
        &format!("quiver.cluster={cluster}"),
        &net,
    ]);
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("quiver.toml");
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:50051\"\n{}",
        config(&cluster, 1, 2, &format!("network = \"{net}\""))
    );
    std::fs::write(&cfg, text)?;
    let data = tpch_dir().to_string_lossy().into_owned();
    // Root in the container only because this engine's socket is root-only; with a
    // docker group, `--group-add <gid>` keeps the image's non-root user.
    docker(&[
        "run",
        "-d",
        "--name",
        &coordinator,
        "--network",
        &net,
        "--user",
        "0:0",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/etc/quiver/quiver.toml:ro", cfg.display()),
        "-v",
        &format!("{data}:{data}:ro"),
        "quiver:latest",
        "serve",
        "--config",
        "/etc/quiver/quiver.toml",
        "--listen",
        "0.0.0.0:50051",
    ]);
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &coordinator,
    ]);
    let addr = format!("{}:50051", ip.trim());
    let started = Instant::now();
    let mut c = loop {
        match client(&addr).await {
            Ok(c) => break c,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let logs = Command::new("docker")
                    .args(["logs", &coordinator])
                    .output()?;
                anyhow::bail!(
                    "coordinator container never served: {e}\n{}",
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
    };
    wait_for_value(
        &mut c,
        "SELECT count(*) FROM system.workers WHERE state = 'ready'",
        "1",
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM quiver.tpch.nation").await?,
        "25"
    );
    let workers = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=quiver.cluster={cluster}"),
        "--filter",
        "label=quiver.role=worker",
    ]);
    assert_eq!(
        workers.lines().count(),
        1,
        "one worker container next to the coordinator"
    );

    // `docker stop` sends SIGTERM: the coordinator removes its workers before it exits.
    docker(&["stop", "-t", "30", &coordinator]);
    let workers = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=quiver.cluster={cluster}"),
        "--filter",
        "label=quiver.role=worker",
    ]);
    assert!(
        workers.trim().is_empty(),
        "worker containers left: {workers}"
    );
    let exit = docker(&["inspect", "-f", "{{.State.ExitCode}}", &coordinator]);
    assert_eq!(exit.trim(), "0", "the coordinator's exit after SIGTERM");
    Ok(())
}

/// A second coordinator with the same `workers.cluster` while the first runs is
/// refused with an error naming the owner, and leaves the first one's workers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_cannot_take_over_a_live_cluster() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("owner");
    let _cleanup = Cleanup(cluster.clone());
    let cfg = config(&cluster, 2, 2, "");
    let first = start_coordinator(&cfg)?;
    let mut c = client(&first.addr).await?;
    let before = leftovers(&cluster).0;
    assert_eq!(before.len(), 2, "{before:?}");

    let (ok, err) = serve_until_exit(&cfg, &[]);
    assert!(!ok, "a second coordinator started on a live cluster");
    assert!(
        err.contains(&format!(
            "workers.cluster '{cluster}' belongs to a running coordinator"
        )),
        "{err}"
    );
    assert!(err.contains("Stop that coordinator first"), "{err}");
    assert_eq!(
        leftovers(&cluster).0,
        before,
        "the refused coordinator touched the live cluster's containers"
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM quiver.tpch.nation").await?,
        "25"
    );
    assert_eq!(
        scalar(
            &mut c,
            "SELECT count(*) FROM system.workers WHERE state = 'ready'"
        )
        .await?,
        "2"
    );
    stop_cleanly(first, &cluster);
    Ok(())
}

/// Whatever fails after the pool started (here: the Flight SQL certificate cannot
/// be read), the coordinator removes what it started before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_container_or_network() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("failstart");
    let _cleanup = Cleanup(cluster.clone());
    let cfg = format!(
        "[server.tls]\ncert = \"/nonexistent/quiver-cert.pem\"\nkey = \"/nonexistent/quiver-key.pem\"\n{}",
        config(&cluster, 1, 1, "")
    );
    let (ok, err) = serve_until_exit(&cfg, &[]);
    assert!(!ok, "started without its certificate");
    assert!(err.contains("/nonexistent/quiver-cert.pem"), "{err}");
    assert_eq!(
        leftovers(&cluster),
        (vec![], vec![]),
        "containers or network left by a failed start"
    );
    Ok(())
}

/// Another container that takes a worker's name and address (same image, same
/// secret) is not mistaken for the worker: its instance id differs, the pool
/// handles the worker as lost and starts a new one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_takes_a_workers_address_is_noticed() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("impostor");
    let _cleanup = Cleanup(cluster.clone());
    // A network with a subnet of its own, so a container can be given a chosen address.
    let net = format!("quiver-{cluster}-net");
    let octet = 100 + std::process::id() % 100;
    let label = format!("quiver.cluster={cluster}");
    docker(&[
        "network",
        "create",
        "--label",
        &label,
        "--subnet",
        &format!("172.29.{octet}.0/24"),
        &net,
    ]);
    // Health rounds 5 s apart: the swap below falls between two of them.
    let cfg = config(&cluster, 1, 1, &format!("network = \"{net}\""))
        .replace("health_interval_secs = 0.5", "health_interval_secs = 5.0");
    let server = start_coordinator(&cfg)?;
    let mut c = client(&server.addr).await?;
    let victim = format!("quiver-{cluster}-worker-1");
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &victim,
    ]);
    let ip = ip.trim().to_string();
    assert!(!ip.is_empty());

    docker(&["rm", "-f", &victim]);
    docker(&[
        "run",
        "-d",
        "--name",
        &victim,
        "--network",
        &net,
        "--ip",
        &ip,
        "--label",
        &label,
        "-e",
        &format!("{CLUSTER_SECRET_VAR}={CLUSTER_SECRET}"),
        images(),
        "worker",
        "--listen",
        "0.0.0.0:50061",
        "--id",
        "impostor",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = pretty_format_batches(
            &query(
                &mut c,
                "SELECT action, worker, reason FROM system.scaling_events",
            )
            .await?,
        )?
        .to_string();
        if events.contains("lost") && events.contains("another process answers") {
            assert!(events.contains(&victim), "{events}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replaced container went unnoticed: {events}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A worker of its own replaces it, and queries run there.
    wait_for_value(
        &mut c,
        &format!("SELECT count(*) FROM system.workers WHERE state = 'ready' AND id <> '{victim}'"),
        "1",
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM system.workers").await?,
        "1"
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM quiver.tpch.nation").await?,
        "25"
    );
    // The impostor still runs (it is not the coordinator's to remove) but gets no work.
    let address = format!("http://{ip}:50061");
    assert_eq!(
        scalar(
            &mut c,
            &format!("SELECT count(*) FROM system.workers WHERE address = '{address}'")
        )
        .await?,
        "0"
    );
    drop(server);
    Ok(())
}

/// `min = 0`: no worker runs until a query needs one; monitoring and `SELECT 1`
/// start none; the first query waits for one, and the wait shows in
/// `system.queries` and `EXPLAIN ANALYZE`; idle, the pool goes back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_scales_to_zero_and_back_for_a_query() -> anyhow::Result<()> {
    let _docker = exclusive();
    let cluster = cluster_name("zero");
    let _cleanup = Cleanup(cluster.clone());
    let server = start_coordinator(&config(&cluster, 0, 2, "idle_secs = 2\ncooldown_secs = 1"))?;
    let mut c = client(&server.addr).await?;
    let workers = "SELECT count(*) FROM system.workers";
    assert_eq!(scalar(&mut c, workers).await?, "0");
    assert_eq!(scalar(&mut c, "SELECT 1").await?, "1");
    // A few autoscaler rounds: an idle pool at zero stays there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM system.scaling_events").await?,
        "0"
    );
    assert_eq!(
        leftovers(&cluster).0.len(),
        0,
        "a worker started for a query that needs none"
    );

    // TPC-H's 25 nation keys are 0..=24, in a Parquet file a worker scans (a bare
    // count(*) would be answered from the file's statistics, without a worker).
    let sql = "SELECT sum(n_nationkey) FROM quiver.tpch.nation -- first";
    assert_eq!(scalar(&mut c, sql).await?, "300");
    let waited = pretty_format_batches(
        &query(
            &mut c,
            "SELECT worker_wait_ms, workers_started FROM system.queries WHERE sql LIKE '%-- first'",
        )
        .await?,
    )?
    .to_string();
    let row: Vec<u64> = waited
        .lines()
        .nth(3)
        .unwrap_or_default()
        .split('|')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(row.len(), 2, "{waited}");
    assert!(
        row[0] > 0 && row[1] == 1,
        "the first query waited for one worker: {waited}"
    );
    assert_eq!(leftovers(&cluster).0.len(), 1);

    // Idle: back to zero; EXPLAIN ANALYZE then shows the wait.
    wait_for_value(&mut c, workers, "0", Duration::from_secs(60)).await?;
    let explained = pretty_format_batches(
        &query(
            &mut c,
            "EXPLAIN ANALYZE SELECT count(*) FROM quiver.tpch.orders WHERE o_totalprice > 1000",
        )
        .await?,
    )?
    .to_string();
    assert!(
        explained.contains("worker_wait")
            && explained.contains("worker(s) to start (scale from zero)"),
        "{explained}"
    );
    let events = pretty_format_batches(
        &query(&mut c, "SELECT action, reason FROM system.scaling_events").await?,
    )?
    .to_string();
    assert!(
        events.contains("scale from zero") && events.contains("idle for"),
        "{events}"
    );
    stop_cleanly(server, &cluster);
    Ok(())
}
