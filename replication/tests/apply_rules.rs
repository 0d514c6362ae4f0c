//! The apply rules (`ledger.apply_events`, ARCHITECTURE.md "Replication") on a real
//! PostgreSQL, one case per rule: next seq applies, duplicates are skipped, gaps wait and
//! are released, seqs taken by a higher epoch and stale epochs are late, a higher epoch
//! supersedes a deposed owner's tail, poison is reported alone.

use anyhow::Context;
use harness::{PgCluster, PgOptions, WorkDir};
use ledger_tests::db::bookkeeping_violations;
use serde_json::{json, Value};
use tokio_postgres::Client;

const ACCOUNT: i64 = 7;

struct Replica {
    db: Client,
    _pg: PgCluster,
    _dir: WorkDir,
}

async fn replica(label: &str) -> anyhow::Result<Replica> {
    let dir = WorkDir::temp(label)?;
    let (pg, url) =
        PgCluster::start_with_database(dir.path(), &PgOptions::default(), "ledger").await?;
    let mut db = ledger_tests::db::connect(&url).await?;
    ledger_schema::migrate(&mut db).await?;
    Ok(Replica {
        db,
        _pg: pg,
        _dir: dir,
    })
}

fn id(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

fn opened(epoch: i64) -> Value {
    json!({"id": id(1), "type": "AccountOpened", "account": ACCOUNT, "seq": 0, "epoch": epoch,
           "origin": "a", "time": "2026-01-01T00:00:00Z",
           "data": {"currency": "EUR", "balance": "0.00", "status": "open",
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"},
           "event": {"forged": true}})
}

/// A deposit event of `amount` leaving `balance`, as region `origin` wrote it.
fn deposit(event: u128, seq: i64, epoch: i64, origin: &str, amount: &str, balance: &str) -> Value {
    json!({"id": id(event), "type": "Deposited", "account": ACCOUNT, "seq": seq, "epoch": epoch,
           "origin": origin, "time": "2026-01-01T00:00:01Z",
           "data": {"seq": seq, "epoch": epoch, "kind": "deposit", "amount": amount,
                    "balance": balance, "currency": "EUR", "txn_id": id(1000 + event),
                    "created_at": "2026-01-01T00:00:01Z"},
           "event": {"forged": true}})
}

/// Applies `events` as one batch; returns (event number, outcome) per reported row.
async fn apply(db: &Client, events: &[Value]) -> anyhow::Result<Vec<(u128, String)>> {
    let rows = db
        .query(
            "SELECT event_id, outcome FROM ledger.apply_events($1::jsonb)",
            &[&json!(events)],
        )
        .await
        .context("apply_events")?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, uuid::Uuid>(0).as_u128(), r.get(1)))
        .collect())
}

fn outcomes(expected: &[(u128, &str)]) -> Vec<(u128, String)> {
    expected
        .iter()
        .map(|(n, o)| (*n, (*o).to_owned()))
        .collect()
}

async fn account(db: &Client) -> anyhow::Result<(String, i64, i64, String)> {
    let row = db
        .query_one(
            "SELECT balance::text, seq, epoch, home_region FROM ledger.accounts WHERE id = $1",
            &[&ACCOUNT],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2), row.get(3)))
}

async fn late(db: &Client) -> anyhow::Result<Vec<(u128, i64, String)>> {
    let rows = db
        .query(
            "SELECT event_id, seq, reason FROM ledger.late_events ORDER BY seq, event_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, uuid::Uuid>(0).as_u128(), r.get(1), r.get(2)))
        .collect())
}

#[tokio::test]
async fn next_seq_applies_duplicates_skip_and_gaps_wait_until_released() -> anyhow::Result<()> {
    let replica = replica("apply-order").await?;
    let db = &replica.db;
    // seq 2 before the account exists, seq 1 after it: both wait, then both release.
    let result = apply(
        db,
        &[
            deposit(3, 2, 1, "a", "2.00", "7.00"),
            opened(1),
            deposit(2, 1, 1, "a", "5.00", "5.00"),
            deposit(2, 1, 1, "a", "5.00", "5.00"),
        ],
    )
    .await?;
    assert_eq!(
        result,
        outcomes(&[
            (3, "pending"),
            (1, "applied"),
            (2, "applied"),
            (3, "applied"),
            (2, "duplicate")
        ])
    );
    assert_eq!(account(db).await?, ("7.00".into(), 2, 1, "a".into()));
    let waiting: i64 = db
        .query_one("SELECT count(*) FROM ledger.pending_events", &[])
        .await?
        .get(0);
    assert_eq!(waiting, 0);
    assert_eq!(
        apply(db, &[opened(1)]).await?,
        outcomes(&[(1, "duplicate")])
    );
    assert!(bookkeeping_violations(db).await?.is_empty());
    Ok(())
}

