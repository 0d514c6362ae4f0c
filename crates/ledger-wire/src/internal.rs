//! Paths of the internal API (`/internal` + these), one constant per route, shared by
//! the node that serves them and every caller (other nodes, the failover tool), so a
//! renamed route breaks the build instead of a deployment. Bodies are the types of
//! [`crate::failover`] named beside each route.

use uuid::Uuid;

use crate::AccountId;

/// Prefix of every internal route.
pub const PREFIX: &str = "/internal";

/// `GET`: does this region hold an account's event yet (`ack: replicated` waits).
pub const REPLICA_ROUTE: &str = "/v1/replicas/{id}";

/// The query of [`REPLICA_ROUTE`] for one event.
pub fn replica(account: AccountId, seq: i64, event_id: Uuid, wait_ms: u128) -> String {
    format!("/v1/replicas/{account}?seq={seq}&event_id={event_id}&wait_ms={wait_ms}")
}

/// The failover tool's routes (and the late-event handoff between nodes).
pub mod failover {
    use uuid::Uuid;

    /// Prefix of the routes below (the node allows them larger bodies).
    pub const PREFIX: &str = "/v1/failover/";
    /// `POST` `DrainRequest` -> `DrainReport`.
    pub const DRAIN: &str = "/v1/failover/drain";
    /// `POST` `Scope` -> `Digest`.
    pub const DIGEST: &str = "/v1/failover/digest";
    /// `POST` `ReleaseRequest` -> `ReleaseReport`.
    pub const RELEASE: &str = "/v1/failover/release";
    /// `GET` -> `NodeStatus`.
    pub const STATUS: &str = "/v1/failover/status";
    /// `POST` `ExportRequest` -> `ExportPage`.
    pub const EXPORT: &str = "/v1/failover/export";
    /// `POST` `ImportRequest` -> `ImportReport`.
    pub const IMPORT: &str = "/v1/failover/import";
    /// `GET ?page` -> `AuditSnapshot` (one page of accounts and entries).
    pub const AUDIT: &str = "/v1/failover/audit";
    /// `GET ?status` -> `Vec<LateEvent>`.
    pub const LATE: &str = "/v1/failover/late";
    /// `POST` `LateAck` -> `LateEvent`.
    pub const LATE_ACK_ROUTE: &str = "/v1/failover/late/{event_id}/ack";
    /// `POST` `LateHandoff` -> `Vec<LateDecision>` (node to node).
    pub const LATE_HANDOFF: &str = "/v1/failover/late/handoff";
    /// `POST` -> `LatePush`.
    pub const LATE_PUSH: &str = "/v1/failover/late/push";

    /// [`LATE_ACK_ROUTE`] for one event.
    pub fn late_ack(event: Uuid) -> String {
        format!("/v1/failover/late/{event}/ack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_paths_match_their_routes() {
        let event = Uuid::from_u128(7);
        let ack = failover::late_ack(event);
        let route = failover::LATE_ACK_ROUTE.replace("{event_id}", &event.to_string());
        assert_eq!(ack, route);
        let id = AccountId::new(3, 9).expect("id");
        let replica = replica(id, 4, event, 100);
        assert!(replica.starts_with(&REPLICA_ROUTE.replace("{id}", &id.to_string())));
        for route in [
            failover::DRAIN,
            failover::DIGEST,
            failover::RELEASE,
            failover::STATUS,
            failover::EXPORT,
            failover::IMPORT,
            failover::AUDIT,
            failover::LATE,
            failover::LATE_HANDOFF,
            failover::LATE_PUSH,
        ] {
            assert!(route.starts_with(failover::PREFIX), "{route}");
        }
    }
}
