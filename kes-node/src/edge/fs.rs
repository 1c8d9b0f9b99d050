//! The `fs` key store: a directory with one file per key, named like the key and holding its
//! encoded form (upstream's layout, so an upstream fs key store is served unchanged).
//!
//! Names are checked before they touch a path: only KES key names (`[0-9A-Za-z_-]`, no `.`,
//! `/` or `\`) get here, so no name can leave the directory. A new key is written to a
//! temporary file (mode 0600), synced, and linked to its name without replacing anything, then
//! the directory is synced: a crash leaves either no key or the whole key, never a partial one.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::keystore::{KeyStore, KeyStoreError};

/// The largest key file read (upstream: 1 MiB).
const MAX_FILE: u64 = 1 << 20;
/// Temporary files start with a dot, which no key name contains.
const TMP_PREFIX: &str = ".tmp-";

pub(crate) struct FsStore {
    dir: PathBuf,
}

impl FsStore {
    /// Uses (and creates, if missing) `dir`.
    pub(crate) fn open(dir: &Path) -> Result<FsStore, String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("keystore.fs.path: cannot create {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!(
                "keystore.fs.path: {} is not a directory",
                dir.display()
            ));
        }
        Ok(FsStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeyStoreError> {
        if !kes_core::name::valid_name(name) {
            return Err(KeyStoreError::Failed(format!("invalid key name '{name}'")));
        }
        Ok(self.dir.join(name))
    }

    fn err(&self, what: &str, name: &str, err: io::Error) -> KeyStoreError {
        let why = format!("{what} {}: {err}", self.dir.join(name).display());
        if !self.dir.is_dir() {
            // The directory itself is gone (unmounted, moved): the store is down.
            return KeyStoreError::Unreachable(format!(
                "{} is not there: {err}",
                self.dir.display()
            ));
        }
        match err.kind() {
            io::ErrorKind::NotFound => KeyStoreError::NotFound,
            io::ErrorKind::AlreadyExists => KeyStoreError::Exists,
            // The directory is gone or locked away: the store is down, not the key bad.
            io::ErrorKind::PermissionDenied => KeyStoreError::Unreachable(why),
            _ => KeyStoreError::Failed(why),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl KeyStore for FsStore {
    fn describe(&self) -> String {
        format!("fs: {}", self.dir.display())
    }

    fn status(&self) -> Result<Duration, KeyStoreError> {
        let start = Instant::now();
        // Listing proves the directory is there and readable.
        fs::read_dir(&self.dir)
            .and_then(|mut d| d.next().transpose())
            .map_err(|e| {
                KeyStoreError::Unreachable(format!("cannot read {}: {e}", self.dir.display()))
            })?;
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), KeyStoreError> {
        let path = self.path(name)?;
        let suffix: [u8; 8] = crate::random::bytes();
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{name}-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(value)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("cannot write", name, e));
        }
        // A hard link never replaces an existing file: the name is taken atomically or not at all.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| self.err("cannot create", name, e))?;
        self.sync_dir()
            .map_err(|e| self.err("cannot sync the directory of", name, e))
    }

    fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let path = self.path(name)?;
        let file = File::open(&path).map_err(|e| self.err("cannot open", name, e))?;
        let mut value = Zeroizing::new(Vec::new());
        file.take(MAX_FILE + 1)
            .read_to_end(&mut value)
            .map_err(|e| self.err("cannot read", name, e))?;
        if value.len() as u64 > MAX_FILE {
            return Err(KeyStoreError::Failed(format!(
                "{} is larger than 1 MiB: not a key",
                path.display()
            )));
        }
        Ok(value)
    }

    fn delete(&self, name: &str) -> Result<(), KeyStoreError> {
        let path = self.path(name)?;
        fs::remove_file(&path).map_err(|e| self.err("cannot delete", name, e))?;
        self.sync_dir()
            .map_err(|e| self.err("cannot sync the directory of", name, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KeyStoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            KeyStoreError::Unreachable(format!("cannot read {}: {e}", self.dir.display()))
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                KeyStoreError::Unreachable(format!("cannot read {}: {e}", self.dir.display()))
            })?;
            // Files only, and only those with key names (not temporary files, not other files).
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(prefix)
                && kes_core::name::valid_name(&name)
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (FsStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kes-edge-fs-{}-{}",
            std::process::id(),
            crate::random::bytes::<4>()[0]
        ));
        (FsStore::open(&dir).unwrap(), dir)
    }

    #[test]
    fn create_get_list_delete() {
        let (s, dir) = store();
        s.create("k1", b"v1").unwrap();
        assert_eq!(s.create("k1", b"v2"), Err(KeyStoreError::Exists));
        assert_eq!(&*s.get("k1").unwrap(), b"v1");
        let mode = fs::metadata(dir.join("k1")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        s.create("k2", b"v").unwrap();
        fs::write(dir.join("not.a.key"), b"x").unwrap();
        assert_eq!(s.list("").unwrap(), ["k1", "k2"]);
        assert_eq!(s.list("k2").unwrap(), ["k2"]);
        s.delete("k1").unwrap();
        assert_eq!(s.delete("k1"), Err(KeyStoreError::NotFound));
        assert_eq!(s.get("k1").err(), Some(KeyStoreError::NotFound));
        for bad in ["../x", "a/b", ".", "..", "", "a.b"] {
            assert!(matches!(s.get(bad), Err(KeyStoreError::Failed(_))), "{bad}");
            assert!(matches!(s.create(bad, b"v"), Err(KeyStoreError::Failed(_))));
        }
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(dir).unwrap();
    }
}
