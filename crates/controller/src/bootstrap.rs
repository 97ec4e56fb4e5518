//! What a node's metadata directory must hold before its controller starts, and what a new
//! or an old single node writes there first (Kafka's `kafka-storage format` and the KRaft
//! start-up checks).
//!
//! The metadata log of every node is a Raft store ([`RaftStore`]). Before it opens,
//! [`prepare`] decides from the directory and `meta.properties`:
//!
//! | Raft store | `metadata.log` (before the quorum) | joining | meta.properties | outcome |
//! |---|---|---|---|---|
//! | present | any | any | any | start on it |
//! | absent | present | — | any | a single node's: its records become the bootstrap snapshot; a cluster node's (the cluster id only): set aside, the store starts as before |
//! | absent | absent | yes | formatted | start empty, learn the quorum from its leader |
//! | absent | absent | no | formatted | refuse: the metadata is lost, and with it the topics |
//! | absent | absent | no | none, single node | format: a new cluster |
//!
//! A directory is never given a new cluster over existing data, and nothing here deletes a
//! partition directory.

use std::path::Path;
use std::sync::Arc;

use strata_log::storage::Storage;
use strata_metadata::{MetadataImage, MetadataRecord};

use crate::metadata_log::MetadataLog;
use crate::raft::RaftStore;
use crate::ControllerError;

/// The single-node controller's file before the Raft quorum; migrated at the first start of
/// a build that has the quorum, then kept under [`MIGRATED_LOG`].
pub const LEGACY_LOG: &str = "metadata.log";
/// Where a migrated [`LEGACY_LOG`] is kept (never read again).
pub const MIGRATED_LOG: &str = "metadata.log.migrated";

/// What the node is and what its data directories say.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub node_id: i32,
    /// The initial voters (`controller.quorum.voters`, or this node alone by default).
    pub voters: &'a [u64],
    /// The cluster in `meta.properties`, if the directories are formatted.
    pub cluster_id: Option<&'a str>,
    /// Formatted with `--no-initial-controllers`: the store starts empty.
    pub joining: bool,
    /// May format itself when nothing is there (the single-node default, no voters configured).
    pub may_self_format: bool,
}

/// Makes `dir` ready for the Raft store of `node` (see the module docs) and returns the
/// cluster id. Errors: [`ControllerError::Identity`] when the metadata is missing or belongs
/// elsewhere, [`ControllerError::Corrupt`] for a damaged `metadata.log`, I/O errors.
pub fn prepare(storage: &Arc<dyn Storage>, dir: &Path, node: &Node<'_>) -> Result<String, ControllerError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ControllerError::Io { path: path.clone(), source }
    };
    let legacy = dir.join(LEGACY_LOG);
    if RaftStore::exists(&**storage, dir)? {
        return node.cluster_id.map(str::to_owned).ok_or_else(|| {
            ControllerError::Identity(format!(
                "{} holds a metadata log but the data directories have no meta.properties; restore it (it names the cluster and the node)",
                dir.display()
            ))
        });
    }
    if storage.exists(&legacy).map_err(io(&legacy))? {
        let cluster_id = migrate(storage, dir, node)?;
        storage.rename(&legacy, &dir.join(MIGRATED_LOG)).map_err(io(&legacy))?;
        storage.sync_dir(dir).map_err(io(dir))?;
        return Ok(cluster_id);
    }
    match node.cluster_id {
        Some(id) if node.joining => Ok(id.to_owned()),
        Some(id) => Err(ControllerError::Identity(format!(
            "the metadata log in {} is missing or empty, but the data directory belongs to cluster {id} (meta.properties); refusing to start a new cluster over its data: restore the metadata log",
            dir.display()
        ))),
        None if node.may_self_format => {
            let cluster_id = strata_log::data_dir::random_id();
            format(&**storage, dir, node.voters, &cluster_id, &[])?;
            tracing::info!(%cluster_id, "formatted a new single-node cluster");
            Ok(cluster_id)
        }
        None => Err(ControllerError::Identity(format!(
            "{} is not formatted: run `strata format --cluster-id ID` with the same config first",
            dir.display()
        ))),
    }
}

/// Writes the bootstrap metadata of a new cluster `cluster_id` whose initial controllers are
/// `voters` (what `strata format` writes): the Raft store's first snapshot, holding the
/// cluster id and `extra` records (the SCRAM users of `--add-scram`).
pub fn format(
    storage: &dyn Storage,
    dir: &Path,
    voters: &[u64],
    cluster_id: &str,
    extra: &[MetadataRecord],
) -> Result<(), ControllerError> {
    let mut records = vec![MetadataRecord::ClusterCreated { cluster_id: cluster_id.to_owned() }];
    records.extend_from_slice(extra);
    let (image, _) = MetadataImage::empty().apply(&records)?;
    RaftStore::format(storage, dir, voters, &image)
}

