//! The comparison with the usual alternative, on real processes (`active-passive-bench`
//! in short): a PostgreSQL primary with an asynchronous streaming standby against our
//! regions, under the simulated geography, each losing its first region halfway.

mod common;

use anyhow::{ensure, Context};
use common::Regions;

/// Seconds of traffic per side: ours needs about 15 s after the loss before the lost
/// region's accounts take writes again (lease, then fencing delay, under `--geo`).
const SECONDS: u64 = 44;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_lose_a_region_and_their_figures_say_what_it_cost() -> anyhow::Result<()> {
    let regions = Regions::start_geo("active-passive").await?;
    let deployment = &regions.deployment;
    let alternative = chaos::active_passive::run_alternative(
        deployment,
        SECONDS,
        4,
        chaos::active_passive::Replication::Asynchronous,
    )
    .await?;
    let ours = chaos::active_passive::run_ours(
        deployment,
        SECONDS,
        4,
        chaos::active_passive::OurPromote::WaitForLease,
    )
    .await?;
    chaos::active_passive::print_comparison(&alternative, &ours);
    let lost = deployment.regions[0].name.clone();

    // The alternative: the controller promoted the standby, and every location wrote
    // again through it; nothing acknowledged is missing beyond what its lag held.
    let promotion = alternative
        .promotion
        .context("the alternative's controller never promoted the standby")?;
    ensure!(promotion.promoted_ms >= alternative.run.kill_ms);
    for location in alternative.run.by_location.keys() {
        let after = alternative
            .run
            .kill_to_write(location)
            .with_context(|| format!("active-passive, {location}: no write after the loss"))?;
        ensure!(
            after < 15_000.0,
            "active-passive, {location}: {after} ms from the loss to a write"
        );
    }
    ensure!(alternative.acknowledged > 0 && alternative.missing <= alternative.acknowledged);

    // Ours: the locations whose accounts live elsewhere never stop writing; the lost
    // region's location writes again after the promote and its fencing delay.
    ours.promotion
        .context("our controller never ran failover promote")?;
    for location in ours.run.by_location.keys() {
        let after = ours
            .run
            .kill_to_write(location)
            .with_context(|| format!("ours, {location}: no write after the loss"))?;
        if *location == lost {
            ensure!(
                ours.run.kill_to_write_homed_in(location, &lost).is_some(),
                "ours, {location}: its accounts never took a write after the promote"
            );
        } else {
            ensure!(
                after < 5_000.0 && ours.run.errors(location) == 0,
                "ours, {location}: {after} ms from the loss to a write, {} errors, though its accounts live in a region that survived",
                ours.run.errors(location)
            );
        }
    }
    ensure!(ours.acknowledged > 0);
    Ok(())
}
