//! Kafka's ACL model and the decision of its `StandardAuthorizer` (KIP-801): bindings of
//! (resource pattern, principal, host, operation, permission), DENY over ALLOW, implied
//! operations, super users and `allow.everyone.if.no.acl.found`.
//!
//! The numeric ids are Kafka's (`AclResourceType`, `PatternType`, `AclOperation`,
//! `AclPermissionType`), as CreateAcls, DescribeAcls and DeleteAcls carry them.

use crate::principal::KafkaPrincipal;

/// The kinds of resource ACLs protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

impl ResourceType {
    pub fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            2 => Self::Topic,
            3 => Self::Group,
            4 => Self::Cluster,
            5 => Self::TransactionalId,
            6 => Self::DelegationToken,
            7 => Self::User,
            _ => return None,
        })
    }
}

/// How a binding's resource name matches (`LITERAL`: the name, or every name when it is `*`;
/// `PREFIXED`: every name that starts with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal = 3,
    Prefixed = 4,
}

impl PatternType {
    pub fn from_id(id: i8) -> Option<Self> {
        match id {
            3 => Some(Self::Literal),
            4 => Some(Self::Prefixed),
            _ => None,
        }
    }
}

/// Kafka's ACL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
    TwoPhaseCommit = 15,
}

impl Operation {
    pub fn from_id(id: i8) -> Option<Self> {
        use Operation::*;
        Some(match id {
            2 => All,
            3 => Read,
            4 => Write,
            5 => Create,
            6 => Delete,
            7 => Alter,
            8 => Describe,
            9 => ClusterAction,
            10 => DescribeConfigs,
            11 => AlterConfigs,
            12 => IdempotentWrite,
            13 => CreateTokens,
            14 => DescribeTokens,
            15 => TwoPhaseCommit,
            _ => return None,
        })
    }

    /// The operations an ALLOW of `self` also allows (Kafka's `AclEntry` implications):
    /// READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    fn implies(self, wanted: Operation) -> bool {
        use Operation::*;
        self == wanted
            || self == All
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

/// ALLOW or DENY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Deny = 2,
    Allow = 3,
}

impl Permission {
    pub fn from_id(id: i8) -> Option<Self> {
        match id {
            2 => Some(Self::Deny),
            3 => Some(Self::Allow),
            _ => None,
        }
    }
}

/// One ACL: `principal` (`User:alice`, or `User:*` for everyone) from `host` (`*` for any)
/// is allowed or denied `operation` on the resources `pattern` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The wildcard resource name and principal.
pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";

impl AclBinding {
    /// A binding from Kafka's ids (as CreateAcls sends them and the metadata keeps them), or
    /// why it is not a valid binding (Kafka's INVALID_REQUEST messages): ANY, MATCH and
    /// UNKNOWN are filters' values only; the cluster's name is `kafka-cluster`; the principal
    /// is `TYPE:NAME`.
    pub fn from_ids(
        resource_type: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, String> {
        let resource_type = ResourceType::from_id(resource_type).ok_or("Invalid resource type")?;
        let pattern = PatternType::from_id(pattern).ok_or("Invalid pattern type")?;
        let operation = Operation::from_id(operation).ok_or("Invalid operation")?;
        let permission = Permission::from_id(permission).ok_or("Invalid permission type")?;
        if name.is_empty() {
            return Err("Resource name must not be empty".into());
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
        }
        if KafkaPrincipal::parse(principal).is_err() {
            return Err(format!("Invalid principal {principal}"));
        }
        if host.is_empty() {
            return Err("Invalid host: empty".into());
        }
        Ok(Self {
            resource_type,
            name: name.to_string(),
            pattern,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        })
    }

    /// Whether the binding's pattern covers resource `name` of `resource_type`.
    pub fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }

    /// Whether this binding could be the ALLOW that lets `principal` from `host` do
    /// `operation` (its resource aside; a DENY elsewhere may still win).
    pub fn could_allow(&self, principal: &str, host: &str, operation: Operation) -> bool {
        self.permission == Permission::Allow && self.operation.implies(operation) && self.matches_who(principal, host)
    }

