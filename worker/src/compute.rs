//! A runtime of its own for running fragments. DataFusion's operators are CPU-bound
//! and yield rarely; on the runtime that serves gRPC they would delay the health
//! action and the streaming of other fragments by seconds, and a busy worker would
//! look dead to the coordinator. Fragments run here; the Flight service only
//! forwards their batches.

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The process-wide compute runtime (embedded workers share it), started on first use.
pub fn handle() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("quiver-compute".into())
            .spawn(move || {
                // Large stacks: decoding and evaluating deep expressions recurse.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .thread_name("quiver-compute")
                    .thread_stack_size(256 << 20)
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = tx.send(Some(runtime.handle().clone()));
                        // Lives as long as the process.
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the compute runtime; fragments share the I/O runtime");
                        let _ = tx.send(None);
                    }
                }
            })
            .ok()
            .and_then(|_| rx.recv().ok().flatten())
            .unwrap_or_else(Handle::current)
    })
}
