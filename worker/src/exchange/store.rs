//! Where a worker keeps the outputs of the stage tasks it ran.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Flight tickets that fetch an exchange partition start with this.
pub const SHUFFLE_TICKET_PREFIX: &str = "shuffle:";

/// Outputs older than this are deleted even if no coordinator released them
/// (a coordinator that died mid-query never will).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// The exchange directory of this process: `$QUIVER_EXCHANGE_DIR`, or a directory
/// of its own under the system temp dir. Outputs live in `<dir>/<query>/<output>/<p>.arrow`.
#[derive(Debug)]
pub struct ExchangeStore {
    base: PathBuf,
}

/// The process-wide store (embedded workers share it, which lets them read each
/// other's outputs as local files).
pub fn store() -> &'static ExchangeStore {
    static STORE: OnceLock<ExchangeStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let base = match std::env::var_os("QUIVER_EXCHANGE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                remove_dead_processes_dirs(&std::env::temp_dir());
                std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()))
            }
        };
        ExchangeStore { base }
    })
}

impl ExchangeStore {
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Creates the directory of a new output of `query`; returns its key and path.
    pub fn new_output(&self, query: &str) -> std::io::Result<(String, PathBuf)> {
        let key = format!("{}/{}", segment(query), uuid::Uuid::new_v4().simple());
        let dir = self.base.join(&key);
        std::fs::create_dir_all(&dir)?;
        Ok((key, dir))
    }

    /// The file of partition `partition` of output `key`, if the key is well formed.
    pub fn partition_path(&self, key: &str, partition: usize) -> Option<PathBuf> {
        let mut parts = key.split('/');
        let (Some(query), Some(output), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        (valid(query) && valid(output)).then(|| {
            self.base
                .join(query)
                .join(output)
                .join(format!("{partition}.arrow"))
        })
    }

    /// Deletes every output of `query`; returns how many bytes that freed.
    pub fn release(&self, query: &str) -> u64 {
        let dir = self.base.join(segment(query));
        let bytes = dir_size(&dir);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete exchange files");
            }
        }
        self.sweep_orphans();
        bytes
    }

    /// Bytes of exchange files on disk now.
    pub fn bytes_on_disk(&self) -> u64 {
        dir_size(&self.base)
    }

    /// Deletes query directories nobody released within [`ORPHAN_AGE`].
    fn sweep_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Deletes the whole directory (the worker is shutting down).
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

const DIR_PREFIX: &str = "quiver-exchange-";

/// Deletes the exchange directories that processes which no longer run left in
/// `tmp` (a killed worker never removes its own).
fn remove_dead_processes_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A query id as one safe path segment.
pub(super) fn segment(query: &str) -> String {
    let s: String = query
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_store() {
        let s = ExchangeStore {
            base: PathBuf::from("/x"),
        };
        assert_eq!(
            s.partition_path("q1/abc", 3),
            Some(PathBuf::from("/x/q1/abc/3.arrow"))
        );
        for bad in ["../etc", "q/../../etc", "q/a/b", "/abs", "q/", "", "q/a b"] {
            assert_eq!(s.partition_path(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn directories_of_dead_processes_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dead = tmp.path().join(format!("{DIR_PREFIX}{}", u32::MAX - 1));
        let alive = tmp
            .path()
            .join(format!("{DIR_PREFIX}{}", std::process::id()));
        let other = tmp.path().join("quiver-exchange-notapid");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        remove_dead_processes_dirs(tmp.path());
        assert!(!dead.exists() && alive.exists() && other.exists());
    }

    #[test]
    fn release_deletes_a_query_and_reports_its_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = ExchangeStore {
            base: tmp.path().to_path_buf(),
        };
        let (key, dir) = s.new_output("q/1").expect("new output");
        assert!(key.starts_with("q_1/"), "{key}");
        std::fs::write(dir.join("0.arrow"), [0u8; 100]).expect("write");
        assert_eq!(s.bytes_on_disk(), 100);
        assert_eq!(s.release("q/1"), 100);
        assert!(!dir.exists());
    }
}
