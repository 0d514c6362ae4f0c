//! `failover`: the SRE command line. Parses arguments, sets up logging, and calls the
//! library; exits non-zero when an operation fails or a drill breaks an invariant.

use std::collections::BTreeMap;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use failover::drill::{
    self,
    workload::{Mix, WorkloadOptions},
    DrillOptions, Scenario,
};
use failover::promote::PromoteOptions;
use failover::switchover::{MoveReport, SwitchoverOptions};
use failover::{audit, status, Cluster, Targets};
use ledger_wire::failover::{AcknowledgeRequest, LateEvent};
use ledger_wire::internal::failover as paths;

use service_kit::telemetry;

mod api_keys;
mod cli;
mod dead_letters;

use cli::{Cli, Command, ScenarioName, WorkloadName};

fn targets(cli: &Cli) -> anyhow::Result<Targets> {
    if let Some(dir) = &cli.deployment {
        return Ok(Targets::from_local(dir)?);
    }
    let nodes = cli
        .nodes
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .map(|(r, u)| (r.to_owned(), u.trim_end_matches('/').to_owned()))
                .with_context(|| format!("--node {spec}: expected region=http://host:port"))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    anyhow::ensure!(
        !cli.voters.is_empty(),
        "give --deployment, or --voters and --node"
    );
    anyhow::ensure!(!nodes.is_empty(), "give --node region=url for every region");
    let replicators = cli
        .replicators
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .map(|(r, u)| (r.to_owned(), u.trim_end_matches('/').to_owned()))
                .with_context(|| format!("--replicator {spec}: expected region=http://host:port"))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(Targets {
        voters: cli.voters.clone(),
        nodes,
        replicators,
        secret: cli
            .secret
            .clone()
            .context("give --secret or LEDGER_INTERNAL_SECRET")?,
        api_key: cli.api_key.clone(),
        ca_file: cli.ca_file.clone(),
    })
}

fn print_moves(moves: &[MoveReport]) {
    for m in moves {
        println!(
            "moved {} slots and {} accounts {} -> {} at epoch {}: writes refused for at most {} ms \
             (drain {} ms: {} transactions waited, {} outbox rows published; catch-up {} ms; transfer {} ms; release {} ms)",
            m.slots.len(), m.accounts.len(), m.from, m.to, m.epoch, m.unavailable_ms, m.drain_ms,
            m.drain.as_ref().map_or(0, |d| d.waited_transactions),
            m.drain.as_ref().map_or(0, |d| d.published_while_draining),
            m.catch_up_ms, m.transfer_ms, m.release_ms
        );
    }
}

/// The moves of a region switchover or failback; when one move failed, the moves
/// already done are printed before the error (they happened: the map shows them).
fn finish_moves(
    result: Result<Vec<MoveReport>, failover::switchover::Partial>,
) -> anyhow::Result<Vec<MoveReport>> {
    match result {
        Ok(moves) => Ok(moves),
        Err(partial) => {
            if !partial.done.is_empty() {
                eprintln!("done before the failure:");
                print_moves(&partial.done);
            }
            Err(partial.into())
        }
    }
}