    fn matches_who(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// A filter over bindings (DescribeAcls, DeleteAcls): `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    /// `Some(None)` is Kafka's MATCH: bindings whose pattern covers `name` (literal, the
    /// wildcard, prefixes of it). `None` is ANY.
    pub pattern: Option<Option<PatternType>>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// A filter from Kafka's ids: ANY (1) matches every value, a pattern of MATCH (2) every
    /// binding whose pattern covers the name; UNKNOWN (0) or an unknown id is refused.
    pub fn from_ids(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self, String> {
        let any = |id: i8| id == 1;
        Ok(Self {
            resource_type: if any(resource_type) {
                None
            } else {
                Some(ResourceType::from_id(resource_type).ok_or("Invalid resource type")?)
            },
            name: name.map(str::to_string),
            pattern: match pattern {
                1 => None,
                2 => Some(None),
                p => Some(Some(PatternType::from_id(p).ok_or("Invalid pattern type")?)),
            },
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: if any(operation) {
                None
            } else {
                Some(Operation::from_id(operation).ok_or("Invalid operation")?)
            },
            permission: if any(permission) {
                None
            } else {
                Some(Permission::from_id(permission).ok_or("Invalid permission type")?)
            },
        })
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        let resource = match (&self.pattern, &self.name) {
            (Some(None), Some(name)) => {
                self.resource_type.is_none_or(|t| t == b.resource_type) && b.matches_resource(b.resource_type, name)
            }
            (Some(None), None) => true,
            (Some(Some(p)), name) => *p == b.pattern && name.as_ref().is_none_or(|n| *n == b.name),
            (None, name) => name.as_ref().is_none_or(|n| *n == b.name),
        };
        resource
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// `authorizer.class.name`'s decision (Kafka's `StandardAuthorizer`).
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// `super.users`: allowed everything.
    pub super_users: Vec<KafkaPrincipal>,
    /// `allow.everyone.if.no.acl.found` (false by default): what a resource no ACL covers gets.
    pub allow_if_no_acl: bool,
}

impl Authorizer {
    /// Parses `super.users`, `User:a;User:b` as in Kafka.
    pub fn parse_super_users(value: &str) -> Result<Vec<KafkaPrincipal>, crate::SecurityError> {
        value.split(';').map(str::trim).filter(|s| !s.is_empty()).map(KafkaPrincipal::parse).collect()
    }

    /// Whether `principal` connecting from `host` may do `operation` on resource `name` of
    /// `resource_type`, under `acls`. DENY wins over ALLOW; a resource no binding covers
    /// (whoever it names) gets `allow_if_no_acl`.
    pub fn authorize<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding>,
        principal: &KafkaPrincipal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let who = principal.to_string();
        let mut covered = false;
        let mut allowed = false;
        for b in acls {
            if !b.matches_resource(resource_type, name) {
                continue;
            }
            covered = true;
            if !b.matches_who(&who, host) {
                continue;
            }
            match b.permission {
                Permission::Deny if b.operation == operation || b.operation == Operation::All => return false,
                Permission::Deny => {}
                Permission::Allow => allowed |= b.operation.implies(operation),
            }
        }
        if covered {
            allowed
        } else {
            self.allow_if_no_acl
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(t: ResourceType, name: &str, p: PatternType, who: &str, op: Operation, perm: Permission) -> AclBinding {
        AclBinding {
            resource_type: t,
            name: name.into(),
            pattern: p,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn deny_wins_prefixes_match_and_describe_is_implied() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let alice = KafkaPrincipal::user("alice");
        let bob = KafkaPrincipal::user("bob");
        let acls = vec![
            acl(Topic, "orders-", Prefixed, "User:alice", Write, Allow),
            acl(Topic, "orders-secret", Literal, "User:alice", Write, Deny),
            acl(Topic, "*", Literal, "User:*", Read, Allow),
            acl(Group, "g", Literal, "User:bob", All, Allow),
        ];
        let a = Authorizer::default();
        let can = |p: &KafkaPrincipal, op, t, n: &str| a.authorize(&acls, p, "127.0.0.1", op, t, n);
        assert!(can(&alice, Write, Topic, "orders-eu"));
        assert!(!can(&alice, Write, Topic, "orders-secret"), "DENY wins");
        assert!(!can(&bob, Write, Topic, "orders-eu"));
        assert!(can(&bob, Read, Topic, "anything"), "wildcard name and principal");
        assert!(can(&alice, Describe, Topic, "orders-eu"), "WRITE implies DESCRIBE");
        assert!(!can(&alice, Delete, Topic, "orders-eu"));
        assert!(can(&bob, Read, Group, "g") && can(&bob, Describe, Group, "g"));
        assert!(!can(&alice, Read, Group, "g"));
        assert!(!can(&alice, Read, Group, "other"), "no ACL: denied by default");
        let open = Authorizer { allow_if_no_acl: true, ..Authorizer::default() };
        assert!(open.authorize(&acls, &alice, "h", Read, Group, "other"));
        assert!(!open.authorize(&acls, &alice, "h", Read, Group, "g"), "covered: the ACLs decide");
        let sup = Authorizer {
            super_users: Authorizer::parse_super_users("User:admin; User:ops").unwrap_or_default(),
            ..Authorizer::default()
        };
        assert!(sup.authorize(&acls, &KafkaPrincipal::user("ops"), "h", Alter, Cluster, "kafka-cluster"));
    }

    #[test]
    fn deny_of_describe_is_not_implied_and_hosts_match() {
        use Operation::*;
        let mut deny_read = acl(ResourceType::Topic, "t", PatternType::Literal, "User:a", Read, Permission::Deny);
        deny_read.host = "10.0.0.1".into();
        let allow_all = acl(ResourceType::Topic, "t", PatternType::Literal, "User:a", All, Permission::Allow);
        let acls = [deny_read, allow_all];
        let a = Authorizer::default();
        let p = KafkaPrincipal::user("a");
        assert!(!a.authorize(&acls, &p, "10.0.0.1", Read, ResourceType::Topic, "t"));
        assert!(a.authorize(&acls, &p, "10.0.0.2", Read, ResourceType::Topic, "t"));
        assert!(
            a.authorize(&acls, &p, "10.0.0.1", Describe, ResourceType::Topic, "t"),
            "a DENY of READ does not deny DESCRIBE"
        );
    }

    #[test]
    fn filters_match_as_kafka_describes() {
        use ResourceType::*;
        let b = acl(Topic, "orders-", PatternType::Prefixed, "User:a", Operation::Write, Permission::Allow);
        let any = AclFilter::default();
        assert!(any.matches(&b));
        let matching = AclFilter {
            resource_type: Some(Topic),
            name: Some("orders-1".into()),
            pattern: Some(None),
            ..AclFilter::default()
        };
        assert!(matching.matches(&b), "MATCH: the prefix covers the name");
        let literal = AclFilter {
            name: Some("orders-".into()),
            pattern: Some(Some(PatternType::Literal)),
            ..AclFilter::default()
        };
        assert!(!literal.matches(&b));
        let exact = AclFilter {
            name: Some("orders-".into()),
            pattern: Some(Some(PatternType::Prefixed)),
            principal: Some("User:a".into()),
            ..AclFilter::default()
        };
        assert!(exact.matches(&b));
        assert!(!AclFilter { resource_type: Some(Group), ..AclFilter::default() }.matches(&b));
    }
}
