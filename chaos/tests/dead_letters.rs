//! Dead letters an SRE can act on, on two real regions: an event region B's apply rules
//! refuse (a constraint planted in B's database) lands in B's DLQ topic and the events
//! after it wait behind the gap; `failover dlq list|show` shows it with its error;
//! a replay before the fix leaves it waiting (and says so with its exit code); after
//! the fix `failover dlq replay --all` applies it through the normal rules, B catches
//! up with A to the cent, and replaying again changes nothing.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use common::{bin_dir, eventually, Regions};
use ledger_wire::dlq::{DeadLetters, ReplayReport};

const CONVERGE: Duration = Duration::from_secs(30);
/// B's database refuses entries of exactly this amount.
const REFUSED: &str = "7.77";

fn failover(regions: &Regions, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(bin_dir().join("failover"))
        .arg("--deployment")
        .arg(&regions.deployment.data_dir)
        .args(["dlq"])
        .args(args)
        .output()
        .context("run failover dlq")
}

fn json_of<T: serde::de::DeserializeOwned>(output: &Output) -> anyhow::Result<T> {
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "read the tool's JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn deposit(regions: &Regions, account: &str, amount: &str) -> anyhow::Result<()> {
    let (status, body) = regions.deposit(0, account, amount).await?;
    anyhow::ensure!(status == 201, "deposit {amount}: {body}");
    Ok(())
}

/// `failover dlq replay --region <region> <which> --by <by> --json`.
fn replay(regions: &Regions, region: &str, which: &str, by: &str) -> anyhow::Result<Output> {
    failover(
        regions,
        &["replay", "--region", region, which, "--by", by, "--json"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_listed_shown_and_replayed_once_after_a_fix() -> anyhow::Result<()> {
    let regions = Regions::start_n("dead-letters", 2, &[]).await?;
    let b = regions.name(1);
    let account = regions.open(0, 0, "10.00").await?;
    regions.wait_converged(&[0, 1], CONVERGE).await?;

    let b_db = regions.db(1).await?;
    b_db.batch_execute(&format!(
        "ALTER TABLE ledger.entries ADD CONSTRAINT planted_refusal
           CHECK (amount <> {REFUSED}) NOT VALID"
    ))
    .await
    .context("plant the refusal")?;
    deposit(&regions, &account, REFUSED).await?;
    deposit(&regions, &account, "1.00").await?;

    // B dead-letters the refused deposit; the one after it waits behind the gap.
    let listed: DeadLetters = eventually("B dead-letters the deposit", CONVERGE, || async {
        let output = failover(&regions, &["list", "--region", &b, "--json"]).ok()?;
        let mut all: Vec<DeadLetters> = json_of(&output).ok()?;
        let letters = all.pop()?;
        (!letters.letters.is_empty()).then_some(letters)
    })
    .await?;
    assert_eq!(listed.letters.len(), 1, "{listed:?}");
    assert_eq!(listed.waiting(), 1);
    let letter = &listed.letters[0];
    assert!(letter.error.contains("planted_refusal"), "{letter:?}");
    assert_eq!(letter.account.as_deref(), Some(account.as_str()));
    assert!(letter
        .source
        .as_deref()
        .is_some_and(|s| s.contains("ledger.events.")));
    let a_state = regions.accounts(0).await?;
    assert_ne!(
        regions.accounts(1).await?.get(&account),
        a_state.get(&account),
        "B must lag A while the letter waits"
    );

    let shown = failover(&regions, &["show", "--region", &b, &letter.id.to_string()])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains("ledger-dlq-error") && text.contains(REFUSED),
        "{text}"
    );

    // Before the fix: the replay is refused again, recorded, and the exit code says so.
    let early = replay(&regions, &b, "--all", "sre-early")?;
    assert!(
        !early.status.success(),
        "a replay that left a letter waiting must fail"
    );
    let report: ReplayReport = json_of(&early)?;
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].outcome, "poison", "{report:?}");

    // The fix, then the replay: B applies the deposit and releases the one behind it.
    b_db.batch_execute("ALTER TABLE ledger.entries DROP CONSTRAINT planted_refusal")
        .await?;
    let fixed = replay(&regions, &b, "--all", "sre-fix")?;
    assert!(
        fixed.status.success(),
        "{}",
        String::from_utf8_lossy(&fixed.stderr)
    );
    let report: ReplayReport = json_of(&fixed)?;
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].outcome, "applied", "{report:?}");
    assert_eq!(report.results[0].event_id, letter.event_id);
    let converged = regions.wait_converged(&[0, 1], CONVERGE).await?;
    assert_eq!(
        converged
            .get(&account)
            .map(|(balance, seq)| (balance.to_string(), *seq)),
        Some(("18.77".to_owned(), 3)),
        "B holds all three deposits, to the cent"
    );

    // Again: nothing waits, the named letter is already settled, balances unchanged.
    let again = replay(&regions, &b, "--all", "sre-again")?;
    assert!(again.status.success());
    assert!(json_of::<ReplayReport>(&again)?.results.is_empty());
    let named = replay(&regions, &b, &letter.id.to_string(), "sre-again")?;
    let report: ReplayReport = json_of(&named)?;
    assert_eq!(report.results[0].outcome, "already", "{report:?}");
    assert_eq!(
        regions.accounts(1).await?,
        converged,
        "a second replay changed B"
    );

    let after: Vec<DeadLetters> =
        json_of(&failover(&regions, &["list", "--region", &b, "--json"])?)?;
    let replay = after[0].letters[0]
        .replay
        .clone()
        .context("the replay is recorded")?;
    assert_eq!(
        (replay.by.as_str(), replay.outcome.as_str(), replay.attempts),
        ("sre-fix", "applied", 2)
    );
    assert_eq!(after[0].waiting(), 0);
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        regions.deployment.regions[1].replicator_metrics
    ))
    .await?
    .text()
    .await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ledger_replication_dlq_waiting") && l.ends_with(" 0")),
        "the waiting gauge reads 0 after the replay"
    );

    // The routes refuse unsigned callers.
    let unsigned = reqwest::get(format!(
        "http://{}/internal/v1/dlq",
        regions.deployment.regions[1].replicator_metrics
    ))
    .await?;
    assert_eq!(unsigned.status(), 401);
    Ok(())
}
