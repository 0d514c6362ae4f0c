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

#[test]
fn keys_are_made_listed_and_revoked_in_a_file_holding_only_hashes() {
    let dir = std::env::temp_dir().join(format!("failover-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make dir");
    let file = dir.join("keys.json");
    let file_arg = file.to_str().expect("utf-8 path");

    let made = failover(&[
        "keys", "--file", file_arg, "new", "--tenant", "acme", "--scopes", "read",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    let text = std::fs::read_to_string(&file).expect("key file");
    let keys = ledger_wire::api_keys::KeyFile::parse(&text).expect("a valid key file");
    let record = keys.find(&key).expect("the printed key is in the file");
    assert!(record.matches(&key) && record.tenant == "acme");
    assert!(!text.contains(&key), "the key itself is stored");

    let listed = failover(&["keys", "--file", file_arg, "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&record.id));

    let bad_scope = failover(&[
        "keys", "--file", file_arg, "new", "--tenant", "x", "--scopes", "admin",
    ]);
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("is not a scope"));

    let revoked = failover(&["keys", "--file", file_arg, "revoke", &record.id]);
    assert!(revoked.status.success());
    let keys =
        ledger_wire::api_keys::KeyFile::parse(&std::fs::read_to_string(&file).expect("file"))
            .expect("still valid");
    assert!(!keys.keys[0].matches(&key), "a revoked key still matches");

    let unknown = failover(&["keys", "--file", file_arg, "revoke", "000000000000"]);
    assert!(!unknown.status.success());
    std::fs::remove_dir_all(&dir).ok();
}
