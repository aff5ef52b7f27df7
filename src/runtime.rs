//! Finding and starting ONNX Runtime: the shared library, its version, the execution provider and thread options.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Oldest ONNX Runtime this build accepts: ort 2.0.0-rc.15 is built against API 24 (1.24);
/// the project pins and tests 1.31.1 (export/requirements.txt).
pub const MIN_ORT_MINOR: u32 = 24;
/// The ONNX Runtime version the project pins (export/requirements.txt, read at build time).
pub const ORT_PINNED: &str = env!("H2O_ORT_PINNED");

/// Which execution provider runs the graph (a clap value enum: `cpu`, `cuda`; serialised the same way).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}

/// Where the KV cache's K/V slot arrays live (a clap value enum: `host`, `device`; serialised the same
/// way). `host`: `Vec`s in host memory, handed to every run as inputs (under a device provider ONNX
/// Runtime copies the whole cache in and the new K/V out each step). `device`: memory of ONNX Runtime's
/// allocator for the provider's device, bound with IoBinding; new K/V stay there and a companion graph
/// writes them into their slots (see `model::device_kv`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KvPlacement {
    Host,
    Device,
}

/// The KV placement on the CPU provider when none is asked for: flip this one constant if
/// `h2o speed --kv device` measures faster than `--kv host` on the CPU (docs/architecture.md).
pub const CPU_DEFAULT_KV: KvPlacement = KvPlacement::Host;

impl KvPlacement {
    /// The placement used when none is asked for: device memory under a device provider (CUDA), else
    /// [`CPU_DEFAULT_KV`].
    pub fn default_for(provider: ExecutionProvider) -> KvPlacement {
        match provider {
            ExecutionProvider::Cpu => CPU_DEFAULT_KV,
            ExecutionProvider::Cuda => KvPlacement::Device,
        }
    }
}

/// What ONNX Runtime's threads do with subnormal floats (a clap value enum: `flush`, `keep`;
/// serialised the same way). `flush` (the default) sets flush-to-zero and denormals-are-zero on the
/// session's intra-op workers and on the thread that creates the process's first session (ONNX
/// Runtime's `session.set_denormal_as_zero`; [`Denormals::thread_flushes`] says which a thread
/// got); `keep` is ONNX Runtime's own default. A softmax over masked
/// scores (MASK_VALUE = float32 min) computes its exp through subnormals: ONNX Runtime 1.31's CPU
/// Softmax over [1, 16, 512, 512] causal scores took 7.5 ms kept and 0.8 ms flushed on the 2-core
/// Xeon, and a 512-token prefill's Softmax nodes at Pythia-410m 167-199 ms against 28-30 ms, with
/// every output bit for bit the same (docs/perf/issue31-denormals.md): only values below 1.2e-38
/// can differ.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Denormals {
    #[default]
    Flush,
    Keep,
}

impl Denormals {
    /// Whether the calling thread flushes subnormal results to zero now (a quarter of the smallest
    /// normal float comes out 0). ONNX Runtime sets flush-to-zero on the thread that creates the
    /// first session of the process, when that session asks for it (`flush`), and on every
    /// session's intra-op workers; so after [`crate::model::Model::load`] this says whether this
    /// thread's share of each run flushes as asked.
    pub fn thread_flushes() -> bool {
        std::hint::black_box(f32::MIN_POSITIVE) / std::hint::black_box(4.0f32) == 0.0
    }
}

impl std::str::FromStr for Denormals {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_value(s, "denormals setting")
    }
}

impl std::fmt::Display for Denormals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

/// Graph optimisation level handed to ONNX Runtime (a clap value enum: `disable`, `basic`,
/// `extended`, `all`, or 0-3; serialised by name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    #[value(alias = "0")]
    Disable,
    #[value(alias = "1")]
    Basic,
    #[value(alias = "2")]
    Extended,
    #[value(alias = "3")]
    All,
}

/// Case-insensitive parse of a clap value enum's name or alias; the error lists the accepted names.
fn parse_value<T: clap::ValueEnum>(s: &str, what: &str) -> Result<T> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        Error::Input(format!(
            "unknown {what} {s:?}; use one of: {}",
            names.join(", ")
        ))
    })
}

