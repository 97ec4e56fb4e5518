//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51): SCRAM users in the
//! metadata log (Kafka's `ScramControlManager`, KIP-554).

use std::sync::Arc;

use strata_metadata::channel::{ScramChange, ScramUpsert};
use strata_protocol::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use strata_protocol::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use strata_protocol::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use strata_protocol::ResponseError;

use super::str_bytes;
use crate::Broker;

/// The users' mechanisms and iterations from this broker's metadata image: all users when
/// none are named; RESOURCE_NOT_FOUND for a user without credentials, DUPLICATE_RESOURCE for
/// one named twice (Kafka's wording).
pub fn describe(
    broker: &Arc<Broker>,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let image = broker.replicas.image();
    let infos = |name: &str| -> Option<Vec<CredentialInfo>> {
        let list = image.scram_credentials.get(name)?;
        Some(
            list.iter()
                .map(|c| CredentialInfo::default().with_mechanism(c.mechanism).with_iterations(c.iterations))
                .collect(),
        )
    };
    let results = match request.users.filter(|u| !u.is_empty()) {
        None => image
            .scram_credentials
            .keys()
            .map(|name| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(name.clone()))
                    .with_credential_infos(infos(name).unwrap_or_default())
            })
            .collect(),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            names
                .iter()
                .map(|name| {
                    let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(name.clone()));
                    let refuse = |e: ResponseError, m: String| {
                        result.clone().with_error_code(e.code()).with_error_message(Some(str_bytes(m)))
                    };
                    if names.iter().filter(|n| *n == name).count() > 1 {
                        return refuse(
                            ResponseError::DuplicateResource,
                            format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            ),
                        );
                    }
                    match infos(name) {
                        Some(i) => result.clone().with_credential_infos(i),
                        None => refuse(
                            ResponseError::ResourceNotFound,
                            format!("Attempt to describe a user credential that does not exist: {name}"),
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// Decided by the active controller (brokers forward the request there).
pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut changes: Vec<ScramChange> = request
        .deletions
        .iter()
        .map(|d| ScramChange { name: d.name.to_string(), mechanism: d.mechanism, upsert: None })
        .collect();
    changes.extend(request.upsertions.iter().map(|u| ScramChange {
        name: u.name.to_string(),
        mechanism: u.mechanism,
        upsert: Some(ScramUpsert {
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
            iterations: u.iterations,
        }),
    }));
    let users: Vec<String> = {
        let mut seen = Vec::new();
        for c in &changes {
            if !seen.contains(&c.name) {
                seen.push(c.name.clone());
            }
        }
        seen
    };
    let results = match broker.controller.alter_scram_credentials(changes).await {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|(user, outcome)| {
                let r = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
                match outcome {
                    Ok(()) => r,
                    Err(e) => r.with_error_code(e.error.code()).with_error_message(Some(str_bytes(e.message))),
                }
            })
            .collect(),
        Err(e) => users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_error_code(e.error.code())
                    .with_error_message(Some(str_bytes(e.message.clone())))
            })
            .collect(),
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// `code` for every user of the request (CLUSTER_AUTHORIZATION_FAILED without ALTER on the
/// cluster).
pub fn refuse_alter(request: &AlterUserScramCredentialsRequest, code: i16) -> AlterUserScramCredentialsResponse {
    let mut users: Vec<String> = Vec::new();
    for name in request
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(request.upsertions.iter().map(|u| u.name.to_string()))
    {
        if !users.contains(&name) {
            users.push(name);
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(
        users
            .into_iter()
            .map(|u| AlterUserScramCredentialsResult::default().with_user(str_bytes(u)).with_error_code(code))
            .collect(),
    )
}
