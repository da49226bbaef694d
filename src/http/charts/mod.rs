//! The status page's pictures: a throughput sparkline per node (last hour, MB/s
//! and instances/s), the disk as a gauge against `min_free_gb` and
//! `cache_max_gb`, and dispatches per day (completed / failed, last 14 days).
//!
//! Each chart is computed once as a [`Scene`]: a list of plain shapes with
//! their coordinates already worked out. The page embeds it as inline SVG
//! ([`Scene::svg`], readable without JavaScript); the live feed
//! (`charts.update`, every few seconds when something changed) and
//! `/ui/charts` send the same scenes as JSON and `page.js` draws them with DOM
//! calls, so the geometry lives here only. Colours come from `page.css`
//! classes (the page's CSP allows no inline style). All text goes through
//! [`esc`].
//!
//! Files: `draw.rs` (the three charts), `daily.rs` (the per-day tally of
//! finished dispatches).

mod daily;
mod draw;

use std::fmt::Write as _;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

pub use daily::DailyTally;
pub use draw::{disk_limits, DEFAULT_MIN_FREE_GB};

use super::api::store_figures;
use super::hub::Hub;
use super::page::esc;
use super::AppState;

/// One shape of a chart. `c` is its CSS class; `tip` a hover title.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Shape {
    Rect {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        c: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tip: Option<String>,
    },
    Path {
        d: String,
        c: &'static str,
    },
    Line {
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        c: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tip: Option<String>,
    },
    Text {
        x: f64,
        y: f64,
        t: String,
        c: &'static str,
        /// `start`, `middle` or `end`.
        a: &'static str,
    },
}

/// A whole chart: its size, what a screen reader says, its shapes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    pub w: u32,
    pub h: u32,
    pub label: String,
    pub shapes: Vec<Shape>,
}

/// Numbers in coordinates: one decimal is plenty at these sizes.
fn n(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

impl Scene {
    /// The scene as inline SVG.
    pub fn svg(&self) -> String {
        let mut s = String::with_capacity(256 + 96 * self.shapes.len());
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{l}"><title>{l}</title>"#,
            w = self.w,
            h = self.h,
            l = esc(&self.label),
        );
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x, y, w, h, c, tip } => {
                    let _ = write!(
                        s,
                        r#"<rect class="{c}" x="{}" y="{}" width="{}" height="{}">"#,
                        n(*x),
                        n(*y),
                        n(*w),
                        n(*h)
                    );
                    if let Some(t) = tip {
                        let _ = write!(s, "<title>{}</title>", esc(t));
                    }
                    s.push_str("</rect>");
                }
                Shape::Path { d, c } => {
                    let _ = write!(s, r#"<path class="{c}" d="{}"></path>"#, esc(d));
                }
                Shape::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    c,
                    tip,
                } => {
                    let _ = write!(
                        s,
                        r#"<line class="{c}" x1="{}" y1="{}" x2="{}" y2="{}">"#,
                        n(*x1),
                        n(*y1),
                        n(*x2),
                        n(*y2)
                    );
                    if let Some(t) = tip {
                        let _ = write!(s, "<title>{}</title>", esc(t));
                    }
                    s.push_str("</line>");
                }
                Shape::Text { x, y, t, c, a } => {
                    let _ = write!(
                        s,
                        r#"<text class="{c}" x="{}" y="{}" text-anchor="{a}">{}</text>"#,
                        n(*x),
                        n(*y),
                        esc(t)
                    );
                }
            }
        }
        s.push_str("</svg>");
        s
    }
}

/// Every chart as it stands now.
pub struct Charts {
    /// `None` when the data dir's file system cannot be read.
    pub disk: Option<Scene>,
    pub days: Scene,
    /// By node id, in the board's order.
    pub nodes: Vec<(String, Scene)>,
}

impl Charts {
    /// Reads the board, the disk, `proxy.json` and the tally.
    pub fn now(state: &AppState, daily: &DailyTally) -> Charts {
        let running = &state.running;
        let now = laminate_actors::clock::now_ms();
        let cache = store_figures(state)["bytes"].as_u64().unwrap_or(0);
        let disk = draw::disk_figures(&running.data_dir, cache).map(|d| draw::disk_gauge(&d));
        let days = draw::day_bars(&daily.days(&running.store, now));
        let nodes = running
            .board
            .nodes()
            .iter()
            .map(|n| {
                let hour = running.board.sent.last_hour(&n.node_id, now);
                (n.node_id.clone(), draw::sparkline(&n.node_id, &hour))
            })
            .collect();
        Charts { disk, days, nodes }
    }

    /// `{"disk": scene|null, "days": scene, "nodes": {id: scene}}`.
    pub fn json(&self) -> Value {
        let nodes: serde_json::Map<String, Value> = self
            .nodes
            .iter()
            .map(|(id, s)| (id.clone(), json!(s)))
            .collect();
        json!({ "disk": self.disk, "days": self.days, "nodes": nodes })
    }

    /// The sparkline of `node_id` as SVG (empty if the node is unknown).
    pub fn node_svg(&self, node_id: &str) -> String {
        self.nodes
            .iter()
            .find(|(id, _)| id == node_id)
            .map(|(_, s)| s.svg())
            .unwrap_or_default()
    }
}

/// `GET /ui/charts`: the scenes as JSON, for the page's resync after a reconnect.
pub async fn charts(state: web::Data<AppState>, hub: web::Data<Hub>) -> HttpResponse {
    let charts = Charts::now(&state, hub.daily());
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(charts.json())
}
