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
//! - [`DataDirs`]: all data directories of a node (`log.dirs`, plus `metadata.log.dir` when it
//!   is not one of them), as Kafka's `MetaPropertiesEnsemble`: each is created if missing,
//!   checked writable and locked, has its own `meta.properties`, and all must name the same
//!   cluster and this node.

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
    #[error("cannot create the data directory {dir}: {error}")]
    Uncreatable { dir: PathBuf, error: std::io::Error },
    #[error("the data directory {dir} is not writable: {error}")]
    NotWritable { dir: PathBuf, error: std::io::Error },
    #[error("the data directory {dir} does not exist, but {other} says this node has data; mount it if it is a disk that is not mounted, or create it (empty) to add a directory")]
    Missing { dir: PathBuf, other: PathBuf },
    #[error("the data directory {canonical} is listed twice ({first} and {second}); list each directory once")]
    ListedTwice { first: PathBuf, second: PathBuf, canonical: PathBuf },
    #[error("{path} belongs to cluster {found}, but {other} to cluster {expected}; all data directories of a node must belong to one cluster: take the foreign one out of log.dirs")]
    ClusterIdMismatch { path: PathBuf, found: String, other: PathBuf, expected: String },
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

/// One data directory of [`DataDirs`].
#[derive(Debug)]
struct DataDir {
    path: PathBuf,
    meta: Option<MetaProperties>,
    _lock: DataDirLock,
}

/// All data directories of a node, created if missing, checked writable, locked for the life of
/// this value (keep it until the process ends), and with their `meta.properties` read and checked
/// to agree on the cluster. Directories are kept in the order given: the log directories, then
/// the metadata log's directory if it is not one of them.
#[derive(Debug)]
pub struct DataDirs {
    dirs: Vec<DataDir>,
}

impl DataDirs {
    /// Prepares and locks `log_dirs` and `metadata_dir` (which may be one of them). Creates
    /// missing directories on a new node only: once a directory holds this node's
    /// `meta.properties`, a missing one is refused (a disk that is not mounted, or a typo, would
    /// otherwise make its partitions start empty elsewhere). Refuses a directory that cannot be
    /// created or written, one listed twice (compared once they exist, through symbolic links),
    /// one locked by another process, and directories whose `meta.properties` name different
    /// clusters.
    pub fn open(log_dirs: &[PathBuf], metadata_dir: &Path) -> Result<DataDirs, DataDirError> {
        let metadata_dir = metadata_dir.to_path_buf();
        let all: Vec<&PathBuf> = log_dirs.iter().chain(std::iter::once(&metadata_dir)).collect();
        if let Some(missing) = all.iter().find(|d| !d.exists()) {
            let stamped = all.iter().map(|d| d.join(META_PROPERTIES_FILE)).find(|m| m.exists());
            if let Some(other) = stamped {
                return Err(DataDirError::Missing { dir: missing.to_path_buf(), other });
            }
        }
        let mut seen: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut dirs = Vec::new();
        for (i, path) in all.into_iter().enumerate() {
            prepare(path)?;
            let canonical =
                std::fs::canonicalize(path).map_err(|source| DataDirError::Io { path: path.clone(), source })?;
            if let Some((first, _)) = seen.iter().find(|(_, c)| *c == canonical) {
                if i == log_dirs.len() {
                    // The metadata log lives in one of the log directories (the usual case).
                    break;
                }
                return Err(DataDirError::ListedTwice { first: first.clone(), second: path.clone(), canonical });
            }
            seen.push((path.clone(), canonical));
            let lock = DataDirLock::acquire(path)?;
            let meta = MetaProperties::read(path)?;
            dirs.push(DataDir { path: path.clone(), meta, _lock: lock });
        }
        let ensemble = DataDirs { dirs };
        ensemble.cluster_id()?;
        Ok(ensemble)
    }

