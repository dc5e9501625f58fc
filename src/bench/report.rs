//! What `hearth bench` writes: `results.json` (every raw figure, the
//! workload, the config, the machine), `report.md` (one table per scenario,
//! topologies side by side) and SVG charts (plotters): latency (end to
//! end, first token, inter-token; p50 and p95) and throughput against load,
//! a line per topology across every level, and memory per topology. And
//! `hearth bench compare`, the ratios between two runs.

use super::results::Results;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Write `results.json`, `report.md` and the charts into `out`.
pub fn write(results: &Results, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Vec::new();
    let json = out.join("results.json");
    let text = serde_json::to_string_pretty(results).expect("results serialise");
    std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
    written.push(json);
    let mut charts = Vec::new();
    if results.topologies.iter().any(|t| !t.steady.is_empty()) {
        for (file, draw) in [
            ("latency.svg", latency_chart as ChartFn),
            ("throughput.svg", throughput_chart as ChartFn),
            ("memory.svg", memory_chart as ChartFn),
        ] {
            let path = out.join(file);
            draw(results, &path)?;
            charts.push(file);
            written.push(path);
        }
    }
    let md = out.join("report.md");
    std::fs::write(&md, markdown(results, &charts)).map_err(|e| Error::io(&md, e))?;
    written.push(md);
    Ok(written)
}

type ChartFn = fn(&Results, &Path) -> Result<()>;

/// Category `i` is drawn over `i..i+1`: label its centre only.
fn centre_label(x: f64, labels: &[&str]) -> String {
    if (x.fract() - 0.5).abs() < 1e-6 {
        labels.get(x.floor() as usize).unwrap_or(&"").to_string()
    } else {
        String::new()
    }
}

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("drawing a chart: {e}"))
}

/// The report: one table per scenario, topologies side by side.
pub fn markdown(r: &Results, charts: &[&str]) -> String {
    let mut s = String::new();
    let w = &r.workload;
    let _ = writeln!(s, "# hearth bench: {}\n", w.name);
    let _ = writeln!(s, "{}\n", w.description);
    let _ = writeln!(
        s,
        "hearth {} ({}) on {} ({} cores, {:.0} GiB, {}, device {}); {} run{} per level, medians shown; latencies in ms.\n",
        r.hearth_version,
        r.git_commit,
        r.machine.cpu,
        r.machine.cores,
        r.machine.memory_gib,
        r.machine.os,
        r.machine.device,
        r.repeat,
        if r.repeat == 1 { "" } else { "s" },
    );
    let steady: Vec<_> = r
        .topologies
        .iter()
        .filter(|t| !t.steady.is_empty())
        .collect();
    if !steady.is_empty() {
        let _ = writeln!(s, "## Steady load\n");
        let _ = writeln!(
            s,
            "| topology | load | req/s | tokens/s | TTFT p50 | TTFT p95 | e2e p50 (min-max over runs) | e2e p95 | e2e p99 | e2e max | e2e mean ± 95% CI | ITL p50 | /rag p50 | /fine-tuned p50 | errors |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(15));
        for t in &steady {
            for l in &t.steady {
                let a = &l.aggregate;
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} ({:.0}-{:.0}) | {:.0} | {:.0} | {:.0} | {:.0} ± {:.0} | {:.1} | {:.0} | {:.0} | {} |",
                    t.topology,
                    l.label,
                    a.requests_per_s,
                    a.tokens_per_s,
                    a.ttft_p50,
                    a.ttft_p95,
                    a.e2e_p50,
                    a.e2e_p50_min,
                    a.e2e_p50_max,
                    a.e2e_p95,
                    a.e2e_p99,
                    a.e2e_max,
                    a.e2e_mean,
                    a.e2e_ci95,
                    a.itl_p50,
                    a.rag_p50,
                    a.fine_tuned_p50,
                    a.errors,
                );
            }
        }
        let _ = writeln!(s, "\n## Start-up and cost\n");
        let _ = writeln!(
            s,
            "| topology | processes | cold start (s) | ingest (s) | peak RSS, all processes (MiB) | CPU-s per 1,000 requests |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for t in &steady {
            let rss = t
                .steady
                .iter()
                .map(|l| l.aggregate.peak_rss_mib)
                .fold(0.0, f64::max);
            let cpu = t
                .steady
                .last()
                .map(|l| l.aggregate.cpu_s_per_1000)
                .unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.0} | {:.0} |",
                t.topology,
                t.processes.len(),
                t.cold_start_ms
                    .map(|c| format!("{:.1}", c / 1e3))
                    .unwrap_or_else(|| "-".into()),
                t.ingest_ms / 1e3,
                rss,
                cpu,
            );
        }
        for chart in charts {
            let _ = writeln!(s, "\n![{chart}]({chart})");
        }
    }
    let interference: Vec<_> = r
        .topologies
        .iter()
        .filter_map(|t| t.interference.as_ref().map(|i| (t, i)))
        .collect();
    if !interference.is_empty() {
        table(
            &mut s,
            "Interference: /fine-tuned alone vs with /rag saturated",
            "",
            &[
                "topology",
                "alone p50",
                "alone p95",
                "/rag saturated p50",
                "/rag saturated p95",
                "slowdown (p50)",
            ],
        );
        for (t, i) in interference {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                t.topology,
                i.alone.p50,
                i.alone.p95,
                i.with_rag_saturated.p50,
                i.with_rag_saturated.p95,
                i.slowdown_p50
            );
        }
    }
    if r.topologies.iter().any(|t| !t.routing.is_empty()) {
        table(
            &mut s,
            "Routing overhead",
            "",
            &[
                "topology",
                "path",
                "rejected request p50",
                "p95",
                "1-token /fine-tuned p50",
                "p95",
            ],
        );
        for t in &r.topologies {
            for row in &t.routing {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.3} | {:.1} | {:.1} |",
                    t.topology,
                    row.path,
                    row.rejected.p50,
                    row.rejected.p95,
                    row.one_token.p50,
                    row.one_token.p95
                );
            }
        }
    }
    let faults: Vec<_> = r
        .topologies
        .iter()
        .filter_map(|t| t.fault.as_ref().map(|f| (t, f)))
        .collect();
    if !faults.is_empty() {
        table(
            &mut s,
            "Fault isolation: SIGKILL of the process serving /fine-tuned",
            "The outage lasts from the kill until the restarted process answers `/readyz`; requests in flight at the kill count in it.\n\n",
            &["topology", "killed", "/rag during outage: ok / sent", "/rag success", "/rag p50 (ok)", "/fine-tuned during outage: ok / sent", "ready again (s)", "first /fine-tuned success (s)"],
        );
        for (t, f) in faults {
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {:.0}% | {:.0} | {} / {} | {} | {} |",
                t.topology,
                f.killed,
                f.rag_during_outage.ok,
                f.rag_during_outage.requests,
                f.rag_during_outage.success_rate * 100.0,
                f.rag_during_outage.e2e_ok.p50,
                f.fine_tuned_during_outage.ok,
                f.fine_tuned_during_outage.requests,
                f.recovery_s
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "not within 120 s".into()),
                f.first_success_s
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nEvery raw figure (each request's timings, each process's memory and CPU) is in results.json."
    );
    s
}

