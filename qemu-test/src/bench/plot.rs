//! `balloon.svg`: the balloon's size over time for the move's inflate and deflate (3 GiB of a
//! 4 GiB guest), one line per driver and host (plotters, SVG backend only; with no font feature
//! plotters estimates text sizes itself and the SVG names a generic font family, so no font
//! files are needed).

use super::figures::{drv_name, INFLATE};
use super::probe::HostKind;
use super::run::Boot;
use crate::guest::GIB;
use crate::scenarios::Drv;
use anyhow::{anyhow, Result};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::Path;

/// One line: its legend and its (s, GiB) points; the driver picks the colour, the vhost-ranges
/// host draws dashed.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub drv: Drv,
    pub dashed: bool,
}

fn color(d: Drv) -> RGBColor {
    match d {
        Drv::C => RGBColor(0x1f, 0x77, 0xb4),
        Drv::Rust => RGBColor(0xd6, 0x45, 0x0e),
    }
}

pub fn draw(path: &Path, title: &str, lines: &[Line]) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let xmax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        * 1.05;
    let ymax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("time since the inflate command (s)")
        .y_desc("ballooned (GiB)")
        .draw()
        .map_err(|x| e(&x))?;
    for l in lines {
        let style = color(l.drv).stroke_width(2);
        let pts = l.points.iter().copied();
        if l.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts, 8, 5, style))
                .map_err(|x| e(&x))?
                .label(l.label.as_str())
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 24, y)], 8, 5, style)
                });
        } else {
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(|x| e(&x))?
                .label(l.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The move's inflate and deflate of the round with the median inflate, per driver and host.
pub fn lines(boots: &[Boot], hosts: &[HostKind]) -> Vec<Line> {
    let mut lines = Vec::new();
    for &h in hosts {
        for d in [Drv::C, Drv::Rust] {
            let mut ok: Vec<&Boot> = boots
                .iter()
                .filter(|b| b.host == h && b.drv == d)
                .filter(|b| b.figs.get(INFLATE).is_some_and(|v| v.is_ok()))
                .filter(|b| b.ops.iter().any(|o| o.name == "deflate-move"))
                .collect();
            if ok.is_empty() {
                continue;
            }
            ok.sort_by(|a, b| {
                let v = |x: &Boot| x.figs[INFLATE].clone().unwrap_or_default();
                v(a).total_cmp(&v(b))
            });
            let b = ok[(ok.len() - 1) / 2];
            let mut points = vec![(0.0, 0.0)];
            let mut end = 0.0;
            for name in ["inflate-move", "deflate-move"] {
                let Some(op) = b.ops.iter().find(|o| o.name == name) else {
                    continue;
                };
                let shift = end;
                for &(t, v) in &op.points {
                    points.push(((shift + t) / 1000.0, v as f64 / GIB as f64));
                    end = shift + t;
                }
            }
            lines.push(Line {
                label: format!("{} on {} (round {})", drv_name(d), h.name(), b.round),
                points,
                drv: d,
                dashed: h == HostKind::VhostRanges,
            });
        }
    }
    lines
}
