//! AlterClientQuotas (key 49) decided on the active controller, as Kafka's
//! `ClientQuotaControlManager`: each alteration's entity and keys are validated, and only
//! the values that change become `ClientQuotaSet` records.
//!
//! Entities combine `user` and `client-id`, or are an `ip` alone; a `None` name is the type's
//! default. Keys: `producer_byte_rate` and `consumer_byte_rate` (whole bytes per second),
//! `request_percentage` and `controller_mutation_rate` for users and client ids,
//! `connection_creation_rate` (a whole number per second) for ips. Values must be finite and
//! above 0. Errors are INVALID_REQUEST with Kafka's wording, per alteration; an entity named
//! twice in one request is refused in both places and nothing is changed for it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use strata_metadata::channel::{ApiError, QuotaAlteration};
use strata_metadata::image::{QuotaEntity, QuotaValue};
use strata_metadata::{MetadataImage, MetadataRecord};
use strata_protocol::ResponseError;

/// The quota entity types (Kafka's `ClientQuotaEntity`).
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// How a quota key's values are checked (Kafka's `QuotaConfig` types).
#[derive(Clone, Copy)]
enum KeyType {
    Long,
    Int,
    Double,
}

/// The quota keys an entity takes, with their types.
type Keys = &'static [(&'static str, KeyType)];

/// The keys a user and/or client-id entity takes.
const CLIENT_KEYS: [(&str, KeyType); 4] = [
    ("producer_byte_rate", KeyType::Long),
    ("consumer_byte_rate", KeyType::Long),
    ("request_percentage", KeyType::Double),
    ("controller_mutation_rate", KeyType::Double),
];
/// The keys an ip entity takes.
const IP_KEYS: [(&str, KeyType); 1] = [("connection_creation_rate", KeyType::Int)];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, message.into())
}

/// Checks an entity as sent and returns it in its stored form (sorted by type) with the keys
/// its types take.
fn validate_entity(sent: &[(String, Option<String>)]) -> Result<(QuotaEntity, Keys), ApiError> {
    if sent.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    let mut entity: QuotaEntity = Vec::with_capacity(sent.len());
    for (kind, name) in sent {
        if entity.iter().any(|(k, _)| k == kind) {
            return Err(invalid(format!("Invalid client quota entity, duplicate entity entry {kind}")));
        }
        if ![USER, CLIENT_ID, IP].contains(&kind.as_str()) {
            return Err(invalid(format!("Unhandled client quota entity type: {kind}")));
        }
        if name.as_deref() == Some("") {
            return Err(invalid(format!("Empty {kind} not supported")));
        }
        entity.push((kind.clone(), name.clone()));
    }
    entity.sort();
    let has = |k: &str| entity.iter().any(|(kind, _)| kind == k);
    let keys: Keys = if has(IP) {
        if has(USER) || has(CLIENT_ID) {
            return Err(invalid(
                "Invalid quota entity combination, IP entity should not be combined with User or ClientId",
            ));
        }
        let ip = entity.iter().find(|(k, _)| k == IP).and_then(|(_, n)| n.as_deref());
        if let Some(ip) = ip {
            if ip.parse::<IpAddr>().is_err() {
                return Err(invalid(format!("{ip} is not a valid IP or resolvable host.")));
            }
        }
        &IP_KEYS
    } else {
        &CLIENT_KEYS
    };
    Ok((entity, keys))
}

fn validate_value(keys: &[(&str, KeyType)], key: &str, value: f64) -> Result<(), ApiError> {
    let Some((_, kind)) = keys.iter().find(|(k, _)| *k == key) else {
        return Err(invalid(format!("Invalid configuration key {key}")));
    };
    if !value.is_finite() {
        return Err(invalid(format!("Quota {key} must be a finite number")));
    }
    if value <= 0.0 {
        return Err(invalid(format!("Quota {key} must be greater than 0")));
    }
    let integral = |max: f64, what: &str| {
        if value > max {
            Err(invalid(format!("Proposed value for {key} is too large for {what}.")))
        } else if (value % 1.0).abs() > 1e-6 {
            Err(invalid(format!("{key} cannot be a fractional value.")))
        } else {
            Ok(())
        }
    };
    match kind {
        KeyType::Double => Ok(()),
        KeyType::Int => integral(f64::from(i32::MAX), "an INT"),
        KeyType::Long => integral(i64::MAX as f64, "a LONG"),
    }
}

/// One alteration's records, or why it is refused.
fn alter_one(image: &MetadataImage, alteration: &QuotaAlteration) -> Result<Vec<MetadataRecord>, ApiError> {
    let (entity, keys) = validate_entity(&alteration.entity)?;
    let mut ops: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for (key, value) in &alteration.ops {
        if ops.insert(key.as_str(), *value).is_some() {
            return Err(invalid(format!("Duplicate quota key {key} not updating quota for this entity")));
        }
    }
    let current = image.client_quotas.get(&entity);
    let mut records = Vec::new();
    for (key, value) in ops {
        let now = current.and_then(|q| q.get(key)).copied();
        match value {
            None if now.is_some() => records.push(MetadataRecord::ClientQuotaSet {
                entity: entity.clone(),
                key: key.to_string(),
                value: None,
            }),
            None => {}
            Some(v) => {
                validate_value(keys, key, v)?;
                if now != Some(QuotaValue(v)) {
                    records.push(MetadataRecord::ClientQuotaSet {
                        entity: entity.clone(),
                        key: key.to_string(),
                        value: Some(QuotaValue(v)),
                    });
                }
            }
        }
    }
    Ok(records)
}

