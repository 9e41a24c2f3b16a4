//! Start-up failures are clear: the process exits and says what is wrong and where.

use quiver_tests::*;

fn serve_with(config: &str) -> (bool, String) {
    serve_until_exit(config, &[("QUIVER_UNSET_VARIABLE", None)])
}

#[test]
fn invalid_config_names_the_file_key_and_line() {
    let (ok, err) = serve_with("[server]\nlisten = \"127.0.0.1:0\"\n\n[workers]\ncuont = 3\n");
    assert!(!ok);
    assert!(
        err.contains("bad.toml") && err.contains("cuont") && err.contains("line 5"),
        "{err}"
    );
}

#[test]
fn missing_environment_variable_is_named() {
    let (ok, err) = serve_with("[server.auth]\nusers = { a = \"${QUIVER_UNSET_VARIABLE}\" }\n");
    assert!(!ok);
    assert!(
        err.contains("QUIVER_UNSET_VARIABLE is not set") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn unreachable_static_workers_do_not_stop_the_start_but_queries_say_why() {
    // Nothing listens on this port: the pool starts empty-handed and reports it per query.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = format!(
        "[workers]\nmode = \"static\"\naddresses = [\"127.0.0.1:{port}\"]\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config).expect("coordinator starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = client(&server.addr).await.expect("client");
        let err = query_error(&mut c, "SELECT sum(l_quantity) FROM quiver.tpch.lineitem").await;
        assert!(err.contains("no healthy workers: 1 configured"), "{err}");
    });
}
