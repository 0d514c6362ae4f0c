//! The drill's numbers from the workload's attempts: per-slot write unavailability
//! around a planned move, per-slot RTO after a kill, RPO and what became of each
//! unreplicated acknowledged write, errors by kind, and a timeline in buckets.

use std::collections::{BTreeMap, HashMap};

use ledger_wire::failover::AuditSnapshot;
use serde::Serialize;

use super::workload::{Account, Attempt};
use crate::audit::AckedWrite;

/// Width of a timeline bucket.
pub const BUCKET_MS: u64 = 250;
/// Width of a per-region bucket: wide enough for a p99 of its attempts to mean something.
pub const REGION_BUCKET_MS: u64 = 1_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub attempts: usize,
    pub acknowledged: usize,
    pub errors_by_kind: BTreeMap<String, usize>,
    /// Per slot that moved: longest time a write to it could not be done (planned
    /// moves: from the first refused attempt to the next success, or the slowest
    /// success when none was refused; kill: from the kill to the first success).
    pub per_slot_ms: BTreeMap<u16, u64>,
    pub per_slot_p50_ms: Option<u64>,
    pub per_slot_p99_ms: Option<u64>,
    pub per_slot_max_ms: Option<u64>,
    /// Kill scenario: acknowledged writes no survivor held at the kill, and their fate.
    pub rpo_unreplicated: usize,
    pub rpo_outcomes: BTreeMap<String, usize>,
    pub rpo_detail: Vec<(String, String)>,
    pub timeline: Vec<Bucket>,
    /// Per region asked, in [`REGION_BUCKET_MS`] buckets by when attempts ended: what
    /// the report's timeline plot draws.
    pub per_region: BTreeMap<String, Vec<RegionBucket>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RegionBucket {
    pub start_ms: u64,
    pub ok: usize,
    pub errors: usize,
    /// p50 and p99 of the client-seen latency of every attempt in the bucket, answered
    /// or not.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Bucket {
    pub start_ms: u64,
    pub ok: usize,
    pub errors: usize,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

pub fn compute(
    attempts: &[Attempt],
    accounts: &[Account],
    window: (u64, u64),
    kill_at: Option<u64>,
    unreplicated: &[AckedWrite],
    snapshots: &[AuditSnapshot],
    killed: Option<&str>,
) -> Figures {
    let mut figures = Figures {
        attempts: attempts.len(),
        acknowledged: attempts.iter().filter(|a| a.ok()).count(),
        ..Figures::default()
    };
    for attempt in attempts {
        if let Some(kind) = &attempt.error {
            *figures.errors_by_kind.entry(kind.clone()).or_default() += 1;
        }
    }
    let mut by_slot: HashMap<u16, Vec<&Attempt>> = HashMap::new();
    for attempt in attempts {
        by_slot.entry(attempt.slot).or_default().push(attempt);
    }
    for list in by_slot.values_mut() {
        list.sort_by_key(|a| a.start_ms);
    }
    if let (Some(kill), Some(dead)) = (kill_at, killed) {
        let slots: std::collections::BTreeSet<u16> = accounts
            .iter()
            .filter(|a| a.home == dead)
            .map(|a| a.slot)
            .collect();
        for slot in slots {
            let first_success = by_slot.get(&slot).and_then(|list| {
                list.iter()
                    .filter(|a| a.ok() && a.start_ms >= kill)
                    .map(|a| a.end_ms)
                    .min()
            });
            if let Some(end) = first_success {
                figures.per_slot_ms.insert(slot, end - kill);
            }
        }
    } else if window.1 > window.0 {
        for (slot, list) in &by_slot {
            let near: Vec<&&Attempt> = list
                .iter()
                .filter(|a| a.end_ms + 1_000 >= window.0 && a.start_ms <= window.1 + 2_000)
                .collect();
            let mut worst: Option<u64> = None;
            let mut refused_since: Option<u64> = None;
            for attempt in &near {
                if attempt.ok() {
                    let blocked = match refused_since.take() {
                        Some(since) => attempt.end_ms - since,
                        None => attempt.end_ms - attempt.start_ms,
                    };
                    worst = Some(worst.map_or(blocked, |w| w.max(blocked)));
                } else if refused_since.is_none() {
                    refused_since = Some(attempt.start_ms);
                }
            }
            let refused_any = near.iter().any(|a| !a.ok());
            let moved = near
                .iter()
                .any(|a| a.start_ms >= window.0 && a.start_ms <= window.1);
            if let Some(worst) = worst.filter(|_| refused_any || moved) {
                figures.per_slot_ms.insert(*slot, worst);
            }
        }
    }
    let mut values: Vec<u64> = figures.per_slot_ms.values().copied().collect();
    values.sort_unstable();
    figures.per_slot_p50_ms = percentile(&values, 50.0);
    figures.per_slot_p99_ms = percentile(&values, 99.0);
    figures.per_slot_max_ms = values.last().copied();

    figures.rpo_unreplicated = unreplicated.len();
    for write in unreplicated {
        let fates: Vec<String> = snapshots
            .iter()
            .map(|s| {
                match s.entries.iter().find(|e| {
                    if write.transfer {
                        e.kind == "transfer_debit" && e.transfer_id == Some(write.txn_id)
                    } else {
                        e.txn_id == write.txn_id
                    }
                }) {
                    None => "LOST".to_owned(),
                    Some(e) if e.reconciles.is_some() => format!("reconciled as seq {}", e.seq),
                    Some(e) => format!("replicated late as seq {}", e.seq),
                }
            })
            .collect();
        let fate = if fates.iter().all(|f| f == &fates[0]) {
            fates.first().cloned().unwrap_or_else(|| "unknown".into())
        } else {
            format!("differs by region: {}", fates.join(", "))
        };
        let class = fate.split(" as ").next().unwrap_or(&fate).to_owned();
        *figures.rpo_outcomes.entry(class).or_default() += 1;
        figures
            .rpo_detail
            .push((format!("{} txn {}", write.account, write.txn_id), fate));
    }

    let end = attempts.iter().map(|a| a.end_ms).max().unwrap_or(0);
    figures.timeline = (0..=end / BUCKET_MS)
        .map(|i| Bucket {
            start_ms: i * BUCKET_MS,
            ..Bucket::default()
        })
        .collect();
    for attempt in attempts {
        if let Some(bucket) = figures
            .timeline
            .get_mut((attempt.end_ms / BUCKET_MS) as usize)
        {
            if attempt.ok() {
                bucket.ok += 1;
            } else {
                bucket.errors += 1;
            }
        }
    }
    figures.per_region = per_region(attempts, end);
    figures
}

/// Acknowledged writes, errors and p99 latency per region asked, per second.
fn per_region(attempts: &[Attempt], end_ms: u64) -> BTreeMap<String, Vec<RegionBucket>> {
    let buckets = (end_ms / REGION_BUCKET_MS + 1) as usize;
    let mut latencies: BTreeMap<&str, Vec<Vec<u64>>> = BTreeMap::new();
    let mut series: BTreeMap<String, Vec<RegionBucket>> = BTreeMap::new();
    for attempt in attempts {
        let region = series.entry(attempt.via.clone()).or_insert_with(|| {
            (0..buckets)
                .map(|i| RegionBucket {
                    start_ms: i as u64 * REGION_BUCKET_MS,
                    ..RegionBucket::default()
                })
                .collect()
        });
        let i = (attempt.end_ms / REGION_BUCKET_MS) as usize;
        let Some(bucket) = region.get_mut(i) else {
            continue;
        };
        if attempt.ok() {
            bucket.ok += 1;
        } else {
            bucket.errors += 1;
        }
        latencies
            .entry(attempt.via.as_str())
            .or_insert_with(|| vec![Vec::new(); buckets])[i]
            .push(attempt.end_ms.saturating_sub(attempt.start_ms));
    }
    for (region, per_bucket) in latencies {
        if let Some(buckets) = series.get_mut(region) {
            for (bucket, mut values) in buckets.iter_mut().zip(per_bucket) {
                values.sort_unstable();
                bucket.p50_ms = percentile(&values, 50.0);
                bucket.p99_ms = percentile(&values, 99.0);
            }
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(via: &str, start_ms: u64, end_ms: u64, status: u16) -> Attempt {
        Attempt {
            start_ms,
            end_ms,
            account: "a".into(),
            slot: 1,
            via: via.into(),
            key: "k".into(),
            kind: "deposit",
            status,
            error: (status != 201).then(|| "unreachable".into()),
            ..Attempt::default()
        }
    }

    #[test]
    fn per_region_buckets_count_and_take_the_p99_of_their_attempts() {
        let mut attempts: Vec<Attempt> = (0..99)
            .map(|i| attempt("eu-west", 100 + i, 110 + i, 201))
            .collect();
        attempts.push(attempt("eu-west", 600, 1_200, 201));
        attempts.push(attempt("us-east", 1_200, 1_700, 503));
        attempts.push(attempt("us-east", 1_800, 1_820, 201));
        let series = per_region(&attempts, 1_820);
        let eu = &series["eu-west"];
        assert_eq!(eu.len(), 2);
        assert_eq!(
            (eu[0].ok, eu[0].errors),
            (99, 0),
            "the slow one ended in second 1"
        );
        assert_eq!(eu[0].p99_ms, Some(10));
        assert_eq!((eu[1].ok, eu[1].p99_ms), (1, Some(600)));
        let us = &series["us-east"];
        assert_eq!((us[0].ok, us[0].errors, us[0].p99_ms), (0, 0, None));
        assert_eq!((us[1].ok, us[1].errors), (1, 1));
        assert_eq!(us[1].start_ms, 1_000);
        assert_eq!(us[1].p99_ms, Some(500));
    }
}
