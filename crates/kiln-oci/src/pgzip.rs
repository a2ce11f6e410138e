//! Gzip on every core: the stream is cut into 1 MiB chunks, each compressed
//! as its own gzip member on a worker thread, written in order. Concatenated
//! members are one valid gzip stream (RFC 1952 §2.2) that Go's reader (Docker,
//! containerd, skopeo, umoci) and `MultiGzDecoder` read as a whole. The chunk
//! boundaries are fixed, so the output is the same on every machine.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;

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
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::with_capacity(data.len() / 2),
                        flate2::Compression::new(level),
                    );
                    let out = enc
                        .write_all(&data)
                        .and_then(|_| enc.finish())
                        .map(|c| (seq, c));
                    if tx.send(out).is_err() {
                        return;
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
        let empty = ParallelGz::new(Vec::new(), 6).finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
