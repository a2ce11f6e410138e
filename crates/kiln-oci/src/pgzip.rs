//! Gzip on every core: the stream is cut into 1 MiB chunks, each compressed
//! on a worker thread by libdeflate (which compresses a whole buffer at once,
//! faster and smaller than zlib's streaming deflate) into gzip members,
//! written in order. Concatenated members are one valid gzip stream (RFC 1952
//! §2.2) that Go's reader (Docker, containerd, skopeo, umoci) and
//! `MultiGzDecoder` read as a whole. The chunk boundaries are fixed, so the
//! output is the same on every machine.
//!
//! Data that does not compress (random bytes, files that are compressed
//! already) costs deflate as much as text does and gains nothing, so each
//! 64 KiB segment is probed first: when its first and last 4 KiB do not
//! shrink at level 1, the segment is stored. Each run of segments of one kind
//! within a chunk is its own member. The decision depends only on the bytes,
//! so the output stays reproducible.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};
use libdeflater::{CompressionLvl, Compressor};

const CHUNK: usize = 1 << 20;
const SEGMENT: usize = 64 << 10;
const SAMPLE: usize = 4 << 10;

type Job = (u64, Vec<u8>);

pub struct ParallelGz<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<io::Result<Job>>,
    done: BTreeMap<u64, Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    limit: usize,
}

impl<W: Write> ParallelGz<W> {
    pub fn new(inner: W, level: u32) -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (res_tx, results) = mpsc::channel();
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = res_tx.clone();
                std::thread::spawn(move || {
                    let mut probe = Probe::new();
                    let mut deflaters = Deflaters::new(level);
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        let out = match &mut deflaters {
                            Ok(z) => members(&data, level, z, &mut probe).map(|c| (seq, c)),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        };
                        if tx.send(out).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        ParallelGz {
            inner: Some(inner),
            buf: Vec::with_capacity(CHUNK),
            next_seq: 0,
            next_write: 0,
            jobs: Some(job_tx),
            results,
            done: BTreeMap::new(),
            workers,
            in_flight: 0,
            limit: threads * 2,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.in_flight >= self.limit {
            self.collect_one()?;
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("compressor closed"))?;
        jobs.send((self.next_seq, data))
            .map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, data) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.in_flight -= 1;
        self.done.insert(seq, data);
        while let Some(data) = self.done.remove(&self.next_write) {
            self.inner
                .as_mut()
                .ok_or_else(|| io::Error::other("compressor finished"))?
                .write_all(&data)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit()?;
        if self.next_seq == 0 {
            // an empty input is still one (empty) gzip member
            self.buf.clear();
            let jobs = self
                .jobs
                .as_ref()
                .ok_or_else(|| io::Error::other("compressor closed"))?;
            jobs.send((0, Vec::new()))
                .map_err(|_| io::Error::other("a compression worker stopped"))?;
            self.next_seq = 1;
            self.in_flight = 1;
        }
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("compressor finished"))?;
        inner.flush()?;
        Ok(inner)
    }
}

/// Tells segments that would not shrink: their first 4 KiB at level 1.
struct Probe {
    deflate: Compress,
    scratch: Vec<u8>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            deflate: Compress::new(Compression::fast(), false),
            scratch: vec![0; 2 * SAMPLE],
        }
    }

    /// True when both the first and the last 4 KiB of the segment do not
    /// shrink (so a segment where one file ends and another begins is
    /// compressed unless both are incompressible).
    fn incompressible(&mut self, segment: &[u8]) -> bool {
        segment.len() >= 2 * SAMPLE
            && self.stays(&segment[..SAMPLE])
            && self.stays(&segment[segment.len() - SAMPLE..])
    }

    fn stays(&mut self, sample: &[u8]) -> bool {
        self.deflate.reset();
        let done = self
            .deflate
            .compress(sample, &mut self.scratch, FlushCompress::Finish);
        !matches!(done, Ok(Status::StreamEnd))
            || self.deflate.total_out() as usize >= sample.len() * 31 / 32
    }
}

/// A worker's compressors: one at the layer's level, one that stores.
struct Deflaters {
    packing: Compressor,
    storing: Compressor,
}

impl Deflaters {
    fn new(level: u32) -> io::Result<Self> {
        let lvl = |l: u32| {
            CompressionLvl::new(l as i32)
                .map_err(|_| io::Error::other(format!("gzip level {l} is not one of 0 to 12")))
        };
        Ok(Deflaters {
            packing: Compressor::new(lvl(level)?),
            storing: Compressor::new(lvl(0)?),
        })
    }
}