/// A section heading, an introduction, and a table's header rows.
fn table(s: &mut String, title: &str, intro: &str, columns: &[&str]) {
    let _ = write!(s, "\n## {title}\n\n{intro}| {} |\n|", columns.join(" | "));
    let _ = writeln!(s, "{}", "---|".repeat(columns.len()));
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The load levels as the charts' x axis: level `i` is drawn over
/// `i..i+1`, labelled at its centre by its client count (or its label), so
/// client counts are whole numbers evenly spaced whatever their values.
fn level_labels(r: &Results) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for t in &r.topologies {
        for (i, l) in t.steady.iter().enumerate().skip(labels.len()) {
            debug_assert_eq!(i, labels.len());
            labels.push(l.clients.map_or_else(|| l.label.clone(), |c| c.to_string()));
        }
    }
    labels
}

/// The median over a level's runs of one figure of their summaries.
fn level_median(l: &super::results::Level, f: impl Fn(&super::results::RunSummary) -> f64) -> f64 {
    super::stats::median(&l.runs.iter().map(|run| f(&run.summary)).collect::<Vec<_>>())
}

type Metric = fn(&super::results::RunSummary) -> &super::stats::Summary;

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The load levels along x (whole client counts at the centres, no minor
/// grid) and `y_desc` along y.
fn level_axes(chart: &mut Chart, labels: &[String], y_desc: &str) -> Result<()> {
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(2 * labels.len().max(1) + 1)
        .x_label_formatter(&|x: &f64| centre_label(*x, &names))
        .x_desc("closed-loop clients")
        .y_desc(y_desc)
        .draw()
        .map_err(chart_error)
}

/// The series' legend, top left.
fn legend(chart: &mut Chart) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(chart_error)
}

/// One topology's line in a latency panel: its name, p50 and p95 points.
type LatencyLine = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

/// Latency against load, three panels (end to end, time to first token,
/// inter-token), one colour per topology: p50 solid with markers, p95
/// dashed. Levels where a figure has no samples (no streamed tokens) are
/// left out of its panel.
fn latency_chart(r: &Results, path: &Path) -> Result<()> {
    let labels = level_labels(r);
    let n = labels.len().max(1);
    let root = SVGBackend::new(path, (1260, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let panels: [(&str, Metric); 3] = [
        ("End to end", |s| &s.e2e),
        ("Time to first token", |s| &s.ttft),
        ("Inter-token latency", |s| &s.itl),
    ];
    for (k, (area, (title, metric))) in root.split_evenly((1, 3)).iter().zip(panels).enumerate() {
        let lines: Vec<LatencyLine> = r
            .topologies
            .iter()
            .map(|t| {
                let (mut p50, mut p95) = (Vec::new(), Vec::new());
                for (i, l) in t.steady.iter().enumerate() {
                    if l.runs.iter().all(|run| metric(&run.summary).count == 0) {
                        continue;
                    }
                    let x = i as f64 + 0.5;
                    p50.push((x, level_median(l, |s| metric(s).p50)));
                    p95.push((x, level_median(l, |s| metric(s).p95)));
                }
                (t.topology.clone(), p50, p95)
            })
            .collect();
        let top = lines
            .iter()
            .flat_map(|(_, a, b)| a.iter().chain(b).map(|(_, y)| *y))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} (ms)"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(chart_error)?;
        let y_desc = if k == 0 {
            "ms (p50 solid, p95 dashed)"
        } else {
            "ms"
        };
        level_axes(&mut chart, &labels, y_desc)?;
        for (i, (name, p50, p95)) in lines.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
                .map_err(chart_error)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2))
                });
            chart
                .draw_series(p50.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(chart_error)?;
            chart
                .draw_series(DashedLineSeries::new(p95, 6, 4, color.stroke_width(2)))
                .map_err(chart_error)?;
        }
        if k == 0 {
            legend(&mut chart)?;
        }
    }
    root.present().map_err(chart_error)
}

