//! Faults a deployment can take and heal: whole-region SIGKILL, one process killed and
//! started again, a process paused (SIGSTOP) for a while, and network partitions,
//! flaky, long and slow links (regions in namespaces only; see [`crate::network`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use harness::process::{pid_alive, signal_group};
use nix::sys::signal::Signal;

use crate::proc_stat::children_of;

use super::start::{
    remove_stale_lock, start_delay, start_postgres, start_process, wait_process, DelayLoop,
};
use super::{raw_pid, Deployment, STOP_GRACE};

/// How long a delay loop may take to bind its queue, or to stop.
const DELAY_READY: Duration = Duration::from_secs(10);

impl Deployment {
    /// Pauses one process of a region (SIGSTOP) for `pause`, then lets it go on.
    pub fn pause_process(&self, name: &str, process: &str, pause: Duration) -> anyhow::Result<()> {
        let pid = self.pid_of(name, process)?;
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGSTOP)
            .with_context(|| format!("stop the {process} of {name} (pid {pid})"))?;
        // Fault timing, not synchronisation: the process is frozen for exactly this long.
        std::thread::sleep(pause);
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGCONT)
            .with_context(|| format!("continue the {process} of {name} (pid {pid})"))
    }

    /// Pauses a region's node (SIGSTOP) for `pause`, then lets it go on (SIGCONT).
    pub fn pause_node(&self, name: &str, pause: Duration) -> anyhow::Result<()> {
        self.pause_process(name, "node", pause)
    }

    /// Stops (SIGSTOP) a region's replicator, so its relay publishes nothing more.
    pub fn hold_replicator(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(name, "replicator")?;
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGSTOP)
            .with_context(|| format!("stop the replicator of {name} (pid {pid})"))
    }

    /// Lets a replicator stopped by [`Deployment::hold_replicator`] go on (SIGCONT).
    pub fn release_replicator(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(name, "replicator")?;
        nix::sys::signal::kill(raw_pid(pid), Signal::SIGCONT)
            .with_context(|| format!("continue the replicator of {name} (pid {pid})"))
    }

    /// SIGKILLs one process of a region and waits until it is gone. PostgreSQL goes
    /// with its backends and auxiliary processes, as when its machine fails: a new
    /// server refuses to start while an old child still holds the shared memory.
    pub fn kill_process(&self, name: &str, process: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(name, process)?;
        let mut pids = vec![pid];
        if process == "postgres" {
            pids.extend(children_of(pid));
        }
        for victim in &pids {
            nix::sys::signal::kill(raw_pid(*victim), Signal::SIGKILL)
                .with_context(|| format!("kill the {process} of {name} (pid {victim})"))?;
        }
        reap(&pids);
        Ok(())
    }

    /// Starts a killed process of a region again, waits until it answers, and saves
    /// the state (its new pid). A restarted PostgreSQL leads a process group of its
    /// own (the region's group may have been started by another session).
    pub async fn start_process(&mut self, name: &str, process: &str) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        if let Some(pid) = self.regions[i].pid(process).filter(|p| pid_alive(*p)) {
            anyhow::bail!("the {process} of {name} is still running (pid {pid})");
        }
        if process == "postgres" {
            let pgdata = self.regions[i].dir.join("pgdata");
            remove_stale_lock(&pgdata)?;
            let port = self.topology().pg(i);
            let (_, pid, _) = start_postgres(self.regions[i].dir.clone(), &self.network, i, port)
                .await
                .with_context(|| format!("start PostgreSQL of {name}"))?;
            self.regions[i].pids.insert("postgres".to_owned(), pid);
        } else {
            start_process(self, i, process)?;
            wait_process(&self.regions[i], process).await?;
        }
        self.save()
    }

    /// Restarts the node of `name` with its clocks running at `rate` (None: real time)
    /// through libfaketime, and waits until it serves. The restart is a SIGKILL: the
    /// node keeps nothing but its database, so this adds a node kill to the drift.
    pub async fn set_node_clock_rate(
        &mut self,
        name: &str,
        rate: Option<f64>,
    ) -> anyhow::Result<()> {
        if let Some(rate) = rate {
            anyhow::ensure!(
                rate.is_finite() && (0.5..=2.0).contains(&rate),
                "a clock rate of {rate} is not between 0.5 and 2"
            );
            anyhow::ensure!(
                Path::new(super::start::LIBFAKETIME).exists(),
                "{} is missing: install the Debian package faketime (scripts/setup.sh does)",
                super::start::LIBFAKETIME
            );
        }
        let i = self.region(name)?.index;
        if self.regions[i].pid("node").is_some_and(pid_alive) {
            self.kill_process(name, "node")?;
        }
        self.regions[i].node_clock_rate = rate.filter(|r| *r != 1.0);
        self.start_process(name, "node").await
    }

    /// SIGKILLs every process of a region at once (its process group, and the group
    /// of a PostgreSQL started again on its own).
    pub fn kill_region(&self, name: &str) -> anyhow::Result<()> {
        let region = self.region(name)?;
        signal_group(region.pgid, Signal::SIGKILL)
            .with_context(|| format!("kill process group {}", region.pgid))?;
        if let Some(pg) = region.pid("postgres").filter(|pg| *pg != region.pgid) {
            // Gone already is fine: the group is what must not survive.
            let _ = signal_group(pg, Signal::SIGKILL);
        }
        let pids: Vec<u32> = region.pids.values().copied().collect();
        reap(&pids);
        Ok(())
    }

    /// Cuts region `name` off from every other region, every link (namespaces only).
    pub fn partition(&self, name: &str) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        self.network.partition(i, self.regions.len())
    }

    /// Region `from` can no longer reach region `to`; `to` still reaches `from`.
    pub fn partition_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (from, to) = (self.region(from)?.index, self.region(to)?.index);
        self.network.partition_one_way(from, to)
    }

    /// A flaky link between region `name` and the others (TCP resets at random).
    pub fn reset_peer(&self, name: &str, probability: f64) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        self.network.reset_peer(i, self.regions.len(), probability)
    }

    /// A slow link between region `name` and the others, `kbit` kbit/s each way.
    pub fn bandwidth(&self, name: &str, kbit: u32) -> anyhow::Result<()> {
        let i = self.region(name)?.index;
        self.network.bandwidth(i, self.regions.len(), kbit)
    }

    /// A long link between region `name` and the others: every packet each way held
    /// for `latency` ± up to `jitter` (drawn from `seed`) by a delay loop in the
    /// region's namespace ([`crate::delay`]), which this starts first and keeps as the
    /// region's `delay` process until the heal.
    pub async fn latency(
        &mut self,
        name: &str,
        latency: Duration,
        jitter: Duration,
        seed: u64,
    ) -> anyhow::Result<()> {
        crate::delay::DelayLine::new(latency, jitter, seed)?;
        let i = self.region(name)?.index;
        self.network.namespace(i).context(
            "a long link needs regions in network namespaces (`ledger-local up --network namespaces`)",
        )?;
        // A second long link on the same region replaces the first (its rules stay
        // and feed the new loop); other regions' long links go on.
        self.stop_delays(Some(i))?;
        let delay_loop = DelayLoop {
            what: "delay".to_owned(),
            queue: crate::delay::QUEUE,
            latency,
            jitter,
            seed,
        };
        self.start_delay_loop(i, &delay_loop).await?;
        self.network
            .latency(i, self.regions.len(), crate::delay::QUEUE)
    }

    /// Starts a delay loop in region `i` and waits until it has bound its queue (until
    /// then packets sent to the queue would pass undelayed).
    pub(super) async fn start_delay_loop(
        &mut self,
        i: usize,
        delay_loop: &DelayLoop,
    ) -> anyhow::Result<()> {
        let log = self.regions[i].dir.join(format!("{}.log", delay_loop.what));
        let logged_before = std::fs::read_to_string(&log).map_or(0, |t| t.len());
        start_delay(self, i, delay_loop)?;
        self.save()?;
        let ready = harness::wait::wait_until(DELAY_READY, Duration::from_millis(20), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.get(logged_before..)
                    .is_some_and(|new| new.contains("delaying packets"))
                    .then_some(())
            }
        })
        .await;
        ready.with_context(|| {
            format!(
                "the delay loop {} of {} did not bind its queue within {DELAY_READY:?} (see {})",
                delay_loop.what,
                self.regions[i].name,
                log.display()
            )
        })
    }

    /// Ends every partition, flaky link, long link and slow link: the packet filters
    /// first (nothing more is queued), then the delay loops, which let what they hold
    /// go as they stop.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.network.heal(self.regions.len())?;
        self.stop_delays(None)
    }

    /// Stops the delay loop of region `only` (or of every region), SIGTERM then SIGKILL
    /// after a grace, and forgets it.
    fn stop_delays(&mut self, only: Option<usize>) -> anyhow::Result<()> {
        let pids: Vec<u32> = self
            .regions
            .iter_mut()
            .filter(|r| only.is_none_or(|i| r.index == i))
            .filter_map(|r| r.pids.remove("delay"))
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in &pids {
            if pid_alive(*pid) {
                let _ = nix::sys::signal::kill(raw_pid(*pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + DELAY_READY;
        while pids.iter().copied().any(pid_alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in pids.iter().copied().filter(|p| pid_alive(*p)) {
            let _ = nix::sys::signal::kill(raw_pid(pid), Signal::SIGKILL);
        }
        reap(&pids);
        self.save()
    }

    /// The region whose voter leads the ownership cluster now, as its voters see it.
    pub async fn leader_region(&self) -> anyhow::Result<String> {
        let voters = self.regions.iter().map(|r| r.voter.clone()).collect();
        let client = ownership_client::OwnershipClient::new(voters, "ledger-local", &self.secret)
            .context("ownership client")?;
        for region in &self.regions {
            let Ok(status) = client.cluster_status(&region.voter).await else {
                continue;
            };
            if let Some(leader) = status.current_leader {
                if let Some(r) = self.regions.iter().find(|r| r.index as u64 + 1 == leader) {
                    return Ok(r.name.clone());
                }
            }
        }
        anyhow::bail!("no voter knows a leader")
    }

    fn pid_of(&self, name: &str, process: &str) -> anyhow::Result<u32> {
        self.region(name)?
            .pid(process)
            .with_context(|| format!("{name} has no {process}"))
    }
}

/// Waits until `pids` are gone, reaping them: processes this one started stay zombies
/// until reaped, and PostgreSQL refuses to start while its old pid still looks alive.
fn reap(pids: &[u32]) {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        for pid in pids {
            let _ =
                nix::sys::wait::waitpid(raw_pid(*pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        if !pids.iter().copied().any(pid_alive) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
