//! The machine a run ran on, read with sysinfo (and the NVIDIA driver's GPU names), and its
//! one-line summary (`h2o info`).

use std::path::Path;

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
    /// The NVIDIA GPUs' names, as the driver lists them (empty where there is none, or no driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
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
            gpus: nvidia_gpus(Path::new(NVIDIA_GPUS)),
        }
    }

    /// One line: CPU, physical / logical cores and memory in GiB with one decimal, e.g. `Xeon;
    /// 2 physical / 4 logical cores; 23.6 GiB memory`. Each figure is written beside its unit
    /// with a plain space, so a terminal-fitted line breaks around it, never inside it
    /// (`report::wrap_hanging`).
    pub fn summary(&self) -> String {
        let physical = self
            .physical_cores
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        format!(
            "{}; {physical} physical / {} logical cores; {:.1} GiB memory",
            self.cpu_brand,
            self.logical_cores,
            self.total_memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// Where the NVIDIA driver lists its GPUs, one folder each with an `information` file.
const NVIDIA_GPUS: &str = "/proc/driver/nvidia/gpus";

/// The `Model:` line of each GPU's `information` file under `dir`, in folder-name order (the
/// PCI address); nothing where the folder is absent.
fn nvidia_gpus(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    folders.sort();
    folders
        .iter()
        .filter_map(|f| {
            let info = std::fs::read_to_string(f.join("information")).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("Model:"))
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
        })
        .collect()
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

    #[test]
    fn gpu_names_from_the_drivers_information_files() {
        let tmp = tempfile::tempdir().unwrap();
        for (bus, text) in [
            ("0000:c1:00.0", "Model: \t\t NVIDIA H200\nIRQ:   42\n"),
            ("0000:41:00.0", "Model:   NVIDIA H100 80GB HBM3\nIRQ: 7\n"),
            ("0000:42:00.0", "IRQ: 7\n"),
        ] {
            std::fs::create_dir(tmp.path().join(bus)).unwrap();
            std::fs::write(tmp.path().join(bus).join("information"), text).unwrap();
        }
        assert_eq!(
            nvidia_gpus(tmp.path()),
            ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
        );
        assert!(nvidia_gpus(&tmp.path().join("absent")).is_empty());
        // a run document written before the field reads as no GPU
        let mut v = serde_json::to_value(MachineInfo::collect()).unwrap();
        v.as_object_mut().unwrap().remove("gpus");
        let back: MachineInfo = serde_json::from_value(v).unwrap();
        assert!(back.gpus.is_empty());
    }

    #[test]
    fn summary_keeps_each_figure_with_its_unit_when_wrapped() {
        let m = MachineInfo {
            cpu_brand: "AMD EPYC 7B13".into(),
            cpu_arch: "x86_64".into(),
            physical_cores: Some(2),
            logical_cores: 4,
            total_memory_bytes: 25_340_000_000, // 23.6 GiB
            os: "Linux".into(),
            kernel: None,
            hostname: None,
            gpus: Vec::new(),
        };
        let line = m.summary();
        assert_eq!(
            line,
            "AMD EPYC 7B13; 2 physical / 4 logical cores; 23.6 GiB memory"
        );
        let text = format!("machine          {line}");
        for width in 20..=text.len() {
            let wrapped = crate::report::wrap_hanging(&text, width);
            assert!(
                wrapped.lines().any(|l| l.contains("23.6 GiB")),
                "at {width}:\n{wrapped}"
            );
            assert!(
                wrapped.lines().all(|l| l.chars().count() <= width),
                "{wrapped}"
            );
        }
        let unknown = MachineInfo {
            physical_cores: None,
            ..m
        };
        assert!(unknown.summary().contains("? physical / 4 logical"));
    }
}