/// AlterClientQuotas: one outcome per alteration, in order, and the records of those that
/// succeed (none with `validate_only`).
pub fn alter_client_quotas(
    image: &MetadataImage,
    alterations: &[QuotaAlteration],
    validate_only: bool,
) -> (Vec<MetadataRecord>, Vec<Result<(), ApiError>>) {
    let stored = |a: &QuotaAlteration| {
        let mut e = a.entity.clone();
        e.sort();
        e
    };
    let mut seen = std::collections::HashSet::new();
    let named_twice: std::collections::HashSet<QuotaEntity> =
        alterations.iter().map(stored).filter(|e| !seen.insert(e.clone())).collect();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(alterations.len());
    for a in alterations {
        if named_twice.contains(&stored(a)) {
            results.push(Err(invalid("Ignoring duplicate entity")));
            continue;
        }
        match alter_one(image, a) {
            Ok(r) => {
                if !validate_only {
                    records.extend(r);
                }
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (records, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alteration(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> QuotaAlteration {
        QuotaAlteration {
            entity: entity.iter().map(|(k, n)| (k.to_string(), n.map(str::to_string))).collect(),
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn apply(image: &MetadataImage, alterations: &[QuotaAlteration]) -> (MetadataImage, Vec<Result<(), ApiError>>) {
        let (records, results) = alter_client_quotas(image, alterations, false);
        let (after, _) = image.apply(&records).expect("records apply");
        (after, results)
    }

    #[test]
    fn quotas_are_set_changed_and_removed() {
        let image = MetadataImage::empty();
        let alice = [(USER, Some("alice")), (CLIENT_ID, None)];
        let (image, results) = apply(
            &image,
            &[alteration(&alice, &[("producer_byte_rate", Some(1024.0)), ("request_percentage", Some(12.5))])],
        );
        assert!(results[0].is_ok());
        let entity: QuotaEntity = vec![("client-id".into(), None), ("user".into(), Some("alice".into()))];
        assert_eq!(image.client_quotas[&entity]["producer_byte_rate"], QuotaValue(1024.0));
        // The same value again writes nothing; a removal of an absent key writes nothing.
        let (records, _) = alter_client_quotas(
            &image,
            &[alteration(&alice, &[("producer_byte_rate", Some(1024.0)), ("consumer_byte_rate", None)])],
            false,
        );
        assert!(records.is_empty());
        let (image, _) =
            apply(&image, &[alteration(&alice, &[("producer_byte_rate", None), ("request_percentage", None)])]);
        assert!(image.client_quotas.is_empty(), "an entity without quotas is gone");
    }

    #[test]
    fn kafka_refusals() {
        let image = MetadataImage::empty();
        let refused = |a: QuotaAlteration| {
            let (records, results) = alter_client_quotas(&image, &[a], false);
            assert!(records.is_empty());
            results[0].clone().expect_err("refused").message
        };
        assert!(refused(alteration(&[], &[("producer_byte_rate", Some(1.0))])).contains("empty"));
        assert!(refused(alteration(&[("group", Some("g"))], &[])).contains("Unhandled"));
        assert!(refused(alteration(&[(USER, Some(""))], &[])).contains("Empty user"));
        assert!(refused(alteration(&[(IP, Some("1.2.3.4")), (USER, None)], &[])).contains("combination"));
        assert!(refused(alteration(&[(IP, Some("not an ip"))], &[])).contains("not a valid IP"));
        assert!(refused(alteration(&[(USER, None)], &[("connection_creation_rate", Some(5.0))])).contains("key"));
        assert!(refused(alteration(&[(IP, None)], &[("producer_byte_rate", Some(5.0))])).contains("key"));
        assert!(refused(alteration(&[(USER, None)], &[("producer_byte_rate", Some(0.0))])).contains("greater than 0"));
        assert!(refused(alteration(&[(USER, None)], &[("producer_byte_rate", Some(1.5))])).contains("fractional"));
        assert!(refused(alteration(&[(USER, None)], &[("request_percentage", Some(f64::NAN))])).contains("finite"));
        assert!(refused(alteration(&[(IP, None)], &[("connection_creation_rate", Some(3e9))])).contains("INT"));
        assert!(refused(alteration(
            &[(USER, None)],
            &[("producer_byte_rate", Some(1.0)), ("producer_byte_rate", Some(2.0))]
        ))
        .contains("Duplicate quota key"));
        // A fractional request_percentage is fine; an ip default takes connection_creation_rate.
        let (_, results) = alter_client_quotas(
            &image,
            &[
                alteration(&[(USER, None)], &[("request_percentage", Some(0.5))]),
                alteration(&[(IP, None)], &[("connection_creation_rate", Some(10.0))]),
            ],
            false,
        );
        assert!(results.iter().all(Result::is_ok));
    }

    #[test]
    fn an_entity_named_twice_changes_nothing_and_validate_only_writes_nothing() {
        let image = MetadataImage::empty();
        let a = alteration(&[(USER, Some("u")), (CLIENT_ID, Some("c"))], &[("producer_byte_rate", Some(1.0))]);
        let b = alteration(&[(CLIENT_ID, Some("c")), (USER, Some("u"))], &[("consumer_byte_rate", Some(1.0))]);
        let other = alteration(&[(USER, Some("v"))], &[("producer_byte_rate", Some(1.0))]);
        let (records, results) = alter_client_quotas(&image, &[a, b, other.clone()], false);
        assert!(results[0].is_err() && results[1].is_err() && results[2].is_ok());
        assert_eq!(records.len(), 1);
        let (records, results) = alter_client_quotas(&image, &[other], true);
        assert!(records.is_empty() && results[0].is_ok());
    }
}
