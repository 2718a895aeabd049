//! What the figures were measured on: they mean little without it, and nothing on a busy
//! machine (hence the load average at the start and the end of the run).

use std::fmt;

use serde::Serialize;

use crate::cluster::BenchCluster;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub ram_mb: u64,
    pub kernel: String,
    pub postgres_version: String,
    pub load_average_start: LoadAverage,
    pub load_average_end: LoadAverage,
}

/// `/proc/loadavg`: runnable processes averaged over 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl LoadAverage {
    pub fn read() -> Self {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut numbers = text
            .split_whitespace()
            .map(|n| n.parse::<f64>().unwrap_or(f64::NAN));
        Self {
            one: numbers.next().unwrap_or(f64::NAN),
            five: numbers.next().unwrap_or(f64::NAN),
            fifteen: numbers.next().unwrap_or(f64::NAN),
        }
    }
}

impl fmt::Display for LoadAverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} {:.2} {:.2}", self.one, self.five, self.fifteen)
    }
}

impl Machine {
    pub async fn describe(cluster: &BenchCluster, load: LoadAverage) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            ram_mb: ram_kb / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            postgres_version: cluster.server_version().await,
            load_average_start: load,
            load_average_end: load,
        }
    }

    pub fn summary(&self) -> String {
        let pg = self
            .postgres_version
            .split(" on ")
            .next()
            .unwrap_or(&self.postgres_version);
        format!(
            "{} × {}, {} MB RAM, Linux {}, {pg}",
            self.cores, self.cpu_model, self.ram_mb, self.kernel
        )
    }
}
