//! Finding a PJRT plugin file, and installing the CPU one when none is present.
//!
//! Order: an explicit choice (API argument or `GPTSAN_PJRT_PLUGIN`: a `.so` path or one of
//! `cpu|cuda|tpu`), then TPU if a TPU device is present, then an NVIDIA GPU, then CPU. Each
//! kind is looked up in the installed Python packages and in our cache directory. The result
//! says in words why the other kinds were skipped.

use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming the plugin (`/path/plugin.so`, `cpu`, `cuda` or `tpu`).
pub const PLUGIN_ENV: &str = "GPTSAN_PJRT_PLUGIN";
/// Set to `1` to forbid installing the CPU plugin with pip.
pub const NO_INSTALL_ENV: &str = "GPTSAN_NO_PLUGIN_INSTALL";
/// Overrides the cache directory (plugins, compiled executables).
pub const CACHE_DIR_ENV: &str = "GPTSAN_CACHE_DIR";
/// Python interpreter used to locate site-packages and run pip (default `python3`).
pub const PYTHON_ENV: &str = "GPTSAN_PYTHON";

/// The pinned, hash-checked CPU plugin (same line as `.ci/requirements-cpu.txt`).
pub const CPU_PLUGIN_REQUIREMENT: &str = "xla-cpu-pjrt==0.0.1 --hash=sha256:55837b6b7b47daa717f2d9a5a03563ea0ceaa338d06a81a1e2d3f060d960decc";

/// The kinds of plugin we know how to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Cpu,
    Cuda,
    Tpu,
}

impl PluginKind {
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Cpu => "cpu",
            PluginKind::Cuda => "cuda",
            PluginKind::Tpu => "tpu",
        }
    }

    /// Paths of the plugin file relative to a site-packages (or pip `--target`) directory.
    pub fn relative_paths(self) -> &'static [&'static str] {
        match self {
            PluginKind::Cpu => &["xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"],
            PluginKind::Cuda => &[
                "jax_plugins/xla_cuda12/xla_cuda_plugin.so",
                "jax_plugins/xla_cuda13/xla_cuda_plugin.so",
            ],
            PluginKind::Tpu => &["libtpu/libtpu.so"],
        }
    }

    /// How a user installs this plugin by hand.
    pub fn install_hint(self) -> &'static str {
        match self {
            PluginKind::Cpu => "python3 -m pip install --require-hashes -r .ci/requirements-cpu.txt (pins xla-cpu-pjrt==0.0.1)",
            PluginKind::Cuda => "python3 -m pip install jax-cuda12-pjrt (or jax-cuda13-pjrt) with the matching nvidia-* runtime wheels",
            PluginKind::Tpu => "python3 -m pip install libtpu",
        }
    }

    fn label(self) -> &'static str {
        match self {
            PluginKind::Cpu => "CPU",
            PluginKind::Cuda => "CUDA",
            PluginKind::Tpu => "TPU",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginRequest {
    /// Pick the best available: TPU, then NVIDIA GPU, then CPU.
    Auto,
    /// A specific kind, searched like in `Auto` but without falling back.
    Kind(PluginKind),
    /// A plugin file.
    Path(PathBuf),
}

impl PluginRequest {
    /// `cpu`, `cuda` (or `gpu`), `tpu`, otherwise a path.
    pub fn parse(s: &str) -> PluginRequest {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => PluginRequest::Auto,
            "cpu" => PluginRequest::Kind(PluginKind::Cpu),
            "cuda" | "gpu" => PluginRequest::Kind(PluginKind::Cuda),
            "tpu" => PluginRequest::Kind(PluginKind::Tpu),
            _ => PluginRequest::Path(PathBuf::from(s.trim())),
        }
    }

    /// The explicit choice if given, else `GPTSAN_PJRT_PLUGIN`, else `Auto`.
    pub fn from_arg_or_env(explicit: Option<&str>) -> PluginRequest {
        if let Some(s) = explicit {
            return PluginRequest::parse(s);
        }
        match std::env::var(PLUGIN_ENV) {
            Ok(s) if !s.trim().is_empty() => PluginRequest::parse(&s),
            _ => PluginRequest::Auto,
        }
    }
}

/// What a TPU probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpuProbe {
    None,
    /// `/dev/accel*` nodes: a TPU for sure.
    Accel(String),
    /// VFIO groups: a TPU only if libtpu is installed too (v5e/v6e hosts).
    Vfio,
}

