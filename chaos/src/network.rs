//! Where a deployment's regions live on the network, and the faults that cut links.
//!
//! `Loopback` (the default): every process listens on 127.0.0.1; the only links that
//! can be faulted are the ones the proxies carry (node-to-node API, node-to-voter).
//!
//! `Namespaces`: each region runs in its own Linux network namespace with its own
//! address on a bridge, so *every* link between regions (API, node-to-voter,
//! voter-to-voter Raft, the appliers' Kafka fetches from another region's broker) is
//! real traffic between two addresses, and packet filters in the region's namespace
//! cut it. This was chosen over per-region ingress proxies because a Kafka client
//! follows the broker's advertised address (one address for every client, so an
//! ingress proxy could not tell which region a connection comes from) and Raft
//! membership names one address per voter; in a namespace the address *is* the
//! region. Costs: it needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` and
//! `iptables`, which this machine kind has. This kernel has no `netem`: latency on
//! those links comes from a user-space delay loop fed by `NFQUEUE` ([`crate::delay`]).
//!
//! Faults, named after Chaos Mesh's NetworkChaos `partition` action:
//! - [`Network::partition`] of region X drops every packet between X and the others,
//!   both directions (rules in X's namespace only).
//! - [`Network::partition_one_way`] `from` -> `to` drops the packets `from` sends on
//!   connections *it* opens to `to` (conntrack direction ORIGINAL): `from` can no
//!   longer reach `to`, while `to` still reaches `from` and gets its answers.
//! - [`Network::reset_peer`] (flaky link) resets a random share of the TCP packets
//!   between a region and the others; [`Network::bandwidth`] (slow link) puts its
//!   links to the others through a token bucket (`tc` htb; no `netem` here).
//! - [`Network::latency`] (long link) queues the packets between a region and the
//!   others to a user-space delay loop ([`crate::delay`]): latency with jitter, on
//!   every kind of link, without `netem`.
//! - [`Network::heal`] flushes the rules and slow links of every region.
//!
//! Distance ([`Network::distance`], [`crate::geography`]) is not a fault: its rules
//! sit in a chain of their own that heal leaves alone.
//!
//! The test process stays in the root namespace and reaches every region through the
//! bridge's own address, which no fault touches: a client near each region.

use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Network {
    #[default]
    Loopback,
    /// One namespace per region on one bridge; `id` names them and picks the subnet,
    /// so deployments with different ids can run side by side.
    Namespaces { id: u16 },
}

impl Network {
    /// Namespaces named and addressed after the deployment's base port (port blocks
    /// are claimed per test and aligned to hundreds, so ids never collide).
    pub fn namespaces_for(base_port: u16) -> Network {
        Network::Namespaces {
            id: base_port / 100,
        }
    }

    pub fn is_namespaces(&self) -> bool {
        matches!(self, Network::Namespaces { .. })
    }

    /// The address region `i`'s processes listen on and are reached at.
    pub fn host(&self, i: usize) -> String {
        match self {
            Network::Loopback => "127.0.0.1".to_owned(),
            Network::Namespaces { id } => format!("{}.{}", subnet(*id), i + 1),
        }
    }

    /// Region `i`'s namespace, if regions have their own.
    pub fn namespace(&self, i: usize) -> Option<String> {
        match self {
            Network::Loopback => None,
            Network::Namespaces { id } => Some(format!("lg{id}r{i}")),
        }
    }

