//! Gzip on every core: the stream is cut into 1 MiB chunks, each compressed
//! as its own gzip member on a worker thread, written in order. Concatenated
//! members are one valid gzip stream (RFC 1952 §2.2) that Go's reader (Docker,
//! containerd, skopeo, umoci) and `MultiGzDecoder` read as a whole. The chunk
//! boundaries are fixed, so the output is the same on every machine.
//!
//! Data that does not compress (random bytes, files that are compressed
//! already) costs deflate as much as text does and gains nothing, so each
//! 64 KiB segment is probed first: when its first 4 KiB do not shrink at
//! level 1, the segment goes out as stored deflate blocks, after a full
//! flush so that later blocks refer to nothing before them. The decision
//! depends only on the bytes, so the output stays reproducible, and a member
//! with no such segment is byte for byte what flate2's `GzEncoder` writes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

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
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        let out = member(&data, level, &mut probe).map(|c| (seq, c));
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

/// One gzip member holding `data`: the header flate2's `GzEncoder` writes
/// (no name, mtime 0, OS 255), raw deflate, CRC-32 and size.
fn member(data: &[u8], level: u32, probe: &mut Probe) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
    let mut deflate = Compress::new(Compression::new(level), false);
    let mut storing = false;
    for segment in data.chunks(SEGMENT) {
        if level > 0 && probe.incompressible(segment) {
            if !storing {
                // byte-align and forget the history: what follows refers
                // to nothing before it
                feed(&mut deflate, &[], &mut out, FlushCompress::Full)?;
                storing = true;
            }
            for block in segment.chunks(u16::MAX as usize) {
                // a stored block: BFINAL 0, BTYPE 00, LEN, NLEN, the bytes
                let len = block.len() as u16;
                out.push(0);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(!len).to_le_bytes());
                out.extend_from_slice(block);
            }
        } else {
            storing = false;
            feed(&mut deflate, segment, &mut out, FlushCompress::None)?;
        }
    }
    feed(&mut deflate, &[], &mut out, FlushCompress::Finish)?;
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// Deflates all of `input` into `out`, growing it as needed; with a flush,
/// until all of it is out (`Finish`: until the stream has ended).
fn feed(
    deflate: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> io::Result<()> {
    let mut room = input.len() / 2 + SEGMENT;
    loop {
        out.reserve(room);
        let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
        let status = deflate
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        input = &input[(deflate.total_in() - before_in) as usize..];
        if (deflate.total_in(), deflate.total_out()) == (before_in, before_out) {
            room *= 2; // no progress: deflate wants more room at once
        }
        // deflate stops early only when it runs out of room
        let finished = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            FlushCompress::None => input.is_empty(),
            _ => input.is_empty() && out.len() < out.capacity(),
        };
        if finished {
            return Ok(());
        }
    }
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
        // compressible data: each member is what flate2's GzEncoder writes
        let mut expected = Vec::new();
        for chunk in data.chunks(CHUNK) {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            enc.write_all(chunk).unwrap();
            expected.extend(enc.finish().unwrap());
        }
        assert_eq!(a, expected);
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
