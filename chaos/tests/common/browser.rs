//! The drill report in a real browser: headless Chromium (Debian's `chromium`, which
//! the setup installs) renders `report.html` to a PNG, and the picture is checked for
//! what a reader must see: a page that is not blank, and the fault bands' colour.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The fault band's fill: orange (255, 140, 0) at 18% over white.
const BAND: [u8; 3] = [255, 234, 209];

/// What a screenshot shows, in counts of pixels.
#[derive(Debug)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub not_white: usize,
    pub band: usize,
}

/// Renders `html` with headless Chromium into `png` and counts its pixels.
pub fn screenshot(html: &Path, png: &Path) -> anyhow::Result<Picture> {
    anyhow::ensure!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: scripts/setup.sh installs Debian's chromium"
    );
    let profile = png.with_extension("profile");
    let output = Command::new("timeout")
        .arg("60")
        .arg(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1000,1800")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .context("run chromium")?;
    anyhow::ensure!(
        png.exists(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).context("open the screenshot")?,
    ));
    let mut reader = decoder.read_info().context("read the PNG header")?;
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).context("decode the PNG")?;
    let channels = frame.color_type.samples();
    anyhow::ensure!(
        channels >= 3,
        "unexpected PNG colour type {:?}",
        frame.color_type
    );
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 6);
    let mut picture = Picture {
        width: frame.width,
        height: frame.height,
        not_white: 0,
        band: 0,
    };
    for p in pixels[..frame.buffer_size()].chunks(channels) {
        if !near(&p[..3], [255, 255, 255]) {
            picture.not_white += 1;
        }
        if near(&p[..3], BAND) {
            picture.band += 1;
        }
    }
    Ok(picture)
}
