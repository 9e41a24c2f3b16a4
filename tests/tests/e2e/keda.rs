//! The KEDA external-scaler API on `server.keda_listen`, called by a client
//! generated from `proto/keda/externalscaler.proto` (Python grpcio-tools), as
//! KEDA's operator would: idle, the pool wants its minimum and is not active; under
//! load it is active and wants a worker per `busy_fragments` running fragments (more
//! than its minimum, at most its maximum).

use std::process::Command;
use std::time::{Duration, Instant};

use quiver_tests::*;

fn ask(addr: &str) -> anyhow::Result<serde_json::Value> {
    let proto =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/keda/externalscaler.proto");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/keda_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(addr)
        .arg(proto)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keda_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_sees_the_worker_count_the_autoscaler_wants() -> anyhow::Result<()> {
    let config = format!(
        "[server]\nkeda_listen = \"127.0.0.1:0\"\ntarget_partitions = 8\n[workers]\nmode = \"embedded\"\ncount = 2\nmin = 1\nmax = 3\nbusy_fragments = 1\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let keda = server
        .printed("quiver: KEDA external scaler on")
        .expect("the server printed the scaler's address");

    let idle = ask(&keda)?;
    assert_eq!(idle["active"], false, "{idle}");
    assert_eq!(idle["stream_first"], false, "{idle}");
    assert_eq!(idle["spec"][0]["name"], "quiver_workers_wanted", "{idle}");
    assert_eq!(idle["spec"][0]["target"], 1, "{idle}");
    assert_eq!(idle["values"][0]["value"], 1, "idle: workers.min: {idle}");
    let unknown = idle["unknown_metric"].as_str().unwrap_or_default();
    assert!(
        unknown.starts_with("NOT_FOUND") && unknown.contains("quiver_workers_wanted"),
        "{unknown}"
    );

    // Four clients running an expensive scan at once on two workers: busy.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let mut c = client(&addr).await?;
                query(&mut c, "SELECT count(*) FROM quiver.tpch.lineitem WHERE levenshtein(l_comment || l_comment, reverse(l_comment) || l_comment) > 40").await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = loop {
        let answer = ask(&keda)?;
        if answer["active"] == true && answer["values"][0]["value"].as_i64().unwrap_or(0) > 1 {
            break answer;
        }
        anyhow::ensure!(
            Instant::now() < deadline && !load.iter().all(|l| l.is_finished()),
            "never busy under load: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(busy["stream_first"], true, "{busy}");
    let wanted = busy["values"][0]["value"].as_i64().unwrap_or(0);
    assert!(wanted <= 3, "at most workers.max: {busy}");
    for l in load {
        l.await??;
    }
    Ok(())
}
