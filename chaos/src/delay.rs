//! A long link (latency with jitter) without `netem`, which this machine's kernel does
//! not have: the packets between a region and the others are queued to user space
//! (iptables `NFQUEUE` in the region's namespace, see [`crate::network::Network::latency`])
//! and [`run`] lets each one go when its delay is over. Every kind of link is delayed
//! alike (API, node-to-voter, Raft, Kafka), which a proxy could not do for Kafka and
//! Raft (see [`crate::network`]).
//!
//! The delay is drawn per packet, `latency` ± up to `jitter` (Toxiproxy's `latency`
//! toxic, Chaos Mesh's NetworkChaos `delay`), but a packet never leaves before one
//! queued earlier: real links rarely reorder, and TCP treats reordering as loss. A
//! packet crossing the faulted region's namespace is delayed once each way, so a round
//! trip to the region grows by twice the latency.
//!
//! The rules use `--queue-bypass` and the queue is opened fail-open: with no loop
//! bound (not yet started, or killed) or a full queue, packets pass undelayed rather
//! than being dropped; the fault can only add delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

/// The netfilter queue a region's delayed packets go to (queues are per namespace).
pub const QUEUE: u16 = 17;
/// Packets held at once; beyond it the kernel lets new ones pass (fail-open).
const MAX_HELD: u32 = 65_536;
/// How often the loop looks for new packets and for packets whose delay is over:
/// the delay's resolution.
const TICK: Duration = Duration::from_millis(1);

/// When each packet may leave: latency ± jitter, never before the one ahead of it.
#[derive(Debug)]
pub struct DelayLine {
    latency: Duration,
    jitter: Duration,
    rng: ChaCha8Rng,
    last_due: Option<Instant>,
}

impl DelayLine {
    pub fn new(latency: Duration, jitter: Duration, seed: u64) -> anyhow::Result<DelayLine> {
        ensure!(
            !latency.is_zero(),
            "a latency of 0 ms is no fault: give --ms above 0"
        );
        ensure!(
            jitter <= latency,
            "a jitter of {} ms above the latency of {} ms would need negative delays",
            jitter.as_millis(),
            latency.as_millis()
        );
        Ok(DelayLine {
            latency,
            jitter,
            rng: ChaCha8Rng::seed_from_u64(seed),
            last_due: None,
        })
    }

    /// When a packet that arrived at `arrived` may leave.
    pub fn due(&mut self, arrived: Instant) -> Instant {
        let jitter_us = self.jitter.as_micros() as i64;
        let offset_us = if jitter_us == 0 {
            0
        } else {
            self.rng.random_range(-jitter_us..=jitter_us)
        };
        let delay_us = (self.latency.as_micros() as i64 + offset_us).max(0) as u64;
        let due = arrived + Duration::from_micros(delay_us);
        let due = self.last_due.map_or(due, |last| due.max(last));
        self.last_due = Some(due);
        due
    }
}

/// What a delay loop did, logged when it ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DelayCounts {
    pub delayed: u64,
    pub most_held: usize,
}

/// Binds `queue` in this process's network namespace and delays every packet queued
/// to it by `line` until `shutdown`; then lets every held packet go and returns.
/// Blocking: run it on a thread of its own.
pub fn run(
    mut line: DelayLine,
    queue_num: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<DelayCounts> {
    let mut queue =
        nfq::Queue::open().context("open a netfilter queue socket (needs root: CAP_NET_ADMIN)")?;
    queue
        .bind(queue_num)
        .with_context(|| format!("bind netfilter queue {queue_num}"))?;
    // Only the verdict matters, not the bytes: copy no payload to user space.
    queue.set_copy_range(queue_num, 0).context("copy range")?;
    queue.set_fail_open(queue_num, true).context("fail open")?;
    queue
        .set_queue_max_len(queue_num, MAX_HELD)
        .context("queue length")?;
    queue.set_nonblocking(true);
    tracing::info!(
        queue = queue_num,
        latency_ms = line.latency.as_millis() as u64,
        jitter_ms = line.jitter.as_millis() as u64,
        "delaying packets"
    );
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut counts = DelayCounts::default();
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        loop {
            match queue.recv() {
                Ok(mut message) => {
                    message.set_verdict(nfq::Verdict::Accept);
                    held.push_back((line.due(now), message));
                    counts.delayed += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receive a queued packet"),
            }
        }
        counts.most_held = counts.most_held.max(held.len());
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, message)) = held.pop_front() {
                queue.verdict(message).context("let a packet go")?;
            }
        }
        let wait = held
            .front()
            .map_or(TICK, |(due, _)| due.saturating_duration_since(now))
            .min(TICK);
        std::thread::sleep(wait);
    }
    for (_, message) in held.drain(..) {
        queue.verdict(message).context("let a held packet go")?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_jitter_and_never_reorder() {
        let (latency, jitter) = (Duration::from_millis(100), Duration::from_millis(20));
        let mut line = DelayLine::new(latency, jitter, 7).expect("line");
        let start = Instant::now();
        let mut last = start;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..2_000u64 {
            // Packets 50 µs apart: closer than the jitter, so order is what bounds them.
            let arrived = start + Duration::from_micros(50 * i);
            let due = line.due(arrived);
            assert!(due >= last, "packet {i} would overtake the one before it");
            let delay = due - arrived;
            assert!(
                delay <= latency + jitter + Duration::from_micros(50 * 2_000),
                "{delay:?}"
            );
            assert!(delay >= latency - jitter, "{delay:?}");
            last = due;
            spread = (spread.0.min(delay), spread.1.max(delay));
        }
        assert!(
            spread.1 - spread.0 > Duration::from_millis(10),
            "jitter varies the delay"
        );
    }

    #[test]
    fn spaced_packets_get_latency_plus_or_minus_jitter_and_a_seed_replays() {
        let (latency, jitter) = (Duration::from_millis(50), Duration::from_millis(10));
        let draws = |seed| {
            let mut line = DelayLine::new(latency, jitter, seed).expect("line");
            let start = Instant::now();
            (0..200u64)
                .map(|i| {
                    let arrived = start + Duration::from_secs(i);
                    line.due(arrived) - arrived
                })
                .collect::<Vec<_>>()
        };
        let first = draws(1);
        assert!(first
            .iter()
            .all(|d| *d >= latency - jitter && *d <= latency + jitter));
        assert_eq!(first, draws(1), "the same seed, the same delays");
        assert_ne!(first, draws(2));
        let mut exact = DelayLine::new(latency, Duration::ZERO, 1).expect("line");
        let now = Instant::now();
        assert_eq!(
            exact.due(now) - now,
            latency,
            "no jitter: exactly the latency"
        );
    }

    #[test]
    fn nonsense_delays_are_refused() {
        assert!(DelayLine::new(Duration::ZERO, Duration::ZERO, 1).is_err());
        assert!(DelayLine::new(Duration::from_millis(10), Duration::from_millis(11), 1).is_err());
    }
}
