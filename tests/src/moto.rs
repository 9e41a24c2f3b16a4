//! moto's S3 server (from PyPI, in target/venv) on a free loopback port: the
//! S3-compatible store the object-store tests write to and Quiver reads from.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running moto server, stopped when dropped.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Moto {
    /// Starts moto_server and waits until it accepts connections.
    pub fn start() -> Moto {
        let bin = std::env::var_os("QUIVER_TEST_MOTO")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                super::target_dir()
                    .join("..")
                    .join("venv")
                    .join("bin")
                    .join("moto_server")
            });
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup-python.sh first",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not start on port {port}");
    }

    /// Creates `bucket` (moto accepts an unsigned request).
    pub fn create_bucket(&self, bucket: &str) {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect moto");
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
    }

    /// The `[source.options]` table that reaches this server (keys `test`/`test`).
    pub fn options(&self) -> String {
        format!(
            "[source.options]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\n\
             secret_access_key = \"test\"\nallow_http = \"true\"\n",
            self.endpoint
        )
    }
}
