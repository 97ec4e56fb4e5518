//! What makes a directory a broker's data directory, as Kafka's `LogManager` keeps it: an
//! exclusive lock held for the life of the process (`.lock`) and the identity of the node and
//! cluster the data belongs to (`meta.properties`).
//!
//! - [`DataDirLock`]: `flock(LOCK_EX | LOCK_NB)` on `<dir>/.lock`, which names the holder's
//!   process id; a second broker on the same directory is refused at start instead of silently
//!   interleaving writes with the first. The kernel drops the lock when the process dies, so a
//!   crash never leaves a stale lock behind.
//! - [`MetaProperties`]: `<dir>/meta.properties` in Kafka's format (`version=1`, `cluster.id`,
//!   `node.id`, `directory.id`), written once when the directory is first used and checked at
//!   every start, so a broker never serves a directory under another node id, nor starts a new
//!   cluster over a directory that holds another cluster's data.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a data directory (Kafka's name).
pub const LOCK_FILE: &str = ".lock";
/// Name of the identity file inside a data directory (Kafka's name and format).
pub const META_PROPERTIES_FILE: &str = "meta.properties";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {dir} is in use by another process ({holder}); stop it first, or give this broker its own --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("{path} is damaged: {reason}; restore it, or move the directory aside to start a new node")]
    BadMetaProperties { path: PathBuf, reason: String },
    #[error("node.id {configured} does not match the stored {stored} in {path}; start with --node-id {stored}, or give this node its own data directory")]
    NodeIdMismatch { configured: i32, stored: i32, path: PathBuf },
}

/// The exclusive lock on a data directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) for this process, writing our process id into the lock
    /// file. [`DataDirError::Locked`] names the holder if another process has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DataDirError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "an unknown process".to_owned(),
                    pid => format!("process {pid}"),
                };
                return Err(DataDirError::Locked { dir: dir.to_path_buf(), holder });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The identity of a data directory: whose data it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: String,
    pub node_id: i32,
    /// A random id of this directory (Kafka's `directory.id`, 22 characters of URL-safe base64).
    pub directory_id: String,
}

impl MetaProperties {
    /// Reads `<dir>/meta.properties`; `Ok(None)` if there is none.
    pub fn read(dir: &Path) -> Result<Option<MetaProperties>, DataDirError> {
        let path = dir.join(META_PROPERTIES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DataDirError::Io { path, source }),
        };
        let bad = |reason: String| DataDirError::BadMetaProperties { path: path.clone(), reason };
        let props: BTreeMap<&str, &str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| props.get(k).copied().ok_or_else(|| bad(format!("{k} is missing")));
        if get("version")? != "1" {
            return Err(bad(format!("version {} is not 1", get("version")?)));
        }
        let cluster_id = get("cluster.id")?.to_owned();
        if cluster_id.is_empty() {
            return Err(bad("cluster.id is empty".into()));
        }
        let node_id = get("node.id")?.parse().map_err(|_| bad("node.id is not a number".into()))?;
        let directory_id = props.get("directory.id").copied().unwrap_or_default().to_owned();
        Ok(Some(MetaProperties { cluster_id, node_id, directory_id }))
    }

    /// Writes `<dir>/meta.properties` durably (temporary file, fsync, rename, fsync of `dir`).
    pub fn write(&self, dir: &Path) -> Result<(), DataDirError> {
        let path = dir.join(META_PROPERTIES_FILE);
        let tmp = dir.join(format!("{META_PROPERTIES_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| DataDirError::Io { path: p, source }
        };
        let text = format!(
            "#\n#Written by strata {}\ncluster.id={}\ndirectory.id={}\nnode.id={}\nversion=1\n",
            env!("CARGO_PKG_VERSION"),
            self.cluster_id,
            self.directory_id,
            self.node_id
        );
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }

    /// Checks that this node may serve the directory: its configured `node_id` is the stored one.
    pub fn check_node_id(&self, dir: &Path, node_id: i32) -> Result<(), DataDirError> {
        if self.node_id != node_id {
            return Err(DataDirError::NodeIdMismatch {
                configured: node_id,
                stored: self.node_id,
                path: dir.join(META_PROPERTIES_FILE),
            });
        }
        Ok(())
    }
}

/// A random 22-character URL-safe base64 id, as Kafka's `Uuid.randomUuid().toString()`.
pub fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..22).map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same process
        // conflicts like another process would.
        match DataDirLock::acquire(dir.path()) {
            Err(DataDirError::Locked { holder, .. }) => {
                assert_eq!(holder, format!("process {}", std::process::id()))
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn meta_properties_round_trip_and_check_the_node_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(MetaProperties::read(dir.path()).unwrap(), None);
        let m = MetaProperties { cluster_id: "abc".into(), node_id: 1, directory_id: random_id() };
        m.write(dir.path()).unwrap();
        assert_eq!(MetaProperties::read(dir.path()).unwrap(), Some(m.clone()));
        m.check_node_id(dir.path(), 1).unwrap();
        let e = m.check_node_id(dir.path(), 2).unwrap_err().to_string();
        assert!(e.starts_with("node.id 2 does not match the stored 1"), "{e}");
        std::fs::write(dir.path().join(META_PROPERTIES_FILE), "version=1\nnode.id=x\n").unwrap();
        assert!(matches!(MetaProperties::read(dir.path()), Err(DataDirError::BadMetaProperties { .. })));
    }
}
