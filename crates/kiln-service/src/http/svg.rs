//! Drawings kiln makes itself: the lineage graph of a factory (images in
//! columns by how deep they stand in their chain, an edge from each base
//! to each image built on it) and a status badge.

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::board::{FactoryView, ImageView};

const W: i64 = 190;
const H: i64 = 46;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 18;

/// A status's colour.
pub fn colour(status: &str) -> &'static str {
    match status {
        "fresh" => "#2e7d32",
        "baking" => "#1565c0",
        "stale" => "#ef6c00",
        "never-built" => "#757575",
        _ => "#c62828",
    }
}

/// Each image's column: 0 for those on no factory image, else one more
/// than its deepest base's.
fn depths(images: &[ImageView]) -> BTreeMap<&str, usize> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // plans list images in dependency order: bases come first
    for im in images {
        let d = im
            .depends_on
            .iter()
            .filter_map(|b| depth.get(b.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(&im.name, d);
    }
    depth
}

/// The lineage graph of a factory as an SVG element.
pub fn lineage(f: &FactoryView) -> Markup {
    let depth = depths(&f.images);
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for im in &f.images {
        let col = depth[im.name.as_str()];
        let row = rows.entry(col).or_default();
        at.insert(
            &im.name,
            (
                col as i64 * (W + GAP_X) + 10,
                *row as i64 * (H + GAP_Y) + 10,
            ),
        );
        *row += 1;
    }
    let width = at.values().map(|p| p.0 + W + 10).max().unwrap_or(20);
    let height = at.values().map(|p| p.1 + H + 10).max().unwrap_or(20);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="lineage" data-factory=(f.id)
            width=(width) height=(height) viewBox={"0 0 " (width) " " (height)}
            font-family="sans-serif" font-size="12" {
            title { "Lineage of " (f.id) }
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5"
                    markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#555" {}
                }
            }
            @for im in &f.images {
                @for base in &im.depends_on {
                    @if let (Some(from), Some(to)) = (at.get(base.as_str()), at.get(im.name.as_str())) {
                        @let (x1, y1, x2, y2) = (from.0 + W, from.1 + H / 2, to.0, to.1 + H / 2);
                        path class="edge" data-from=(base) data-to=(im.name)
                            d={"M" (x1) "," (y1) " C" (x1 + GAP_X / 2) "," (y1) " " (x2 - GAP_X / 2) "," (y2) " " (x2) "," (y2)}
                            fill="none" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)" {}
                    }
                }
            }
            @for im in &f.images {
                @let (x, y) = at[im.name.as_str()];
                a href={"/factories/" (f.id) "/images/" (im.name)} {
                    g class="node" data-image=(im.name) data-status=(im.status) {
                        rect x=(x) y=(y) width=(W) height=(H) rx="6"
                            fill="#fff" stroke=(colour(im.status)) stroke-width="2" {}
                        text x=(x + 10) y=(y + 19) font-weight="bold" { (im.name) }
                        text x=(x + 10) y=(y + 36) fill=(colour(im.status)) {
                            (im.status) " · " (im.version.as_deref().unwrap_or("-"))
                        }
                    }
                }
            }
        }
    }
}

/// A flat badge: `label | message` with the message on `colour`.
pub fn badge(label: &str, message: &str, colour: &str) -> Markup {
    // about 7 px a character in 11 px Verdana, plus padding
    let lw = label.chars().count() as i64 * 7 + 12;
    let mw = message.chars().count() as i64 * 7 + 12;
    let w = lw + mw;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height="20" role="img"
            aria-label={(label) ": " (message)} {
            title { (label) ": " (message) }
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(mw) height="20" fill=(colour) {}
            g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x=(lw / 2) y="14" { (label) }
                text x=(lw + mw / 2) y="14" { (message) }
            }
        }
    }
}
