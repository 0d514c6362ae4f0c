//! Money in flight over a drill: every region's status is sampled twice a second, so
//! the report shows how much money was between a debit and its credit or refund while
//! regions died and returned, and that it ended at zero.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Cluster;

const EVERY: Duration = Duration::from_millis(500);

/// One sample: per answering region, transfers in flight and their sum (all
/// currencies added; the drill's workload uses one).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub regions: BTreeMap<String, (i64, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InFlight {
    pub samples: Vec<Sample>,
    /// The largest sum any region showed, and when.
    pub max_amount: String,
    pub max_at_ms: u64,
}

pub struct Sampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(cluster: Cluster, clock: Instant) -> Sampler {
        let stop = CancellationToken::new();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(sample(cluster, clock, samples.clone(), stop.clone()));
        Sampler {
            stop,
            task,
            samples,
        }
    }

    pub async fn finish(self) -> InFlight {
        self.stop.cancel();
        let _ = self.task.await;
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let mut max = (Decimal::ZERO, 0);
        for s in &samples {
            for (_, amount) in s.regions.values() {
                let amount: Decimal = amount.parse().unwrap_or_default();
                if amount > max.0 {
                    max = (amount, s.at_ms);
                }
            }
        }
        InFlight {
            samples,
            max_amount: max.0.to_string(),
            max_at_ms: max.1,
        }
    }
}

async fn sample(
    cluster: Cluster,
    clock: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let statuses = crate::status::node_statuses(&cluster).await;
        let regions = statuses
            .into_iter()
            .filter_map(|(region, status)| {
                let status = status.ok()?;
                let count = status.money_in_flight.iter().map(|f| f.transfers).sum();
                let amount: Decimal = status
                    .money_in_flight
                    .iter()
                    .filter_map(|f| f.amount.parse::<Decimal>().ok())
                    .sum();
                Some((region, (count, amount.to_string())))
            })
            .collect();
        let at_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut list) = samples.lock() {
            list.push(Sample { at_ms, regions });
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