/// Runs `operation` until it is not refused (a live lease, a region not yet
/// reconciled) and the ownership service can serve it (no voter can while the voters
/// elect a leader, as after the loss of the leader's region), for at most `wait_s`
/// seconds, saying what it waits for.
async fn retry_refused<T, F, Fut>(
    wait_s: u64,
    mut operation: F,
) -> Result<T, failover::FailoverError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, failover::FailoverError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(wait_s);
    let mut said = String::new();
    loop {
        match operation().await {
            Err(
                failover::FailoverError::Refused(why)
                | failover::FailoverError::Ownership(ownership_client::ClientError::Unavailable(why)),
            ) if std::time::Instant::now() < deadline => {
                if why != said {
                    eprintln!("waiting: {why}");
                    said = why;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn local_hook(cli: &Cli, verb: &str) -> Option<String> {
    let dir = cli.deployment.as_ref()?;
    let exe = std::env::current_exe().ok()?;
    let local = exe.parent()?.join("ledger-local");
    Some(format!(
        "{} --data-dir {} {verb} {{region}}",
        local.display(),
        dir.display()
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // The key file needs no running deployment.
    if let Command::Keys { file, action } = &cli.command {
        return api_keys::run(file.as_deref(), cli.deployment.as_deref(), action);
    }
    let targets = targets(&cli)?;
    let cluster = Cluster::new(&targets, "failover-cli")?;
    match &cli.command {
        Command::Status { json } => {
            let report = status::status(&cluster).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
        }
        Command::Switchover {
            region,
            slots,
            account,
            to,
            timeout_ms,
        } => {
            let options = SwitchoverOptions {
                timeout: Duration::from_millis(*timeout_ms),
            };
            let moves = match (region, account) {
                (Some(region), _) => finish_moves(
                    failover::switchover::switch_region(&cluster, region, to, options).await,
                )?,
                (None, Some(account)) => {
                    vec![failover::switchover::rehome(&cluster, *account, to, options).await?]
                }
                (None, None) => {
                    vec![failover::switchover::switch_slots(&cluster, slots, to, options).await?]
                }
            };
            print_moves(&moves);
        }
        Command::Thaw { slots, all } => {
            let slots: Vec<u32> = if *all {
                let map = cluster.map().await?;
                (0u32..)
                    .zip(&map.slots)
                    .filter(|(_, owner)| owner.frozen)
                    .map(|(slot, _)| slot)
                    .collect()
            } else {
                slots.iter().flatten().copied().collect()
            };
            if slots.is_empty() && !*all {
                anyhow::bail!("name the slots (--slots 1-4,9) or pass --all");
            }
            if slots.is_empty() {
                println!("no frozen slots to thaw");
            } else {
                let version = failover::switchover::thaw(&cluster, &slots).await?;
                println!(
                    "thawed slots {} (map version {version}): their owner serves them again",
                    failover::switchover::slot_list(&slots)
                );
            }
        }
        Command::Rehome {
            account,
            to,
            timeout_ms,
        } => {
            let options = SwitchoverOptions {
                timeout: Duration::from_millis(*timeout_ms),
            };
            print_moves(&[failover::switchover::rehome(&cluster, *account, to, options).await?]);
        }
        Command::Promote {
            region,
            force,
            auto,
            detect_after_ms,
            apply_timeout_ms,
            wait_s,
        } => {
            let apply_timeout = Duration::from_millis(*apply_timeout_ms);
            if *auto {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                failover::promote::auto(
                    &cluster,
                    Duration::from_millis(*detect_after_ms),
                    apply_timeout,
                    shutdown,
                )
                .await?;
            } else {
                let region = region.as_deref().context("--region")?;
                let options = PromoteOptions {
                    force: *force,
                    apply_timeout,
                };
                let report = retry_refused(*wait_s, || {
                    failover::promote::promote(&cluster, region, options)
                })
                .await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
        Command::Reconcile {
            status,
            ack,
            region,
            by,
            note,
            json,
            push,
        } => {
            if let (Some(event), Some(region), Some(by)) = (ack, region, by) {
                let request = AcknowledgeRequest {
                    by: by.clone(),
                    note: note.clone(),
                };
                let event: LateEvent = cluster
                    .post(
                        region,
                        &paths::late_ack(*event),
                        &request,
                        Duration::from_secs(5),
                    )
                    .await?;
                println!("acknowledged: {}", serde_json::to_string(&event)?);
                return Ok(());
            }
            let query = status
                .as_ref()
                .map_or(String::new(), |s| format!("?status={s}"));
            let mut all = Vec::new();
            let regions: Vec<String> = match region {
                Some(r) => vec![r.clone()],
                None => cluster.regions().map(str::to_owned).collect(),
            };
            if *push {
                for r in &regions {
                    let pushed: ledger_wire::failover::LatePush = cluster
                        .post(
                            r,
                            paths::LATE_PUSH,
                            &serde_json::json!({}),
                            Duration::from_secs(30),
                        )
                        .await?;
                    println!(
                        "{r}: handed to owners {:?}, {} already decided there{}",
                        pushed.handed_off,
                        pushed.already_decided,
                        if pushed.failed.is_empty() {
                            String::new()
                        } else {
                            format!("; FAILED: {}", pushed.failed.join("; "))
                        }
                    );
                }
            }
            for r in regions {
                let events: Vec<LateEvent> = cluster
                    .get(
                        &r,
                        &format!("{}{query}", paths::LATE),
                        Duration::from_secs(5),
                    )
                    .await?;
                all.extend(events.into_iter().map(|e| (r.clone(), e)));
            }
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &all.iter()
                            .map(|(r, e)| serde_json::json!({"region": r, "event": e}))
                            .collect::<Vec<_>>()
                    )?
                );
            } else {
                println!(
                    "{:<10} {:<36} {:<22} {:>4} {:<16} {:>9} {:<18} detail",
                    "region", "event", "account", "seq", "type", "amount", "status"
                );
                for (r, e) in all {
                    println!(
                        "{:<10} {:<36} {:<22} {:>4} {:<16} {:>9} {:<18} {}",
                        r,
                        e.event_id,
                        e.account,
                        e.seq,
                        e.event_type,
                        e.amount.unwrap_or_default(),
                        e.status,
                        e.detail.unwrap_or_default()
                    );
                }
            }
        }
        Command::Failback {
            region,
            timeout_ms,
            wait_s,
        } => {
            let options = SwitchoverOptions {
                timeout: Duration::from_millis(*timeout_ms),
            };
            let moves = retry_refused(*wait_s, || async {
                match failover::switchover::failback(&cluster, region, options).await {
                    // Refused before any move: the readiness check, worth waiting for.
                    Err(p) if p.done.is_empty() => Err(p.error),
                    other => Ok(other),
                }
            })
            .await?;
            print_moves(&finish_moves(moves)?);
        }
        Command::Dlq { action } => dead_letters::run(&cluster, action).await?,
        // Answered before the deployment was looked up.
        Command::Keys { .. } => {}
        Command::Audit => {
            let snapshots = audit::snapshots(&cluster).await?;
            let history = audit::history(&cluster).await?;
            let report = audit::check_invariants(&snapshots, &history, &[], &Default::default());
            for check in &report.checks {
                println!("[{}] {}: {}", check.label(), check.name, check.summary);
                for example in &check.examples {
                    println!("       {example}");
                }
            }
            if !report.ok() {
                anyhow::bail!("invariants broken: {}", report.failed().join(", "));
            }
        }
        Command::Drill(args) => {
            let to = || args.to.clone().context("this scenario needs --to");
            let region = || args.region.clone().context("this scenario needs --region");
            let scenario = match args.scenario {
                ScenarioName::Switchover => Scenario::Switchover {
                    region: region()?,
                    to: to()?,
                },
                ScenarioName::Rehome => Scenario::Rehome {
                    region: region()?,
                    to: to()?,
                },
                ScenarioName::KillPromoteReturn => Scenario::KillPromoteReturn {
                    region: region()?,
                    down_for_ms: args.down_for_s * 1000,
                },
                ScenarioName::KillCycles => Scenario::KillCycles {
                    regions: region()?.split(',').map(str::to_owned).collect(),
                    cycles: args.cycles,
                    down_for_ms: args.down_for_s * 1000,
                },
                ScenarioName::Schedule => {
                    let path = args
                        .schedule_file
                        .as_ref()
                        .context("the schedule scenario needs --schedule-file")?;
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("read {}", path.display()))?;
                    let schedule = serde_json::from_str(&text)
                        .with_context(|| format!("parse the fault schedule {}", path.display()))?;
                    Scenario::Schedule { schedule }
                }
            };
            let options = DrillOptions {
                scenario,
                workload: WorkloadOptions {
                    rate_per_sec: args.rate,
                    accounts_per_region: args.accounts_per_region,
                    ack_replicated: args.ack_replicated,
                    concurrency: 64,
                    mix: match args.workload {
                        WorkloadName::Deposits => Mix::Payments,
                        WorkloadName::Transfers => Mix::Bank,
                        WorkloadName::Mixed => Mix::Mixed,
                    },
                },
                warmup: Duration::from_secs(args.warmup_s),
                observe: Duration::from_secs(args.observe_s),
                heal_timeout: Duration::from_secs(args.heal_timeout_s),
                kill_cmd: args.kill_cmd.clone().or_else(|| local_hook(&cli, "kill")),
                restart_cmd: args
                    .restart_cmd
                    .clone()
                    .or_else(|| local_hook(&cli, "restart")),
                before_audit_cmd: args.before_audit_cmd.clone(),
                pause_cmd: args.pause_cmd.clone(),
                funding: args.funding.clone(),
                report_dir: args.report_dir.clone(),
            };
            let report = drill::run(&targets, options).await?;
            print!("{}", drill::report::summary(&report));
            println!(
                "report: {}/report.html and report.json",
                args.report_dir.display()
            );
            if !report.passed() {
                anyhow::bail!(
                    "drill broke invariants: {}",
                    report.invariants.failed().join(", ")
                );
            }
        }
    }
    Ok(())
}
