//! Writing certificate and key files with the right modes, and reading PEM.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// Mode of private key files: owner read/write only.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub(crate) const CERT_MODE: u32 = 0o644;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path` with `mode`; fails with [`Error::Exists`] if it exists.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32, hint: &'static str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: path.to_path_buf(),
                    hint,
                }
            } else {
                Error::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// A file written beside `path` by [`stage`], renamed over it by [`commit`].
pub(crate) struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

/// Writes `contents` to `<path>.new` (mode `mode`, created afresh) so that a
/// later [`commit`] replaces `path` in one rename.
pub(crate) fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<Staged> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let tmp = PathBuf::from(name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path: tmp, source }),
    }
    write_new(&tmp, contents, mode, "")?;
    Ok(Staged {
        tmp,
        path: path.to_path_buf(),
    })
}

/// Renames a staged file over its target.
pub(crate) fn commit(staged: Staged) -> Result<()> {
    fs::rename(&staged.tmp, &staged.path).map_err(io_err(&staged.path))
}

/// The certificates of a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem_err = |reason: String| Error::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let text = fs::read(path).map_err(io_err(path))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The first certificate of a PEM file.
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    load_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            reason: "no CERTIFICATE block".into(),
        })
}

/// The private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = fs::read(path).map_err(io_err(path))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| Error::Pem {
        path: path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })
}
