//! Compiled executables cached on disk, so a second start does not recompile.
//!
//! Key: sha256 of (program text, encoded compile options, sha256 of the plugin file, host CPU
//! feature flags, `XLA_FLAGS`): serialized executables are specific to the plugin build and
//! the CPU they were compiled for, and debug flags change what XLA compiles. Files are written atomically (temporary file, fsync, rename) and carry a
//! checksum, so a crash or a concurrent writer never leaves a file that loads as garbage.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::executable::Executable;
use crate::options::CompileOptions;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

const MAGIC: &[u8; 8] = b"GPTSANX1";

/// Whether a compile was served from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// A directory of serialized executables (`<cache root>/executables/<key>.bin`).
#[derive(Debug)]
pub struct ExecutableCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ExecutableCache {
    /// A cache under `cache_root` (e.g. [`crate::plugin::cache_dir`]).
    pub fn new(cache_root: impl Into<PathBuf>) -> ExecutableCache {
        ExecutableCache {
            dir: cache_root.into().join("executables"),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache under the default cache directory.
    pub fn in_default_location() -> ExecutableCache {
        ExecutableCache::new(crate::plugin::cache_dir())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The cache key of one compilation.
    pub fn key(program: &str, options: &[u8], plugin_hash: &str, cpu_features: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            program.as_bytes(),
            options,
            plugin_hash.as_bytes(),
            cpu_features.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        hex(&h.finalize())
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }

    /// The stored bytes for `key`, if present and intact.
    pub fn load(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path_of(key);
        let mut data = Vec::new();
        std::fs::File::open(&path)
            .ok()?
            .read_to_end(&mut data)
            .ok()?;
        let ok = data.len() >= 40
            && &data[..8] == MAGIC
            && data[8..40] == Sha256::digest(&data[40..])[..];
        if !ok {
            tracing::warn!("ignoring damaged cache file {}", path.display());
            return None;
        }
        Some(data[40..].to_vec())
    }

    /// Stores `bytes` under `key` atomically.
    pub fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        let path = self.path_of(key);
        let tmp = self.dir.join(format!(
            ".{key}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(bytes))?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
    }
}

impl Client {
    /// Compiles through `cache`: loads the executable if this exact compilation was cached,
    /// otherwise compiles and stores it. A damaged or unloadable entry is recompiled.
    pub fn compile_cached(
        &self,
        cache: &ExecutableCache,
        mlir: &str,
        options: &CompileOptions,
    ) -> Result<(Executable, CacheStatus)> {
        let encoded = options.for_platform(self.platform_name()).encode()?;
        let key = ExecutableCache::key(
            mlir,
            &encoded,
            &plugin_hash(self.plugin_path(), Some(cache.dir()))?,
            &format!("{} {}", cpu_features(), compile_environment()),
        );
        if let Some(bytes) = cache.load(&key) {
            match self.deserialize_executable(&bytes) {
                Ok(exe) => {
                    cache.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key, "executable cache hit");
                    return Ok((
                        exe.with_param_dtypes(crate::signature::main_param_dtypes(mlir)),
                        CacheStatus::Hit,
                    ));
                }
                Err(e) => tracing::warn!("cached executable {key} did not load, recompiling: {e}"),
            }
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let exe = self.compile_encoded(mlir, &encoded)?;
        match exe.serialize() {
            Ok(bytes) if !bytes.is_empty() => {
                if let Err(e) = cache.store(&key, &bytes) {
                    tracing::warn!("could not cache executable: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("plugin cannot serialize executables: {e}"),
        }
        Ok((exe, CacheStatus::Miss))
    }
}

/// sha256 of the plugin file. Hashing the 259 MB CPU plugin takes ~0.4 s, so the digest is
/// remembered per process and on disk next to the executables, keyed by the file's identity
/// (path, size, modification time, inode): any reinstall changes at least one of them.
pub fn plugin_hash(path: &Path, memo_dir: Option<&Path>) -> Result<String> {
    static MEMO: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = map.get(path) {
        return Ok(h.clone());
    }
    let ctx = || format!("hashing plugin {}", path.display());
    let identity = file_identity(path).map_err(|e| Error::io(ctx(), e))?;
    let memo_file = memo_dir.map(|d| {
        d.join(format!(
            "plugin-{}.sha256",
            &hex(&Sha256::digest(path.as_os_str().as_encoded_bytes()))[..16]
        ))
    });
    if let Some(f) = &memo_file {
        if let Ok(text) = std::fs::read_to_string(f) {
            if let Some((id, digest)) = text.trim().rsplit_once(' ') {
                if id == identity && digest.len() == 64 {
                    map.insert(path.to_path_buf(), digest.to_string());
                    return Ok(digest.to_string());
                }
            }
        }
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(ctx(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(ctx(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest = hex(&h.finalize());
    if let (Some(f), Some(dir)) = (&memo_file, memo_dir) {
        let tmp = dir.join(format!(".plugin-hash.{}.tmp", std::process::id()));
        let stored = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, format!("{identity} {digest}\n")))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = stored {
            tracing::debug!("could not remember the plugin hash: {e}");
        }
    }
    map.insert(path.to_path_buf(), digest.clone());
    Ok(digest)
}

/// Size, modification time (ns) and inode of a file, as one token.
fn file_identity(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(format!(
        "{}:{}.{}:{}",
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

/// Environment variables that change what XLA compiles (`XLA_FLAGS` debug options, TPU
/// runtime flags): an executable compiled under one setting must not be reused under
/// another.
pub fn compile_environment() -> String {
    environment_of(|v| std::env::var(v).ok())
}

fn environment_of(var: impl Fn(&str) -> Option<String>) -> String {
    ["XLA_FLAGS", "LIBTPU_INIT_ARGS"]
        .iter()
        .map(|v| format!("{v}={}", var(v).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host CPU's feature flags (`flags` on x86, `Features` on ARM) plus the architecture.
pub fn cpu_features() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| {
            let mut f: Vec<&str> = v.split_whitespace().collect();
            f.sort_unstable();
            f.join(" ")
        })
        .unwrap_or_default();
    format!("{} {flags}", std::env::consts::ARCH)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_hash_is_the_file_sha256_and_is_remembered_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugin.so");
        std::fs::write(&file, b"abc").unwrap();
        let h = plugin_hash(&file, Some(dir.path())).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let memo: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .filter(|t| t.trim_end().ends_with(&h))
            .collect();
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn xla_flags_are_part_of_the_compile_environment() {
        let plain = environment_of(|_| None);
        let flagged = environment_of(|v| {
            (v == "XLA_FLAGS").then(|| "--xla_cpu_use_xnnpack=false".to_string())
        });
        assert_ne!(plain, flagged);
        assert!(flagged.contains("XLA_FLAGS=--xla_cpu_use_xnnpack=false"));
    }

    #[test]
    fn keys_separate_every_input() {
        let k = ExecutableCache::key("p", b"o", "h", "f");
        assert_eq!(k.len(), 64);
        assert_ne!(k, ExecutableCache::key("p", b"o", "h", "g"));
        assert_ne!(k, ExecutableCache::key("p", b"", "h", "f"));
        // Length prefixes: moving bytes between parts changes the key.
        assert_ne!(
            ExecutableCache::key("ab", b"", "h", "f"),
            ExecutableCache::key("a", b"b", "h", "f")
        );
        assert!(cpu_features().starts_with(std::env::consts::ARCH));
    }
}
