//! Finds errors a test did not expect in its processes' logs (as neon's tests do): a
//! test whose region node logged an ERROR or whose process panicked fails, even when
//! every assertion held, unless the line is on the global or the test's allow-list.
//!
//! Our services log JSON lines (`"level":"ERROR"`); third-party logs (PostgreSQL,
//! Tansu) are plain text and only their panics count. The global allow-list holds the
//! libraries' own ERROR lines that every fault test causes on purpose: openraft's
//! complaints about an unreachable or stopped voter, librdkafka's about a killed broker.

use std::path::{Path, PathBuf};

/// `(target prefix, message fragment)`: an ERROR line of a target starting with the
/// prefix whose message contains the fragment (empty: any message) is expected.
const LIBRARY_NOISE: &[(&str, &str)] = &[
    // Elections, stopped or partitioned voters: openraft logs these at ERROR.
    ("openraft", ""),
    // A killed or restarted broker.
    ("rdkafka", "Broker transport failure"),
    ("librdkafka", "Connect to ipv4"),
    ("librdkafka", "Connection refused"),
    ("librdkafka", "Disconnected"),
];

/// One unexpected line and the file it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.line)
    }
}

/// Every unexpected ERROR or panic line in the `*.log` files below `dir`. `allowed`
/// are fragments: a line containing one of them is expected.
pub fn unexpected_errors(dir: &Path, allowed: &[String]) -> Vec<Finding> {
    let mut findings = Vec::new();
    scan_dir(dir, allowed, &mut findings);
    findings
}

fn scan_dir(dir: &Path, allowed: &[String], findings: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Unreadable (a PostgreSQL data dir of another user): nothing of ours in it.
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            scan_dir(&path, allowed, findings);
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "log") {
            // Logs are text; a line that is not UTF-8 is read lossily, never skipped.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for line in String::from_utf8_lossy(&bytes).lines() {
                if is_unexpected(line, allowed) {
                    findings.push(Finding {
                        file: path.clone(),
                        line: line.chars().take(400).collect(),
                    });
                }
            }
        }
    }
}

/// True for a panic, or an ERROR line of our JSON logs, that no allow-list names.
pub fn is_unexpected(line: &str, allowed: &[String]) -> bool {
    let flagged = line.contains("panicked at") || is_our_error(line);
    flagged
        && !allowed
            .iter()
            .any(|fragment| line.contains(fragment.as_str()))
}

/// An ERROR line of our services' JSON logs that is not library noise (each line is
/// parsed once: this runs on every log line of every test).
fn is_our_error(line: &str) -> bool {
    if !line.starts_with('{') {
        return false;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    if value.get("level").and_then(|l| l.as_str()) != Some("ERROR") {
        return false;
    }
    let target = value.get("target").and_then(|t| t.as_str()).unwrap_or("");
    let message = value
        .pointer("/fields/message")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    !LIBRARY_NOISE
        .iter()
        .any(|(prefix, fragment)| target.starts_with(prefix) && message.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, target: &str, message: &str) -> String {
        serde_json::json!({"level": level, "target": target, "fields": {"message": message}})
            .to_string()
    }

    #[test]
    fn an_error_of_our_code_is_found() {
        let planted = line("ERROR", "region_node::saga", "saga step failed");
        assert!(is_unexpected(&planted, &[]));
        assert!(!is_unexpected(&planted, &["saga step failed".into()]));
    }

    #[test]
    fn warnings_library_noise_and_plain_text_errors_pass() {
        assert!(!is_unexpected(&line("WARN", "region_node", "lease"), &[]));
        assert!(!is_unexpected(
            &line("ERROR", "openraft::replication", "RPCError"),
            &[]
        ));
        assert!(!is_unexpected(
            &line(
                "ERROR",
                "rdkafka::client",
                "librdkafka: Global error: BrokerTransportFailure (Local: Broker transport failure)"
            ),
            &[]
        ));
        // An rdkafka error that is not a dead broker is ours to explain.
        assert!(is_unexpected(
            &line("ERROR", "rdkafka::client", "Message production error"),
            &[]
        ));
        // PostgreSQL's own ERROR lines (a refused transfer raises) are not ours.
        assert!(!is_unexpected(
            "2026-12-01 05:21:17.029 UTC [21829] ERROR:  insufficient funds",
            &[]
        ));
    }

    #[test]
    fn a_panic_is_found_in_any_log() {
        let panic = "thread 'main' panicked at src/main.rs:3:5:";
        assert!(is_unexpected(panic, &[]));
    }

    #[test]
    fn a_planted_error_in_a_log_file_is_reported_with_its_file() {
        let dir = std::env::temp_dir().join(format!("ledger-log-scan-{}", std::process::id()));
        let nested = dir.join("regions/a");
        std::fs::create_dir_all(&nested).expect("make dir");
        let planted = line("ERROR", "region_node::late_handoff", "handoff failed");
        std::fs::write(
            nested.join("node.log"),
            format!("{}\n{planted}\n", line("INFO", "region_node", "ready")),
        )
        .expect("write log");
        std::fs::write(nested.join("notes.txt"), &planted).expect("write other file");
        let found = unexpected_errors(&dir, &[]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].file.ends_with("regions/a/node.log"));
        assert_eq!(found[0].line, planted);
    }
}
