//! What `hearth bench` writes: `results.json` (every raw figure, the
//! workload, the config, the machine), `report.md` (one table per scenario,
//! topologies side by side) and SVG charts (plotters): latency percentiles
//! per topology, throughput against concurrency, memory per topology. And
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

/// End-to-end p50/p90/p95/p99 per topology at its highest load level.
fn latency_chart(r: &Results, path: &Path) -> Result<()> {
    let rows: Vec<(String, [f64; 4])> = r
        .topologies
        .iter()
        .filter_map(|t| {
            let l = t.steady.last()?;
            let p = |f: &dyn Fn(&super::stats::Summary) -> f64| {
                super::stats::median(
                    &l.runs
                        .iter()
                        .map(|run| f(&run.summary.e2e))
                        .collect::<Vec<_>>(),
                )
            };
            Some((
                format!("{} ({})", t.topology, l.label),
                [p(&|s| s.p50), p(&|s| s.p90), p(&|s| s.p95), p(&|s| s.p99)],
            ))
        })
        .collect();
    let top = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let labels = ["p50", "p90", "p95", "p99"];
    let mut chart = ChartBuilder::on(&root)
        .caption("End-to-end latency percentiles (ms)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..4.0, 0.0..top)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(9)
        .x_label_formatter(&|x: &f64| centre_label(*x, &labels))
        .y_desc("ms")
        .draw()
        .map_err(chart_error)?;
    let n = rows.len().max(1) as f64;
    for (i, (name, values)) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let bars = values.iter().enumerate().map(move |(q, v)| {
            let x0 = q as f64 + 0.1 + 0.8 * i as f64 / n;
            let x1 = x0 + 0.8 / n;
            Rectangle::new([(x0, 0.0), (x1, *v)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(chart_error)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(chart_error)?;
    root.present().map_err(chart_error)
}

/// Requests per second against concurrency, one line per topology.
fn throughput_chart(r: &Results, path: &Path) -> Result<()> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = r
        .topologies
        .iter()
        .map(|t| {
            let points = t
                .steady
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    (
                        l.clients.map(|c| c as f64).unwrap_or(i as f64 + 1.0),
                        l.aggregate.requests_per_s,
                    )
                })
                .collect();
            (t.topology.clone(), points)
        })
        .collect();
    let max_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let max_y = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.01, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput against concurrency", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..max_x + 0.5, 0.0..max_y)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc("closed-loop clients")
        .y_desc("requests/s")
        .draw()
        .map_err(chart_error)?;
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
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(chart_error)?;
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
