//! A minimal client of the public API, returning status, headers and JSON as sent.

use std::time::Duration;

use anyhow::Context;
use ledger_wire::api::{Account, Entry};
use ledger_wire::{AccountId, Problem, HEADER_IDEMPOTENCY_KEY};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

/// One answer of the API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.text).with_context(|| format!("parse JSON: {}", self.text))
    }

    pub fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.text)
            .with_context(|| format!("parse {}: {}", std::any::type_name::<T>(), self.text))
    }

    /// The problem document of an error answer.
    pub fn problem(&self) -> anyhow::Result<Problem> {
        let content_type = self.header("content-type").unwrap_or_default();
        anyhow::ensure!(
            content_type == "application/problem+json",
            "expected a problem document, got {content_type}: {}",
            self.text
        );
        self.parse()
    }

    /// The problem's `type`, e.g. `/problems/insufficient-funds`.
    pub fn problem_type(&self) -> String {
        self.problem()
            .map(|p| p.problem_type)
            .unwrap_or_else(|e| format!("<{e}>"))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl ApiClient {
    pub fn new(base: impl Into<String>) -> Self {
        ApiClient {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` is sent as JSON text when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header(HEADER_IDEMPOTENCY_KEY, key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .with_context(|| format!("read {method} {path}"))?;
        Ok(Reply {
            status,
            headers,
            text,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, Some(key), Some(&body.to_string()))
            .await
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let ready = harness::wait_until(timeout, Duration::from_millis(50), || async {
            let reply = self.get("/readyz").await.ok()?;
            (reply.status == StatusCode::OK).then_some(())
        })
        .await;
        ready.with_context(|| format!("{} not ready within {timeout:?}", self.base))
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
