//! The tests' client of one node: `ledger-client`'s [`RegionClient`] (one attempt, the
//! answer as the node gave it) with the helpers the tests share.

use std::time::Duration;

use anyhow::Context;
use ledger_client::{RawAnswer, RegionClient, Request};
use ledger_wire::api::{Account, Entry};
use ledger_wire::{AccountId, Problem};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiClient {
    inner: RegionClient,
}

/// One answer of the API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// Routing headers, content type and body, as the node sent them.
    pub answer: RawAnswer,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        Ok(self.answer.body.clone())
    }

    pub fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.answer.body.clone())
            .with_context(|| format!("parse {}: {}", std::any::type_name::<T>(), self.text()))
    }

    /// The body as sent: JSON as text, or the text of a body that is not JSON.
    pub fn text(&self) -> String {
        match &self.answer.body {
            Value::String(text) => text.clone(),
            json => json.to_string(),
        }
    }

    /// The problem document of an error answer.
    pub fn problem(&self) -> anyhow::Result<Problem> {
        let content_type = self.answer.content_type.clone().unwrap_or_default();
        anyhow::ensure!(
            content_type == "application/problem+json",
            "expected a problem document, got {content_type}: {}",
            self.text()
        );
        self.parse()
    }

    /// The problem's `type`, e.g. `/problems/insufficient-funds`.
    pub fn problem_type(&self) -> String {
        self.problem()
            .map(|p| p.problem_type)
            .unwrap_or_else(|e| format!("<{e}>"))
    }
}

/// An attempt unanswered after this long fails the test's request.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    pub fn new(base: impl Into<String>) -> anyhow::Result<Self> {
        let base = base.into();
        let inner = RegionClient::over_http(crate::REGION, &base, None, ATTEMPT_TIMEOUT)
            .context("build an HTTP client")?;
        Ok(ApiClient { inner })
    }

    pub fn base(&self) -> &str {
        self.inner.url()
    }

    /// Sends one request to the node.
    pub async fn send(&self, request: &Request) -> anyhow::Result<Reply> {
        let reply = self.inner.send(request).await.map_err(|failure| {
            anyhow::anyhow!("{:?} {}: {failure:?}", request.method, request.path)
        })?;
        let status = StatusCode::from_u16(reply.answer.status)
            .with_context(|| format!("status {}", reply.answer.status))?;
        Ok(Reply {
            status,
            answer: reply.answer,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(&Request::get(path)).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(&Request::post(path, body.clone()).with_key(key))
            .await
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let ready = harness::wait_until(timeout, Duration::from_millis(50), || async {
            let reply = self.get("/readyz").await.ok()?;
            (reply.status == StatusCode::OK).then_some(())
        })
        .await;
        ready.with_context(|| format!("{} not ready within {timeout:?}", self.base()))
    }

    /// Opens an account and returns it; fails unless the answer is 201.
    pub async fn open_account(&self, currency: &str) -> anyhow::Result<Account> {
        let key = uuid::Uuid::new_v4().to_string();
        let reply = self
            .post("/v1/accounts", &key, &json!({ "currency": currency }))
            .await?;
        anyhow::ensure!(
            reply.status == StatusCode::CREATED,
            "open account: {reply:?}"
        );
        reply.parse()
    }

    pub async fn deposit(&self, id: AccountId, amount: &str, key: &str) -> anyhow::Result<Reply> {
        self.post(
            &format!("/v1/accounts/{id}/deposits"),
            key,
            &json!({ "amount": amount }),
        )
        .await
    }

    pub async fn withdraw(&self, id: AccountId, amount: &str, key: &str) -> anyhow::Result<Reply> {
        self.post(
            &format!("/v1/accounts/{id}/withdrawals"),
            key,
            &json!({ "amount": amount }),
        )
        .await
    }

    pub async fn transfer(
        &self,
        from: AccountId,
        to: AccountId,
        amount: &str,
        key: &str,
    ) -> anyhow::Result<Reply> {
        self.post(
            "/v1/transfers",
            key,
            &json!({ "from": from, "to": to, "amount": amount }),
        )
        .await
    }

    /// Deposits and fails unless the deposit was booked.
    pub async fn fund(&self, id: AccountId, amount: &str) -> anyhow::Result<Entry> {
        let reply = self
            .deposit(id, amount, &uuid::Uuid::new_v4().to_string())
            .await?;
        anyhow::ensure!(reply.status == StatusCode::CREATED, "deposit: {reply:?}");
        reply.parse()
    }

    pub async fn account(&self, id: AccountId) -> anyhow::Result<Account> {
        let reply = self.get(&format!("/v1/accounts/{id}")).await?;
        anyhow::ensure!(reply.status == StatusCode::OK, "get account: {reply:?}");
        reply.parse()
    }
}
