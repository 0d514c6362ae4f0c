//! The calls a planned move makes, as a trait: the real [`Cluster`] (ownership service
//! and signed node calls) in production, a fake with failures injected at each step in
//! the unit tests.

use std::future::Future;
use std::time::Duration;

use ledger_wire::failover::{
    Digest, DrainReport, DrainRequest, ReleaseReport, ReleaseRequest, Scope,
};
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::{Outcome, OwnershipMap, SlotAtEpoch};
use ledger_wire::AccountId;

use crate::{Cluster, FailoverError};

pub trait Ports: Sync {
    fn map(&self) -> impl Future<Output = Result<OwnershipMap, FailoverError>> + Send;
    fn freeze_slots(
        &self,
        slots: Vec<u32>,
        frozen: bool,
        reason: &str,
    ) -> impl Future<Output = Result<Outcome, FailoverError>> + Send;
    fn transfer_slots(
        &self,
        slots: Vec<SlotAtEpoch>,
        to: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Outcome, FailoverError>> + Send;
    fn rehome_account(
        &self,
        account: AccountId,
        to: &str,
        expected_epoch: Option<u64>,
        reason: &str,
    ) -> impl Future<Output = Result<Outcome, FailoverError>> + Send;
    fn drain(
        &self,
        region: &str,
        request: &DrainRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<DrainReport, FailoverError>> + Send;
    fn digest(
        &self,
        region: &str,
        scope: &Scope,
        timeout: Duration,
    ) -> impl Future<Output = Result<Digest, FailoverError>> + Send;
    fn release(
        &self,
        region: &str,
        request: &ReleaseRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ReleaseReport, FailoverError>> + Send;
}

impl Ports for Cluster {
    async fn map(&self) -> Result<OwnershipMap, FailoverError> {
        Cluster::map(self).await
    }

    async fn freeze_slots(
        &self,
        slots: Vec<u32>,
        frozen: bool,
        reason: &str,
    ) -> Result<Outcome, FailoverError> {
        Ok(self.ownership.freeze_slots(slots, frozen, reason).await?)
    }

    async fn transfer_slots(
        &self,
        slots: Vec<SlotAtEpoch>,
        to: &str,
        reason: &str,
    ) -> Result<Outcome, FailoverError> {
        Ok(self.ownership.transfer_slots(slots, to, reason).await?)
    }

    async fn rehome_account(
        &self,
        account: AccountId,
        to: &str,
        expected_epoch: Option<u64>,
        reason: &str,
    ) -> Result<Outcome, FailoverError> {
        Ok(self
            .ownership
            .rehome_account(account, to, expected_epoch, reason)
            .await?)
    }

    async fn drain(
        &self,
        region: &str,
        request: &DrainRequest,
        timeout: Duration,
    ) -> Result<DrainReport, FailoverError> {
        self.post(region, paths::DRAIN, request, timeout).await
    }

    async fn digest(
        &self,
        region: &str,
        scope: &Scope,
        timeout: Duration,
    ) -> Result<Digest, FailoverError> {
        self.post(region, paths::DIGEST, scope, timeout).await
    }

    async fn release(
        &self,
        region: &str,
        request: &ReleaseRequest,
        timeout: Duration,
    ) -> Result<ReleaseReport, FailoverError> {
        self.post(region, paths::RELEASE, request, timeout).await
    }
}
