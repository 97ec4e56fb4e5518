//! Metadata records and their encoding.
//!
//! The encoding is a version byte followed by the record as JSON. It is the
//! byte form the local metadata log stores today and the Raft log will carry:
//! adding a field with a serde default is compatible; changing meaning needs a
//! new version byte.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MetadataError;

/// Current encoding version.
pub const RECORD_VERSION: u8 = 1;

/// What a config record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

/// A partition reassignment in progress (KIP-455): while it lasts the partition's replicas are
/// the target replicas followed by the ones leaving, `adding` are target replicas that were not
/// replicas before, `removing` replicas that are not targets. It ends when every target
/// replica is in the ISR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Reassignment {
    /// Whether a reassignment is in progress.
    pub fn is_ongoing(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

/// One change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The first record of a cluster's log; fixes the cluster id for good.
    ClusterCreated { cluster_id: String },
    /// A broker joined (or re-registered with new endpoints).
    BrokerRegistered {
        broker_id: i32,
        host: String,
        port: u16,
        #[serde(default)]
        rack: Option<String>,
        /// The registration's epoch (Kafka's broker epoch: the offset of its registration).
        #[serde(default)]
        epoch: i64,
        /// Whether the broker starts fenced (Kafka registers brokers fenced until they catch up).
        #[serde(default)]
        fenced: bool,
        /// The broker process's incarnation (a new one at every start): a registration
        /// retried by the same process keeps its epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incarnation_id: Option<Uuid>,
        /// Every listener of the broker, the inter-broker one (`host`, `port`) first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        listeners: Vec<crate::image::Endpoint>,
    },
    /// A broker stopped heartbeating (or shut down): it leads nothing until unfenced.
    BrokerFenced { broker_id: i32 },
    /// A fenced broker caught up with the metadata log and may lead again.
    BrokerUnfenced { broker_id: i32 },
    /// A topic now exists under `name` with the durable id `topic_id`.
    TopicCreated { name: String, topic_id: Uuid },
    /// A partition of an existing topic, with its placement.
    PartitionCreated { topic_id: Uuid, partition: i32, replicas: Vec<i32>, leader: i32, leader_epoch: i32 },
    /// A partition's leader, ISR or replicas changed (Kafka's `PartitionChangeRecord`): the
    /// partition epoch goes up by one, and the leader epoch too when the leader changes.
    /// `None` fields are unchanged; a leader of -1 means none is available.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        #[serde(default)]
        leader: Option<i32>,
        #[serde(default)]
        isr: Option<Vec<i32>>,
        #[serde(default)]
        replicas: Option<Vec<i32>>,
        /// The reassignment in progress after this change (Kafka's `addingReplicas` /
        /// `removingReplicas`): `Some` sets it (both lists empty ends it), `None` leaves it.
        #[serde(default)]
        reassignment: Option<Reassignment>,
        /// The eligible leader replicas after this change (KIP-966), `None` leaves them.
        #[serde(default)]
        elr: Option<Vec<i32>>,
        /// The last known leader after this change (KIP-966's `lastKnownElr`), `None` leaves it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_known_elr: Option<Vec<i32>>,
    },
    /// The topic and its partitions and configs are gone.
    TopicDeleted { topic_id: Uuid },
    /// Sets (`Some`) or removes (`None`) one config key of a resource.
    ConfigSet { resource: ConfigResource, name: String, value: Option<String> },
    /// A controller's CONTROLLER endpoint (Kafka's `RegisterControllerRecord`): written when a
    /// voter joins the quorum at run time, so every controller can reach it after restarts.
    ControllerRegistered { controller_id: i32, host: String, port: u16 },
    /// Producer ids below `next_producer_id` have been handed out.
    ProducerIdsAllocated { broker_id: i32, next_producer_id: i64 },
    /// A user's SCRAM credential for one mechanism, new or replacing the previous one
    /// (Kafka's `UserScramCredentialRecord`). `mechanism`: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    ScramCredentialSet {
        name: String,
        mechanism: i8,
        salt: Vec<u8>,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
        iterations: i32,
    },
    /// Removes a user's credential for one mechanism (`RemoveUserScramCredentialRecord`).
    ScramCredentialRemoved { name: String, mechanism: i8 },
    /// An ACL binding (Kafka's `AccessControlEntryRecord`), with its id.
    AclCreated { id: Uuid, acl: crate::image::AclImage },
    /// Removes the binding `id` (`RemoveAccessControlEntryRecord`).
    AclRemoved { id: Uuid },
    /// Sets (`Some`) or removes (`None`) one quota of a client quota entity (Kafka's
    /// `ClientQuotaRecord`): `entity` is its (type, name) pairs sorted by type, types `user`,
    /// `client-id` or `ip`, a `None` name the type's default; `key` e.g. `producer_byte_rate`.
    ClientQuotaSet { entity: crate::image::QuotaEntity, key: String, value: Option<crate::image::QuotaValue> },
}

impl MetadataRecord {
    /// The record's bytes as the metadata log stores them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Serializing a plain enum of strings and numbers into a Vec cannot fail.
        if let Err(e) = serde_json::to_writer(&mut out, self) {
            unreachable!("metadata record serialization failed: {e}");
        }
        out
    }

    /// Parses bytes written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, json)) => {
                serde_json::from_slice(json).map_err(|e| MetadataError::Decode(e.to_string()))
            }
            Some((v, _)) => {
                Err(MetadataError::Decode(format!("unknown record version {v} (this build reads {RECORD_VERSION})")))
            }
            None => Err(MetadataError::Decode("empty record".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let id = Uuid::new_v4();
        for r in [
            MetadataRecord::ClusterCreated { cluster_id: "abc".into() },
            MetadataRecord::TopicCreated { name: "t".into(), topic_id: id },
            MetadataRecord::PartitionCreated {
                topic_id: id,
                partition: 2,
                replicas: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
            },
            MetadataRecord::ConfigSet {
                resource: ConfigResource::Topic("t".into()),
                name: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::ProducerIdsAllocated { broker_id: 1, next_producer_id: 1000 },
            MetadataRecord::TopicDeleted { topic_id: id },
        ] {
            assert_eq!(MetadataRecord::decode(&r.encode()).unwrap(), r);
        }
        assert!(MetadataRecord::decode(&[9, b'{']).is_err());
        assert!(MetadataRecord::decode(&[]).is_err());
        assert!(MetadataRecord::decode(&[1, 0xff]).is_err());
    }
}
