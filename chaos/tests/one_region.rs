//! `ledger-local up --regions 1`: a deployment of one region starts (its proxy has no
//! links, its replicator no region to apply from) and serves writes and reads; and
//! `failover thaw` thaws slots a failed switchover left frozen.

mod common;

use std::time::Duration;

use common::{eventually, Regions};
use serde_json::json;

#[tokio::test]
async fn a_one_region_deployment_starts_and_serves() -> anyhow::Result<()> {
    let regions = Regions::start_n("one-region", 1, &[]).await?;
    let id = regions.open(0, 0, "12.50").await?;
    let (sample, body) = regions
        .client(0)
        .post(
            "withdraw",
            &format!("/v1/accounts/{id}/withdrawals"),
            &json!({"amount": "2.50"}),
            None,
            None,
        )
        .await?;
    assert_eq!(sample.status, 201, "{body}");
    assert_eq!(body["balance"], "10.00");
    // Its relay publishes the region's events (nobody else reads them).
    let relay = format!(
        "http://{}/metrics",
        regions.deployment.regions[0].replicator_metrics
    );
    eventually("events published", Duration::from_secs(15), || async {
        chaos::wait::metric(&relay, "ledger_replication_events_published_total")
            .await
            .ok()
            .filter(|n| *n >= 3.0)
    })
    .await?;

    // Slots left frozen (as by a switchover whose rollback failed): writes refused
    // until `failover thaw`, with the range syntax its error message gives.
    let ownership = regions.ownership();
    ownership
        .freeze_slots((0..64).collect(), true, "test: a failed rollback")
        .await?;
    assert!(ownership.map().await?.slots.iter().all(|s| s.frozen));
    let thaw = std::process::Command::new(common::bin_dir().join("failover"))
        .arg("--deployment")
        .arg(&regions.deployment.data_dir)
        .args(["thaw", "--slots", "0-31,32-63"])
        .output()?;
    assert!(thaw.status.success(), "{thaw:?}");
    let said = String::from_utf8_lossy(&thaw.stdout);
    assert!(said.contains("thawed slots 0-63"), "{said}");
    assert!(ownership.map().await?.slots.iter().all(|s| !s.frozen));
    Ok(())
}
