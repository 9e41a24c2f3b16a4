//! Delta Lake tables written by the Python `deltalake` package (target/venv) and
//! read through a `kind = "delta"` source: appends, a partitioned table, an
//! overwrite, an added column, deleted rows, a column-mapped table, and a commit
//! made while the server runs; then Quiver's own commits (CREATE TABLE AS, INSERT, INSERT OVERWRITE) read
//! back by that package, and cached answers dropped by a new commit
//! (tests/python/delta_tables.py).

use quiver_tests::*;

fn script(args: &[&str]) -> String {
    python_script("delta_tables.py", args)
}

#[test]
fn delta_tables_written_by_deltalake_read_the_same_through_quiver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("delta");
    std::fs::create_dir_all(&root)?;
    let root = root.display().to_string();
    script(&["write", &root]);
    // `lake` reads every commit at once; `lakew` takes writes and reads the log
    // again after 6 s; the results cache is on.
    let config = format!(
        "[cache]\nenabled = true\n\n\
         [[source]]\nname = \"lake\"\nkind = \"delta\"\nlocation = {root:?}\nrefresh_secs = 0\n\n\
         [[source]]\nname = \"lakew\"\nkind = \"delta\"\nlocation = {root:?}\nrefresh_secs = 6\nwritable = true\n"
    );
    let server = start_coordinator(&config)?;
    let out = script(&["check", &root, &format!("grpc://{}", server.addr)]);
    assert!(out.contains("DELTA OK"), "{out}");
    Ok(())
}
