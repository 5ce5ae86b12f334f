//! `throughput.svg`: messages per second and p99 latency against the number
//! of connections, one line per server, both axes logarithmic.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::results::{Comparison, medians};

/// Points of one server: (connections, value, every connection served).
type Series = Vec<(f64, f64, bool)>;

/// Draws both panels into an SVG file at `path`.
///
/// # Errors
/// If the file cannot be written.
pub fn draw(comparison: &Comparison, path: &Path) -> anyhow::Result<()> {
    let mut throughput: BTreeMap<String, Series> = BTreeMap::new();
    let mut p99: BTreeMap<String, Series> = BTreeMap::new();
    // With repeats, each point is the median of its runs.
    for median in medians(comparison, &[]) {
        let runs = comparison
            .rows
            .iter()
            .filter(|r| r.server == median.server && r.connections == median.connections);
        let all_served = runs
            .clone()
            .all(|r| r.results.served_connections as usize >= r.connections);
        if runs.map(|r| r.results.messages).sum::<u64>() == 0 {
            continue;
        }
        let x = median.connections as f64;
        throughput.entry(median.server.clone()).or_default().push((
            x,
            median.messages_per_sec,
            all_served,
        ));
        p99.entry(median.server)
            .or_default()
            .push((x, median.p99_us / 1000.0, all_served));
    }
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(600);
    let (left, note) = left.split_vertically(470);
    let (right, _) = right.split_vertically(470);
    panel(
        &left,
        "Throughput (messages/s, higher is better)",
        "messages/s",
        &throughput,
    )?;
    panel(
        &right,
        "p99 latency (ms, lower is better)",
        "p99 latency (ms)",
        &p99,
    )?;
    note.draw_text(
        "hollow points: not every connection was served (the model makes the rest wait)",
        &("sans-serif", 14).into_text_style(&note),
        (90, 5),
    )
    .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &BTreeMap<String, Series>,
) -> anyhow::Result<()> {
    let points = series.values().flatten();
    let (mut x_max, mut y_min, mut y_max) = (1.0_f64, f64::MAX, 0.0_f64);
    for &(x, y, _) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if y_max <= 0.0 {
        (y_min, y_max) = (1.0, 10.0);
    }
    let y_range = (y_min.max(1e-3) / 2.0..y_max * 2.0).log_scale();
    let x_range = (0.7..x_max * 1.4).log_scale();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(plot_error)?;
    configure(&mut chart, y_label)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&(x, y, all_served)| {
                let style = if all_served {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new((x, y), 4, style)
            }))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn configure<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    y_label: &str,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .y_labels(12)
        .bold_line_style(BLACK.mix(0.12))
        .x_desc("connections")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn format_number(y: f64) -> String {
    if y >= 1000.0 {
        format!("{:.0}k", y / 1000.0)
    } else if y >= 1.0 {
        format!("{y:.0}")
    } else {
        format!("{y:.2}")
    }
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