/// Everything discovery looks at. [`SearchEnv::detect`] reads the real system; tests build
/// one by hand.
#[derive(Clone, Debug)]
pub struct SearchEnv {
    /// site-packages-like directories, in priority order.
    pub python_roots: Vec<PathBuf>,
    /// Our cache directory (plugins are installed under `<cache>/plugins/<kind>`).
    pub cache_dir: PathBuf,
    pub tpu: TpuProbe,
    /// `Some(what was seen)` when an NVIDIA GPU is present.
    pub nvidia: Option<String>,
    /// Whether the CPU plugin may be installed with pip when missing.
    pub allow_install: bool,
    /// Python interpreter for pip.
    pub python: String,
}

impl SearchEnv {
    pub fn detect() -> SearchEnv {
        let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
        SearchEnv {
            python_roots: python_roots(&python),
            cache_dir: cache_dir(),
            tpu: probe_tpu(),
            nvidia: probe_nvidia(),
            allow_install: std::env::var(NO_INSTALL_ENV)
                .map(|v| v.trim().is_empty() || v.trim() == "0")
                .unwrap_or(true),
            python,
        }
    }

    /// Directories searched for `kind`: Python packages first, then our cache.
    pub fn roots_for(&self, kind: PluginKind) -> Vec<PathBuf> {
        let mut roots = self.python_roots.clone();
        roots.push(self.cache_dir.join("plugins").join(kind.name()));
        roots
    }

    /// The first existing plugin file of `kind`.
    pub fn find(&self, kind: PluginKind) -> Option<PathBuf> {
        for root in self.roots_for(kind) {
            for rel in kind.relative_paths() {
                let p = root.join(rel);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
        None
    }
}

/// The chosen plugin and the reasons for the choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    pub path: PathBuf,
    /// `None` for an explicit path.
    pub kind: Option<PluginKind>,
    /// One line per step: why a kind was skipped or how the file was found.
    pub notes: Vec<String>,
    /// True when the plugin was installed into the cache by this call.
    pub installed: bool,
}

impl Discovery {
    /// The fallback chain in words, e.g. "no TPU device found; no NVIDIA GPU found; using
    /// CPU plugin /path/xla_cpu_pjrt.so".
    pub fn explain(&self) -> String {
        let what = match self.kind {
            Some(k) => format!("using {} plugin {}", k.label(), self.path.display()),
            None => format!("using plugin {}", self.path.display()),
        };
        let mut parts = self.notes.clone();
        parts.push(what);
        parts.join("; ")
    }
}

/// Chooses a plugin file for `request` (installing the CPU plugin if allowed and needed).
pub fn discover(request: &PluginRequest, env: &SearchEnv) -> Result<Discovery> {
    match request {
        PluginRequest::Path(p) => {
            if p.is_file() {
                Ok(Discovery {
                    path: p.clone(),
                    kind: None,
                    notes: vec![format!("plugin chosen explicitly")],
                    installed: false,
                })
            } else {
                Err(Error::PluginNotFound(format!(
                    "the PJRT plugin {} (from --plugin or {PLUGIN_ENV}) does not exist; \
                     pass an existing plugin .so, or one of cpu|cuda|tpu. The CPU plugin is \
                     installed with: {}",
                    p.display(),
                    PluginKind::Cpu.install_hint()
                )))
            }
        }
        PluginRequest::Kind(kind) => {
            let notes = vec![format!("{} plugin chosen explicitly", kind.label())];
            find_or_install(*kind, env, notes)
        }
        PluginRequest::Auto => {
            let mut notes = Vec::new();
            // TPU
            match &env.tpu {
                TpuProbe::None => notes.push("no TPU device found".to_string()),
                TpuProbe::Accel(dev) => match env.find(PluginKind::Tpu) {
                    Some(path) => return Ok(found(PluginKind::Tpu, path, notes)),
                    None => notes.push(format!(
                        "TPU device {dev} found but libtpu is not installed ({})",
                        PluginKind::Tpu.install_hint()
                    )),
                },
                TpuProbe::Vfio => match env.find(PluginKind::Tpu) {
                    Some(path) => {
                        notes.push("VFIO devices and libtpu found".to_string());
                        return Ok(found(PluginKind::Tpu, path, notes));
                    }
                    None => notes
                        .push("no TPU device found (VFIO devices present, no libtpu)".to_string()),
                },
            }
            // NVIDIA GPU
            match &env.nvidia {
                None => notes.push("no NVIDIA GPU found".to_string()),
                Some(dev) => match env.find(PluginKind::Cuda) {
                    Some(path) => return Ok(found(PluginKind::Cuda, path, notes)),
                    None => notes.push(format!(
                        "NVIDIA GPU found ({dev}) but no CUDA PJRT plugin is installed ({})",
                        PluginKind::Cuda.install_hint()
                    )),
                },
            }
            find_or_install(PluginKind::Cpu, env, notes)
        }
    }
}

fn found(kind: PluginKind, path: PathBuf, notes: Vec<String>) -> Discovery {
    Discovery {
        path,
        kind: Some(kind),
        notes,
        installed: false,
    }
}

fn find_or_install(kind: PluginKind, env: &SearchEnv, notes: Vec<String>) -> Result<Discovery> {
    if let Some(path) = env.find(kind) {
        return Ok(found(kind, path, notes));
    }
    let looked = not_found_message(kind, env);
    if kind != PluginKind::Cpu {
        return Err(Error::PluginNotFound(looked));
    }
    if !env.allow_install {
        return Err(Error::PluginNotFound(format!(
            "{looked}; automatic installation is disabled ({NO_INSTALL_ENV}=1)"
        )));
    }
    let path = install_cpu_plugin(&env.cache_dir, &env.python)
        .map_err(|e| Error::Install(format!("{e}. {looked}")))?;
    let mut d = found(kind, path, notes);
    d.notes
        .push("CPU plugin was missing and has been installed into the cache".into());
    d.installed = true;
    Ok(d)
}

fn not_found_message(kind: PluginKind, env: &SearchEnv) -> String {
    let roots: Vec<String> = env
        .roots_for(kind)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "no {} PJRT plugin found: looked for {} under [{}]; install it with: {}, or pass \
         --plugin /path/to/plugin.so (or set {PLUGIN_ENV})",
        kind.label(),
        kind.relative_paths().join(" or "),
        roots.join(", "),
        kind.install_hint()
    )
}

