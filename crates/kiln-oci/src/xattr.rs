//! Extended attributes of a path, never following a final symlink.

use std::path::Path;

use rustix::io::Errno;

use crate::Error;

fn unsupported(e: Errno) -> bool {
    e == Errno::NODATA || e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// The value of `name`, or `None` when it is not set.
pub fn get(path: &Path, name: &str) -> Result<Option<Vec<u8>>, Error> {
    let len = match rustix::fs::lgetxattr_query(path, name) {
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(None),
        Err(e) => return Err(Error::path("reading xattr of", path, e.into())),
    };
    let mut buf = vec![0u8; len];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(e) if unsupported(e) => Ok(None),
        Err(e) => Err(Error::path("reading xattr of", path, e.into())),
    }
}

/// Every extended attribute, sorted by name.
pub fn list(path: &Path) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(vec![]),
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(vec![]),
        Err(e) => return Err(Error::path("listing xattrs of", path, e.into())),
    };
    let mut buf = vec![0u8; len];
    let n = rustix::fs::llistxattr(path, &mut buf[..])
        .map_err(|e| Error::path("listing xattrs of", path, e.into()))?;
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if let Some(v) = get(path, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Sets `name` to `value`.
pub fn set(path: &Path, name: &str, value: &[u8]) -> Result<(), Error> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .map_err(|e| Error::path(&format!("setting xattr {name} on"), path, e.into()))
}