/// The value enum's name (`cpu`, `all`, ...).
fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl std::str::FromStr for ExecutionProvider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_value(s, "execution provider")
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

impl std::str::FromStr for KvPlacement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_value(s, "KV placement")
    }
}

impl std::fmt::Display for KvPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

impl std::str::FromStr for OptLevel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_value(s, "graph optimisation level")
    }
}

impl std::fmt::Display for OptLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

impl OptLevel {
    pub(crate) fn to_ort(self) -> ort::session::builder::GraphOptimizationLevel {
        use ort::session::builder::GraphOptimizationLevel as G;
        match self {
            Self::Disable => G::Disable,
            Self::Basic => G::Level1,
            Self::Extended => G::Level2,
            Self::All => G::All,
        }
    }
}

/// How to run sessions: provider, threads, optimisation level, spinning, where the K/V live,
/// subnormals (serialised whole in a bench job).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionConfig {
    pub provider: ExecutionProvider,
    /// Intra-op threads; default: the machine's physical cores.
    pub intra_threads: usize,
    pub opt_level: OptLevel,
    /// Whether ONNX Runtime's intra-op workers spin-wait between runs (its default).
    pub spin: bool,
    /// Where the KV cache's K/V live ([`KvPlacement::default_for`] the provider unless asked).
    pub kv: KvPlacement,
    /// Subnormal floats flushed to zero or kept (a job written before the setting existed: flush).
    #[serde(default)]
    pub denormals: Denormals,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            provider: ExecutionProvider::Cpu,
            intra_threads: physical_cores().min(logical_cores()),
            opt_level: OptLevel::All,
            spin: true,
            kv: KvPlacement::default_for(ExecutionProvider::Cpu),
            denormals: Denormals::Flush,
        }
    }
}

impl SessionConfig {
    /// Refuses 0 intra-op threads and more than the logical cores this process may run on:
    /// ONNX Runtime's intra-op workers busy-wait, so more workers than cores spin against each
    /// other (1000 threads on 2 cores never finished a model load).
    pub fn check(&self) -> Result<()> {
        let max = logical_cores();
        if self.intra_threads == 0 || self.intra_threads > max {
            return Err(Error::Threads {
                asked: self.intra_threads,
                max,
            });
        }
        Ok(())
    }
}

/// Logical cores this process may run on (affinity and cgroup quota respected), at least 1.
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Physical cores (sysinfo), falling back to logical ones.
pub fn physical_cores() -> usize {
    sysinfo::System::physical_core_count()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// A started ONNX Runtime: the library it loaded, its version, and an environment to build sessions in.
/// ONNX Runtime allows one environment per process: start one `Runtime` and share it.
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    pub(crate) env: ort::environment::Environment,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

/// Where the library is looked for, in order: ORT_DYLIB_PATH, then `lib/` beside the binary (a
/// release archive, [`crate::locate`]), then the project's .venv (onnxruntime wheel's
/// capi/libonnxruntime.so.*), searched from `project_root`.
pub fn find_library(project_root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(Error::OrtLibraryMissing(format!(
            "ORT_DYLIB_PATH={} is not a file; point it at libonnxruntime.so (the onnxruntime wheel ships it in onnxruntime/capi/), or unset it and run `make venv` to use the project's .venv",
            p.display()
        )));
    }
    if let Some(p) = crate::locate::library_beside_binary() {
        return Ok(p);
    }
    let lib_dir = project_root.join(".venv").join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib_dir) {
        let mut found: Vec<PathBuf> = Vec::new();
        for e in entries.flatten() {
            let capi = e
                .path()
                .join("site-packages")
                .join("onnxruntime")
                .join("capi");
            if let Ok(files) = std::fs::read_dir(&capi) {
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    if name.starts_with("libonnxruntime.so") {
                        found.push(f.path());
                    }
                }
            }
        }
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
    }
    Err(Error::OrtLibraryMissing(format!(
        "ONNX Runtime not found: ORT_DYLIB_PATH is not set, the binary's folder has no lib/libonnxruntime.so* (as a release archive does) and {} has no onnxruntime wheel; run `make venv` (installs onnxruntime=={} into .venv) or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so",
        lib_dir.display(),
        ORT_PINNED
    )))
}