/// Installs the pinned CPU plugin into `<cache>/plugins/cpu` with hash-checked pip and
/// returns the plugin file. Installs into a temporary directory first and renames it into
/// place, so an interrupted install never leaves a half-populated plugin directory.
pub fn install_cpu_plugin(cache_dir: &Path, python: &str) -> Result<PathBuf> {
    let plugins = cache_dir.join("plugins");
    std::fs::create_dir_all(&plugins)
        .map_err(|e| Error::io(format!("creating {}", plugins.display()), e))?;
    let target = plugins.join("cpu");
    let staging = plugins.join(format!("cpu.installing.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let requirements = plugins.join(format!("requirements-cpu.{}.txt", std::process::id()));
    std::fs::write(&requirements, format!("{CPU_PLUGIN_REQUIREMENT}\n"))
        .map_err(|e| Error::io(format!("writing {}", requirements.display()), e))?;
    eprintln!(
        "gptsan: the PJRT CPU plugin is not installed; installing {} into {} with pip",
        CPU_PLUGIN_REQUIREMENT
            .split_whitespace()
            .next()
            .unwrap_or("xla-cpu-pjrt"),
        target.display()
    );
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .args(["--require-hashes", "--target"])
        .arg(&staging)
        .arg("-r")
        .arg(&requirements)
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status();
    let _ = std::fs::remove_file(&requirements);
    let status =
        status.map_err(|e| Error::Install(format!("cannot run `{python} -m pip`: {e}")))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(Error::Install(format!(
            "`{python} -m pip install` exited with {status}"
        )));
    }
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target)
        .map_err(|e| Error::io(format!("moving the plugin into {}", target.display()), e))?;
    let path = target.join(PluginKind::Cpu.relative_paths()[0]);
    if !path.is_file() {
        return Err(Error::Install(format!(
            "pip succeeded but {} is missing",
            path.display()
        )));
    }
    eprintln!("gptsan: installed {}", path.display());
    Ok(path)
}

/// `$GPTSAN_CACHE_DIR`, else `$XDG_CACHE_HOME/gptsan`, else `~/.cache/gptsan`.
pub fn cache_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = non_empty(CACHE_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("gptsan");
    }
    if let Some(h) = non_empty("HOME") {
        return PathBuf::from(h).join(".cache").join("gptsan");
    }
    std::env::temp_dir().join("gptsan-cache")
}

