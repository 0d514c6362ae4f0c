//! Seeded fault schedules: which faults, on what, when and for how long, all drawn
//! from one seed, so the same seed replays the same schedule. Each fault is a pair of
//! `ledger-local` commands (inject, heal) that the failover tool's drill runs at the
//! step's time while its workload writes (`ledger_wire::faults` is the contract).
//!
//! Kinds are named after Chaos Mesh's and Toxiproxy's (NetworkChaos `partition` and
//! `bandwidth`, Toxiproxy `reset_peer` and `latency`, PodChaos `container-kill`) and Jepsen's
//! `pause` nemesis for SIGSTOP.

use std::fmt;
use std::str::FromStr;

use ledger_wire::faults::{FaultSchedule, FaultStep};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The faults a schedule can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Every link between a region and the others cut, both ways.
    Partition,
    /// One region cannot reach another; the other still reaches it.
    PartitionOneWay,
    /// A flaky link: a share of the TCP packets between a region and the others reset.
    ResetPeer,
    /// A slow link: a region's traffic with the others through a narrow token bucket.
    Bandwidth,
    /// A long link: every packet between a region and the others delayed, with jitter.
    Latency,
    /// SIGKILL of one region's broker, started again at the heal.
    KillBroker,
    /// SIGKILL of one region's replicator (relay and appliers).
    KillReplicator,
    /// SIGKILL of one region's ownership voter.
    KillVoter,
    /// SIGKILL of one region's PostgreSQL server with its backends.
    KillPostgres,
    /// SIGSTOP of one region's node past its lease, then SIGCONT.
    PauseNode,
    /// SIGSTOP of the Raft leader's voter past the election timeout, then SIGCONT.
    PauseLeaderVoter,
    /// One region's node restarted with its clocks running 1% slow (libfaketime), the
    /// node's configured maximum drift: it believes its lease lasts longer than it
    /// does. Healed by a restart on real time.
    ClockDrift,
    /// SIGKILL of a whole region, promote, restart, failback: one composite fault.
    RegionFailover,
}

pub const ALL_KINDS: [FaultKind; 13] = [
    FaultKind::Partition,
    FaultKind::PartitionOneWay,
    FaultKind::ResetPeer,
    FaultKind::Bandwidth,
    FaultKind::Latency,
    FaultKind::KillBroker,
    FaultKind::KillReplicator,
    FaultKind::KillVoter,
    FaultKind::KillPostgres,
    FaultKind::PauseNode,
    FaultKind::PauseLeaderVoter,
    FaultKind::ClockDrift,
    FaultKind::RegionFailover,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::ResetPeer => "reset-peer",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Latency => "latency",
            FaultKind::KillBroker => "kill-broker",
            FaultKind::KillReplicator => "kill-replicator",
            FaultKind::KillVoter => "kill-voter",
            FaultKind::KillPostgres => "kill-postgres",
            FaultKind::PauseNode => "pause-node",
            FaultKind::PauseLeaderVoter => "pause-leader-voter",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::RegionFailover => "region-failover",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ALL_KINDS
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.name()).collect();
                format!("unknown fault {text:?}; known: {}", names.join(", "))
            })
    }
}

/// What a schedule is made for.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub regions: Vec<String>,
    /// Length of the whole run; faults start after `quiet_start_ms` and the last one
    /// is healed `quiet_end_ms` before the end.
    pub run_ms: u64,
    pub quiet_start_ms: u64,
    pub quiet_end_ms: u64,
    /// `ledger-local --data-dir <dir>`: the command prefix of every hook.
    pub ledger_local: String,
}