/// The gzip members holding `data`: each run of 64 KiB segments that
/// compress is one member at the level, each run that does not is one
/// member of stored blocks. libdeflate writes each member whole (header with
/// no name and mtime 0, deflate, CRC-32 and size), from the bytes alone.
fn members(data: &[u8], level: u32, z: &mut Deflaters, probe: &mut Probe) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    if data.is_empty() {
        gzip(&mut z.packing, data, &mut out)?;
        return Ok(out);
    }
    let stored: Vec<bool> = data
        .chunks(SEGMENT)
        .map(|segment| level > 0 && probe.incompressible(segment))
        .collect();
    let mut at = 0;
    for run in stored.chunk_by(|a, b| a == b) {
        let end = (at + run.len() * SEGMENT).min(data.len());
        let deflater = if run[0] {
            &mut z.storing
        } else {
            &mut z.packing
        };
        gzip(deflater, &data[at..end], &mut out)?;
        at = end;
    }
    Ok(out)
}

/// Appends one gzip member holding `data` to `out`.
fn gzip(deflater: &mut Compressor, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + deflater.gzip_compress_bound(data.len()), 0);
    let n = deflater
        .gzip_compress(data, &mut out[start..])
        .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
    out.truncate(start + n);
    Ok(())
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn members_read_back_as_one_stream_and_are_deterministic() {
        let data: Vec<u8> = (0..3_500_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let compress = || {
            let mut gz = ParallelGz::new(Vec::new(), 6);
            gz.write_all(&data).unwrap();
            gz.finish().unwrap()
        };
        let a = compress();
        assert_eq!(a, compress());
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // compressible data: one member per chunk, each read back alone
        let mut rest = &a[..];
        for chunk in data.chunks(CHUNK) {
            let mut one = flate2::bufread::GzDecoder::new(rest);
            let mut back = Vec::new();
            one.read_to_end(&mut back).unwrap();
            assert_eq!(back, chunk);
            rest = one.into_inner();
        }
        assert!(rest.is_empty());
        assert!(a.len() < data.len() / 4, "{} bytes", a.len());
        let empty = ParallelGz::new(Vec::new(), 6).finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    /// Random bytes from a xorshift generator (no dependency, reproducible).
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn incompressible_segments_are_stored_and_read_back() {
        let rand = noise(3 * CHUNK + 12345, 7);
        let mut gz = ParallelGz::new(Vec::new(), 6);
        gz.write_all(&rand).unwrap();
        let out = gz.finish().unwrap();
        // stored: 5 bytes per 64 KiB block plus headers, nothing searched
        assert!(
            out.len() < rand.len() + rand.len() / 1000 + 200,
            "{}",
            out.len()
        );
        assert_eq!(gunzip(&out), rand);
    }

    #[test]
    fn mixed_text_and_noise_switch_back_and_forth() {
        // files alternating between text and noise, at sizes that put
        // boundaries inside segments and inside chunks
        let mut data = Vec::new();
        for i in 0..40u64 {
            let len = 20_000 + (i as usize * 7919) % 150_000;
            if i % 2 == 0 {
                let line = format!("line {i} of some text that repeats and compresses well\n");
                data.extend(line.bytes().cycle().take(len));
            } else {
                data.extend(noise(len, i + 1));
            }
        }
        let compress = || {
            let mut gz = ParallelGz::new(Vec::new(), 6);
            gz.write_all(&data).unwrap();
            gz.finish().unwrap()
        };
        let out = compress();
        assert_eq!(out, compress(), "deterministic");
        assert_eq!(gunzip(&out), data);
        let noise_bytes: usize = (0..40)
            .filter(|i| i % 2 == 1)
            .map(|i| 20_000 + (i * 7919) % 150_000)
            .sum();
        assert!(
            out.len() < noise_bytes + noise_bytes / 20,
            "the text still compresses"
        );
    }

    #[test]
    fn the_probe_tells_noise_from_text_and_boundaries() {
        let mut probe = Probe::new();
        let text: Vec<u8> = b"some words that repeat, "
            .iter()
            .copied()
            .cycle()
            .take(SEGMENT)
            .collect();
        let rand = noise(SEGMENT, 11);
        assert!(probe.incompressible(&rand));
        assert!(!probe.incompressible(&text));
        let half = [&rand[..SEGMENT / 2], &text[..SEGMENT / 2]].concat();
        assert!(
            !probe.incompressible(&half),
            "a segment ending in text is compressed"
        );
        assert!(!probe.incompressible(&rand[..SAMPLE]), "too short to probe");
    }
}