/// site-packages directories: what the Python interpreter reports, plus the usual
/// venv / pyenv / conda / distro locations (for when `python3` is not the one that has
/// the plugin).
pub fn python_roots(python: &str) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let script = "import sys\ntry:\n import site\n p=list(site.getsitepackages())+[site.getusersitepackages()]\nexcept Exception:\n p=[]\nprint('\\n'.join(p+sys.path))";
    match Command::new(python)
        .args(["-c", script])
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let line = line.trim();
                if !line.is_empty() {
                    roots.push(PathBuf::from(line));
                }
            }
        }
        Ok(_) | Err(_) => tracing::debug!("`{python}` did not report its site-packages"),
    }
    let env_dir = |k: &str| std::env::var_os(k).map(PathBuf::from);
    for prefix in [env_dir("VIRTUAL_ENV"), env_dir("CONDA_PREFIX")]
        .into_iter()
        .flatten()
    {
        roots.extend(glob_dirs(&prefix, &["lib", "python3*", "site-packages"]));
    }
    if let Some(home) = env_dir("HOME") {
        roots.extend(glob_dirs(
            &home,
            &[
                ".pyenv",
                "versions",
                "*",
                "lib",
                "python3*",
                "site-packages",
            ],
        ));
        roots.extend(glob_dirs(
            &home,
            &[".local", "lib", "python3*", "site-packages"],
        ));
    }
    roots.push(PathBuf::from("/usr/lib/python3/dist-packages"));
    roots.extend(glob_dirs(
        Path::new("/usr/local/lib"),
        &["python3*", "dist-packages"],
    ));
    roots.extend(glob_dirs(
        Path::new("/usr/local/lib"),
        &["python3*", "site-packages"],
    ));
    roots.extend(glob_dirs(
        Path::new("/usr/lib"),
        &["python3*", "site-packages"],
    ));
    let mut seen = std::collections::HashSet::new();
    roots
        .into_iter()
        .filter(|p| p.is_dir())
        .filter(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())))
        .collect()
}