/// `ack: replicated` counts a copy only once it is applied here (ledger.holds_event): a
/// copy waiting behind a gap (its account's opening lost with the home region) could
/// never apply, and the acknowledged write would be stranded. (The multi-region test
/// `replicated_acks_survive_the_loss_of_the_whole_home_region` lost one that way, 1
/// run in 20 under load, while waiting copies counted.)
#[tokio::test]
async fn only_an_applied_copy_counts_as_held() -> anyhow::Result<()> {
    let replica = replica("apply-held").await?;
    let db = &replica.db;
    let holds = |seq: i64, event: u128| async move {
        let row = db
            .query_one(
                "SELECT ledger.holds_event($1, $2, $3)",
                &[&ACCOUNT, &seq, &uuid::Uuid::from_u128(event)],
            )
            .await?;
        anyhow::Ok(row.get::<_, bool>(0))
    };
    let waiting = apply(db, &[deposit(2, 1, 1, "a", "5.00", "5.00")]).await?;
    assert_eq!(waiting, outcomes(&[(2, "pending")]));
    assert!(!holds(1, 2).await?, "a waiting copy is not held");
    assert!(!holds(0, 1).await?, "nor the account it waits for");
    apply(db, &[opened(1)]).await?;
    assert!(holds(0, 1).await?, "the opening, applied");
    assert!(holds(1, 2).await?, "the deposit, released and applied");
    assert!(
        !holds(1, 9).await?,
        "another event at that seq is not this one"
    );
    Ok(())
}

#[tokio::test]
async fn older_epochs_are_late_and_a_higher_epoch_supersedes_a_deposed_tail() -> anyhow::Result<()>
{
    let replica = replica("apply-epochs").await?;
    let db = &replica.db;
    apply(
        db,
        &[
            opened(3),
            deposit(2, 1, 3, "a", "5.00", "5.00"),
            deposit(3, 2, 3, "a", "1.00", "6.00"),
        ],
    )
    .await?;

    // Region c took the account over at epoch 5 from seq 1 (it never saw a's seq 2): its
    // seq 2 replaces a's, which becomes a late event.
    let result = apply(db, &[deposit(4, 2, 5, "c", "10.00", "15.00")]).await?;
    assert_eq!(result, outcomes(&[(4, "superseded")]));
    assert_eq!(account(db).await?, ("15.00".into(), 2, 5, "c".into()));
    assert_eq!(late(db).await?, vec![(3, 2, "superseded".into())]);

    // a's later events: seq 2 is taken by a higher epoch; seq 3 is from an older epoch
    // than the account's last writer.
    let result = apply(
        db,
        &[
            deposit(5, 2, 3, "a", "1.00", "6.00"),
            deposit(6, 3, 3, "a", "1.00", "16.00"),
        ],
    )
    .await?;
    assert_eq!(result, outcomes(&[(5, "late"), (6, "late")]));
    assert_eq!(account(db).await?, ("15.00".into(), 2, 5, "c".into()));
    assert_eq!(
        late(db).await?,
        vec![
            (3, 2, "superseded".into()),
            (5, 2, "seq_taken".into()),
            (6, 3, "stale_epoch".into())
        ]
    );
    assert!(bookkeeping_violations(db).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_poison_event_is_reported_alone_and_the_batch_goes_on() -> anyhow::Result<()> {
    let replica = replica("apply-poison").await?;
    let db = &replica.db;
    let mut bad = deposit(3, 2, 1, "a", "1.00", "6.00");
    bad["data"]["amount"] = json!("one euro");
    let mut mismatched = deposit(4, 2, 1, "a", "1.00", "6.00");
    mismatched["data"]["seq"] = json!(9);
    let result = apply(
        db,
        &[
            opened(1),
            deposit(2, 1, 1, "a", "5.00", "5.00"),
            bad,
            mismatched,
            deposit(5, 2, 1, "a", "2.00", "7.00"),
        ],
    )
    .await?;
    assert_eq!(
        result,
        outcomes(&[
            (1, "applied"),
            (2, "applied"),
            (3, "poison"),
            (4, "poison"),
            (5, "applied")
        ])
    );
    assert_eq!(account(db).await?, ("7.00".into(), 2, 1, "a".into()));
    assert!(bookkeeping_violations(db).await?.is_empty());
    Ok(())
}
