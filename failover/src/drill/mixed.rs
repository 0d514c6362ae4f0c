//! What each tick of a drill's workload sends ([`draw`]), and the mixed workload's
//! operations that are not money-moving writes ([`Call`]): account opens, and reads
//! that carry a promise the checker holds the ledger to (`ledger_checker::reads`):
//! `min_seq`, the last seq this workload saw acknowledged for the account, read at any
//! region (read-your-writes for a client that moves between regions), or
//! `consistency=strong` (served by the account's home). Reads are sent once: a
//! refusal (409 below `min_seq`, 503) is an answer, not a failure to retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ledger_client::Request;
use rand::Rng;
use serde_json::{json, Value};

use super::workload::{ms, post, Account, Attempt, Mix, RegionClients};

/// Per account, the highest seq the workload saw acknowledged: the `min_seq` a client
/// session would carry.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, i64>>>);

impl Sessions {
    pub fn saw(&self, account: &str, seq: i64) {
        if let Ok(mut seen) = self.0.lock() {
            let last = seen.entry(account.to_owned()).or_insert(seq);
            *last = (*last).max(seq);
        }
    }

    pub fn last(&self, account: &str) -> Option<i64> {
        self.0.lock().ok()?.get(account).copied()
    }
}

/// One operation of a workload.
#[derive(Debug, Clone)]
pub enum Step {
    Write(WriteSpec),
    Once(Once),
}

/// A deposit, withdrawal or transfer, retried with its key until answered.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub account: Account,
    pub to: Option<String>,
    pub via: String,
    pub kind: &'static str,
    pub path: String,
    pub body: Value,
}

/// A read or an open, sent once.
#[derive(Debug, Clone)]
pub enum Once {
    Read {
        account: Account,
        via: String,
        min_seq: Option<i64>,
        strong: bool,
    },
    /// A new account homed in `home`, asked at `via`.
    Open { via: String, home: String },
}

/// Draws the next operation of `mix` (None: no accounts).
pub fn draw(
    rng: &mut impl Rng,
    mix: Mix,
    accounts: &[Account],
    regions: &[String],
    sessions: &Sessions,
) -> Option<Step> {
    let pick = |rng: &mut dyn rand::RngCore| accounts.get(rng.random_range(0..accounts.len()));
    if accounts.is_empty() || regions.is_empty() {
        return None;
    }
    let account = pick(rng)?.clone();
    let via = regions[rng.random_range(0..regions.len())].clone();
    let share = match mix {
        Mix::Bank => 0,
        Mix::Payments => 25 + rng.random_range(0..30),
        Mix::Mixed => rng.random_range(0..100),
    };
    let cents: u32 = if share < 25 {
        rng.random_range(100..=3000)
    } else {
        rng.random_range(1..500)
    };
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    let write = |kind: &'static str, path: String, body: Value, to: Option<String>| {
        Step::Write(WriteSpec {
            account: account.clone(),
            to,
            via: via.clone(),
            kind,
            path,
            body,
        })
    };
    Some(match share {
        0..25 => match (0..16)
            .filter_map(|_| pick(rng))
            .find(|other| other.id != account.id)
        {
            Some(to) => write(
                "transfer",
                "/v1/transfers".to_owned(),
                json!({"from": account.id, "to": to.id, "amount": amount}),
                Some(to.id.clone()),
            ),
            // One account alone has no one to pay: it takes a deposit instead.
            None => write(
                "deposit",
                format!("/v1/accounts/{}/deposits", account.id),
                json!({ "amount": amount }),
                None,
            ),
        },
        25..45 => write(
            "deposit",
            format!("/v1/accounts/{}/deposits", account.id),
            json!({ "amount": amount }),
            None,
        ),
        45..55 => write(
            "withdrawal",
            format!("/v1/accounts/{}/withdrawals", account.id),
            json!({ "amount": amount }),
            None,
        ),
        55..60 => Step::Once(Once::Open {
            via,
            home: regions[rng.random_range(0..regions.len())].clone(),
        }),
        60..80 => {
            let min_seq = sessions.last(&account.id);
            Step::Once(Once::Read {
                strong: min_seq.is_none(),
                account,
                via,
                min_seq,
            })
        }
        _ => Step::Once(Once::Read {
            account,
            via,
            min_seq: None,
            strong: true,
        }),
    })
}

/// Runs reads and opens, recording each as one attempt.
pub struct Call {
    pub clients: Arc<RegionClients>,
    pub clock: Instant,
    pub records: Arc<Mutex<Vec<Attempt>>>,
}

impl Call {
    pub async fn run(&self, step: Once) {
        let key = uuid::Uuid::new_v4().to_string();
        let started = self.clock.elapsed();
        let (attempt, answer) = match step {
            Once::Read {
                account,
                via,
                min_seq,
                strong,
            } => {
                let mut query = Vec::new();
                if let Some(seq) = min_seq {
                    query.push(format!("min_seq={seq}"));
                }
                if strong {
                    query.push("consistency=strong".to_owned());
                }
                let mut path = format!("/v1/accounts/{}", account.id);
                if !query.is_empty() {
                    path = format!("{path}?{}", query.join("&"));
                }
                let answer = match self.clients.get(&via) {
                    Some(client) => client
                        .send(&Request::get(path))
                        .await
                        .ok()
                        .map(|reply| reply.answer),
                    None => None,
                };
                let attempt = Attempt {
                    account: account.id,
                    slot: account.slot,
                    via,
                    kind: "read",
                    key: key.clone(),
                    min_seq,
                    strong,
                    ..Attempt::default()
                };
                (attempt, answer)
            }
            Once::Open { via, home } => {
                let body = json!({"currency": "EUR", "home_region": home});
                let answer = match self.clients.get(&via) {
                    Some(client) => post(client, "/v1/accounts", &body, &key, false).await.ok(),
                    None => None,
                };
                let attempt = Attempt {
                    account: answer
                        .as_ref()
                        .and_then(|a| a.body["id"].as_str())
                        .unwrap_or("-")
                        .to_owned(),
                    via,
                    kind: "open",
                    key: key.clone(),
                    ..Attempt::default()
                };
                (attempt, answer)
            }
        };
        let answer = answer.unwrap_or_default();
        let (status, body) = (answer.status, &answer.body);
        let attempt = Attempt {
            start_ms: ms(started),
            end_ms: ms(self.clock.elapsed()),
            status,
            error: match status {
                0 => Some("unreachable".to_owned()),
                200 | 201 => None,
                _ => Some(answer.problem()),
            },
            seq: (status == 200).then(|| body["seq"].as_i64()).flatten(),
            epoch: (status == 200).then(|| body["epoch"].as_i64()).flatten(),
            ..attempt
        };
        if let Ok(mut records) = self.records.lock() {
            records.push(attempt);
        }
    }
}
