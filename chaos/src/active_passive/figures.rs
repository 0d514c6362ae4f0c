//! The comparison's figures: per location the latencies before the loss, the time
//! from the loss to writes again (RTO), and the acknowledged deposits missing after it
//! (RPO), for both sides, printed side by side.

use std::collections::BTreeMap;

use crate::locations::{percentiles, LocationSample, LocationsRun};

use super::Promotion;

/// One side's run and what it came to.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: &'static str,
    /// What the side is, for the table's legend.
    pub description: &'static str,
    pub run: LocationsRun,
    pub promotion: Option<Promotion>,
    /// Deposits answered 2xx.
    pub acknowledged: u64,
    /// Of those, how many the survivors do not show (summed per account).
    pub missing: u64,
    /// Where the missing ones are.
    pub missing_note: &'static str,
    /// Anything else the reader needs to weigh the figures.
    pub note: Option<String>,
}

/// Deposits answered 2xx, per account.
pub fn acknowledged(run: &LocationsRun) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    for sample in run.by_location.values().flatten() {
        if let (true, true, Some(account)) = (sample.write, sample.ok, &sample.account) {
            *acked.entry(account.clone()).or_default() += 1;
        }
    }
    acked
}

impl Side {
    /// `present`: deposits per account the survivors hold.
    pub fn new(
        label: &'static str,
        run: LocationsRun,
        promotion: Option<Promotion>,
        present: &BTreeMap<String, u64>,
        missing_note: &'static str,
    ) -> Side {
        let acked = acknowledged(&run);
        let missing = acked
            .iter()
            .map(|(account, n)| n.saturating_sub(present.get(account).copied().unwrap_or(0)))
            .sum();
        Side {
            label,
            description: "",
            acknowledged: acked.values().sum(),
            missing,
            run,
            promotion,
            missing_note,
            note: None,
        }
    }

    fn before(&self, location: &str, write: bool) -> String {
        let samples: Vec<&LocationSample> = self
            .run
            .by_location
            .get(location)
            .map(|s| {
                s.iter()
                    .filter(|s| s.ok && s.write == write && s.answered_before(self.run.kill_ms))
                    .collect()
            })
            .unwrap_or_default();
        percentiles(&samples)
    }

    fn after_ms(&self, since_kill: Option<u64>) -> String {
        since_kill.map_or("-".to_owned(), |at| {
            format!("{}", at.saturating_sub(self.run.kill_ms))
        })
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("none".to_owned(), |ms| format!("{ms:.0}"))
}

/// The two sides, location by location.
pub fn print_comparison(alternative: &Side, ours: &Side) {
    println!(
        "\nBefore the loss (ms, p50/p99; {} = {}, {} = {}):",
        alternative.label, alternative.description, ours.label, ours.description
    );
    println!(
        "{:<10} {:>16} {:>12} {:>16} {:>12}",
        "location", "reads (a-p)", "reads (ours)", "writes (a-p)", "writes (ours)"
    );
    for location in ours.run.by_location.keys() {
        println!(
            "{:<10} {:>16} {:>12} {:>16} {:>12}",
            location,
            alternative.before(location, false),
            ours.before(location, false),
            alternative.before(location, true),
            ours.before(location, true),
        );
    }
    println!(
        "\nAfter the loss of {} (ms from the kill to the location's first acknowledged write; errors: requests no server took within 5 s):",
        ours.run.victim
    );
    println!(
        "{:<10} {:>18} {:>18} {:>26} {:>12} {:>12}",
        "location",
        "any write (a-p)",
        "any write (ours)",
        "lost region's acct (ours)",
        "errors (a-p)",
        "errors (ours)"
    );
    for location in ours.run.by_location.keys() {
        println!(
            "{:<10} {:>18} {:>18} {:>26} {:>12} {:>12}",
            location,
            ms(alternative.run.kill_to_write(location)),
            ms(ours.run.kill_to_write(location)),
            ms(ours.run.kill_to_write_homed_in(location, &ours.run.victim)),
            alternative.run.errors(location),
            ours.run.errors(location),
        );
    }
    println!();
    for side in [alternative, ours] {
        match side.promotion {
            Some(p) => println!(
                "{:<15} controller decided the loss at +{} ms, promote done at +{} ms",
                side.label,
                side.after_ms(Some(p.decided_ms)),
                side.after_ms(Some(p.promoted_ms)),
            ),
            None => println!("{:<15} controller never promoted", side.label),
        }
    }
    for side in [alternative, ours] {
        println!(
            "{:<15} RPO: {} deposits acknowledged, {} missing after the failover ({})",
            side.label, side.acknowledged, side.missing, side.missing_note
        );
        if let Some(note) = &side.note {
            println!("{:<15} {note}", "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deposit(account: &str, ok: bool) -> LocationSample {
        LocationSample {
            sent_ms: 1,
            write: true,
            account: Some(account.to_owned()),
            ok,
            latency_ms: 1.0,
            region: None,
            attempts: 1,
            status: None,
            error: None,
        }
    }

    #[test]
    fn an_acknowledged_deposit_the_survivors_lack_is_counted_missing() {
        let samples = vec![deposit("a", true), deposit("a", true), deposit("b", true)];
        let run = LocationsRun {
            by_location: BTreeMap::from([("here".to_owned(), samples)]),
            kill_ms: 0,
            victim: "there".to_owned(),
            homes: BTreeMap::new(),
        };
        let all_there = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]);
        let side = Side::new("t", run.clone(), None, &all_there, "");
        assert_eq!((side.acknowledged, side.missing), (3, 0));
        // Planted: one of a's acknowledged deposits is not on the survivor.
        let one_lost = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(Side::new("t", run.clone(), None, &one_lost, "").missing, 1);
        // A failed request is not acknowledged: its absence is no loss.
        let mut failed = run;
        failed
            .by_location
            .get_mut("here")
            .expect("the location")
            .push(deposit("b", false));
        assert_eq!(Side::new("t", failed, None, &all_there, "").missing, 0);
    }
}
