//! The crate's one error type, and the one place that maps it to Kafka error codes.

use strata_protocol::ResponseError;

/// Everything that can go wrong in the group coordinator.
///
/// Two families share the enum: *request* errors, which become a Kafka error code in a
/// response (see [`GroupError::code`]), and *record* errors, raised when bytes read back
/// from `__consumer_offsets` do not decode. A record error means the partition holds data
/// this build cannot read; the driver should stop loading the partition and report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    // ---- request errors -------------------------------------------------------------
    #[error("the group id is empty or otherwise invalid")]
    InvalidGroupId,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the member id is not known to the group; the client must rejoin")]
    UnknownMemberId,
    #[error("the member must rejoin with the member id the coordinator assigned (KIP-394)")]
    MemberIdRequired,
    #[error("the generation id does not match the group's generation")]
    IllegalGeneration,
    #[error("the group is rebalancing; the member must rejoin")]
    RebalanceInProgress,
    #[error("another member with the same group.instance.id has registered")]
    FencedInstanceId,
    #[error("the member's protocol type or protocols are incompatible with the group")]
    InconsistentGroupProtocol,
    #[error("session timeout {0} ms is outside group.min/max.session.timeout.ms")]
    InvalidSessionTimeout(i32),
    #[error("the group has reached group.max.size members")]
    GroupMaxSizeReached,
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("the group is subscribed to the topic; its offsets cannot be deleted")]
    GroupSubscribedToTopic,
    #[error("the member epoch is fenced; the member must rejoin with epoch 0")]
    FencedMemberEpoch,
    #[error("the member epoch is stale; the member must retry with its latest epoch")]
    StaleMemberEpoch,
    #[error("the group.instance.id is still held by another member")]
    UnreleasedInstanceId,
    #[error("server assignor {0:?} is not supported (configure group.consumer.assignors)")]
    UnsupportedAssignor(String),
    #[error("the offset metadata string is longer than offset.metadata.max.bytes")]
    OffsetMetadataTooLarge,
    #[error("the coordinator is not available for this group")]
    CoordinatorNotAvailable,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A KIP-848 `SubscribedTopicRegex` that does not compile.
    #[error("{0}")]
    InvalidRegularExpression(String),

    // ---- record errors --------------------------------------------------------------
    #[error("group record is truncated or malformed: {0}")]
    MalformedRecord(&'static str),
    #[error("unknown group record type {0}; was the partition written by a newer Strata?")]
    UnknownRecordType(i16),
    #[error("unsupported version {version} of group record type {record_type}; upgrade Strata")]
    UnsupportedRecordVersion { record_type: i16, version: i16 },
}

impl GroupError {
    /// The Kafka error code a response carries for this error.
    pub fn code(&self) -> i16 {
        let e = match self {
            GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
            GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
            GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
            GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
            GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
            GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
            GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            GroupError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
            GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
            GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
            GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
            GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
            GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
            GroupError::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
            GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
            GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
            GroupError::InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
            // A record that does not decode never reaches a client as such: the partition
            // cannot be loaded, so for clients the coordinator is simply not available.
            GroupError::MalformedRecord(_)
            | GroupError::UnknownRecordType(_)
            | GroupError::UnsupportedRecordVersion { .. } => ResponseError::CoordinatorNotAvailable,
        };
        e.code()
    }
}

/// Error codes the crate uses directly in responses (0 = no error).
pub(crate) mod codes {
    use strata_protocol::ResponseError;
    pub const NONE: i16 = 0;
    pub const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
    pub const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
    pub const FENCED_INSTANCE_ID: i16 = ResponseError::FencedInstanceId.code();
    pub const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(GroupError::MemberIdRequired.code(), 79);
        assert_eq!(GroupError::FencedInstanceId.code(), 82);
        assert_eq!(GroupError::IllegalGeneration.code(), 22);
        assert_eq!(GroupError::UnknownMemberId.code(), 25);
        assert_eq!(GroupError::RebalanceInProgress.code(), 27);
        assert_eq!(GroupError::FencedMemberEpoch.code(), 110);
        assert_eq!(GroupError::MalformedRecord("x").code(), 15);
    }
}