/// The version string a library reports (OrtGetApiBase()->GetVersionString), without initialising ort.
pub fn library_version(path: &Path) -> Result<String> {
    // SAFETY: loading ONNX Runtime runs its static initialisers only; we call one C function
    // that returns a static string and keep the library loaded for the process (ort loads it again).
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| Error::OrtLibraryBad {
            path: path.to_path_buf(),
            reason: format!("cannot be loaded ({e})"),
        })?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase")
                .map_err(|_| Error::OrtLibraryBad {
                    path: path.to_path_buf(),
                    reason: "not ONNX Runtime (no OrtGetApiBase)".into(),
                })?;
        let base = get_base();
        if base.is_null() {
            return Err(Error::OrtLibraryBad {
                path: path.to_path_buf(),
                reason: "OrtGetApiBase returned null".into(),
            });
        }
        let v = ((*base).GetVersionString)();
        let s = std::ffi::CStr::from_ptr(v).to_string_lossy().to_string();
        std::mem::forget(lib);
        Ok(s)
    }
}

/// Minor version of "1.31.1".
fn minor(version: &str) -> Option<u32> {
    version.split('.').nth(1)?.parse().ok()
}

impl Runtime {
    /// Find the library from `project_root` (see [`find_library`]) and start it.
    pub fn start(project_root: &Path) -> Result<Self> {
        let lib = find_library(project_root)?;
        Self::start_from(&lib)
    }

    /// Start ONNX Runtime from a given shared library.
    pub fn start_from(lib: &Path) -> Result<Self> {
        let version = library_version(lib)?;
        match minor(&version) {
            Some(m) if m >= MIN_ORT_MINOR => {}
            _ => {
                return Err(Error::OrtLibraryBad {
                    path: lib.to_path_buf(),
                    reason: format!(
                    "version {version} is too old (this build needs 1.{MIN_ORT_MINOR} or newer)"
                ),
                })
            }
        }
        let builder = ort::init_from(lib).map_err(|e| Error::OrtLibraryBad {
            path: lib.to_path_buf(),
            reason: e.to_string(),
        })?;
        let env = builder
            .with_name("h2o-engine")
            .with_telemetry(false)
            .build()?;
        Ok(Self {
            library: lib.to_path_buf(),
            version,
            env,
        })
    }
}

/// Whether this binary was built with the CUDA provider compiled in.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// Refuse CUDA when the feature is off, before anything is loaded.
pub fn check_provider(p: ExecutionProvider) -> Result<()> {
    if p == ExecutionProvider::Cuda && !CUDA_COMPILED {
        return Err(Error::CudaNotCompiled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing_and_the_oldest_accepted() {
        assert_eq!(minor("1.31.1"), Some(31));
        assert_eq!(minor("garbage"), None);
        assert!(minor("1.20.0").unwrap() < MIN_ORT_MINOR);
    }

    #[test]
    fn provider_and_level_parse() {
        assert_eq!(
            "CPU".parse::<ExecutionProvider>().unwrap(),
            ExecutionProvider::Cpu
        );
        assert!("tpu".parse::<ExecutionProvider>().is_err());
        assert_eq!("all".parse::<OptLevel>().unwrap(), OptLevel::All);
        assert_eq!("2".parse::<OptLevel>().unwrap(), OptLevel::Extended);
        assert_eq!(OptLevel::Extended.to_string(), "extended");
        assert_eq!(ExecutionProvider::Cuda.to_string(), "cuda");
        assert_eq!(
            "Device".parse::<KvPlacement>().unwrap(),
            KvPlacement::Device
        );
        assert_eq!(KvPlacement::Host.to_string(), "host");
        assert_eq!(
            KvPlacement::default_for(ExecutionProvider::Cuda),
            KvPlacement::Device
        );
        assert_eq!(
            KvPlacement::default_for(ExecutionProvider::Cpu),
            CPU_DEFAULT_KV
        );
        assert!("max"
            .parse::<OptLevel>()
            .unwrap_err()
            .to_string()
            .contains("disable, basic, extended, all"));
        let json = serde_json::to_string(&SessionConfig::default()).unwrap();
        assert!(json.contains("\"provider\":\"cpu\"") && json.contains("\"opt_level\":\"all\""));
        let back: SessionConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SessionConfig::default());
    }
}
