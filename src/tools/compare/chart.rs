//! `throughput.svg`: messages per second (lines delivered, for the chat)
//! and p99 latency against the number of connections, one line per server,
//! both axes logarithmic; with one connection count, a bar per server. The
//! servers' names and colours are in a strip under the plots, where they
//! cover no point.
//!
//! Every plotted value is readable: the x axis is labelled at each
//! connection count measured, and the y axis at round values close enough
//! together that each point lies between two labelled ticks.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{format_number, ticks};
use super::results::{Comparison, medians};
use crate::serve::{Mode, Protocol};

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
    let unit = match comparison.protocol {
        Protocol::Echo => "messages/s",
        Protocol::Chat => "lines delivered/s",
    };
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (plots, below) = root.split_vertically(470);
    let (left, right) = plots.split_horizontally(600);
    let one_count = {
        let mut counts: Vec<u64> = throughput
            .values()
            .flatten()
            .map(|&(x, _, _)| x as u64)
            .collect();
        counts.sort_unstable();
        counts.dedup();
        (counts.len() == 1).then(|| counts[0])
    };
    let throughput_title = format!("Throughput ({unit}, higher is better)");
    match one_count {
        // One connection count: lines of one point each would sit on top
        // of each other; bars side by side say the same plainly.
        Some(connections) => {
            let x_label = format!("{connections} connections");
            bars(
                &left,
                &throughput_title,
                unit,
                &x_label,
                &throughput,
                &order,
            )?;
            bars(
                &right,
                "p99 latency (ms, lower is better)",
                "p99 latency, ms",
                &x_label,
                &p99,
                &order,
            )?;
        }
        None => {
            panel(
                &left,
                &throughput_title,
                &format!("{unit} (log scale)"),
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
        }
    }
    legend(&below, &throughput, &order)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The servers' colours and names in a strip under the plots, where they
/// cover no point; and the note on hollow points when there are any.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &BTreeMap<String, Series>,
    order: &[String],
) -> anyhow::Result<()> {
    let style = ("sans-serif", 15).into_text_style(area);
    let mut names: Vec<&String> = series.keys().collect();
    names.sort_by_key(|name| order.iter().position(|o| o == *name));
    let (mut x, mut y) = (90, 10);
    for name in names {
        let color = colour(name, order);
        let width = 40 + 9 * name.len() as i32;
        if x + width > 1180 {
            (x, y) = (90, y + 24);
        }
        area.draw(&PathElement::new(
            [(x, y + 8), (x + 24, y + 8)],
            color.stroke_width(3),
        ))
        .map_err(plot_error)?;
        area.draw_text(name, &style, (x + 30, y))
            .map_err(plot_error)?;
        x += width;
    }
    let hollow = series.values().flatten().any(|&(_, _, served)| !served);
    if hollow {
        area.draw_text(
            "hollow points and pale bars: not every connection was served (the model makes the rest wait)",
            &("sans-serif", 14).into_text_style(area),
            (90, y + 30),
        )
        .map_err(plot_error)?;
    }
    Ok(())
}

/// A server's colour: ours keep theirs in every chart, others follow.
fn colour(name: &str, order: &[String]) -> RGBAColor {
    let index = order.iter().position(|o| o == name).unwrap_or(0);
    COLOURS[index % COLOURS.len()].to_rgba()
}

/// One bar per server, for a run with one connection count.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    x_label: &str,
    series: &BTreeMap<String, Series>,
    order: &[String],
) -> anyhow::Result<()> {
    let mut bars: Vec<(&String, f64, bool)> = series
        .iter()
        .filter_map(|(name, points)| points.first().map(|&(_, y, served)| (name, y, served)))
        .collect();
    bars.sort_by_key(|(name, _, _)| order.iter().position(|o| o == *name));
    let top = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
    // Bar i is centred on x = i; its server's name is written under it.
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..bars.len() as f64 - 0.5, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .x_labels(0)
        .x_desc(x_label)
        .y_desc(y_label)
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, &(name, value, served))| {
            let color = colour(name, order);
            let fill = if served { color } else { color.mix(0.35) };
            let x = i as f64;
            Rectangle::new([(x - 0.4, 0.0), (x + 0.4, value)], fill.filled())
        }))
        .map_err(plot_error)?;
    let style = ("sans-serif", 13)
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, (name, _, _)) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        let (left, top) = area.get_base_pixel();
        area.draw_text(name, &style, (x - left, y - top + 6))
            .map_err(plot_error)?;
    }
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
        let color = colour(name, order);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?;
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
        .bold_line_style(BLACK.mix(0.12))
        .x_desc("connections (log scale)")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format_number(*y))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(served: u64, counts: &[usize]) -> Comparison {
        let row = |server: &str, rate: f64, connections: usize| {
            let mut results = crate::tools::bench::BenchResults {
                messages: 1000,
                messages_per_sec: rate,
                served_connections: served.min(connections as u64),
                ..Default::default()
            };
            results.latency_us.p99 = 100.0;
            super::super::results::Row {
                server: server.to_owned(),
                connections,
                repeat: 1,
                results,
                note: None,
                counters: None,
                memory: None,
            }
        };
        let mut rows = Vec::new();
        for &count in counts {
            rows.push(row("selector", 90_000.0, count));
            rows.push(row("tokio", 120_000.0, count));
        }
        Comparison::of_rows(rows)
    }

    fn drawn(comparison: &Comparison) -> String {
        let path = std::env::temp_dir().join(format!(
            "echo-lab-chart-{}-{:?}.svg",
            std::process::id(),
            std::thread::current().id()
        ));
        draw(comparison, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        svg
    }

    /// Several connection counts: log axes, labelled at each count
    /// measured (not at 1), round values on y; the servers named once each
    /// in the strip below the plots.
    #[test]
    fn the_chart_labels_what_it_plots() {
        let svg = drawn(&comparison(1000, &[10, 100]));
        assert!(svg.contains("log scale"), "{svg}");
        assert!(
            svg.contains(">\n10\n<") && svg.contains(">\n100\n<"),
            "{svg}"
        );
        assert!(!svg.contains(">\n1\n<"), "{svg}");
        assert!(svg.contains(">\n100k\n<"), "{svg}");
        assert!(svg.contains("messages/s (log scale)"), "{svg}");
        assert_eq!(svg.matches(">\nselector\n<").count(), 1, "{svg}");
        assert!(!svg.contains("hollow points"), "{svg}");
        let svg = drawn(&comparison(3, &[10, 100]));
        assert!(svg.contains("hollow points"), "{svg}");
    }

    /// One connection count: a bar per server, named under it, the count
    /// on the axis; a chat run counts lines delivered, not messages.
    #[test]
    fn one_count_draws_bars_in_the_protocols_unit() {
        let mut one = comparison(10, &[10]);
        let svg = drawn(&one);
        assert!(!svg.contains("log scale"), "{svg}");
        assert!(svg.contains("10 connections"), "{svg}");
        assert!(svg.matches("<rect").count() >= 2, "{svg}");
        one.protocol = Protocol::Chat;
        let svg = drawn(&one);
        assert!(svg.contains("lines delivered/s"), "{svg}");
        assert!(!svg.contains("messages/s"), "{svg}");
    }
}
