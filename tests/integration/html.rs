//! report.html renders: headless Chromium screenshots it and the picture holds the tables and charts, not a blank page.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

use crate::harness::*;

/// Chromium from ESMBENCH_CHROMIUM or PATH; None (a skip) unless ESMBENCH_REQUIRE_CHROMIUM=1, set by scripts/test.sh
/// after it installs the browser, turns the absence into a failure.
fn chromium(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("ESMBENCH_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| {
                    std::env::var_os("PATH").and_then(|path| {
                        std::env::split_paths(&path)
                            .map(|dir| dir.join(name))
                            .find(|p| p.is_file())
                    })
                })
        });
    if found.is_none() {
        assert!(
            std::env::var("ESMBENCH_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "{test}: Chromium is required here but was not found (scripts/test.sh installs Debian's chromium)"
        );
        eprintln!("SKIPPED {test}: no chromium on PATH (apt-get install chromium, or set ESMBENCH_CHROMIUM)");
    }
    found
}

fn screenshot(browser: &Path, page: &Path, work: &Path) -> png::OutputInfo {
    let shot = work.join("shot.png");
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,2000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("Chromium wrote a screenshot"),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    std::fs::write(work.join("pixels.raw"), &pixels).unwrap();
    info
}

/// Share of pixels that are not (near) white, and the number of distinct colours among them.
fn ink(work: &Path, info: &png::OutputInfo) -> (f64, usize) {
    let pixels = std::fs::read(work.join("pixels.raw")).unwrap();
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "unexpected PNG colour type {:?}",
        info.color_type
    );
    let mut inked = 0usize;
    let mut colours = std::collections::HashSet::new();
    for px in pixels.chunks_exact(channels) {
        if px[..3].iter().any(|&c| c < 235) {
            inked += 1;
            colours.insert([px[0] >> 3, px[1] >> 3, px[2] >> 3]);
        }
    }
    (
        inked as f64 / (pixels.len() / channels) as f64,
        colours.len(),
    )
}

#[test]
fn report_html_screenshot_in_headless_chromium_shows_tables_and_charts() {
    let test = "report_html_screenshot_in_headless_chromium_shows_tables_and_charts";
    let Some(browser) = chromium(test) else {
        return;
    };
    let dir = tempdir();
    let data = dir.path().join("nanobodies.csv");
    synthetic_nanobodies(&data, 400, 3);
    let out = dir.path().join("run");
    esmbench()
        .args(["test", "--mock-backend", "--model"])
        .arg(fixture("esm2_micro.onnx"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("src=\"http")
            && !html.contains("href=\"http")
            && !html.contains("<script src"),
        "report.html must be self-contained"
    );
    assert!(html.matches("<svg").count() >= 4, "the charts are embedded");

    let work = dir.path().join("shot");
    std::fs::create_dir_all(&work).unwrap();
    let info = screenshot(&browser, &out.join("report.html"), &work);
    assert_eq!((info.width, info.height), (1280, 2000));
    let (share, colours) = ink(&work, &info);
    assert!(
        share > 0.03 && colours > 30,
        "the screenshot looks blank: {:.2}% of pixels inked, {colours} colours",
        share * 100.0
    );

    // The same check on an empty page fails, so the thresholds above can tell a blank render.
    let blank = write(dir.path(), "blank.html", "<!doctype html><title>x</title>");
    let blank_work = dir.path().join("blank");
    std::fs::create_dir_all(&blank_work).unwrap();
    let info = screenshot(&browser, &blank, &blank_work);
    let (share, colours) = ink(&blank_work, &info);
    assert!(
        share < 0.01 && colours < 5,
        "a blank page measured {share} inked, {colours} colours"
    );
}
