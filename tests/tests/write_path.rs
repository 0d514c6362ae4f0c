//! The write path on a real PostgreSQL: concurrency, idempotency, bookkeeping,
//! transfers, ledger pages, and the lease fence in the database.

use std::collections::BTreeSet;

use futures::future::join_all;
use ledger_tests::db::{bookkeeping_violations, snapshot};
use ledger_tests::{Reply, TestRegion};
use ledger_wire::api::{Entry, LedgerPage, Transfer, TransferState};
use ledger_wire::AccountId;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::json;

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The answer has exactly the wire type's fields, and reads back as the same value.
/// (Text may differ: RFC 3339 allows `+00:00` where chrono writes `Z`.)
fn assert_wire_shape<T>(typed: &T, raw: &serde_json::Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let ours = serde_json::to_value(typed).expect("serialise wire type");
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&ours),
        keys(raw),
        "field names of SQL answer and wire type"
    );
    let reread: T = serde_json::from_value(ours).expect("reparse wire type");
    assert_eq!(&reread, typed);
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("test decimal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() -> anyhow::Result<()> {
    let region = TestRegion::start("overdraw").await?;
    let api = &region.api;
    let account = api.open_account("EUR").await?;
    api.fund(account.id, "20.00").await?;

    let replies =
        join_all((0..50).map(|_| async { api.withdraw(account.id, "1.00", &key()).await })).await;
    let mut booked = 0;
    let mut refused = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status {
            StatusCode::CREATED => booked += 1,
            StatusCode::CONFLICT => {
                assert_eq!(reply.problem_type(), "/problems/insufficient-funds");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!((booked, refused), (20, 30));

    let after = api.account(account.id).await?;
    assert_eq!(after.balance.to_string(), "0.00");
    assert_eq!(after.seq, 21, "one deposit and twenty withdrawals");
    let db = region.db().await?;
    let seqs: Vec<i64> = db
        .query(
            "SELECT seq FROM ledger.entries WHERE account_id = $1 ORDER BY seq",
            &[&account.id.as_i64()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>(), "seq has no gaps");
    let negative: i64 = db
        .query_one("SELECT count(*) FROM ledger.entries WHERE balance < 0", &[])
        .await?
        .get(0);
    assert_eq!(negative, 0, "no balance was ever negative");
    assert_eq!(bookkeeping_violations(&db).await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_with_one_key_apply_once() -> anyhow::Result<()> {
    let region = TestRegion::start("race-key").await?;
    let api = &region.api;
    let account = api.open_account("EUR").await?;
    let shared_key = key();

    let replies = join_all((0..20).map(|_| api.deposit(account.id, "5.00", &shared_key))).await;
    let replies: Vec<_> = replies.into_iter().collect::<Result<_, _>>()?;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{replies:?}"
    );
    let bodies: BTreeSet<String> = replies.iter().map(Reply::text).collect();
    assert_eq!(bodies.len(), 1, "every request got the same answer");
    let fresh = replies.iter().filter(|r| !r.answer.replayed).count();
    assert_eq!(
        fresh, 1,
        "exactly one request applied, the rest replayed its answer"
    );

    let after = api.account(account.id).await?;
    assert_eq!((after.balance.to_string().as_str(), after.seq), ("5.00", 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_and_refuse_reuse() -> anyhow::Result<()> {
    let region = TestRegion::start("idem").await?;
    let api = &region.api;
    let account = api.open_account("EUR").await?;
    let k = key();
    let first = api.deposit(account.id, "12.5", &k).await?;
    assert_eq!(first.status, StatusCode::CREATED);
    // The same amount written differently is the same request.
    let again = api.deposit(account.id, "12.50", &k).await?;
    assert_eq!(
        (again.status, again.text()),
        (StatusCode::CREATED, first.text())
    );
    assert!(again.answer.replayed, "{again:?}");

    let other_body = api.deposit(account.id, "13.00", &k).await?;
    assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other_body.problem_type(),
        "/problems/idempotency-key-reused"
    );
    let other_route = api.withdraw(account.id, "12.50", &k).await?;
    assert_eq!(
        other_route.problem_type(),
        "/problems/idempotency-key-reused"
    );

    // A refused withdrawal is an answer too: its retry gets the same refusal even after
    // the account has been funded (a new attempt needs a new key).
    let refused_key = key();
    let refused = api.withdraw(account.id, "100.00", &refused_key).await?;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    api.fund(account.id, "500.00").await?;
    let retried = api.withdraw(account.id, "100.00", &refused_key).await?;
    assert_eq!(
        (retried.status, retried.text()),
        (StatusCode::CONFLICT, refused.text())
    );
    let after = api.account(account.id).await?;
    assert_eq!(
        (after.balance.to_string().as_str(), after.seq),
        ("512.50", 2)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_balanced_and_has_its_event() -> anyhow::Result<()> {
    let region = TestRegion::start("books").await?;
    let api = &region.api;
    let a = api.open_account("EUR").await?;
    let b = api.open_account("EUR").await?;
    let yen = api.open_account("JPY").await?;
    api.fund(a.id, "100.00").await?;
    api.fund(yen.id, "1000").await?;
    let writes = join_all((0..10).map(|i| {
        let amount = format!("{}.25", i + 1);
        async move {
            api.withdraw(a.id, &amount, &key()).await?;
            api.transfer(a.id, b.id, "1.10", &key()).await?;
            api.transfer(b.id, a.id, "0.05", &key()).await?;
            api.withdraw(yen.id, "7", &key()).await
        }
    }))
    .await;
    for write in writes {
        write?;
    }
    let db = region.db().await?;
    assert_eq!(bookkeeping_violations(&db).await?, Vec::<String>::new());

    // One event per entry plus one per opened account, each carrying the entry's answer
    // (and a transfer's entries the transfer, so that every region records it).
    let state = snapshot(&db).await?;
    assert_eq!(state.outbox, state.entries + state.accounts);
    let mismatched: i64 = db
        .query_one(
            "SELECT count(*) FROM ledger.outbox o JOIN ledger.entries e
               ON e.account_id = o.account_id AND e.seq = o.seq
             WHERE o.payload - 'transfer' <> ledger.entry_json(e) OR o.epoch <> e.epoch
                OR o.origin_region <> e.origin_region OR o.traceparent IS NULL
                OR (o.payload->'transfer'->>'id')::uuid IS DISTINCT FROM e.transfer_id",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(mismatched, 0);

    // Money is conserved: balances equal external deposits minus withdrawals.
    let external: Decimal = db
        .query_one(
            "SELECT coalesce(-sum(amount), 0) FROM ledger.external_postings",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(state.balances, external);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_wire_types_and_name_regions() -> anyhow::Result<()> {
    let region = TestRegion::start("wire").await?;
    let api = &region.api;
    let a = api.open_account("EUR").await?;
    let b = api.open_account("EUR").await?;
    let deposit = api.deposit(a.id, "40", &key()).await?;
    assert_eq!(
        deposit.answer.served_by.as_deref(),
        Some(ledger_tests::REGION)
    );
    assert_eq!(deposit.answer.home.as_deref(), Some(ledger_tests::REGION));
    let entry: Entry = deposit.parse()?;
    assert_wire_shape(&entry, &deposit.json()?);
    assert_eq!(
        (
            entry.amount.to_string().as_str(),
            entry.balance.to_string().as_str()
        ),
        ("40.00", "40.00")
    );

    let transfer = api.transfer(a.id, b.id, "15.5", &key()).await?;
    assert_eq!(transfer.status, StatusCode::CREATED, "{}", transfer.text());
    let booked: Transfer = transfer.parse()?;
    assert_wire_shape(&booked, &transfer.json()?);
    assert_eq!(
        (booked.state, booked.amount),
        (TransferState::Completed, dec("15.50"))
    );
    let read = api.get(&format!("/v1/transfers/{}", booked.id)).await?;
    assert_eq!(
        read.json()?,
        transfer.json()?,
        "read and write show one transfer"
    );
    let missing = api
        .get(&format!("/v1/transfers/{}", uuid::Uuid::new_v4()))
        .await?;
    assert_eq!(missing.problem_type(), "/problems/transfer-not-found");

    let (a_after, b_after) = (api.account(a.id).await?, api.account(b.id).await?);
    assert_eq!(
        (a_after.balance, b_after.balance),
        (dec("24.50"), dec("15.50"))
    );
    assert_eq!((a_after.seq, b_after.seq), (2, 1));

    // The database renders account ids exactly like the wire crate.
    let db = region.db().await?;
    for id in [
        a.id,
        b.id,
        AccountId::new(0x7fff, (1 << 48) - 1)?,
        AccountId::new(0, 0)?,
    ] {
        let text: String = db
            .query_one("SELECT ledger.account_id_text($1)", &[&id.as_i64()])
            .await?
            .get(0);
        assert_eq!(text, id.to_string());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_pages_walk_every_entry_in_order() -> anyhow::Result<()> {
    let region = TestRegion::start("pages").await?;
    let api = &region.api;
    let account = api.open_account("USD").await?;
    for i in 1..=7 {
        api.fund(account.id, &format!("{i}.00")).await?;
    }
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts/{}/ledger?limit=3&cursor={c}", account.id),
            None => format!("/v1/accounts/{}/ledger?limit=3", account.id),
        };
        let page: LedgerPage = api.get(&path).await?.parse()?;
        pages += 1;
        seqs.extend(page.entries.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_writes_outside_the_lease() -> anyhow::Result<()> {
    let region = TestRegion::start("fence").await?;
    let api = &region.api;
    let account = api.open_account("EUR").await?;
    api.fund(account.id, "10.00").await?;
    let db = region.db().await?;
    let slot = i32::from(account.id.slot());

    // The lease ran out by the database's clock: the write must not commit.
    db.execute(
        "UPDATE ledger.slot_leases SET expires_at = clock_timestamp() - interval '1 ms' WHERE slot = $1",
        &[&slot],
    )
    .await?;
    let before = snapshot(&db).await?;
    let expired = api.withdraw(account.id, "1.00", &key()).await?;
    assert_eq!(expired.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(expired.problem_type(), "/problems/not-owner");
    assert!(expired.answer.retry_after.is_some());
    assert_eq!(snapshot(&db).await?, before);

    // The slot moved on to a newer epoch: a write under the old epoch must not commit.
    db.execute(
        "UPDATE ledger.slot_leases SET expires_at = 'infinity', epoch = 2 WHERE slot = $1",
        &[&slot],
    )
    .await?;
    let stale = api.deposit(account.id, "1.00", &key()).await?;
    assert_eq!(stale.problem_type(), "/problems/not-owner");
    assert_eq!(snapshot(&db).await?, before);

    // An account row last written at a newer epoch refuses an older writer.
    db.execute(
        "UPDATE ledger.slot_leases SET epoch = 1 WHERE slot = $1",
        &[&slot],
    )
    .await?;
    db.execute(
        "UPDATE ledger.accounts SET epoch = 5 WHERE id = $1",
        &[&account.id.as_i64()],
    )
    .await?;
    let deposed = api.deposit(account.id, "1.00", &key()).await?;
    assert_eq!(deposed.problem_type(), "/problems/not-owner");
    assert_eq!(snapshot(&db).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_reads_report_freshness_and_min_seq() -> anyhow::Result<()> {
    let region = TestRegion::start("reads").await?;
    let api = &region.api;
    let account = api.open_account("GBP").await?;
    api.fund(account.id, "3.00").await?;
    let read = api
        .get(&format!(
            "/v1/accounts/{}?consistency=strong&min_seq=1",
            account.id
        ))
        .await?;
    assert_eq!(read.status, StatusCode::OK);
    let body = read.json()?;
    assert_eq!(body["freshness"]["source"], json!("home"));
    assert_eq!(body["freshness"]["lag_ms"], json!(0));
    let ahead = api
        .get(&format!("/v1/accounts/{}?min_seq=2", account.id))
        .await?;
    assert_eq!(ahead.problem_type(), "/problems/seq-not-reached");
    let bad = api
        .get(&format!("/v1/accounts/{}?consistency=eventual", account.id))
        .await?;
    assert_eq!(bad.problem_type(), "/problems/invalid-parameter");
    Ok(())
}
