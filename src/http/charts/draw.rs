//! The three charts' geometry: a node's last-hour sparkline, the disk gauge and
//! the dispatches-per-day bars, each from plain figures to a [`Scene`].

use std::fmt::Write as _;
use std::path::Path;

use laminate_actors::throughput::Minute;
use serde_json::Value;

use super::daily::DayCount;
use super::{n, Scene, Shape};

const MB: f64 = 1e6;
const GB: f64 = 1e9;

/// A node's last hour: two lines (MB/s solid, instances/s dashed), each scaled
/// to its own peak, and the last minute's and the peak rates as text. No line
/// at all when nothing was sent.
pub fn sparkline(node_id: &str, hour: &[Minute]) -> Scene {
    const W: f64 = 220.0;
    const H: f64 = 46.0;
    const PLOT: f64 = 30.0;
    let mbps: Vec<f64> = hour.iter().map(|m| m.bytes as f64 / 60.0 / MB).collect();
    let ips: Vec<f64> = hour.iter().map(|m| m.instances as f64 / 60.0).collect();
    let peak = |v: &[f64]| v.iter().copied().fold(0.0_f64, f64::max);
    let (peak_mb, peak_i) = (peak(&mbps), peak(&ips));
    let mut shapes = vec![Shape::Line {
        x1: 0.0,
        y1: PLOT + 0.5,
        x2: W,
        y2: PLOT + 0.5,
        c: "spark-axis",
        tip: None,
    }];
    let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    let label;
    if peak_i > 0.0 {
        for (values, top, c) in [
            (&mbps, peak_mb, "spark-bytes"),
            (&ips, peak_i, "spark-inst"),
        ] {
            if top > 0.0 {
                shapes.push(Shape::Path {
                    d: polyline(values, top, W, PLOT),
                    c,
                });
            }
        }
        let sent: u64 = hour.iter().map(|m| m.instances).sum();
        label = format!(
            "{node_id}, last hour: {sent} instances; last minute {} MB/s, {} inst/s; peak {} MB/s, {} inst/s",
            rate(last(&mbps)),
            rate(last(&ips)),
            rate(peak_mb),
            rate(peak_i)
        );
        shapes.push(Shape::Text {
            x: 0.0,
            y: H - 3.0,
            t: format!("{} MB/s · {} inst/s", rate(last(&mbps)), rate(last(&ips))),
            c: "chart-text",
            a: "start",
        });
        shapes.push(Shape::Text {
            x: W,
            y: H - 3.0,
            t: format!("peak {} MB/s", rate(peak_mb)),
            c: "chart-muted",
            a: "end",
        });
    } else {
        label = format!("{node_id}: nothing sent in the last hour");
        shapes.push(Shape::Text {
            x: 0.0,
            y: H - 3.0,
            t: "nothing sent in the last hour".into(),
            c: "chart-muted",
            a: "start",
        });
    }
    Scene {
        w: W as u32,
        h: H as u32,
        label,
        shapes,
    }
}

/// `M x y L x y …` through `values` scaled so that `top` touches the top.
fn polyline(values: &[f64], top: f64, w: f64, plot: f64) -> String {
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let mut d = String::with_capacity(values.len() * 12);
    for (i, v) in values.iter().enumerate() {
        let y = 1.0 + (plot - 1.0) * (1.0 - (v / top).clamp(0.0, 1.0));
        let _ = write!(
            d,
            "{}{} {}",
            if i == 0 { "M" } else { " L" },
            n(i as f64 * step),
            n(y)
        );
    }
    d
}

fn rate(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 0.1 || v == 0.0 {
        format!("{v:.1}")
    } else if v >= 0.01 {
        format!("{v:.2}")
    } else {
        // Something, but less than the text can show.
        "<0.01".to_owned()
    }
}

/// What the disk gauge shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFigures {
    pub total: u64,
    pub free: u64,
    /// The DICOM cache's bytes (the catalog's figure).
    pub cache: u64,
    pub min_free_gb: f64,
    pub cache_max_gb: Option<f64>,
}

/// `min_free_gb` when proxy.json does not set it (APPLIANCE.md "Disk").
pub const DEFAULT_MIN_FREE_GB: f64 = 2.0;