/// Replays `metadata.log`, checks it belongs to this cluster and node and, on a single node,
/// writes its image as the Raft store's bootstrap snapshot. Returns its cluster id.
///
/// On a node of a cluster (several initial voters, or joining one) an earlier build's
/// `strata format` wrote the file with the cluster id only, and that build's quorum started
/// from an empty bootstrap snapshot, proposing the cluster id as its first entry: such a node
/// keeps doing exactly that (its store starts as that build's did), so it agrees with the
/// other nodes' logs. Such a file holding more than the cluster id is refused.
fn migrate(storage: &Arc<dyn Storage>, dir: &Path, node: &Node<'_>) -> Result<String, ControllerError> {
    let legacy = dir.join(LEGACY_LOG);
    let (_, records) = MetadataLog::open_with_storage(storage.clone(), dir)?;
    let (image, _) = MetadataImage::empty().apply(&records)?;
    let single = !node.joining && node.voters == [node.node_id as u64];
    if !single {
        return match (node.cluster_id, image.cluster_id.as_deref()) {
            (Some(expected), Some(found)) if expected == found && records.len() == 1 => {
                if !node.joining {
                    RaftStore::format(&**storage, dir, node.voters, &MetadataImage::empty())?;
                }
                tracing::info!(cluster_id = expected, "set aside the bootstrap metadata an earlier build wrote");
                Ok(expected.to_owned())
            }
            _ => Err(ControllerError::Identity(format!(
                "{} holds {} metadata records of a single node (or another cluster's), but this node is one of a quorum; start it as the single node it was, or restore the quorum's metadata",
                legacy.display(),
                records.len()
            ))),
        };
    }
    let cluster_id = match (node.cluster_id, image.cluster_id.as_deref()) {
        (Some(expected), None) => {
            return Err(ControllerError::Identity(format!(
                "the metadata log {} is missing or empty, but the data directory belongs to cluster {expected} (meta.properties); refusing to start a new cluster over its data: restore the metadata log",
                legacy.display()
            )))
        }
        (Some(expected), Some(found)) if expected != found => {
            return Err(ControllerError::Identity(format!(
                "the metadata log {} belongs to cluster {found}, but the data directory to cluster {expected} (meta.properties); refusing to start",
                legacy.display()
            )))
        }
        (_, Some(found)) => found.to_owned(),
        (None, None) => strata_log::data_dir::random_id(),
    };
    if !image.brokers.is_empty() && !image.brokers.contains_key(&node.node_id) {
        let stored: Vec<String> = image.brokers.keys().map(i32::to_string).collect();
        return Err(ControllerError::Identity(format!(
            "node.id {} does not match the stored {} (registered in {}); start with that node id, or give this node its own data directory",
            node.node_id,
            stored.join(", "),
            legacy.display()
        )));
    }
    let image = if image.cluster_id.is_none() {
        image.apply(&[MetadataRecord::ClusterCreated { cluster_id: cluster_id.clone() }])?.0
    } else {
        image
    };
    RaftStore::format(&**storage, dir, node.voters, &image)?;
    tracing::info!(%cluster_id, records = image.records_applied, topics = image.topics().count(),
        "moved the metadata log into the Raft store (its records are the first snapshot)");
    Ok(cluster_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_log::storage::MemStorage;

    use super::*;
    use crate::raft::{QuorumConfig, QuorumNode};

    const DIR: &str = "/data/__cluster_metadata-0";

    fn node(cluster_id: Option<&str>, may_self_format: bool) -> Node<'_> {
        Node { node_id: 1, voters: &[1], cluster_id, joining: false, may_self_format }
    }

    fn dyn_storage(storage: &MemStorage) -> Arc<dyn Storage> {
        Arc::new(storage.clone())
    }

    fn committed(storage: &MemStorage) -> Arc<MetadataImage> {
        let store = RaftStore::open(Arc::new(storage.clone()), Path::new(DIR), &[1]).unwrap();
        QuorumNode::new(&QuorumConfig::new(1), store).unwrap().committed().clone()
    }

    #[test]
    fn a_single_node_formats_itself_once() {
        let storage = MemStorage::new();
        let id = prepare(&dyn_storage(&storage), Path::new(DIR), &node(None, true)).unwrap();
        assert_eq!(committed(&storage).cluster_id.as_deref(), Some(id.as_str()));
        // Started again with meta.properties written: the same store.
        assert_eq!(prepare(&dyn_storage(&storage), Path::new(DIR), &node(Some(&id), true)).unwrap(), id);
    }

    #[test]
    fn lost_metadata_is_refused_not_replaced() {
        let storage = MemStorage::new();
        let err =
            prepare(&dyn_storage(&storage), Path::new(DIR), &node(Some("AAAAAAAAAAAAAAAAAAAAAA"), true)).unwrap_err();
        assert!(err.to_string().contains("missing or empty"), "{err}");
        assert!(!RaftStore::exists(&*dyn_storage(&storage), Path::new(DIR)).unwrap());
        // Without meta.properties and with voters configured, the node must be formatted.
        let err = prepare(&dyn_storage(&storage), Path::new(DIR), &node(None, false)).unwrap_err();
        assert!(err.to_string().contains("strata format"), "{err}");
    }

    #[test]
    fn a_cluster_node_formatted_by_an_earlier_build_starts_as_that_build_did() {
        let storage = MemStorage::new();
        let dir = Path::new(DIR);
        let (mut log, _) = MetadataLog::open_with_storage(Arc::new(storage.clone()), dir).unwrap();
        log.append(&[MetadataRecord::ClusterCreated { cluster_id: "BBBBBBBBBBBBBBBBBBBBBB".into() }]).unwrap();
        drop(log);
        let voter = Node { voters: &[1, 2, 3], ..node(Some("BBBBBBBBBBBBBBBBBBBBBB"), false) };
        assert_eq!(prepare(&dyn_storage(&storage), dir, &voter).unwrap(), "BBBBBBBBBBBBBBBBBBBBBB");
        // The old build's bootstrap: the voters and no metadata (the cluster id is proposed).
        let store = RaftStore::open(Arc::new(storage.clone()), dir, &[1, 2, 3]).unwrap();
        let quorum_node = QuorumNode::new(&QuorumConfig::new(1), store).unwrap();
        assert_eq!(quorum_node.voters(), vec![1, 2, 3]);
        assert_eq!(quorum_node.committed().cluster_id, None);
        // A joining node's store stays empty: it learns everything from the leader.
        let joining = MemStorage::new();
        let (mut log, _) = MetadataLog::open_with_storage(Arc::new(joining.clone()), dir).unwrap();
        log.append(&[MetadataRecord::ClusterCreated { cluster_id: "BBBBBBBBBBBBBBBBBBBBBB".into() }]).unwrap();
        drop(log);
        let joiner = Node { voters: &[], joining: true, ..node(Some("BBBBBBBBBBBBBBBBBBBBBB"), false) };
        prepare(&dyn_storage(&joining), dir, &joiner).unwrap();
        assert!(!RaftStore::exists(&joining, dir).unwrap());
        assert!(joining.exists(&dir.join(MIGRATED_LOG)).unwrap());
    }

    #[test]
    fn a_legacy_metadata_log_becomes_the_first_snapshot() {
        let storage = MemStorage::new();
        let dir = Path::new(DIR);
        let records = vec![
            MetadataRecord::ClusterCreated { cluster_id: "BBBBBBBBBBBBBBBBBBBBBB".into() },
            MetadataRecord::BrokerRegistered {
                broker_id: 1,
                host: "h".into(),
                port: 9092,
                rack: None,
                epoch: 1,
                fenced: false,
                incarnation_id: None,
                listeners: Vec::new(),
            },
        ];
        let (mut log, _) = MetadataLog::open_with_storage(Arc::new(storage.clone()), dir).unwrap();
        log.append(&records).unwrap();
        drop(log);
        let (expected, _) = MetadataImage::empty().apply(&records).unwrap();

        // Another node id, or another cluster, is refused and leaves the file where it is.
        let other = Node { node_id: 2, voters: &[2], ..node(Some("BBBBBBBBBBBBBBBBBBBBBB"), false) };
        assert!(prepare(&dyn_storage(&storage), dir, &other)
            .unwrap_err()
            .to_string()
            .contains("node.id 2 does not match"));
        let foreign = node(Some("CCCCCCCCCCCCCCCCCCCCCC"), false);
        assert!(prepare(&dyn_storage(&storage), dir, &foreign).unwrap_err().to_string().contains("belongs to cluster"));
        assert!(storage.exists(&dir.join(LEGACY_LOG)).unwrap());

        let id = prepare(&dyn_storage(&storage), dir, &node(Some("BBBBBBBBBBBBBBBBBBBBBB"), false)).unwrap();
        assert_eq!(id, "BBBBBBBBBBBBBBBBBBBBBB");
        assert!(!storage.exists(&dir.join(LEGACY_LOG)).unwrap());
        assert!(storage.exists(&dir.join(MIGRATED_LOG)).unwrap());
        assert_eq!(*committed(&storage), expected);
    }
}
