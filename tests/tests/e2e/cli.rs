//! `quiver sql` as people use it: output formats and files, `\d`, and in a real
//! terminal (a pseudo-terminal from `script`) the progress line and Ctrl-C, which
//! cancels the running query and leaves the shell running.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_tests::*;

const SLOW: &str = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey WHERE a.l_comment < b.l_comment";

fn sql(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(quiver_bin())
        .args(["sql", "--host", addr])
        .args(args)
        .output()
        .expect("run quiver sql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_files_and_describe() -> anyhow::Result<()> {
    let lake = tempfile::tempdir()?;
    let writable = format!(
        "[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n",
        lake.path().display().to_string()
    );
    let server = start_coordinator(&format!("{}{writable}", tpch_source()))?;
    let q = "SELECT n_nationkey, n_name FROM nation WHERE n_regionkey = 3 ORDER BY n_nationkey";

    let (ok, out, err) = sql(&server.addr, &["-f", "csv", q]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], "n_nationkey,n_name");
    assert!(lines[1].starts_with("6,FRANCE"), "{out}");
    assert!(err.contains("(5 rows in"), "{err}");

    let (ok, out, err) = sql(&server.addr, &["--format", "json", q]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4]["n_nationkey"], 23);

    let (ok, out, _) = sql(&server.addr, &[q]);
    assert!(
        ok && out.contains("| n_nationkey | n_name") && out.contains("FRANCE"),
        "{out}"
    );

    let dir = tempfile::tempdir()?;
    for ext in ["parquet", "arrow", "csv", "json"] {
        let path = dir.path().join(format!("nations.{ext}"));
        let (ok, out, err) = sql(
            &server.addr,
            &["--output", &path.to_string_lossy(), "SELECT * FROM nation"],
        );
        assert!(ok && out.is_empty(), "{ext}: {err}");
        assert!(
            err.contains("25 rows") && err.contains("written to"),
            "{err}"
        );
    }
    let file = std::fs::File::open(dir.path().join("nations.parquet"))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    assert_eq!(row_count(&batches), 25);
    let reader = arrow::ipc::reader::FileReader::try_new(
        std::fs::File::open(dir.path().join("nations.arrow"))?,
        None,
    )?;
    assert_eq!(
        reader
            .map(|b| b.map(|b| b.num_rows()).unwrap_or(0))
            .sum::<usize>(),
        25
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nations.csv"))?
            .lines()
            .count(),
        26
    );

    let (ok, out, err) = sql(&server.addr, &["\\d"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("lineitem") && out.contains("nation") && out.contains("tpch"),
        "{out}"
    );
    let (ok, out, err) = sql(&server.addr, &["\\d lineitem"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("l_orderkey") && out.contains("l_shipdate") && out.contains("Int64"),
        "{out}"
    );
    let (ok, _, err) = sql(
        &server.addr,
        &[
            "--output",
            &dir.path().join("x.xlsx").to_string_lossy(),
            "SELECT 1",
        ],
    );
    assert!(!ok && err.contains(".parquet"), "{err}");

    // A write says how many rows it wrote.
    let (ok, out, err) = sql(
        &server.addr,
        &["CREATE TABLE lake.nations AS SELECT * FROM nation"],
    );
    assert!(ok && out.trim() == "25 rows written", "{out}{err}");
    Ok(())
}

/// `quiver sql` in a pseudo-terminal, fed through `script`'s standard input.
struct Terminal {
    child: std::process::Child,
    output: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Its own HOME, so the shell's history file is its own.
    _home: tempfile::TempDir,
}

impl Terminal {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        // `exec`: a non-interactive dash between `script` and quiver would die of
        // the Ctrl-C meant for quiver, and `script -e` would report its 130.
        let mut command = format!("exec {} sql", quiver_bin().display());
        for a in args {
            command.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        let home = tempfile::tempdir()?;
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .env("SHELL", "/bin/sh")
            .env("HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = sink.lock() {
                    o.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self {
            child,
            output,
            reader: Some(reader),
            _home: home,
        })
    }

    /// Waits up to 20 s for the program to exit, then for the rest of its output;
    /// returns its exit status.
    fn exit_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = self.child.try_wait()?;
        if status.is_some() {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
        Ok(status)
    }

    fn send(&mut self, keys: &str) -> anyhow::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(keys.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    fn screen(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until the output (from `from` on) contains `what`.
    fn wait_for(&self, from: usize, what: &str) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.screen();
            if let Some(at) = s.get(from..).and_then(|rest| rest.find(what)) {
                return Ok(from + at + what.len());
            }
            if Instant::now() > deadline {
                anyhow::bail!("the terminal never showed {what:?}; it shows:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_shows_progress_and_ctrl_c_cancels_only_the_query() -> anyhow::Result<()> {
    // As stages, so the progress line has stage tasks to count.
    let server = start_coordinator(&format!(
        "[workers]\nsingle_stage_max_bytes = 0\n{}",
        tpch_source()
    ))?;
    let mut term = Terminal::start(&["--host", &server.addr])?;
    let at = term.wait_for(0, "quiver> ")?;
    term.send(&format!("{SLOW};\n"))?;
    // The live progress line: elapsed, state, rows, stage tasks.
    let at = term.wait_for(at, " · running · 0 rows · ")?;
    let at = term.wait_for(at, " stage")?;
    term.send("\x03")?;
    let at = term.wait_for(at, "query cancelled")?;
    // The line was cleared before the message.
    assert!(
        term.screen()[..at].contains("\r\x1b[2K"),
        "the progress line is cleared"
    );

    // The shell is still there and runs the next statement.
    term.send("SELECT 40 + 2 AS answer;\n")?;
    let at = term.wait_for(at, "42")?;
    term.wait_for(at, "(1 row in")?;
    term.send("\\q\n")?;
    let status = term.exit_status()?;
    assert!(
        status.is_some_and(|s| s.success()),
        "\\q ends the shell ({status:?}): {}",
        term.screen()
    );

    // The coordinator stopped the query.
    let mut flight = client(&server.addr).await?;
    let states = strings(&query(&mut flight, "SELECT state FROM quiver.system.queries WHERE sql LIKE '%a.l_comment < b.l_comment%' AND sql NOT LIKE '%system%'").await?, "state");
    assert_eq!(states, ["cancelled"]);
    Ok(())
}

#[test]
fn one_shot_ctrl_c_exits_130() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut term = Terminal::start(&["--host", &server.addr, SLOW])?;
    let at = term.wait_for(0, " rows · ")?;
    term.send("\x03")?;
    term.wait_for(at, "query cancelled")?;
    let status = term.exit_status()?;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "{}",
        term.screen()
    );
    Ok(())
}

/// `quiver health`, the check one image runs for either role: healthy when any
/// address answers, and a failure names each address it asked.
#[test]
fn health_answers_when_any_address_serves() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let health = |addrs: &str| {
        let out = Command::new(quiver_bin())
            .args(["health", "--timeout-secs", "5", "--addr", addrs])
            .output()
            .expect("run quiver health");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let nothing = nothing.to_string(); // freed at once: nobody listens there
    let (ok, err) = health(&format!("{nothing},{}", server.addr));
    assert!(ok, "{err}");
    let (ok, err) = health(&format!("{nothing},127.0.0.1:1"));
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot connect to {nothing}")) && err.contains("127.0.0.1:1"),
        "{err}"
    );
    Ok(())
}
