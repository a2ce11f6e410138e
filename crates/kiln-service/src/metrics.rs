//! `/metrics` in the Prometheus text format: bake durations and outcomes
//! counted as jobs end, the rest (stale images, ages, last successes, the
//! queue) read from the board when scraped.

use std::sync::atomic::AtomicU64;

use chrono::Utc;
use kiln_factory::baked::{ImageResult, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::board::FactoryView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FactoryLabels {
    factory: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    factory: String,
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    factory: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    stale: Family<FactoryLabels, Gauge>,
    age: Family<ImageLabels, FloatGauge>,
    last_success: Family<ImageLabels, FloatGauge>,
    duration: Family<FactoryLabels, Histogram>,
    outcomes: Family<OutcomeLabels, Counter>,
    queue: Gauge,
    /// One scrape at a time: a scrape clears and sets the gauges.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            stale: Family::default(),
            age: Family::default(),
            last_success: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.5, 2.0, 14))
            }),
            outcomes: Family::default(),
            queue: Gauge::default(),
            scrape: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kiln_stale_images",
            "Images whose last plan found them stale",
            m.stale.clone(),
        );
        registry.register(
            "kiln_image_age_seconds",
            "Seconds since the locked version of an image was baked",
            m.age.clone(),
        );
        registry.register(
            "kiln_image_last_success_timestamp_seconds",
            "When an image's last successful bake (built or unchanged) ended, Unix time",
            m.last_success.clone(),
        );
        registry.register(
            "kiln_bake_duration_seconds",
            "How long the bake of one image took",
            m.duration.clone(),
        );
        registry.register(
            "kiln_bake_outcomes",
            "Image bakes by outcome (built, unchanged, failed, test-failed, publish-failed, skipped, cancelled)",
            m.outcomes.clone(),
        );
        registry.register(
            "kiln_queue_length",
            "Jobs waiting in the queue",
            m.queue.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts the images a job baked.
    pub fn baked(&self, factory: &str, results: &[ImageResult]) {
        for r in results.iter().filter(|r| r.started.is_some()) {
            let outcome = match &r.outcome {
                Outcome::Built => "built",
                Outcome::Unchanged => "unchanged",
                Outcome::Failed { .. } => "failed",
                Outcome::TestFailed { .. } => "test-failed",
                Outcome::PublishFailed { .. } => "publish-failed",
                Outcome::Skipped { .. } => "skipped",
                Outcome::Cancelled => "cancelled",
                Outcome::Reused | Outcome::WouldBuild => continue,
            };
            self.outcomes
                .get_or_create(&OutcomeLabels {
                    factory: factory.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc();
            self.duration
                .get_or_create(&FactoryLabels {
                    factory: factory.to_string(),
                })
                .observe(r.seconds);
        }
    }

    /// The text exposition, with the gauges as `factories` and `queued`
    /// say now.
    pub fn render(&self, factories: &[FactoryView], queued: usize) -> String {
        let _one = self.scrape.lock();
        self.stale.clear();
        self.age.clear();
        self.last_success.clear();
        let now = Utc::now();
        for f in factories {
            let stale = f.images.iter().filter(|i| i.stale).count();
            self.stale
                .get_or_create(&FactoryLabels {
                    factory: f.id.clone(),
                })
                .set(stale as i64);
            for i in &f.images {
                let labels = ImageLabels {
                    factory: f.id.clone(),
                    image: i.name.clone(),
                };
                if let Some(b) = i.baked_at {
                    self.age
                        .get_or_create(&labels)
                        .set((now - b).num_milliseconds() as f64 / 1000.0);
                }
                if let Some(s) = i.last_success {
                    self.last_success
                        .get_or_create(&labels)
                        .set(s.timestamp_millis() as f64 / 1000.0);
                }
            }
        }
        self.queue.set(queued as i64);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
