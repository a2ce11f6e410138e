//! The floor of a large COPY on this machine, for the benchmark suite
//! (bench/bench.py): every file under DIR read once, in name order, its bytes
//! hashed with sha256 (the diff ID) and compressed with the same gzip level
//! and the same parallel compressor kiln's layers use, the compressed stream
//! hashed too (the blob digest) and thrown away. No tar headers, no copy into
//! a snapshot, no writes: what any builder must at least do to make a layer
//! of these files.
//!
//!   cargo run --release -p kiln-oci --example floor -- DIR

#![allow(clippy::print_stdout, clippy::print_stderr)] // a measuring tool: it prints

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

use kiln_oci::digest::HashWriter;
use kiln_oci::pgzip::ParallelGz;

fn walk(dir: &Path, out: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    for name in kiln_oci::layer::sorted_names(dir).map_err(io::Error::other)? {
        let path = dir.join(name);
        let kind = fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            total += walk(&path, out, buf)?;
        } else if kind.is_file() {
            let mut f = fs::File::open(&path)?;
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
        }
    }
    Ok(total)
}

fn main() -> io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: floor DIR");
        std::process::exit(2);
    };
    let start = Instant::now();
    let blob = HashWriter::new(io::sink());
    let mut raw = HashWriter::new(ParallelGz::new(blob, kiln_oci::layer::GZIP_LEVEL));
    let mut buf = vec![0u8; 1 << 20];
    let read = walk(Path::new(&dir), &mut raw, &mut buf)?;
    let (gz, diff_id, _) = raw.finish();
    let (_, digest, size) = gz.finish()?.finish();
    println!(
        "read {read} bytes, gzip level {} to {size} bytes in {:.2}s (diff id {diff_id}, blob {digest})",
        kiln_oci::layer::GZIP_LEVEL,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
