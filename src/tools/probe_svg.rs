//! `probe --svg FILE`: the probe's timeline as a picture, drawn with the
//! chart library `compare` uses. A row per client, in the order served
//! (as the text chart): a thin grey bar while it waits for its echo, a dot
//! when the echo arrives, a thick bar while it holds the connection, a red
//! cross where it failed and a red triangle where the server closed it;
//! time runs along a labelled axis, so a staircase, a waiting third client
//! or all at once reads at a glance.

use std::path::Path;

use plotters::prelude::*;

use super::probe::ProbeReport;

/// Height of one client's row, in pixels.
const ROW: u32 = 34;

/// Draws `report` into an SVG file at `path`.
///
/// # Errors
/// If the file cannot be written.
pub fn draw(report: &ProbeReport, path: &Path) -> anyhow::Result<()> {
    let rows = report.clients.len().max(1);
    let height = 140 + ROW * rows as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let end = report
        .clients
        .iter()
        .filter_map(|c| c.closed.or(c.failed).or(c.echoed).or(c.connected))
        .fold(0.0_f64, f64::max)
        .max(1e-3)
        * 1.05;
    let (plot, key) = root.split_vertically(height - 30);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!(
                "probe: {rows} clients, each holding {:.1}s after its echo",
                report.hold
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, rows as f64 + 0.5..0.5)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .x_desc("seconds since the probe started")
        .y_labels(rows)
        .y_label_formatter(&|y| {
            let row = y.round();
            if (y - row).abs() < 1e-6 && row >= 1.0 {
                format!("client {row:.0}")
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| format!("{x:.2}s"))
        .draw()
        .map_err(plot_error)?;
    let (waiting, holding) = (BLACK.mix(0.25), RGBColor(31, 119, 180));
    for c in &report.clients {
        let y = c.client as f64;
        let Some(connected) = c.connected else {
            if let Some(at) = c.failed {
                chart
                    .draw_series([Cross::new((at, y), 6, RED.stroke_width(2))])
                    .map_err(plot_error)?;
            }
            continue;
        };
        let waited_until = c.echoed.or(c.failed).or(c.closed).unwrap_or(end);
        chart
            .draw_series([Rectangle::new(
                [(connected, y - 0.08), (waited_until, y + 0.08)],
                waiting.filled(),
            )])
            .map_err(plot_error)?;
        if let Some(echoed) = c.echoed {
            let until = c.closed.or(c.failed).unwrap_or(echoed);
            chart
                .draw_series([Rectangle::new(
                    [(echoed, y - 0.25), (until, y + 0.25)],
                    holding.filled(),
                )])
                .map_err(plot_error)?;
            chart
                .draw_series([Circle::new((echoed, y), 5, BLACK.filled())])
                .map_err(plot_error)?;
            if c.closed_by_server {
                chart
                    .draw_series([TriangleMarker::new((until, y), 7, RED.stroke_width(2))])
                    .map_err(plot_error)?;
            }
        }
        if let Some(at) = c.failed {
            chart
                .draw_series([Cross::new((at, y), 6, RED.stroke_width(2))])
                .map_err(plot_error)?;
        }
    }
    key.draw_text(
        "grey: waiting for the echo · dot: echo arrived · blue: holding · red triangle: closed by the server · red cross: failed",
        &("sans-serif", 13).into_text_style(&key),
        (20, 6),
    )
    .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
