//! A deployment's geography on its links ([`crate::geography`]): per pair of regions
//! `i < j`, a delay loop in `i`'s namespace (process `distance-<j>`, queue
//! [`GEO_QUEUE_BASE`] + `j`) holds every packet between them half the pair's round
//! trip. The loops belong to their region's process group, so a killed region loses
//! its loops with it and [`Deployment::restart_region`] starts them again.

use anyhow::Context;

use super::start::DelayLoop;
use super::Deployment;

/// The netfilter queue of region `j`'s distance, in every nearer-indexed namespace
/// (queues are per namespace; the long-link fault uses [`crate::delay::QUEUE`]).
pub const GEO_QUEUE_BASE: u16 = 40;

impl Deployment {
    /// Puts the deployment's geography (if any) on its links: every loop first, then
    /// the packet rules that feed them.
    pub(super) async fn apply_geography(&mut self) -> anyhow::Result<()> {
        if self.geography.is_none() {
            return Ok(());
        }
        for i in 0..self.regions.len() {
            self.start_distance_loops(i).await?;
        }
        for (i, j) in self.distance_pairs() {
            self.network
                .distance(i, j, GEO_QUEUE_BASE + j as u16)
                .with_context(|| {
                    format!(
                        "route {}<->{} through its delay loop",
                        self.regions[i].name, self.regions[j].name
                    )
                })?;
        }
        Ok(())
    }

    /// Starts the delay loops region `i` holds for its geography (its pairs with
    /// farther-indexed regions).
    pub(super) async fn start_distance_loops(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(geography) = self.geography.clone() else {
            return Ok(());
        };
        for (a, j) in self.distance_pairs().into_iter().filter(|(a, _)| *a == i) {
            let (name_a, name_b) = (&self.regions[a].name, &self.regions[j].name);
            let link = geography
                .link(name_a, name_b)
                .with_context(|| format!("no round trip for {name_a}<->{name_b}"))?;
            let (latency, jitter) = geography.one_way(link)?;
            let delay_loop = DelayLoop {
                what: format!("distance-{j}"),
                queue: GEO_QUEUE_BASE + j as u16,
                latency,
                jitter,
                seed: (a * 16 + j) as u64,
            };
            self.start_delay_loop(i, &delay_loop).await?;
        }
        Ok(())
    }

    /// The pairs `(i, j)`, `i < j`, that have a round trip in the geography.
    fn distance_pairs(&self) -> Vec<(usize, usize)> {
        let Some(geography) = &self.geography else {
            return Vec::new();
        };
        let n = self.regions.len();
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|(i, j)| {
                !geography
                    .rtt(&self.regions[*i].name, &self.regions[*j].name)
                    .is_zero()
            })
            .collect()
    }
}