/// A flaky link resets this share of the packets: with Kafka fetches polling and Raft
/// heartbeats, every link breaks several times a second.
const RESET_PROBABILITY: f64 = 0.02;
/// A slow link's rate each way: a 1,500-byte packet takes 47 ms to pass.
const SLOW_LINK_KBIT: u32 = 256;
/// A long link's delay each way and its jitter: a round trip to the region grows by
/// 160-240 ms, about eu-west to ap-south and back twice over; a lease renewal needs a
/// few such trips and still fits the 2 s lease.
const LONG_LINK_MS: u64 = 100;
const LONG_LINK_JITTER_MS: u64 = 20;
/// The clock rate of a drifting node: 1% slow, the nodes' default maximum drift
/// (`LEDGER_MAX_CLOCK_DRIFT` 0.01). Slow is the unsafe direction: a slow clock keeps
/// a lease past its real end, which the survivors' fence (ttl x 1.01 + margin) covers.
const DRIFT_RATE: f64 = 0.99;

/// Fault lengths and gaps, in ms.
const HOLD_MS: (u64, u64) = (2_000, 6_000);
const GAP_MS: (u64, u64) = (2_000, 5_000);
/// A region failover takes about this long beyond its hold (promote, return, sagas,
/// failback), so the next fault is scheduled after it.
const FAILOVER_EXTRA_MS: u64 = 12_000;
/// A paused node is held past its lease (2 s in `chaos run`'s deployment) with margin:
/// the fault is a home that wakes up believing it still owns its accounts.
const PAUSE_NODE_MIN_MS: u64 = 4_000;