    /// Makes the bridge and one namespace per region (removing leftovers of a run
    /// that died with the same id first).
    pub fn create(&self, regions: usize) -> anyhow::Result<()> {
        let Network::Namespaces { id } = *self else {
            return Ok(());
        };
        for tool in ["ip", "iptables"] {
            if which(tool).is_none() {
                bail!("`{tool}` is missing: network namespaces need iproute2 and iptables (scripts/setup.sh installs them)");
            }
        }
        self.destroy(regions);
        let bridge = bridge_name(id);
        ip(&["link", "add", &bridge, "type", "bridge"]).context(
            "create the deployment's bridge (network namespaces need root: CAP_NET_ADMIN)",
        )?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", subnet(id)),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..regions {
            let namespace = self.namespace(i).unwrap_or_default();
            let (outside, inside) = (outside_veth(id, i), inside_veth(id, i));
            ip(&["netns", "add", &namespace])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &namespace])?;
            ip(&["link", "set", &outside, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.host(i));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", &inside])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            prepare_filters(&namespace)?;
        }
        Ok(())
    }

    /// Removes the namespaces and the bridge (what is already gone is fine).
    pub fn destroy(&self, regions: usize) {
        let Network::Namespaces { id } = *self else {
            return;
        };
        for i in 0..regions {
            if let Some(namespace) = self.namespace(i) {
                let _ = ip(&["netns", "del", &namespace]);
            }
            // A create that failed between making a veth pair and moving one end into
            // its namespace leaves the pair in the root namespace; the next create
            // with this id would fail on it ("File exists").
            let _ = ip(&["link", "del", &outside_veth(id, i)]);
        }
        let _ = ip(&["link", "del", &bridge_name(id)]);
    }

    /// Drops every packet between region `i` and the other regions, both ways.
    pub fn partition(&self, i: usize, regions: usize) -> anyhow::Result<()> {
        self.both_ways(i, regions, &["-j", "DROP"])
    }

    /// Adds to region `i`'s fault chain, for every other region's address as source
    /// and as destination, a rule ending in `rule` (matches and target).
    fn both_ways(&self, i: usize, regions: usize, rule: &[&str]) -> anyhow::Result<()> {
        let namespace = self.fault_namespace(i)?;
        for j in (0..regions).filter(|j| *j != i) {
            let peer = self.host(j);
            for side in ["-s", "-d"] {
                let mut args = vec!["-A", CHAIN, side, &peer];
                args.extend_from_slice(rule);
                iptables(&namespace, &args)?;
            }
        }
        Ok(())
    }

    /// Region `from` can no longer reach region `to` (connections `from` opens, and
    /// the ones it had open, go silent); `to` still reaches `from`.
    pub fn partition_one_way(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let namespace = self.fault_namespace(from)?;
        iptables(
            &namespace,
            &[
                "-A",
                CHAIN,
                "-d",
                &self.host(to),
                "-m",
                "conntrack",
                "--ctdir",
                "ORIGINAL",
                "-j",
                "DROP",
            ],
        )
    }

    /// A flaky link (Toxiproxy's `reset_peer`): each TCP packet between region `i` and
    /// the others is answered by a reset with `probability`, both ways, so connections
    /// (Kafka fetches, Raft RPCs, API calls) break now and then and are made again.
    pub fn reset_peer(&self, i: usize, regions: usize, probability: f64) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&probability) || probability == 0.0 {
            bail!("a reset probability is in (0, 1], not {probability}");
        }
        let probability = probability.to_string();
        self.both_ways(
            i,
            regions,
            &[
                "-p",
                "tcp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )
    }

    /// A slow link (Chaos Mesh's and Toxiproxy's `bandwidth`): what region `i` sends to
    /// the others, and what they send to it, goes through a token bucket of `kbit`
    /// kbit/s each way (`tc` htb with a class per direction; clients near a region
    /// are not slowed). This kernel has no `netem`, so there is no fixed delay: a
    /// slow link delays by queueing, more for large Kafka fetches than for Raft
    /// heartbeats, and drops what waits longer than the queue allows.
    pub fn bandwidth(&self, i: usize, regions: usize, kbit: u32) -> anyhow::Result<()> {
        if kbit == 0 {
            bail!("a link of 0 kbit/s is a partition: use `partition`");
        }
        let Network::Namespaces { id } = *self else {
            self.fault_namespace(i)?;
            return Ok(());
        };
        for j in 0..regions {
            let towards: Vec<String> = if j == i {
                (0..regions)
                    .filter(|k| *k != i)
                    .map(|k| self.host(k))
                    .collect()
            } else {
                vec![self.host(i)]
            };
            let namespace = self.fault_namespace(j)?;
            let device = inside_veth(id, j);
            let tc = |args: &[&str]| {
                run(Command::new("ip")
                    .args(["netns", "exec", &namespace, "tc"])
                    .args(args))
            };
            // Replace, not add: a second slow-link fault before a heal changes the rate.
            let _ = tc(&["qdisc", "del", "dev", &device, "root"]);
            tc(&[
                "qdisc", "add", "dev", &device, "root", "handle", "1:", "htb", "default", "10",
            ])?;
            tc(&[
                "class", "add", "dev", &device, "parent", "1:", "classid", "1:10", "htb", "rate",
                "10gbit",
            ])?;
            tc(&[
                "class",
                "add",
                "dev",
                &device,
                "parent",
                "1:",
                "classid",
                "1:20",
                "htb",
                "rate",
                &format!("{kbit}kbit"),
            ])?;
            for host in &towards {
                tc(&[
                    "filter",
                    "add",
                    "dev",
                    &device,
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    &format!("{host}/32"),
                    "flowid",
                    "1:20",
                ])?;
            }
        }
        Ok(())
    }

    /// A long link (Toxiproxy's `latency`, Chaos Mesh's NetworkChaos `delay`): every
    /// packet between region `i` and the others goes to netfilter queue `queue` in
    /// `i`'s namespace, where a delay loop ([`crate::delay`]) holds it. Start the loop
    /// first: until one is bound (`--queue-bypass`) packets pass undelayed.
    pub fn latency(&self, i: usize, regions: usize, queue: u16) -> anyhow::Result<()> {
        let queue = queue.to_string();
        self.both_ways(
            i,
            regions,
            &["-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"],
        )
    }

    /// Distance between regions `i` and `j` ([`crate::geography`]): every packet
    /// between them goes to netfilter queue `queue` in `i`'s namespace (a delay loop
    /// bound there holds it). In its own chain, after the faults' and untouched by
    /// [`Network::heal`].
    pub fn distance(&self, i: usize, j: usize, queue: u16) -> anyhow::Result<()> {
        let namespace = self.namespace(i).context(
            "a geography needs regions in network namespaces (`ledger-local up --namespaces`)",
        )?;
        let (peer, queue) = (self.host(j), queue.to_string());
        for side in ["-s", "-d"] {
            iptables(
                &namespace,
                &[
                    "-A",
                    GEO_CHAIN,
                    side,
                    &peer,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                    "--queue-bypass",
                ],
            )?;
        }
        Ok(())
    }

    /// Ends every network fault of every region: packet filters (partitions, flaky
    /// and long links) and slow links.
    pub fn heal(&self, regions: usize) -> anyhow::Result<()> {
        for i in 0..regions {
            let namespace = self.fault_namespace(i)?;
            iptables(&namespace, &["-F", CHAIN])?;
            if let Network::Namespaces { id } = *self {
                // No slow link is fine: there is nothing to delete then.
                let _ = run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &namespace,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    &inside_veth(id, i),
                    "root",
                ]));
            }
        }
        Ok(())
    }

    fn fault_namespace(&self, i: usize) -> anyhow::Result<String> {
        self.namespace(i).context(
            "network faults on Kafka and Raft links need regions in network namespaces \
             (`ledger-local up --network namespaces`)",
        )
    }
}

