//! Times TPC-H queries on a Ballista cluster, for Quiver's TPC-H benchmark.
//!
//! quiver-ballista-client SCHEDULER_PORT DATA_DIR ITERATIONS QUERY_FILE...
//!
//! Registers the TPC-H tables (Parquet folders under DATA_DIR), runs each query
//! once to warm up and ITERATIONS times more, and prints one line per query: the
//! median seconds, or `error: ...` when Ballista failed it.

use std::time::Instant;

use ballista::prelude::SessionContextExt;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

const TABLES: [&str; 8] = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, data, iterations, queries @ ..] = args.as_slice() else {
        return Err("usage: quiver-ballista-client SCHEDULER_PORT DATA_DIR ITERATIONS QUERY_FILE...".into());
    };
    let iterations: usize = iterations.parse::<usize>()?.max(1);
    let ctx = SessionContext::remote(&format!("df://127.0.0.1:{port}")).await?;
    for t in TABLES {
        ctx.register_parquet(t, format!("{data}/{t}/"), ParquetReadOptions::default()).await?;
    }
    for file in queries {
        let sql = std::fs::read_to_string(file)?;
        let mut runs = vec![];
        let mut error = None;
        for i in 0..=iterations {
            let started = Instant::now();
            match async { ctx.sql(&sql).await?.collect().await }.await {
                Ok(_) if i > 0 => runs.push(started.elapsed().as_secs_f64()),
                Ok(_) => {}
                Err(e) => {
                    error = Some(e.to_string().replace('\n', " "));
                    break;
                }
            }
        }
        match error {
            Some(e) => println!("error: {e}"),
            None => {
                runs.sort_by(f64::total_cmp);
                println!("{}", runs[runs.len() / 2]);
            }
        }
    }
    Ok(())
}
