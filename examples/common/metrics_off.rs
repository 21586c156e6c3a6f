//! `--metrics-addr` in a build without the `prometheus` feature. The flag is refused as it is parsed
//! (`cli::MetricsArgs`), so no endpoint is ever made: these types have no values, and tell the
//! compiler so. Build with `--features prometheus` for the real one (`metrics.rs`).

use std::net::SocketAddr;

use socketserver::InheritedSocket;
use socketserver::stats::Stats;
use socketserver::upgrade::Upgrade;

/// No endpoint exists in this build.
pub enum Endpoint {}

/// No endpoint runs in this build.
pub enum Running {}

impl Endpoint {
    /// Refuses: this build has no exporter.
    ///
    /// # Errors
    /// Always, naming the feature to build with.
    pub fn bind(
        addr: SocketAddr,
        _inherited: Option<InheritedSocket>,
        _stats: Stats,
    ) -> anyhow::Result<Endpoint> {
        anyhow::bail!("--metrics-addr {addr}: {}", super::cli::NO_PROMETHEUS)
    }

    pub fn addr(&self) -> SocketAddr {
        match *self {}
    }

    pub fn hand_over(&self, _upgrade: Upgrade) -> std::io::Result<Upgrade> {
        match *self {}
    }

    pub fn start(self) -> anyhow::Result<Running> {
        match self {}
    }
}

impl Running {
    pub fn stop(self) {
        match self {}
    }
}
