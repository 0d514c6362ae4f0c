//! The `failover` binary's answers to bad input: clear errors, non-zero exit, and no
//! deployment needed to find that out.

use std::process::Command;

fn failover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_failover"))
        .args(args)
        .env_remove("LEDGER_DEPLOYMENT")
        .env_remove("LEDGER_OWNERSHIP_VOTERS")
        .env_remove("LEDGER_NODES")
        .env_remove("LEDGER_INTERNAL_SECRET")
        .output()
        .expect("run failover")
}

#[test]
fn without_targets_it_says_what_to_give() {
    let out = failover(&["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("give --deployment, or --voters and --node"),
        "{stderr}"
    );
}

#[test]
fn a_missing_local_deployment_is_named() {
    let out = failover(&["--deployment", "/nonexistent/ledger", "status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/ledger/deployment.json"),
        "{stderr}"
    );
}

#[test]
fn a_short_secret_is_refused_before_any_call() {
    let out = failover(&[
        "--voters",
        "127.0.0.1:1",
        "--node",
        "eu-west=http://127.0.0.1:1",
        "--secret",
        "short",
        "status",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

#[test]
fn a_drill_needs_a_destination_for_a_switchover() {
    let out = failover(&[
        "--voters",
        "127.0.0.1:1",
        "--node",
        "eu-west=http://127.0.0.1:1",
        "--secret",
        "0123456789abcdef0123",
        "drill",
        "--scenario",
        "switchover",
        "--region",
        "eu-west",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs --to"), "{stderr}");
}
