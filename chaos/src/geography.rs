//! A simulated geography: a round trip per pair of regions, like real inter-region
//! links, on every kind of link between them (API, node to voter, Raft, Kafka).
//!
//! Built on the long-link machinery ([`crate::delay`], [`crate::network`]): for each
//! pair `i < j`, region `i`'s namespace queues every packet to and from `j` to a delay
//! loop of its own holding it half the round trip, so a packet is held once each way
//! and a round trip between the two grows by the pair's figure. The rules live in their
//! own chain, which `heal` leaves alone: faults come and go, distance stays.
//!
//! Distance needs slower voters: openraft 0.9 times every AppendEntries out at the
//! heartbeat interval, so [`Geography::voter_timings`] puts the heartbeat above the
//! longest round trip and the election timeouts and the lease ttl above that
//! (docs/ownership.md, "Timing across real regions").

use std::time::Duration;

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// The round trip between two regions, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub a: String,
    pub b: String,
    pub rtt_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geography {
    pub links: Vec<Link>,
    /// Each packet's delay varies by up to this much either way.
    pub jitter_ms: u64,
}

/// The voters' and leases' timings a geography needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterTimings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub lease_ttl_ms: u64,
}

impl VoterTimings {
    /// The voters' environment that sets these timings (the lease ttl goes to the
    /// cluster's `init_cluster` instead).
    pub fn voter_env(&self) -> Vec<(String, String)> {
        [
            ("OWNERSHIP_HEARTBEAT_MS", self.heartbeat_ms),
            ("OWNERSHIP_ELECTION_MIN_MS", self.election_min_ms),
            ("OWNERSHIP_ELECTION_MAX_MS", self.election_max_ms),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_string()))
        .to_vec()
    }
}

impl Geography {
    /// Round trips between AWS's eu-west-1, us-east-1 and ap-south-1 as published
    /// inter-region latency tables give them (rounded), 2 ms of jitter.
    pub fn earth(regions: &[String]) -> anyhow::Result<Geography> {
        const EARTH: [(&str, &str, u64); 3] = [
            ("eu-west", "us-east", 70),
            ("eu-west", "ap-south", 120),
            ("us-east", "ap-south", 190),
        ];
        for name in regions {
            ensure!(
                EARTH.iter().any(|(a, b, _)| a == name || b == name),
                "the built-in geography knows eu-west, us-east and ap-south, not {name:?}"
            );
        }
        let links = EARTH
            .iter()
            .filter(|(a, b, _)| regions.iter().any(|r| r == a) && regions.iter().any(|r| r == b))
            .map(|(a, b, rtt)| Link {
                a: (*a).to_owned(),
                b: (*b).to_owned(),
                rtt_ms: *rtt,
            })
            .collect();
        Ok(Geography {
            links,
            jitter_ms: 2,
        })
    }

    /// The round trip between two regions (0 for a region and itself or an unknown pair).
    pub fn rtt(&self, a: &str, b: &str) -> Duration {
        self.link(a, b)
            .map_or(Duration::ZERO, |l| Duration::from_millis(l.rtt_ms))
    }

    /// The link between two regions, either way round.
    pub fn link(&self, a: &str, b: &str) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    /// The delay each of a pair's packets gets (half the round trip: once each way),
    /// and the jitter, checked to be a delay the loop accepts.
    pub fn one_way(&self, link: &Link) -> anyhow::Result<(Duration, Duration)> {
        let one_way = Duration::from_millis(link.rtt_ms / 2);
        let jitter = Duration::from_millis(self.jitter_ms);
        if one_way.is_zero() || jitter > one_way {
            bail!(
                "{}<->{}: a round trip of {} ms cannot carry {} ms of jitter each way",
                link.a,
                link.b,
                link.rtt_ms,
                self.jitter_ms
            );
        }
        Ok((one_way, jitter))
    }

    /// Heartbeat at 1.5x the longest round trip plus the jitter (never below the
    /// defaults'), elections at 3x and 5x the heartbeat, and a lease that outlasts the
    /// loss of the Raft leader: renewals go every third of the ttl, so the leader may
    /// die a third of a ttl after the last one; the remaining two thirds must cover
    /// [`leader_loss_ms`], with two heartbeats of margin.
    ///
    /// The elections need not be longer: openraft 0.9 followers stand only after a
    /// leader lease (the election maximum) plus their own timeout, 8-10 heartbeats
    /// here, so a few late heartbeats under load start no election.
    pub fn voter_timings(&self) -> VoterTimings {
        let worst = self.links.iter().map(|l| l.rtt_ms).max().unwrap_or(0) + 2 * self.jitter_ms;
        let heartbeat_ms = (worst * 3 / 2).max(100);
        let election_min_ms = heartbeat_ms * 3;
        let election_max_ms = heartbeat_ms * 5;
        let lease_ttl_ms = leader_loss_ms(election_max_ms, worst) * 3 / 2 + 2 * heartbeat_ms;
        VoterTimings {
            heartbeat_ms,
            election_min_ms,
            election_max_ms,
            lease_ttl_ms: lease_ttl_ms.max(2_000),
        }
    }
}

/// The longest the voters can go without committing anything when the Raft leader
/// dies, under openraft 0.9: a follower that heard the leader refuses votes for a
/// leader lease of `election_max_ms` and stands for election only after that lease
/// plus its own election timeout (at most `election_max_ms` again); then the vote,
/// the new leader's first commit, a renewal's hop from its region's voter to the
/// leader and its commit each cross (at worst) the longest round trip. A lease whose
/// renewals cannot bridge this stops every region's writes while the voters elect
/// (measured under `--geo` with a ttl of 2.9 s: 6 s of "lease has run out" under load).
pub fn leader_loss_ms(election_max_ms: u64, worst_rtt_ms: u64) -> u64 {
    2 * election_max_ms + 4 * worst_rtt_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["eu-west", "us-east", "ap-south"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn the_earth_profile_gives_every_pair_its_round_trip() {
        let geo = Geography::earth(&names()).expect("known regions");
        assert_eq!(geo.links.len(), 3);
        assert_eq!(geo.rtt("us-east", "ap-south"), Duration::from_millis(190));
        assert_eq!(geo.rtt("ap-south", "us-east"), Duration::from_millis(190));
        assert_eq!(geo.rtt("eu-west", "eu-west"), Duration::ZERO);
        let (one_way, jitter) = geo.one_way(&geo.links[0]).expect("a delay");
        assert_eq!(
            (one_way, jitter),
            (Duration::from_millis(35), Duration::from_millis(2))
        );
        assert!(Geography::earth(&["mars".to_owned()]).is_err());
    }

    #[test]
    fn voters_get_a_heartbeat_above_the_longest_round_trip() {
        let geo = Geography::earth(&names()).expect("known regions");
        let t = geo.voter_timings();
        assert!(t.heartbeat_ms > 194, "{t:?}");
        assert!(t.election_min_ms > 2 * t.heartbeat_ms && t.election_max_ms > t.election_min_ms);
        assert!(
            t.lease_ttl_ms * 2 / 3 > leader_loss_ms(t.election_max_ms, 194),
            "a lease renewed a third of a ttl before the leader died outlasts the election: {t:?}"
        );
        let near = Geography {
            links: Vec::new(),
            jitter_ms: 0,
        };
        assert_eq!(
            near.voter_timings().heartbeat_ms,
            100,
            "never below the defaults"
        );
    }
}