/// Expands path segments where a segment may be `*` or `prefix*` (no other patterns).
fn glob_dirs(base: &Path, segments: &[&str]) -> Vec<PathBuf> {
    let mut current = vec![base.to_path_buf()];
    for seg in segments {
        let mut next = Vec::new();
        for dir in &current {
            if let Some(prefix) = seg.strip_suffix('*') {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut matched: Vec<PathBuf> = entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                matched.sort();
                next.extend(matched);
            } else {
                let p = dir.join(seg);
                if p.is_dir() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current
}

/// `/dev/accel*` means a TPU; VFIO groups may be one (checked against libtpu later).
pub fn probe_tpu() -> TpuProbe {
    if let Ok(entries) = std::fs::read_dir("/dev") {
        let mut accel: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("accel"))
            .collect();
        accel.sort();
        if let Some(first) = accel.first() {
            return TpuProbe::Accel(format!("/dev/{first}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/dev/vfio") {
        if entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        }) {
            return TpuProbe::Vfio;
        }
    }
    TpuProbe::None
}

/// `/dev/nvidia0` or an entry in `/proc/driver/nvidia/gpus`.
pub fn probe_nvidia() -> Option<String> {
    if Path::new("/dev/nvidia0").exists() {
        return Some("/dev/nvidia0".into());
    }
    let gpus = Path::new("/proc/driver/nvidia/gpus");
    if let Ok(mut entries) = std::fs::read_dir(gpus) {
        if let Some(Ok(e)) = entries.next() {
            return Some(e.path().display().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
        p
    }

    fn env(root: &Path) -> SearchEnv {
        SearchEnv {
            python_roots: vec![root.join("site-packages")],
            cache_dir: root.join("cache"),
            tpu: TpuProbe::None,
            nvidia: None,
            allow_install: false,
            python: "python3".into(),
        }
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            PluginRequest::parse("cpu"),
            PluginRequest::Kind(PluginKind::Cpu)
        );
        assert_eq!(
            PluginRequest::parse("GPU"),
            PluginRequest::Kind(PluginKind::Cuda)
        );
        assert_eq!(
            PluginRequest::parse("tpu"),
            PluginRequest::Kind(PluginKind::Tpu)
        );
        assert_eq!(
            PluginRequest::parse("/x/y.so"),
            PluginRequest::Path(PathBuf::from("/x/y.so"))
        );
    }

    #[test]
    fn falls_back_to_cpu_and_explains() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = touch(
            &dir.path().join("site-packages"),
            "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so",
        );
        let d = discover(&PluginRequest::Auto, &env(dir.path())).unwrap();
        assert_eq!(d.path, cpu);
        assert_eq!(
            d.explain(),
            format!(
                "no TPU device found; no NVIDIA GPU found; using CPU plugin {}",
                cpu.display()
            )
        );
    }

    #[test]
    fn prefers_gpu_then_tpu_when_devices_and_plugins_exist() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("site-packages");
        touch(&sp, "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so");
        let mut e = env(dir.path());
        e.nvidia = Some("/dev/nvidia0".into());
        // GPU present but no CUDA plugin: CPU, with the reason.
        let d = discover(&PluginRequest::Auto, &e).unwrap();
        assert_eq!(d.kind, Some(PluginKind::Cpu));
        assert!(d
            .explain()
            .contains("NVIDIA GPU found (/dev/nvidia0) but no CUDA PJRT plugin"));
        let cuda = touch(&sp, "jax_plugins/xla_cuda13/xla_cuda_plugin.so");
        let d = discover(&PluginRequest::Auto, &e).unwrap();
        assert_eq!((d.kind, d.path.clone()), (Some(PluginKind::Cuda), cuda));
        // libtpu in the cache plus an accel device wins over the GPU.
        e.tpu = TpuProbe::Accel("/dev/accel0".into());
        let tpu = touch(&dir.path().join("cache/plugins/tpu"), "libtpu/libtpu.so");
        let d = discover(&PluginRequest::Auto, &e).unwrap();
        assert_eq!((d.kind, d.path), (Some(PluginKind::Tpu), tpu));
    }

    #[test]
    fn missing_plugin_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = discover(&PluginRequest::Auto, &env(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no CPU PJRT plugin found"), "{err}");
        assert!(
            err.contains("xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"),
            "{err}"
        );
        assert!(err.contains("pip install"), "{err}");
        assert!(err.contains(NO_INSTALL_ENV), "{err}");
        let err = discover(&PluginRequest::Kind(PluginKind::Cuda), &env(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("jax-cuda12-pjrt"), "{err}");
        let missing = dir.path().join("nope.so");
        let err = discover(&PluginRequest::Path(missing.clone()), &env(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("does not exist"),
            "{err}"
        );
    }

    /// The install path end to end, with a stand-in for `python3` that behaves like
    /// `pip install --target` (the real download is exercised by CI's fresh machines).
    #[test]
    fn installs_the_cpu_plugin_with_hash_checked_pip_when_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pip-args.txt");
        let fake = dir.path().join("fake-python");
        let script = format!(
            "#!/bin/sh\necho \"$@\" > {log}\nwhile [ $# -gt 0 ]; do\n  case $1 in\n    --target) t=$2; shift;;\n    -r) cat $2 >> {log}; shift;;\n  esac\n  shift\ndone\nmkdir -p $t/xla_plugins/xla_cpu_pjrt && touch $t/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so\n",
            log = log.display()
        );
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut e = env(dir.path());
        e.allow_install = true;
        e.python = fake.display().to_string();
        let d = discover(&PluginRequest::Auto, &e).unwrap();
        assert!(d.installed);
        assert_eq!(
            d.path,
            dir.path()
                .join("cache/plugins/cpu/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so")
        );
        assert!(
            d.explain().contains("installed into the cache"),
            "{}",
            d.explain()
        );
        let args = std::fs::read_to_string(&log).unwrap();
        assert!(args.starts_with("-m pip install"), "{args}");
        assert!(args.contains("--require-hashes"), "{args}");
        assert!(args.contains(CPU_PLUGIN_REQUIREMENT), "{args}");
        // Found in the cache from now on, without installing again.
        let again = discover(&PluginRequest::Auto, &e).unwrap();
        assert!(!again.installed);
        assert_eq!(again.path, d.path);
        // A failing pip is a clear error.
        let mut broken = env(dir.path());
        broken.cache_dir = dir.path().join("other-cache");
        broken.allow_install = true;
        broken.python = "/bin/false".into();
        let err = discover(&PluginRequest::Auto, &broken)
            .unwrap_err()
            .to_string();
        assert!(err.contains("installing the PJRT plugin failed"), "{err}");
    }

    #[test]
    fn pinned_requirement_matches_ci() {
        let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/requirements-cpu.txt");
        let text = std::fs::read_to_string(&ci).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == CPU_PLUGIN_REQUIREMENT),
            "{text}"
        );
    }
}