/// Draws the schedule for `spec`; the same spec gives the same schedule.
pub fn make(spec: &ScheduleSpec) -> Result<FaultSchedule, String> {
    if spec.kinds.is_empty() {
        return Err("no fault kinds to schedule".into());
    }
    if spec.regions.len() < 2 {
        return Err("faults need at least two regions".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut steps = Vec::new();
    let mut at = spec.quiet_start_ms;
    let end = spec.run_ms.saturating_sub(spec.quiet_end_ms);
    loop {
        let kind = spec.kinds[rng.random_range(0..spec.kinds.len())];
        let mut hold = rng.random_range(HOLD_MS.0..=HOLD_MS.1);
        if kind == FaultKind::PauseNode {
            hold = hold.max(PAUSE_NODE_MIN_MS);
        }
        let extra = if kind == FaultKind::RegionFailover {
            FAILOVER_EXTRA_MS
        } else {
            0
        };
        if at + hold + extra > end {
            break;
        }
        let region = rng.random_range(0..spec.regions.len());
        let other = (region + rng.random_range(1..spec.regions.len())) % spec.regions.len();
        steps.push(step(
            spec,
            kind,
            &spec.regions[region],
            &spec.regions[other],
            at,
            hold,
        ));
        at += hold + extra + rng.random_range(GAP_MS.0..=GAP_MS.1);
    }
    if steps.is_empty() {
        return Err(format!(
            "a run of {} ms leaves no room for a fault; run longer",
            spec.run_ms
        ));
    }
    Ok(FaultSchedule {
        seed: spec.seed,
        steps,
        run_ms: spec.run_ms,
    })
}

fn step(
    spec: &ScheduleSpec,
    kind: FaultKind,
    region: &str,
    other: &str,
    at_ms: u64,
    hold_ms: u64,
) -> FaultStep {
    let ll = &spec.ledger_local;
    let heal_network = format!("{ll} heal");
    let (target, inject, heal, affects) = match kind {
        FaultKind::Partition => (
            region.to_owned(),
            format!("{ll} partition {region}"),
            Some(heal_network),
            Some(region),
        ),
        FaultKind::PartitionOneWay => (
            format!("{region}>{other}"),
            format!("{ll} partition {region} --to {other}"),
            Some(heal_network),
            Some(region),
        ),
        FaultKind::ResetPeer => (
            region.to_owned(),
            format!("{ll} flaky {region} --probability {RESET_PROBABILITY}"),
            Some(heal_network),
            Some(region),
        ),
        FaultKind::Bandwidth => (
            region.to_owned(),
            format!("{ll} slow {region} --kbit {SLOW_LINK_KBIT}"),
            Some(heal_network),
            Some(region),
        ),
        FaultKind::Latency => (
            region.to_owned(),
            // The jitter's seed follows from the run's, so a seed replays the delays too.
            format!(
                "{ll} delay {region} --ms {LONG_LINK_MS} --jitter-ms {LONG_LINK_JITTER_MS} --seed {}",
                spec.seed ^ at_ms
            ),
            Some(heal_network),
            Some(region),
        ),
        FaultKind::KillBroker
        | FaultKind::KillReplicator
        | FaultKind::KillVoter
        | FaultKind::KillPostgres => {
            let process = match kind {
                FaultKind::KillBroker => "broker",
                FaultKind::KillReplicator => "replicator",
                FaultKind::KillPostgres => "postgres",
                _ => "voter",
            };
            (
                region.to_owned(),
                format!("{ll} kill {region} --process {process}"),
                Some(format!("{ll} start {region} {process}")),
                Some(region),
            )
        }
        FaultKind::PauseNode => (
            region.to_owned(),
            format!("{ll} pause {region} --ms {hold_ms}"),
            None,
            Some(region),
        ),
        FaultKind::PauseLeaderVoter => (
            "leader".to_owned(),
            format!("{ll} pause leader --process voter --ms {hold_ms}"),
            None,
            None,
        ),
        FaultKind::ClockDrift => (
            region.to_owned(),
            format!("{ll} drift {region} --rate {DRIFT_RATE}"),
            Some(format!("{ll} drift {region} --rate 1")),
            Some(region),
        ),
        FaultKind::RegionFailover => (
            region.to_owned(),
            format!("{ll} kill {region}"),
            Some(format!("{ll} restart {region}")),
            Some(region),
        ),
    };
    FaultStep {
        fault: kind.name().to_owned(),
        target,
        at_ms,
        hold_ms,
        inject,
        heal,
        affects: affects.map(str::to_owned),
        failover: kind == FaultKind::RegionFailover,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, kinds: Vec<FaultKind>) -> ScheduleSpec {
        ScheduleSpec {
            seed,
            kinds,
            regions: vec!["eu-west".into(), "us-east".into(), "ap-south".into()],
            run_ms: 90_000,
            quiet_start_ms: 3_000,
            quiet_end_ms: 3_000,
            ledger_local: "ledger-local --data-dir d".into(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = make(&spec(7, ALL_KINDS.to_vec())).expect("schedule");
        assert_eq!(a, make(&spec(7, ALL_KINDS.to_vec())).expect("schedule"));
        assert_ne!(a, make(&spec(8, ALL_KINDS.to_vec())).expect("schedule"));
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_quiet_end() {
        for seed in 0..50 {
            let schedule = make(&spec(seed, ALL_KINDS.to_vec())).expect("schedule");
            for pair in schedule.steps.windows(2) {
                assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms, "{pair:?}");
            }
            let last = schedule.steps.last().expect("a step");
            assert!(last.at_ms + last.hold_ms <= 87_000);
            assert!(schedule.steps[0].at_ms >= 3_000);
        }
    }

    #[test]
    fn each_kind_has_its_commands() {
        let schedule = make(&spec(1, vec![FaultKind::PartitionOneWay])).expect("schedule");
        let step = &schedule.steps[0];
        let (from, to) = step.target.split_once('>').expect("a>b");
        assert_ne!(from, to);
        assert_eq!(
            step.inject,
            format!("ledger-local --data-dir d partition {from} --to {to}")
        );
        assert_eq!(step.heal.as_deref(), Some("ledger-local --data-dir d heal"));
        let failover = make(&spec(1, vec![FaultKind::RegionFailover])).expect("schedule");
        assert!(failover.steps.iter().all(|s| s.failover));
        let pause = make(&spec(1, vec![FaultKind::PauseLeaderVoter])).expect("schedule");
        assert!(pause
            .steps
            .iter()
            .all(|s| s.heal.is_none() && s.affects.is_none()));
        assert!("nonsense".parse::<FaultKind>().is_err());
        assert_eq!("kill-broker".parse(), Ok(FaultKind::KillBroker));
    }

    #[test]
    fn too_short_a_run_is_refused() {
        let mut short = spec(1, ALL_KINDS.to_vec());
        short.run_ms = 5_000;
        assert!(make(&short).is_err());
    }
}
