//! API keys across a real three-region deployment (`up --api-keys`): keys are
//! configuration every region reads, so a key made or revoked with `failover keys`
//! takes effect in every region; a key is checked where the client enters, and the
//! calls between regions (a forwarded write, the saga of a cross-region transfer) go on
//! signed, without it.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use common::{bin_dir, eventually, Regions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn keys(regions: &Regions, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(bin_dir().join("failover"))
        .arg("--deployment")
        .arg(&regions.deployment.data_dir)
        .arg("keys")
        .args(args)
        .output()
        .context("run failover keys")?;
    anyhow::ensure!(
        output.status.success(),
        "failover keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// The status of `GET /v1/accounts/{account}` at region `i` with `key` (or none).
async fn read_status(regions: &Regions, i: usize, account: &str, key: Option<&str>) -> Option<u16> {
    let mut request = reqwest::Client::new().get(format!(
        "{}/v1/accounts/{account}",
        regions.deployment.regions[i].api_url
    ));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    Some(request.send().await.ok()?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hold_in_every_region_and_never_block_calls_between_regions() -> anyhow::Result<()> {
    let regions = Regions::start_keyed("api-keys").await?;
    let key = regions
        .deployment
        .api_key
        .clone()
        .context("a keyed deployment has a key")?;

    // Without a key nothing moves, in any region.
    for i in 0..3 {
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/v1/accounts",
                regions.deployment.regions[i].api_url
            ))
            .header("idempotency-key", "keyless")
            .json(&json!({"currency": "EUR"}))
            .send()
            .await?;
        assert_eq!(answer.status(), 401, "region {i} took a keyless write");
    }

    // With the key: an account homed in region 1 opened and funded through region 0
    // (forwarded to the home), and a transfer to region 2's account (a saga between
    // regions, whose steps carry no key).
    let from = regions.open(0, 1, "100.00").await?;
    let to = regions.open(2, 2, "0").await?;
    let (status, transfer) = regions.transfer(0, &from, &to, "40.00").await?;
    assert!(
        status == 201 || status == 202,
        "transfer: {status} {transfer}"
    );
    let converged = regions.wait_converged(&[0, 1, 2], WAIT).await?;
    assert_eq!(
        converged[&to].0.to_string(),
        "40.00",
        "the credit never arrived"
    );
    assert_eq!(converged[&from].0.to_string(), "60.00");

    // A read-only key made with the tool works in every region once they read the file.
    let made = keys(
        &regions,
        &["new", "--tenant", "auditor", "--scopes", "read"],
    )?;
    let reader = String::from_utf8(made.stdout)?.trim().to_owned();
    for i in 0..3 {
        eventually(&format!("region {i} accepts the new key"), WAIT, || async {
            (read_status(&regions, i, &to, Some(&reader)).await? == 200).then_some(())
        })
        .await?;
    }
    let write = reqwest::Client::new()
        .post(format!(
            "{}/v1/accounts/{to}/deposits",
            regions.deployment.regions[1].api_url
        ))
        .bearer_auth(&reader)
        .header("idempotency-key", "reader-write")
        .json(&json!({"amount": "1.00"}))
        .send()
        .await?;
    assert_eq!(write.status(), 403, "a read-only key wrote");

    // Revoked with the tool: refused in every region, while the deployment's key goes on.
    let listed = String::from_utf8(keys(&regions, &["list"])?.stdout)?;
    let id = listed
        .lines()
        .find(|l| l.contains("auditor"))
        .and_then(|l| l.split_whitespace().next())
        .context("the new key is listed")?
        .to_owned();
    keys(&regions, &["revoke", &id])?;
    for i in 0..3 {
        eventually(
            &format!("region {i} refuses the revoked key"),
            WAIT,
            || async { (read_status(&regions, i, &to, Some(&reader)).await? == 401).then_some(()) },
        )
        .await?;
        assert_eq!(read_status(&regions, i, &to, Some(&key)).await, Some(200));
    }
    Ok(())
}