/// The chain holding a region's faults (heal flushes it, nothing else).
const CHAIN: &str = "LEDGER-FAULTS";

/// The chain holding a region's distance to the others (a geography: never flushed).
const GEO_CHAIN: &str = "LEDGER-GEO";

/// Every packet in and out passes [`CHAIN`]; and connection tracking is on from the
/// start. Without a rule that uses it, conntrack starts only with the first one-way
/// fault and picks up open connections mid-stream, taking the direction of the first
/// packet it sees for the one that opened the connection: an applier's fetch
/// connection could be taken for one the broker opened, and survive the cut.
fn prepare_filters(namespace: &str) -> anyhow::Result<()> {
    iptables(namespace, &["-N", CHAIN])?;
    iptables(namespace, &["-N", GEO_CHAIN])?;
    for hook in ["INPUT", "OUTPUT"] {
        iptables(namespace, &["-A", hook, "-j", CHAIN])?;
        iptables(namespace, &["-A", hook, "-j", GEO_CHAIN])?;
        iptables(
            namespace,
            &[
                "-A",
                hook,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "ACCEPT",
            ],
        )?;
    }
    Ok(())
}

/// `10.A.B` for id `A*256+B` offset into 10.100.0.0 and up.
fn subnet(id: u16) -> String {
    format!("10.{}.{}", 100 + id / 256, id % 256)
}

/// Region `i`'s veth end on the bridge, in the root namespace.
fn outside_veth(id: u16, i: usize) -> String {
    format!("lg{id}v{i}")
}

/// Region `i`'s end of its veth pair, inside its namespace.
fn inside_veth(id: u16, i: usize) -> String {
    format!("lg{id}p{i}")
}

fn bridge_name(id: u16) -> String {
    format!("lg{id}br")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

fn iptables(namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip")
        .args(["netns", "exec", namespace, "iptables", "-w"])
        .args(args))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let what = format!("{command:?}");
    let output = command.output().with_context(|| format!("run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.exists())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_get_their_own_names_and_addresses() {
        let network = Network::namespaces_for(20_300);
        assert_eq!(network, Network::Namespaces { id: 203 });
        assert_eq!(network.host(0), "10.100.203.1");
        assert_eq!(network.host(2), "10.100.203.3");
        assert_eq!(network.namespace(1).as_deref(), Some("lg203r1"));
        assert_eq!(
            Network::namespaces_for(31_900).host(0),
            "10.101.63.1",
            "ids above 255 move to the next /16"
        );
        assert_eq!(Network::Loopback.host(3), "127.0.0.1");
        assert_eq!(Network::Loopback.namespace(0), None);
        assert!(Network::Loopback.partition(0, 3).is_err());
        assert!(Network::Loopback.bandwidth(0, 3, 256).is_err());
        assert!(Network::Loopback.latency(0, 3, 17).is_err());
        assert!(
            network.reset_peer(0, 3, 0.0).is_err(),
            "no resets is no fault"
        );
        assert!(network.reset_peer(0, 3, 1.5).is_err());
        assert!(
            network.bandwidth(0, 3, 0).is_err(),
            "0 kbit/s is a partition"
        );
    }
}
