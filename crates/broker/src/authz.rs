//! Authorization of requests: Kafka's `StandardAuthorizer` over the ACLs in the metadata
//! image, on when `authorizer.class.name` names it.
//!
//! Every handler asks [`Authz::allowed`] for exactly the operations Kafka's `KafkaApis` checks
//! for its API (READ on a topic to fetch it, WRITE to produce, DESCRIBE to see it in Metadata,
//! CLUSTER_ACTION for replicas and markers, ...); without an authorizer every request is
//! allowed. The ACLs are read from the newest image the broker has, converted once per image.

use std::sync::Arc;

use arc_swap::ArcSwap;

use strata_security::acl::{AclBinding, Authorizer, Operation, ResourceType, CLUSTER_NAME};

use crate::config::BrokerConfig;
use crate::net::Session;
use crate::ReplicaManager;

/// Kafka's class name that turns authorization on.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// The broker's authorizer and a cache of the image's bindings.
pub struct Authz {
    authorizer: Option<Authorizer>,
    replicas: Arc<ReplicaManager>,
    /// (records applied of the image they came from, its bindings): read without a lock on
    /// every check, rebuilt by the first check that sees a newer image.
    cache: ArcSwap<(u64, Vec<AclBinding>)>,
}

impl Authz {
    /// From `authorizer.class.name`, `super.users` and `allow.everyone.if.no.acl.found`
    /// (validated at start).
    pub fn new(config: &BrokerConfig, replicas: Arc<ReplicaManager>) -> Self {
        let on = config.get("authorizer.class.name").is_some_and(|v| v.trim() == STANDARD_AUTHORIZER);
        let authorizer = on.then(|| Authorizer {
            super_users: Authorizer::parse_super_users(config.get("super.users").unwrap_or_default())
                .unwrap_or_default(),
            allow_if_no_acl: config.get("allow.everyone.if.no.acl.found").is_some_and(|v| v.trim() == "true"),
        });
        Self { authorizer, replicas, cache: ArcSwap::from_pointee((u64::MAX, Vec::new())) }
    }

    /// Whether an authorizer is configured (the ACL APIs answer SECURITY_DISABLED otherwise).
    pub fn enabled(&self) -> bool {
        self.authorizer.is_some()
    }

    fn bindings(&self) -> Arc<(u64, Vec<AclBinding>)> {
        let image = self.replicas.image();
        let cached = self.cache.load_full();
        if cached.0 == image.records_applied {
            return cached;
        }
        // Two checks racing here both build the same bindings; either store is right.
        let bindings = image.acls.values().filter_map(crate::handlers::acls::binding).collect();
        let fresh = Arc::new((image.records_applied, bindings));
        self.cache.store(fresh.clone());
        fresh
    }

    /// Whether `session` may do `operation` on resource `name` of type `resource`.
    pub fn allowed(&self, session: &Session, operation: Operation, resource: ResourceType, name: &str) -> bool {
        let Some(a) = &self.authorizer else { return true };
        if session.cluster_peer {
            return true;
        }
        let host = session.acl_host();
        let ok = a.authorize(self.bindings().1.iter(), &session.principal, host, operation, resource, name);
        if !ok {
            tracing::debug!(principal = %session.principal, %host, ?operation, ?resource, name, "denied");
        }
        ok
    }

    /// Kafka's authorized-operations bit set (bit = `AclOperation` id) of the `candidates`
    /// `session` may do on a resource (Metadata, DescribeCluster, DescribeGroups, ...).
    pub fn operations(&self, session: &Session, resource: ResourceType, name: &str, candidates: &[Operation]) -> i32 {
        candidates
            .iter()
            .filter(|op| self.allowed(session, **op, resource, name))
            .fold(0, |bits, op| bits | (1 << (*op as i32)))
    }

    /// [`allowed`](Self::allowed) on the cluster resource.
    pub fn cluster(&self, session: &Session, operation: Operation) -> bool {
        self.allowed(session, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether `session` may do `operation` on some resource of type `resource` (Kafka's
    /// `authorizeByResourceType`): a super user, an ALLOW that no DENY of the same pattern
    /// cancels, or, with no binding of the type at all, `allow.everyone.if.no.acl.found`.
    /// Used for idempotent producers (WRITE on any topic, KIP-679).
    pub fn any_of_type(&self, session: &Session, operation: Operation, resource: ResourceType) -> bool {
        let Some(a) = &self.authorizer else { return true };
        if session.cluster_peer || a.super_users.contains(&session.principal) {
            return true;
        }
        let host = session.acl_host();
        let cached = self.bindings();
        let bindings = &cached.1;
        let mine: Vec<&AclBinding> = bindings.iter().filter(|b| b.resource_type == resource).collect();
        if mine.is_empty() {
            return a.allow_if_no_acl;
        }
        // Some resource the principal may use: the name (or prefix) of an ALLOW binding that
        // the decision for that very name confirms (no DENY covering it).
        // Only the ALLOWs that could be this principal's are tried (each try reads every
        // binding), and each name once.
        let principal = session.principal.to_string();
        let mut tried = std::collections::HashSet::new();
        mine.iter().filter(|b| b.could_allow(&principal, host, operation)).any(|b| {
            tried.insert(b.name.as_str())
                && a.authorize(bindings.iter(), &session.principal, host, operation, resource, &b.name)
        })
    }
}