/// The free-space floor and cache bound from `proxy.json`, read as they stand
/// (defaults when absent or unreadable: the config actor owns the file).
pub fn disk_limits(data_dir: &Path) -> (f64, Option<f64>) {
    let raw: Option<Value> = std::fs::read(data_dir.join(laminate_config::PROXY_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let get = |k: &str| {
        raw.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_f64)
            .filter(|v| *v >= 0.0)
    };
    (
        get("min_free_gb").unwrap_or(DEFAULT_MIN_FREE_GB),
        get("cache_max_gb"),
    )
}

/// The data dir's file system, with the limits; `None` when it cannot be read.
pub fn disk_figures(data_dir: &Path, cache: u64) -> Option<DiskFigures> {
    let total = fs2::total_space(data_dir).ok()?;
    let free = fs2::available_space(data_dir).ok()?;
    let (min_free_gb, cache_max_gb) = disk_limits(data_dir);
    Some(DiskFigures {
        total,
        free,
        cache,
        min_free_gb,
        cache_max_gb,
    })
}

/// The disk as one bar: used by anything (the cache's share marked), free, the
/// floor `min_free_gb` as a line the used part must not reach, `cache_max_gb`
/// as a line where the cache stops growing.
pub fn disk_gauge(d: &DiskFigures) -> Scene {
    const W: f64 = 320.0;
    const BAR: f64 = 18.0;
    let total = d.total.max(1) as f64;
    let x_of = |bytes: f64| (bytes / total).clamp(0.0, 1.0) * W;
    let used = d.total.saturating_sub(d.free) as f64;
    let floor = d.min_free_gb * GB;
    let low = (d.free as f64) < floor;
    let mut shapes = vec![
        Shape::Rect {
            x: 0.0,
            y: 0.0,
            w: W,
            h: BAR,
            c: "gauge-bg",
            tip: Some(format!("free {}", gb(d.free as f64))),
        },
        Shape::Rect {
            x: 0.0,
            y: 0.0,
            w: x_of(used),
            h: BAR,
            c: if low {
                "gauge-used gauge-low"
            } else {
                "gauge-used"
            },
            tip: Some(format!("used {}", gb(used))),
        },
        Shape::Rect {
            x: 0.0,
            y: 0.0,
            w: x_of(d.cache as f64),
            h: BAR,
            c: "gauge-cache",
            tip: Some(format!("DICOM cache {}", gb(d.cache as f64))),
        },
        Shape::Line {
            x1: x_of(total - floor),
            y1: -2.0,
            x2: x_of(total - floor),
            y2: BAR + 2.0,
            c: "gauge-floor",
            tip: Some(format!("free-space floor (min_free_gb {})", d.min_free_gb)),
        },
    ];
    if let Some(max) = d.cache_max_gb {
        let x = x_of(max * GB);
        shapes.push(Shape::Line {
            x1: x,
            y1: -2.0,
            x2: x,
            y2: BAR + 2.0,
            c: "gauge-cachemax",
            tip: Some(format!("cache limit (cache_max_gb {max})")),
        });
    }
    shapes.push(Shape::Text {
        x: 0.0,
        y: BAR + 15.0,
        t: format!(
            "{} free of {} · floor {} GB",
            gb(d.free as f64),
            gb(total),
            d.min_free_gb
        ),
        c: if low {
            "chart-text chart-bad"
        } else {
            "chart-text"
        },
        a: "start",
    });
    shapes.push(Shape::Text {
        x: 0.0,
        y: BAR + 30.0,
        t: format!(
            "DICOM cache {}{}",
            gb(d.cache as f64),
            match d.cache_max_gb {
                Some(m) => format!(" of at most {m} GB"),
                None => ", no size limit".to_owned(),
            }
        ),
        c: "chart-muted",
        a: "start",
    });
    Scene {
        w: W as u32,
        h: (BAR + 36.0) as u32,
        label: format!(
            "Disk: {} free of {}, floor {} GB{}; DICOM cache {}",
            gb(d.free as f64),
            gb(total),
            d.min_free_gb,
            if low { " (below the floor)" } else { "" },
            gb(d.cache as f64)
        ),
        shapes,
    }
}

fn gb(bytes: f64) -> String {
    if bytes >= 100.0 * GB {
        format!("{:.0} GB", bytes / GB)
    } else if bytes >= 0.1 * GB {
        format!("{:.1} GB", bytes / GB)
    } else {
        format!("{:.1} MB", bytes / MB)
    }
}

/// Dispatches finished per day, oldest first: completed and failed stacked.
pub fn day_bars(days: &[DayCount]) -> Scene {
    const BAR_W: f64 = 18.0;
    const GAP: f64 = 6.0;
    const PLOT: f64 = 60.0;
    const TOP: f64 = 14.0;
    let w = days.len() as f64 * (BAR_W + GAP);
    let peak = days
        .iter()
        .map(|d| d.completed + d.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (done, failed) = days
        .iter()
        .fold((0, 0), |(c, f), d| (c + d.completed, f + d.failed));
    let mut shapes = vec![
        Shape::Text {
            x: 0.0,
            y: 10.0,
            t: format!(
                "last {} days: {done} completed, {failed} failed",
                days.len()
            ),
            c: "chart-text",
            a: "start",
        },
        Shape::Line {
            x1: 0.0,
            y1: TOP + PLOT + 0.5,
            x2: w,
            y2: TOP + PLOT + 0.5,
            c: "spark-axis",
            tip: None,
        },
    ];
    for (i, d) in days.iter().enumerate() {
        let x = i as f64 * (BAR_W + GAP) + GAP / 2.0;
        let tip = format!("{}: {} completed, {} failed", d.date, d.completed, d.failed);
        let hc = d.completed as f64 / peak * PLOT;
        let hf = d.failed as f64 / peak * PLOT;
        if d.completed > 0 {
            shapes.push(Shape::Rect {
                x,
                y: TOP + PLOT - hc,
                w: BAR_W,
                h: hc,
                c: "bar-completed",
                tip: Some(tip.clone()),
            });
        }
        if d.failed > 0 {
            shapes.push(Shape::Rect {
                x,
                y: TOP + PLOT - hc - hf,
                w: BAR_W,
                h: hf,
                c: "bar-failed",
                tip: Some(tip.clone()),
            });
        }
        shapes.push(Shape::Text {
            x: x + BAR_W / 2.0,
            y: TOP + PLOT + 12.0,
            t: d.date.get(8..10).unwrap_or("").to_owned(),
            c: "chart-muted",
            a: "middle",
        });
    }
    Scene {
        w: w as u32,
        h: (TOP + PLOT + 16.0) as u32,
        label: format!(
            "Dispatches per day, last {} days: {done} completed, {failed} failed",
            days.len()
        ),
        shapes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(with: &[(usize, u64, u64)]) -> Vec<Minute> {
        let mut h: Vec<Minute> = (0..60)
            .map(|i| Minute {
                minute: 1000 + i,
                ..Minute::default()
            })
            .collect();
        for &(i, instances, bytes) in with {
            h[i].instances = instances;
            h[i].bytes = bytes;
        }
        h
    }

    #[test]
    fn a_sparkline_has_lines_only_once_something_was_sent() {
        let idle = sparkline("n1", &hour(&[]));
        assert!(!idle.svg().contains("<path"), "{}", idle.svg());
        assert!(idle.label.contains("nothing sent"));
        let busy = sparkline("n1", &hour(&[(58, 120, 60_000_000), (59, 60, 30_000_000)]));
        let svg = busy.svg();
        assert_eq!(svg.matches("<path").count(), 2, "{svg}");
        // The peak minute touches the top; the last minute is half as high.
        assert!(svg.contains("0.5 MB/s · 1.0 inst/s"), "{svg}");
        let Shape::Path { d, .. } = &busy.shapes[1] else {
            panic!("{:?}", busy.shapes)
        };
        assert!(d.starts_with("M0 30 L"), "{d}");
        assert!(d.ends_with(" L220 15.5"), "{d}");
    }

    #[test]
    fn the_disk_gauge_marks_the_floor_and_the_cache_limit_and_says_when_low() {
        let d = DiskFigures {
            total: 100_000_000_000,
            free: 1_000_000_000,
            cache: 20_000_000_000,
            min_free_gb: 2.0,
            cache_max_gb: Some(50.0),
        };
        let s = disk_gauge(&d);
        let svg = s.svg();
        assert!(svg.contains(r#"class="gauge-floor" x1="313.6""#), "{svg}");
        assert!(svg.contains(r#"class="gauge-cachemax" x1="160""#), "{svg}");
        assert!(
            svg.contains("chart-bad") && s.label.contains("below the floor"),
            "{svg}"
        );
        let fine = disk_gauge(&DiskFigures {
            free: 60_000_000_000,
            cache_max_gb: None,
            ..d
        });
        assert!(!fine.svg().contains("gauge-cachemax") && !fine.svg().contains("chart-bad"));
        assert!(fine.svg().contains("no size limit"));
    }

    #[test]
    fn day_bars_stack_completed_and_failed_and_skip_empty_days() {
        let days = vec![
            DayCount {
                date: "2026-12-03".into(),
                completed: 0,
                failed: 0,
            },
            DayCount {
                date: "2026-12-04".into(),
                completed: 3,
                failed: 1,
            },
        ];
        let s = day_bars(&days);
        let svg = s.svg();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(
            svg.contains(r#"class="bar-completed" x="27" y="29" width="18" height="45""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="bar-failed" x="27" y="14" width="18" height="15""#),
            "{svg}"
        );
        assert!(svg.contains("2026-12-04: 3 completed, 1 failed"));
        assert!(s.label.contains("3 completed, 1 failed"));
    }

    #[test]
    fn text_in_a_scene_is_escaped() {
        let s = sparkline("<script>", &hour(&[]));
        assert!(!s.svg().contains("<script>"));
    }

    #[test]
    fn limits_come_from_proxy_json_with_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(disk_limits(dir.path()), (DEFAULT_MIN_FREE_GB, None));
        std::fs::write(
            dir.path().join("proxy.json"),
            r#"{"min_free_gb": 5, "cache_max_gb": 12.5}"#,
        )
        .expect("write");
        assert_eq!(disk_limits(dir.path()), (5.0, Some(12.5)));
    }
}
