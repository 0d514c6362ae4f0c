//! The drill's timeline plot (`report.html`): acknowledged writes, errors, and the
//! median and p99 latency clients saw, per second for each region asked, one panel
//! each, with every fault's
//! interval (from injection to heal; a failover cycle from the kill to the return)
//! drawn as a band across all three, and the drill's other moments as dashed lines.
//! Drawn with plotters into an inline SVG string.

use std::collections::BTreeMap;

use anyhow::Context;
use plotters::prelude::*;

use super::figures::{RegionBucket, REGION_BUCKET_MS};
use super::DrillReport;

const SIZE: (u32, u32) = (960, 980);

/// A shaded interval of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub from_ms: u64,
    pub to_ms: u64,
    pub label: String,
}

/// The report's fault intervals: the schedule's faults (a region failover from its
/// kill to the region's return) and the kill cycles of the other scenarios.
pub fn bands(report: &DrillReport) -> Vec<Band> {
    let mut bands: Vec<Band> = report
        .faults
        .iter()
        .map(|f| Band {
            from_ms: f.injected_at_ms,
            to_ms: f.healed_at_ms.max(f.injected_at_ms),
            label: format!("{} {}", f.fault, f.target),
        })
        .collect();
    if report.faults.is_empty() {
        bands.extend(report.cycles.iter().map(|c| Band {
            from_ms: c.killed_at_ms,
            to_ms: c.back_at_ms.max(c.killed_at_ms),
            label: format!("{} down", c.region),
        }));
    }
    bands
}

type Pick = fn(&RegionBucket) -> Option<f64>;

/// Each panel: its title, the unit of its y axis, and what it plots.
const PANELS: [(&str, &str, Pick); 4] = [
    (
        "Acknowledged writes per second, by the region asked",
        "writes/s",
        |b| Some(b.ok as f64),
    ),
    (
        "Errors per second (refused or unanswered), by the region asked",
        "errors/s",
        |b| Some(b.errors as f64),
    ),
    (
        "Median latency clients saw, by the region asked",
        "ms",
        |b| b.p50_ms.map(|ms| ms as f64),
    ),
    (
        "99th-percentile latency clients saw, by the region asked",
        "ms",
        |b| b.p99_ms.map(|ms| ms as f64),
    ),
];

/// The plot of `report` as an SVG document.
pub fn report_svg(report: &DrillReport) -> anyhow::Result<String> {
    let markers: Vec<u64> = report.markers.iter().map(|m| m.at_ms).collect();
    timeline_svg(&report.figures.per_region, &bands(report), &markers)
}

/// The plot of per-region `series` with `bands` and moments at `markers` (ms).
pub fn timeline_svg(
    series: &BTreeMap<String, Vec<RegionBucket>>,
    bands: &[Band],
    markers: &[u64],
) -> anyhow::Result<String> {
    let end_ms = series
        .values()
        .map(|b| b.len() as u64 * REGION_BUCKET_MS)
        .chain(bands.iter().map(|b| b.to_ms))
        .chain(markers.iter().copied())
        .max()
        .unwrap_or(REGION_BUCKET_MS)
        .max(REGION_BUCKET_MS);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((PANELS.len(), 1));
        for (area, (title, unit, pick)) in panels.iter().zip(PANELS) {
            panel(area, (title, unit), pick, series, bands, markers, end_ms)
                .with_context(|| format!("draw the panel {title:?}"))?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    (title, unit): (&str, &str),
    pick: Pick,
    series: &BTreeMap<String, Vec<RegionBucket>>,
    bands: &[Band],
    markers: &[u64],
    end_ms: u64,
) -> anyhow::Result<()> {
    let top = series
        .values()
        .flatten()
        .filter_map(pick)
        .fold(1.0_f64, f64::max)
        * 1.15;
    let seconds = |ms: u64| ms as f64 / 1_000.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(6)
        .x_label_area_size(34)
        .y_label_area_size(58)
        .build_cartesian_2d(0.0..seconds(end_ms), 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("seconds since the workload started")
        .y_desc(unit)
        .draw()
        .map_err(plot_error)?;
    let band_style = RGBColor(255, 140, 0).mix(0.18).filled();
    chart
        .draw_series(bands.iter().map(|band| {
            Rectangle::new(
                [(seconds(band.from_ms), 0.0), (seconds(band.to_ms), top)],
                band_style,
            )
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(bands.iter().map(|band| {
            Text::new(
                band.label.clone(),
                (seconds(band.from_ms), top * 0.97),
                ("sans-serif", 10).into_font().color(&RGBColor(160, 80, 0)),
            )
        }))
        .map_err(plot_error)?;
    let in_band = |ms: u64| bands.iter().any(|b| b.from_ms <= ms && ms <= b.to_ms);
    chart
        .draw_series(markers.iter().filter(|at| !in_band(**at)).map(|at| {
            let x = seconds(*at);
            PathElement::new(vec![(x, 0.0), (x, top)], BLACK.mix(0.25))
        }))
        .map_err(plot_error)?;
    for (i, (region, buckets)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = buckets
            .iter()
            .filter_map(|b| pick(b).map(|v| (seconds(b.start_ms + REGION_BUCKET_MS / 2), v)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(region.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    error: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("plot: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start_ms: u64, ok: usize, errors: usize, p99_ms: Option<u64>) -> RegionBucket {
        RegionBucket {
            start_ms,
            ok,
            errors,
            p50_ms: p99_ms.map(|ms| ms / 2),
            p99_ms,
        }
    }

    #[test]
    fn the_plot_names_every_region_and_draws_every_fault_band() {
        let series = BTreeMap::from([
            (
                "eu-west".to_owned(),
                vec![bucket(0, 20, 0, Some(4)), bucket(1_000, 3, 9, Some(900))],
            ),
            ("us-east".to_owned(), vec![bucket(0, 18, 1, None)]),
        ]);
        let bands = vec![
            Band {
                from_ms: 300,
                to_ms: 1_400,
                label: "partition eu-west".into(),
            },
            Band {
                from_ms: 1_500,
                to_ms: 1_900,
                label: "latency us-east".into(),
            },
        ];
        let svg = timeline_svg(&series, &bands, &[100, 2_000]).expect("plot");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["eu-west", "us-east", "partition eu-west", "latency us-east"] {
            assert!(svg.contains(text), "the plot shows {text:?}");
        }
        // Four panels, each with a band per fault (same fill), each a <rect>.
        let band_fill = svg.matches("opacity=\"0.18\"").count();
        assert_eq!(band_fill, 8, "two bands in each of four panels");
        for text in [
            "writes/s",
            "errors/s",
            "ms",
            "seconds since the workload started",
        ] {
            assert!(svg.contains(text), "an axis is labelled {text:?}");
        }
        let empty = timeline_svg(&BTreeMap::new(), &[], &[]).expect("an empty plot draws");
        assert!(empty.contains("Median latency") && empty.contains("99th-percentile latency"));
    }
}
