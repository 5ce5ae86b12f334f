//! `throughput.svg`: messages per second and p99 latency against the number
//! of connections, one line per server, both axes logarithmic.
//!
//! Every plotted value is readable: the x axis is labelled at each
//! connection count measured, and the y axis at round values close enough
//! together that each point lies between two labelled ticks.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::results::{Comparison, medians};
use crate::serve::Mode;

/// Points of one server: (connections, value, every connection served).
type Series = Vec<(f64, f64, bool)>;

/// Draws both panels into an SVG file at `path`.
///
/// # Errors
/// If the file cannot be written.
pub fn draw(comparison: &Comparison, path: &Path) -> anyhow::Result<()> {
    let mut throughput: BTreeMap<String, Series> = BTreeMap::new();
    let mut p99: BTreeMap<String, Series> = BTreeMap::new();
    // Our models keep one colour each in every chart; other servers take
    // the next ones, in the order they were given.
    let mut order: Vec<String> = Mode::ALL.iter().map(|m| m.name().to_owned()).collect();
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
        if !order.contains(&median.server) {
            order.push(median.server.clone());
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
        "messages/s (log scale)",
        &throughput,
        &order,
    )?;
    panel(
        &right,
        "p99 latency (ms, lower is better)",
        "p99 latency, ms (log scale)",
        &p99,
        &order,
    )?;
    let hollow = throughput.values().flatten().any(|&(_, _, served)| !served);
    if hollow {
        note.draw_text(
            "hollow points: not every connection was served (the model makes the rest wait)",
            &("sans-serif", 14).into_text_style(&note),
            (90, 5),
        )
        .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Strong colours that read on white (no yellow), one per server.
const COLOURS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(230, 115, 0),
    RGBColor(140, 86, 75),
    RGBColor(0, 128, 128),
    RGBColor(227, 80, 170),
    RGBColor(60, 60, 60),
];

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &BTreeMap<String, Series>,
    order: &[String],
) -> anyhow::Result<()> {
    let mut xs: Vec<f64> = series.values().flatten().map(|&(x, _, _)| x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let ys = series
        .values()
        .flatten()
        .map(|&(_, y, _)| y)
        .filter(|&y| y > 0.0);
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (x_lo, x_hi) = match (xs.first(), xs.last()) {
        (Some(&lo), Some(&hi)) => (lo / 1.6, hi * 1.6),
        _ => (0.7, 14.0),
    };
    let y_ticks = if y_max > 0.0 {
        ticks(y_min, y_max)
    } else {
        vec![1.0, 10.0]
    };
    let (y_lo, y_hi) = (y_ticks[0] / 1.1, y_ticks[y_ticks.len() - 1] * 1.1);
    let x_range = (x_lo..x_hi).log_scale().with_key_points(xs);
    let y_range = (y_lo..y_hi).log_scale().with_key_points(y_ticks);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(plot_error)?;
    configure(&mut chart, y_label)?;
    for (name, points) in series {
        let index = order.iter().position(|o| o == name).unwrap_or(0);
        let color = COLOURS[index % COLOURS.len()].to_rgba();
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

/// Round values for a log axis from below `min` to above `max`: the
/// coarsest of 1-2-5, 1..9 and finer steps per decade that gives at least
/// five labels, so that no point sits far from one.
fn ticks(min: f64, max: f64) -> Vec<f64> {
    const STEPS: [&[f64]; 3] = [
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        &[
            1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0,
        ],
    ];
    let mut best = Vec::new();
    for mantissas in STEPS {
        let candidates: Vec<f64> = (-4..=10)
            .flat_map(|exp| mantissas.iter().map(move |m| m * 10f64.powi(exp)))
            .collect();
        // A little room on each side, so no point sits on the frame.
        let below = candidates.iter().rev().find(|&&t| t <= min * 0.95);
        let above = candidates.iter().find(|&&t| t >= max * 1.05);
        let (Some(&lo), Some(&hi)) = (below, above) else {
            continue;
        };
        best = candidates
            .into_iter()
            .filter(|&t| t >= lo && t <= hi)
            .collect();
        if best.len() >= 5 {
            break;
        }
    }
    if best.len() < 2 {
        best = vec![min, max];
    }
    best
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
        .bold_line_style(BLACK.mix(0.12))
        .x_desc("connections (log scale)")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// `150k`, `1.5k`, `2.5M`, `0.25`: three significant digits at most.
fn format_number(y: f64) -> String {
    let (value, suffix) = if y >= 1e6 {
        (y / 1e6, "M")
    } else if y >= 1e3 {
        (y / 1e3, "k")
    } else {
        (y, "")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{suffix}")
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lies between two labelled ticks, with enough of them.
    #[test]
    fn ticks_surround_every_value() {
        for (min, max) in [
            (58_000.0, 150_000.0),
            (70_000.0, 100_000.0),
            (0.1, 2.0),
            (3.0, 3.0),
        ] {
            let t = ticks(min, max);
            assert!(t.len() >= 3, "{min}..{max}: {t:?}");
            assert!(t[0] <= min && t[t.len() - 1] >= max, "{min}..{max}: {t:?}");
        }
    }

    fn comparison(served: u64) -> Comparison {
        let row = |server: &str, rate: f64| {
            let mut results = crate::tools::bench::BenchResults {
                messages: 1000,
                messages_per_sec: rate,
                served_connections: served,
                ..Default::default()
            };
            results.latency_us.p99 = 100.0;
            super::super::results::Row {
                server: server.to_owned(),
                connections: 10,
                repeat: 1,
                results,
                note: None,
                counters: None,
            }
        };
        Comparison::of_rows(vec![row("selector", 90_000.0), row("tokio", 120_000.0)])
    }

    /// One connection count: the axis is labelled at it (not at 1), the
    /// axes say they are logarithmic, and the note on hollow points shows
    /// only when a point is hollow.
    #[test]
    fn the_chart_labels_what_it_plots() {
        let path = std::env::temp_dir().join(format!("echo-lab-chart-{}.svg", std::process::id()));
        draw(&comparison(10), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("log scale"), "{svg}");
        assert!(
            svg.contains(">\n10\n<") && !svg.contains(">\n1\n<"),
            "{svg}"
        );
        assert!(svg.contains(">\n100k\n<"), "{svg}");
        assert!(!svg.contains("hollow points"), "{svg}");
        draw(&comparison(3), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("hollow points"), "{svg}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(format_number(150_000.0), "150k");
        assert_eq!(format_number(1_500.0), "1.5k");
        assert_eq!(format_number(2_500_000.0), "2.5M");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(60_000.0), "60k");
    }
}
