//! `failover dlq list|show|replay`: the dead letters of each region's replicator, shown
//! to an SRE and replayed through the apply rules after a fix.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use failover::Cluster;
use ledger_wire::dlq::{
    self, DeadLetter, DeadLetterDetail, DeadLetters, ReplayReport, ReplayRequest,
};

use crate::cli::DlqAction;

/// Reading a DLQ topic to its end can take a while on a busy broker.
const TIMEOUT: Duration = Duration::from_secs(30);

fn line(letter: &DeadLetter) -> String {
    let age = letter.at.map_or("?".to_owned(), |at| {
        format!("{}s ago", (Utc::now() - at).num_seconds())
    });
    let event = match (&letter.event_type, &letter.account, &letter.event_id) {
        (Some(kind), Some(account), Some(id)) => format!("{kind} of {account} ({id})"),
        _ => "unreadable payload".to_owned(),
    };
    let state = match &letter.replay {
        None => "waiting".to_owned(),
        Some(r) if r.settled() => format!("replayed: {} by {} at {}", r.outcome, r.by, r.at),
        Some(r) => format!(
            "waiting (replay {} by {} failed: {})",
            r.attempts,
            r.by,
            r.detail.as_deref().unwrap_or("poison")
        ),
    };
    format!(
        "  {:<8} {:<10} {event}\n           error: {}\n           read from: {}\n           {state}",
        letter.id.to_string(),
        age,
        letter.error,
        letter.source.as_deref().unwrap_or("(released from waiting)"),
    )
}

pub async fn run(cluster: &Cluster, action: &DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List { region, json } => {
            let regions: Vec<String> = match region {
                Some(r) => vec![r.clone()],
                None => cluster.replicator_regions().map(str::to_owned).collect(),
            };
            anyhow::ensure!(
                !regions.is_empty(),
                "no replicator addresses: give --deployment or --replicator region=http://host:port"
            );
            let mut all = Vec::new();
            for r in &regions {
                let letters: DeadLetters = cluster
                    .replicator_get(r, dlq::LIST, TIMEOUT)
                    .await
                    .with_context(|| format!("list the dead letters of {r}"))?;
                all.push(letters);
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            for letters in &all {
                println!(
                    "{}: {} letters, {} waiting{}",
                    letters.region,
                    letters.letters.len(),
                    letters.waiting(),
                    letters
                        .oldest_waiting()
                        .map_or(String::new(), |at| format!(", oldest waiting since {at}"))
                );
                for letter in &letters.letters {
                    println!("{}", line(letter));
                }
            }
        }
        DlqAction::Show { region, letter } => {
            let detail: DeadLetterDetail = cluster
                .replicator_get(region, &dlq::show(*letter), TIMEOUT)
                .await
                .with_context(|| format!("show letter {letter} of {region}"))?;
            println!("{}", line(&detail.letter));
            println!("key: {}", detail.key.as_deref().unwrap_or("(none)"));
            println!("headers:");
            for (name, value) in &detail.headers {
                println!("  {name}: {value}");
            }
            println!("payload:");
            match serde_json::from_str::<serde_json::Value>(&detail.payload) {
                Ok(value) => println!("{}", serde_json::to_string_pretty(&value)?),
                Err(_) => println!("{}", detail.payload),
            }
        }
        DlqAction::Replay {
            region,
            letters,
            all: _,
            by,
            json,
        } => {
            let request = ReplayRequest {
                letters: letters.clone(),
                by: by.clone(),
            };
            let report: ReplayReport = cluster
                .replicator_post(region, dlq::REPLAY, &request, TIMEOUT)
                .await
                .with_context(|| format!("replay dead letters of {region}"))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if report.results.is_empty() {
                    println!("{region}: no letter is waiting");
                }
                for result in &report.results {
                    println!(
                        "{region} {}: {}{}",
                        result.id,
                        result.outcome,
                        result
                            .detail
                            .as_deref()
                            .map_or(String::new(), |d| format!(" ({d})"))
                    );
                }
            }
            let stuck: Vec<String> = report
                .results
                .iter()
                .filter(|r| matches!(r.outcome.as_str(), "poison" | "unknown"))
                .map(|r| r.id.to_string())
                .collect();
            anyhow::ensure!(
                stuck.is_empty(),
                "letters still waiting after the replay: {}",
                stuck.join(", ")
            );
        }
    }
    Ok(())
}
