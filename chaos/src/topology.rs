//! Names, ports and links of a local deployment, all derived from the region index.
//!
//! Region `i` owns ports `base + 40 i + k`: k = 0 PostgreSQL, 1 node API, 2 broker,
//! 3 ownership voter, 4 replicator metrics, 5 proxy admin, 6 (region 0 only) the
//! deployment's Prometheus when monitored, and from 10 on its outgoing
//! links: to region `j`, `10 + 2 j` (node API) and `11 + 2 j` (ownership voter).

pub const REGION_NAMES: [&str; 5] = ["eu-west", "us-east", "ap-south", "sa-east", "af-south"];
pub const DEFAULT_BASE_PORT: u16 = 7100;
const STRIDE: u16 = 40;

/// The links a region's proxy carries to each other region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Api,
    Voter,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Api => "api",
            LinkKind::Voter => "voter",
        }
    }
}

/// How many consecutive ports a deployment of `regions` regions uses from its base.
pub fn port_span(regions: usize) -> u16 {
    STRIDE * regions as u16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub base_port: u16,
    pub regions: usize,
}

impl Topology {
    pub fn new(base_port: u16, regions: usize) -> Result<Self, String> {
        if !(1..=REGION_NAMES.len()).contains(&regions) {
            return Err(format!("regions must be 1 to {}", REGION_NAMES.len()));
        }
        let top = u32::from(base_port) + u32::from(STRIDE) * regions as u32;
        if base_port < 1024 || top > 65_000 {
            return Err(format!(
                "base port {base_port} leaves no room for {regions} regions"
            ));
        }
        Ok(Topology { base_port, regions })
    }

    pub fn name(&self, i: usize) -> &'static str {
        REGION_NAMES[i]
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.regions).map(|i| self.name(i).to_owned()).collect()
    }

    fn port(&self, i: usize, k: u16) -> u16 {
        self.base_port + STRIDE * i as u16 + k
    }

    pub fn pg(&self, i: usize) -> u16 {
        self.port(i, 0)
    }
    pub fn api(&self, i: usize) -> u16 {
        self.port(i, 1)
    }
    pub fn broker(&self, i: usize) -> u16 {
        self.port(i, 2)
    }
    pub fn voter(&self, i: usize) -> u16 {
        self.port(i, 3)
    }
    pub fn replicator(&self, i: usize) -> u16 {
        self.port(i, 4)
    }
    pub fn proxy_admin(&self, i: usize) -> u16 {
        self.port(i, 5)
    }
    /// The PostgreSQL of the active-passive comparison (`active-passive-bench`), in
    /// region `i`'s block: a primary in the first region, a standby in the second.
    pub fn active_passive_pg(&self, i: usize) -> u16 {
        self.port(i, 7)
    }
    /// The deployment's Prometheus (`up --monitoring`), in region 0's block.
    pub fn prometheus(&self) -> u16 {
        self.port(0, 6)
    }

    /// Port on which region `from`'s proxy carries `kind` traffic to region `to`.
    pub fn link(&self, from: usize, to: usize, kind: LinkKind) -> u16 {
        let offset = match kind {
            LinkKind::Api => 0,
            LinkKind::Voter => 1,
        };
        self.port(from, 10 + 2 * to as u16 + offset)
    }

    /// Name of a link in the proxy's admin API: `eu-west>us-east:api`.
    pub fn link_name(&self, from: usize, to: usize, kind: LinkKind) -> String {
        format!("{}>{}:{}", self.name(from), self.name(to), kind.name())
    }

    /// Every port region `i` listens on (to check they are free before starting).
    pub fn ports_of(&self, i: usize) -> Vec<u16> {
        let mut ports: Vec<u16> = (0..7).map(|k| self.port(i, k)).collect();
        for j in (0..self.regions).filter(|j| *j != i) {
            ports.push(self.link(i, j, LinkKind::Api));
            ports.push(self.link(i, j, LinkKind::Voter));
        }
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_never_overlap() {
        let top = Topology::new(7100, 5).expect("topology");
        let mut all: Vec<u16> = (0..5).flat_map(|i| top.ports_of(i)).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
        assert!(Topology::new(7100, 6).is_err());
    }
}
