//! The embedded default's state directory: what a gateway on the default must share with the
//! next process — the development secret (so that `serve`, `stdio` and `token` accept each
//! other's tokens), the audit database and its spool.
//!
//! `$XDG_STATE_HOME/sentinel`, else `~/.local/state/sentinel` (the home directory from `HOME`,
//! else the password database: a client may start `sentinel stdio` with an empty environment).
//! Only the embedded default uses it, and the embedded default listens on loopback only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The development secret's file name in the state directory.
pub const DEV_SECRET_FILE: &str = "dev-secret";

/// Why the embedded default has no state directory or no usable development secret. Each is
/// one sentence for the operator, shown as a problem of the embedded default.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "no home directory (HOME is not set and the user has no passwd entry) for the embedded default's state; \
         set XDG_STATE_HOME, or write a config file"
    )]
    /// Neither `XDG_STATE_HOME` nor a home directory to put the state in.
    NoHome,
    /// The state directory could not be made.
    #[error("cannot create the state directory {}: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// A new secret could not be written.
    #[error("cannot write the development secret {}: {error}", path.display())]
    Write {
        /// The secret's file.
        path: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// The secret could not be opened or read (a link is not followed).
    #[error("cannot read the development secret {}: {error}", path.display())]
    Read {
        /// The secret's file.
        path: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// A link, a directory, or another user's file: it could hold a secret someone else chose.
    #[error("the development secret {} is not a file of this user's; remove it", .0.display())]
    NotOwned(PathBuf),
    /// Group or other may read it.
    #[error(
        "the development secret {shown} is readable by others (mode {mode:03o}): anyone who reads it can mint \
         an admin token; remove it (a new one is made) or run `chmod 600 {shown}`",
        shown = path.display()
    )]
    ReadableByOthers {
        /// The secret's file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Too short to be a secret made here: a file someone else wrote.
    #[error("the development secret {} is shorter than 32 bytes; remove it (a new one is made)", .0.display())]
    TooShort(PathBuf),
}

/// The state directory (not created here).
pub fn state_dir() -> Result<PathBuf, StateError> {
    let from_env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = from_env("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        return Ok(dir.join("sentinel"));
    }
    let home = from_env("HOME").or_else(home_from_passwd).ok_or(StateError::NoHome)?;
    Ok(home.join(".local/state/sentinel"))
}

/// The current user's home directory from the password database.
#[allow(unsafe_code)]
fn home_from_passwd() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    // Hand-written over libc: getpwuid_r is the only way to it, and no crate in the build wraps it.
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is a C struct of integers and pointers, for which all zeroes (null
    // pointers) is a valid value; none is read before getpwuid_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives the reads of `pwd` below.
    let rc = unsafe { libc::getpwuid_r(libc::getuid(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: `pw_dir` points into `buf`, NUL-terminated by getpwuid_r.
    let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
    let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The development secret in `dir`, made on first use: 32 random bytes as hex, in a file only
/// this user may read (the directory is `0700`, the file `0600`). A file someone else could
/// read or replace is refused rather than used: whoever knows the secret is `admin`.
pub fn dev_secret(dir: &Path) -> Result<String, StateError> {
    let path = dir.join(DEV_SECRET_FILE);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| StateError::CreateDir { dir: dir.to_path_buf(), error })?;
    if !path.exists() {
        create(dir, &path)?;
    }
    read(&path)
}

/// Writes a fresh secret to a file of its own, then links it into place: two processes
/// starting at once both end up reading the one that won, never a half-written file.
fn create(dir: &Path, path: &Path) -> Result<(), StateError> {
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let tmp = dir.join(format!(".{DEV_SECRET_FILE}.{}", uuid::Uuid::new_v4().simple()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{secret}\n").as_bytes()).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StateError::Write { path: path.to_path_buf(), error }),
    }
}

#[allow(unsafe_code)]
fn read(path: &Path) -> Result<String, StateError> {
    let unreadable = |error| StateError::Read { path: path.to_path_buf(), error };
    // Not followed: a link could point the gateway at a secret someone else chose.
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if !meta.is_file() || meta.uid() != uid {
        return Err(StateError::NotOwned(path.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::ReadableByOthers { path: path.to_path_buf(), mode });
    }
    let text = std::io::read_to_string(file).map_err(unreadable)?;
    let secret = text.trim().to_string();
    if secret.len() < 32 {
        return Err(StateError::TooShort(path.to_path_buf()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("sentinel");
        let first = dev_secret(&state).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(dev_secret(&state).unwrap(), first, "the next process reads the same secret");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join(DEV_SECRET_FILE)), 0o600);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(fs::read_dir(&state).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_secret_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        dev_secret(dir.path()).unwrap();
        let path = dir.path().join(DEV_SECRET_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = dev_secret(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::ReadableByOthers { mode: 0o644, .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("readable by others (mode 644)") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("chosen");
        fs::write(&elsewhere, "0123456789abcdef0123456789abcdef\n").unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(DEV_SECRET_FILE)).unwrap();
        let e = dev_secret(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot read the development secret"), "{e}");
    }
}
