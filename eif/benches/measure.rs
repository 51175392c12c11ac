//! Measuring a 200 MB image against raw SHA-384 over the same bytes.
//!
//! The image has the shape of a real one: an 8 MiB kernel, a 4 MiB boot
//! ramdisk and an application ramdisk filling the rest. `read_eif` checks
//! the layout and the CRC and computes PCR0, PCR1 and PCR2, which hashes the
//! application ramdisk twice; the target is at least 0.9 times the
//! throughput of one SHA-384 pass over an in-memory copy of the file.
//!
//! Run with `cargo bench -p eif-tool --bench measure`. After Criterion's
//! report the program prints the best of five timed runs of each and their
//! ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA384, digest};
use criterion::{Criterion, Throughput};
use eif_tool::{BuildOptions, build_eif, read_eif};

const IMAGE_LEN: u64 = 200_000_000;
const KERNEL_LEN: usize = 8 << 20;
const BOOT_RAMDISK_LEN: usize = 4 << 20;

fn filler(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    let boot = dir.path().join("boot.cpio");
    let app = dir.path().join("app.cpio");
    let image = dir.path().join("image.eif");
    fs::write(&kernel, filler(KERNEL_LEN, 1)).unwrap();
    fs::write(&boot, filler(BOOT_RAMDISK_LEN, 2)).unwrap();
    let cmdline = "reboot=k panic=30 pci=off nomodules console=ttyS0".to_owned();
    // Five section headers, the metadata JSON and the cmdline are small, so
    // the application ramdisk is sized to bring the file to about 200 MB.
    let overhead = 548 + 5 * 12 + 400 + cmdline.len();
    let app_len = IMAGE_LEN as usize - KERNEL_LEN - BOOT_RAMDISK_LEN - overhead;
    fs::write(&app, filler(app_len, 3)).unwrap();
    build_eif(&BuildOptions::new(kernel, cmdline, vec![boot, app]), &image).unwrap();
    let bytes = fs::read(&image).unwrap();
    let image_len = bytes.len() as u64;

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();
    let mut group = criterion.benchmark_group("measure_200mb");
    group.throughput(Throughput::Bytes(image_len));
    group.bench_function("sha384_in_memory", |bencher| bencher.iter(|| digest(&SHA384, black_box(&bytes))));
    group.bench_function("read_eif_from_file", |bencher| bencher.iter(|| read_eif(black_box(&image)).unwrap()));
    group.finish();
    criterion.final_summary();

    let best = |run: &mut dyn FnMut()| (0..5).map(|_| timed(run)).min().unwrap_or(Duration::MAX);
    let sha = best(&mut || {
        black_box(digest(&SHA384, black_box(&bytes)));
    });
    let measure = best(&mut || {
        black_box(read_eif(&image).unwrap());
    });
    let throughput = |duration: Duration| image_len as f64 / duration.as_secs_f64() / 1e6;
    println!("image: {image_len} bytes");
    println!("sha384 in memory:   {:8.1} MB/s ({:?})", throughput(sha), sha);
    println!("read_eif from file: {:8.1} MB/s ({:?})", throughput(measure), measure);
    println!("ratio read_eif / sha384: {:.3}", sha.as_secs_f64() / measure.as_secs_f64());
}

fn timed(run: &mut dyn FnMut()) -> Duration {
    let start = Instant::now();
    run();
    start.elapsed()
}