    /// The directories, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.path.as_path())
    }

    /// The cluster every directory with a `meta.properties` belongs to; `None` if none has one
    /// (a new node). [`DataDirError::ClusterIdMismatch`] if they disagree.
    pub fn cluster_id(&self) -> Result<Option<&str>, DataDirError> {
        let mut found: Option<(&Path, &str)> = None;
        for d in &self.dirs {
            let Some(m) = &d.meta else { continue };
            match found {
                None => found = Some((&d.path, &m.cluster_id)),
                Some((other, expected)) if expected != m.cluster_id => {
                    return Err(DataDirError::ClusterIdMismatch {
                        path: d.path.join(META_PROPERTIES_FILE),
                        found: m.cluster_id.clone(),
                        other: other.join(META_PROPERTIES_FILE),
                        expected: expected.to_owned(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(found.map(|(_, id)| id))
    }

    /// Checks that every directory with a `meta.properties` belongs to node `node_id`.
    pub fn check_node_id(&self, node_id: i32) -> Result<(), DataDirError> {
        for d in &self.dirs {
            if let Some(m) = &d.meta {
                m.check_node_id(&d.path, node_id)?;
            }
        }
        Ok(())
    }

    /// Writes `meta.properties` (with a new directory id) into every directory without one: a new
    /// node, or a directory newly added to `log.dirs`.
    pub fn write_missing(&mut self, cluster_id: &str, node_id: i32) -> Result<(), DataDirError> {
        for d in self.dirs.iter_mut().filter(|d| d.meta.is_none()) {
            let meta = MetaProperties { cluster_id: cluster_id.to_owned(), node_id, directory_id: random_id() };
            meta.write(&d.path)?;
            d.meta = Some(meta);
        }
        Ok(())
    }
}

/// Creates `dir` if missing and checks that it can be written, so that a bad directory is refused
/// at start with a message naming it.
fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let dir_buf = || dir.to_path_buf();
    std::fs::create_dir_all(dir).map_err(|error| DataDirError::Uncreatable { dir: dir_buf(), error })?;
    let probe = dir.join(".strata-write-test");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|error| DataDirError::NotWritable { dir: dir_buf(), error })
}

/// A random 22-character URL-safe base64 id, as Kafka's `Uuid.randomUuid().toString()`. Like
/// Kafka's, it never starts with '-' (it would read as a flag: `strata format --cluster-id -x…`).
pub fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let bits = uuid::Uuid::new_v4().as_u128();
        let id: String = (0..22).map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char).collect();
        if !id.starts_with('-') {
            return id;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_22_url_safe_characters_never_starting_with_a_dash() {
        for _ in 0..2000 {
            let id = random_id();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'), "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        }
    }

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

    #[test]
    fn several_directories_are_created_locked_and_stamped() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, m) = (root.path().join("a"), root.path().join("b"), root.path().join("meta"));
        let mut dirs = DataDirs::open(&[a.clone(), b.clone()], &a).unwrap();
        assert_eq!(dirs.paths().collect::<Vec<_>>(), vec![a.as_path(), b.as_path()]);
        assert_eq!(dirs.cluster_id().unwrap(), None);
        // Every directory is locked.
        assert!(matches!(DataDirLock::acquire(&b), Err(DataDirError::Locked { .. })));
        dirs.write_missing("c1", 3).unwrap();
        drop(dirs);
        let (ma, mb) = (MetaProperties::read(&a).unwrap().unwrap(), MetaProperties::read(&b).unwrap().unwrap());
        assert_eq!((ma.cluster_id.as_str(), ma.node_id, mb.cluster_id.as_str(), mb.node_id), ("c1", 3, "c1", 3));
        assert_ne!(ma.directory_id, mb.directory_id);

        // Once the node has data, a missing directory is refused (a disk not mounted)...
        let c = root.path().join("c");
        let e = DataDirs::open(&[a.clone(), b.clone(), c.clone()], &a).unwrap_err().to_string();
        assert!(e.starts_with(&format!("the data directory {} does not exist", c.display())), "{e}");
        assert!(!c.exists());
        // ... and one created empty is added. A metadata directory of its own is locked and
        // stamped too.
        std::fs::create_dir(&c).unwrap();
        std::fs::create_dir(&m).unwrap();
        let mut dirs = DataDirs::open(&[a.clone(), b.clone(), c.clone()], &m).unwrap();
        assert_eq!(dirs.paths().count(), 4);
        assert_eq!(dirs.cluster_id().unwrap(), Some("c1"));
        dirs.check_node_id(3).unwrap();
        let e = dirs.check_node_id(4).unwrap_err().to_string();
        assert!(e.starts_with("node.id 4 does not match the stored 3"), "{e}");
        dirs.write_missing("c1", 3).unwrap();
        drop(dirs);
        assert_eq!(MetaProperties::read(&c).unwrap().unwrap().cluster_id, "c1");
        assert_eq!(MetaProperties::read(&m).unwrap().unwrap().cluster_id, "c1");
    }

    #[test]
    fn a_directory_listed_twice_or_of_another_cluster_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::os::unix::fs::symlink(&a, root.path().join("link")).unwrap();
        let e = DataDirs::open(&[a.clone(), root.path().join("link")], &a).unwrap_err();
        assert!(matches!(e, DataDirError::ListedTwice { .. }), "{e}");
        for (dir, cluster) in [(&a, "c1"), (&b, "c2")] {
            std::fs::create_dir_all(dir).unwrap();
            MetaProperties { cluster_id: cluster.into(), node_id: 1, directory_id: random_id() }.write(dir).unwrap();
        }
        let e = DataDirs::open(&[a.clone(), b.clone()], &a).unwrap_err().to_string();
        assert!(e.contains("belongs to cluster c2") && e.contains("to cluster c1"), "{e}");
    }

    #[test]
    fn an_unusable_directory_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        // A regular file where a directory should be cannot be created (even by root).
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let bad = file.join("data");
        let ok = root.path().join("ok");
        let e = DataDirs::open(&[ok.clone(), bad.clone()], &ok).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot create the data directory {}", bad.display())), "{e}");
    }
}
