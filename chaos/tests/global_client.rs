//! `ledger-client` against three real regions: the region the client finds nearest is
//! killed while the client writes, and every write goes on through another region,
//! each made exactly once (its retries carry the same Idempotency-Key).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::Regions;
use ledger_client::{Breaker, Client, HttpTransport, Request, RetryConfig, RoutingConfig};
use rust_decimal::Decimal;
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writes_through_the_loss_of_its_nearest_region_and_makes_each_write_once(
) -> anyhow::Result<()> {
    let regions = Regions::start("global-client", &[]).await?;
    let names: Vec<String> = (0..3).map(|i| regions.name(i)).collect();
    let mut homes = BTreeMap::new();
    for home in 0..3 {
        homes.insert(regions.open(home, home, "0").await?, home);
    }
    // The client knows one region and learns the others from it.
    let transport = HttpTransport::new(regions.deployment.api_key.clone())?;
    let client = Client::discover(
        transport,
        &regions.deployment.regions[0].api_url,
        RoutingConfig::default(),
        RetryConfig::default(),
    )
    .await?;
    let learned: Vec<String> = client.regions().into_iter().map(|r| r.name).collect();
    ensure!(
        learned == names,
        "discovered {learned:?}, the deployment has {names:?}"
    );

    // Warm up: the client measures every region and settles on one.
    let any = homes.keys().next().context("an account")?.clone();
    for _ in 0..10 {
        let answer = client.read_account(&any).await?;
        ensure!(answer.status == 200, "read: {answer:?}");
    }
    let victim = client.nearest().context("a nearest region")?;
    let victim_index = names.iter().position(|n| *n == victim).context("victim")?;
    let targets: Vec<String> = homes
        .iter()
        .filter(|(_, home)| **home != victim_index)
        .map(|(id, _)| id.clone())
        .collect();

    let mut acknowledged: BTreeMap<String, Decimal> = BTreeMap::new();
    let deposit = |n: usize| {
        let account = targets[n % targets.len()].clone();
        let amount = Decimal::new(100 + i64::try_from(n).unwrap_or(0), 2);
        (account, amount)
    };
    for n in 0..10 {
        let (account, amount) = deposit(n);
        let answer = client
            .send(Request::post(
                format!("/v1/accounts/{account}/deposits"),
                json!({ "amount": amount.to_string() }),
            ))
            .await?;
        ensure!(answer.status == 201, "deposit before the kill: {answer:?}");
        *acknowledged.entry(account).or_default() += amount;
    }

    regions.deployment.kill_region(&victim)?;
    let mut attempts_after_kill = Vec::new();
    for n in 10..40 {
        let (account, amount) = deposit(n);
        let answer = client
            .send(Request::post(
                format!("/v1/accounts/{account}/deposits"),
                json!({ "amount": amount.to_string() }),
            ))
            .await
            .with_context(|| format!("deposit {n}, after {victim} was killed"))?;
        ensure!(
            answer.status == 201,
            "deposit {n} after the kill: {answer:?}"
        );
        ensure!(answer.region != victim, "answered by the killed region");
        attempts_after_kill.push(answer.attempts);
        *acknowledged.entry(account).or_default() += amount;
    }
    ensure!(
        attempts_after_kill[0] >= 2,
        "the first write after the kill went to {victim} first and on from there: {attempts_after_kill:?}"
    );
    let state = client.regions();
    let victim_state = state
        .iter()
        .find(|r| r.name == victim)
        .context("victim state")?;
    ensure!(
        matches!(victim_state.breaker, Breaker::Open { .. }),
        "the killed region's breaker is open: {victim_state:?}"
    );
    ensure!(
        attempts_after_kill[5..].iter().all(|a| *a == 1),
        "once the breaker is open no request goes to {victim}: {attempts_after_kill:?}"
    );

    // Each acknowledged write made once: the survivors hold exactly the sums.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim_index).collect();
    let state = regions.wait_converged(&survivors, CONVERGE).await?;
    for (account, sum) in &acknowledged {
        let (balance, _) = state.get(account).context("account in the survivors")?;
        ensure!(
            balance == sum,
            "{account}: balance {balance}, acknowledged deposits {sum}"
        );
    }
    Ok(())
}
