//! The machine a run ran on, read with sysinfo.

use serde::{Deserialize, Serialize};

/// CPU, cores, memory and OS of the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_brand: String,
    pub cpu_arch: String,
    pub physical_cores: Option<usize>,
    pub logical_cores: usize,
    pub total_memory_bytes: u64,
    pub os: String,
    pub kernel: Option<String>,
    pub hostname: Option<String>,
}

impl MachineInfo {
    /// Reads the machine with sysinfo (CPU list and memory only; takes milliseconds).
    pub fn collect() -> MachineInfo {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_all();
        sys.refresh_memory();
        let cpus = sys.cpus();
        let cpu_brand = cpus
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown".to_string());
        let logical_cores = if cpus.is_empty() {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        } else {
            cpus.len()
        };
        MachineInfo {
            cpu_brand,
            cpu_arch: sysinfo::System::cpu_arch(),
            physical_cores: sysinfo::System::physical_core_count(),
            logical_cores,
            total_memory_bytes: sys.total_memory(),
            os: sysinfo::System::long_os_version()
                .or_else(sysinfo::System::name)
                .unwrap_or_else(|| std::env::consts::OS.to_string()),
            kernel: sysinfo::System::kernel_version(),
            hostname: sysinfo::System::host_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_something() {
        let m = MachineInfo::collect();
        assert!(m.logical_cores >= 1);
        assert!(!m.cpu_brand.is_empty());
        let back: MachineInfo = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
