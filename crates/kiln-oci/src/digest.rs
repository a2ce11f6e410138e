//! sha256 digests, computed while data streams past.

use std::io::{self, Read, Write};
use std::str::FromStr;

use oci_spec::image::{Digest, Sha256Digest};
use sha2::{Digest as _, Sha256};

/// The digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    from_hasher(Sha256::new_with_prefix(bytes))
}

/// A digest from 64 lowercase hex characters.
pub fn from_hex(hex: &str) -> Result<Digest, crate::Error> {
    Sha256Digest::from_str(hex)
        .map(Digest::from)
        .map_err(|_| crate::Error::BadDigest(hex.to_string()))
}

fn from_hasher(h: Sha256) -> Digest {
    let hex = hex::encode(h.finalize());
    from_hex(&hex).expect("sha256 output is a valid digest")
}

/// Writes through to `inner`, hashing and counting every byte.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the digest and the size of what was written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, from_hasher(self.hasher), self.size)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads from `inner`, hashing and counting every byte.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Reads what is left (so the digest covers all of it) and returns it.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((from_hasher(self.hasher), self.size))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (out, d, n) = w.finish();
        assert_eq!((out.as_slice(), n), (&b"abc"[..], 3));
        assert_eq!(d, sha256(b"abc"));
        let r = HashReader::new(&b"abc"[..]);
        assert_eq!(r.finish().unwrap(), (sha256(b"abc"), 3));
    }
}
