//! The ownership service obeys only holders of the deployment's secret: three real
//! voters; unsigned and wrongly signed commands, reads and Raft RPCs are refused with
//! 401 and change nothing (the map, the leader, the term), while health and metrics
//! stay open and the signed client (what nodes and the failover tool use) works,
//! through a follower too.

use std::path::Path;
use std::time::Duration;

use harness::voters::TEST_SECRET;
use harness::{VoterCluster, VoterTiming, WorkDir};
use internal_api::Signer;
use ledger_wire::ownership::RegionSpec;
use ownership_client::{ClientError, OwnershipClient};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ownership-server"))
}

/// A promote of eu-west, as an attacker would send it.
fn promote_body() -> serde_json::Value {
    json!({"actor": "intruder", "reason": "", "command": "promote", "region": "eu-west", "force": true})
}

/// A vote request for a far higher term from a node that does not exist: obeyed, it
/// would depose the leader.
fn vote_body() -> serde_json::Value {
    json!({"vote": {"leader_id": {"term": 1000, "node_id": 9}, "committed": false}, "last_log_id": null})
}

#[tokio::test]
async fn unsigned_and_foreign_calls_are_refused_and_change_nothing() -> TestResult {
    let dir = WorkDir::temp("ownership-auth")?;
    let cluster = VoterCluster::start(bin(), dir.path(), 3, VoterTiming::default()).await?;
    let leader = cluster
        .wait_leader(&[0, 1, 2], Duration::from_secs(20))
        .await?;
    let client = OwnershipClient::new(cluster.addrs(), "test", TEST_SECRET)?;
    let regions = ["eu-west", "us-east", "ap-south"].map(|name| RegionSpec {
        name: name.into(),
        weight: 1,
    });
    client.init_cluster(16, 1_000, regions.to_vec()).await?;
    let before = client.map().await?;
    let term_before = client.cluster_status(&cluster.addrs()[0]).await?.term;

    let http = reqwest::Client::new();
    let foreign = Signer::new("another deployment's secret");
    for addr in cluster.addrs() {
        let url = |path: &str| format!("http://{addr}{path}");
        // No credentials at all.
        for (method, path, body) in [
            ("POST", "/v1/commands", Some(promote_body())),
            ("POST", "/raft/vote", Some(vote_body())),
            ("GET", "/v1/map", None),
            ("GET", "/v1/cluster", None),
            ("DELETE", "/v1/voters/1", None),
        ] {
            let mut request = http.request(method.parse()?, url(path));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let answer = request.send().await?;
            assert_eq!(answer.status(), 401, "unsigned {method} {path} at {addr}");
            let text = answer.text().await?;
            assert!(text.contains("unauthorized"), "{text}");
        }
        // Signed, but with another secret; and signed right but replayed on another path.
        for (signer, signed_path, sent_path) in [
            (&foreign, "/v1/commands", "/v1/commands"),
            (&Signer::new(TEST_SECRET), "/v1/history", "/v1/commands"),
        ] {
            let body = serde_json::to_vec(&promote_body())?;
            let credentials = signer.sign("intruder", "POST", signed_path, &body);
            let answer = credentials
                .attach(http.post(url(sent_path)))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            assert_eq!(answer.status(), 401, "badly signed promote at {addr}");
        }
        for open in ["/healthz", "/metrics"] {
            assert_eq!(http.get(url(open)).send().await?.status(), 200, "{open}");
        }
        let metrics = http.get(url("/metrics")).send().await?.text().await?;
        let refused: f64 = metrics
            .lines()
            .find(|l| l.starts_with("ledger_ownership_refused_calls_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .ok_or("no refused-calls counter")?;
        assert!(refused >= 7.0, "{addr} counted {refused} refusals");
    }

    // Nothing moved: the same map and epochs, the same leader, the same term.
    let after = client.map().await?;
    assert_eq!(
        after.version, before.version,
        "an unsigned command changed the map"
    );
    assert_eq!(after.slots, before.slots);
    assert_eq!(
        cluster
            .wait_leader(&[0, 1, 2], Duration::from_secs(5))
            .await?,
        leader
    );
    assert_eq!(
        client.cluster_status(&cluster.addrs()[0]).await?.term,
        term_before,
        "an unsigned vote request moved the term"
    );

    // The signed client works, also through a follower (which passes the caller's
    // signature on to the leader).
    let follower = cluster
        .voters
        .iter()
        .find(|v| v.id != leader)
        .ok_or("no follower")?
        .addr();
    let through_follower = OwnershipClient::new(vec![follower], "test", TEST_SECRET)?;
    through_follower
        .set_region("ap-south", Some(2), None, "signed through a follower")
        .await?;
    assert!(client.map().await?.version > before.version);

    // A client holding another secret gets a clear refusal, not a retry loop.
    let outsider =
        OwnershipClient::new(cluster.addrs(), "outsider", "another deployment's secret")?
            .with_retry_for(Duration::ZERO);
    match outsider.map().await {
        Err(ClientError::Http { status: 401, .. }) => {}
        other => panic!("an outsider read the map: {other:?}"),
    }
    Ok(())
}
