//! Measuring a 200 MB image against raw SHA-384 over the same bytes.
//!
//! The image has the shape of a real one: an 8 MiB kernel, a 4 MiB boot
//! ramdisk and an application ramdisk filling the rest. `read_eif` checks
//! the layout and the CRC and computes PCR0, PCR1 and PCR2, which hashes the
//! application ramdisk twice; the target is at least 0.9 times the
//! throughput of one SHA-384 pass over an in-memory copy of the file.
//!
//! Run with `cargo bench -p eif-tool --bench measure`. After Criterion's
//! report the program times seven pairs of runs (one of each, back to back)
//! and prints the throughput ratio of each pair's runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA384, digest};
use criterion::{Criterion, Throughput};
use eif_tool::{BuildOptions, build_eif, read_eif};

const IMAGE_LEN: u64 = 200_000_000;
const KERNEL_LEN: usize = 8 << 20;
const BOOT_RAMDISK_LEN: usize = 4 << 20;
const PAIRS: usize = 7;

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

    // Paired runs: each pair times one SHA-384 pass and one read_eif back to
    // back, so both see the same load from other processes.
    let mut ratios = Vec::new();
    let mut sha_best = Duration::MAX;
    let mut measure_best = Duration::MAX;
    for _ in 0..PAIRS {
        let sha = timed(&mut || {
            black_box(digest(&SHA384, black_box(&bytes)));
        });
        let measure = timed(&mut || {
            black_box(read_eif(&image).unwrap());
        });
        sha_best = sha_best.min(sha);
        measure_best = measure_best.min(measure);
        ratios.push(sha.as_secs_f64() / measure.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let throughput = |duration: Duration| image_len as f64 / duration.as_secs_f64() / 1e6;
    println!("image: {image_len} bytes, load average: {}", load_average());
    println!("sha384 in memory, best of {PAIRS}:   {:8.1} MB/s", throughput(sha_best));
    println!("read_eif from file, best of {PAIRS}: {:8.1} MB/s", throughput(measure_best));
    println!(
        "throughput ratio read_eif / sha384 over {PAIRS} paired runs: median {:.3}, min {:.3}, max {:.3}",
        ratios[PAIRS / 2],
        ratios[0],
        ratios[PAIRS - 1]
    );
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn timed(run: &mut dyn FnMut()) -> Duration {
    let start = Instant::now();
    run();
    start.elapsed()
}