/// Requests per second against load, one line per topology across every
/// level.
fn throughput_chart(r: &Results, path: &Path) -> Result<()> {
    let labels = level_labels(r);
    let n = labels.len().max(1);
    let lines: Vec<(String, Vec<(f64, f64)>)> = r
        .topologies
        .iter()
        .map(|t| {
            let points = t
                .steady
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64 + 0.5, l.aggregate.requests_per_s))
                .collect();
            (t.topology.clone(), points)
        })
        .collect();
    let max_y = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.01, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput against load", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..max_y)
        .map_err(chart_error)?;
    level_axes(&mut chart, &labels, "requests/s")?;
    for (i, (name, points)) in lines.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(chart_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(chart_error)?;
    }
    legend(&mut chart)?;
    root.present().map_err(chart_error)
}

/// Peak resident memory per topology, stacked by process.
fn memory_chart(r: &Results, path: &Path) -> Result<()> {
    let rows: Vec<(String, Vec<(String, f64)>)> = r
        .topologies
        .iter()
        .filter_map(|t| {
            let run = t.steady.last()?.runs.last()?;
            Some((
                t.topology.clone(),
                run.processes
                    .iter()
                    .map(|p| (p.name.clone(), p.peak_rss_mib))
                    .collect(),
            ))
        })
        .collect();
    let top = rows
        .iter()
        .map(|(_, ps)| ps.iter().map(|(_, v)| v).sum::<f64>())
        .fold(1.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let n = rows.len().max(1);
    let names: Vec<String> = rows.iter().map(|(t, _)| t.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Peak resident memory per topology (MiB, by process)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x: &f64| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            centre_label(*x, &names)
        })
        .y_desc("MiB")
        .draw()
        .map_err(chart_error)?;
    for (i, (_, procs)) in rows.iter().enumerate() {
        let mut base = 0.0;
        for (j, (name, v)) in procs.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let rect = Rectangle::new(
                [(i as f64 + 0.2, base), (i as f64 + 0.8, base + v)],
                color.filled(),
            );
            chart
                .draw_series(std::iter::once(rect))
                .map_err(chart_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name} {v:.0}"),
                    (i as f64 + 0.22, base + v / 2.0),
                    ("sans-serif", 12),
                )))
                .map_err(chart_error)?;
            base += v;
        }
    }
    root.present().map_err(chart_error)
}

/// `hearth bench compare A B`: B's figures as ratios of A's, per topology
/// and load level found in both.
pub fn compare(a: &Results, b: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "B / A   (A: {} {} {}, B: {} {} {})",
        a.workload.name,
        a.git_commit,
        a.started_unix_s,
        b.workload.name,
        b.git_commit,
        b.started_unix_s
    );
    let _ = writeln!(
        s,
        "{:<12} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "topology", "load", "e2e p50", "e2e p95", "TTFT p50", "req/s", "tokens/s", "peak RSS"
    );
    let ratio = |x: f64, y: f64| {
        if x > 0.0 {
            format!("{:.2}x", y / x)
        } else {
            "-".into()
        }
    };
    for ta in &a.topologies {
        let Some(tb) = b.topologies.iter().find(|t| t.topology == ta.topology) else {
            continue;
        };
        for la in &ta.steady {
            let Some(lb) = tb.steady.iter().find(|l| l.label == la.label) else {
                continue;
            };
            let (x, y) = (&la.aggregate, &lb.aggregate);
            let _ = writeln!(
                s,
                "{:<12} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                ta.topology,
                la.label,
                ratio(x.e2e_p50, y.e2e_p50),
                ratio(x.e2e_p95, y.e2e_p95),
                ratio(x.ttft_p50, y.ttft_p50),
                ratio(x.requests_per_s, y.requests_per_s),
                ratio(x.tokens_per_s, y.tokens_per_s),
                ratio(x.peak_rss_mib, y.peak_rss_mib),
            );
        }
    }
    s
}

pub fn read(path: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::InvalidInput(format!(
            "{} is not a hearth bench results.json: {e}",
            path.display()
        ))
    })
}
