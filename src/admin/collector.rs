//! The `/metrics` collector: a prometheus-client [`Collector`] over one scrape's view of
//! the sidecar — the registry current at scrape time (a reload swaps it, so connections
//! come and go), its entries' counters and sharded instruments, the process's
//! open-connection gauges, the store's health. It reads and sums; it records nothing.
//! Labels are connection keys and fixed words, never a token, secret or URL.
//!
//! A per-connection counter family with one label of fixed values is one [`counter`]
//! call with one [`by`] per value.

use crate::instrument::{
    self, histogram::Snapshot, unauthorized, Instruments, UpstreamError, STATE_NAMES,
};
use crate::registry::{Entry, Registry};
use crate::token::set::unix_seconds;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::fmt;
use std::sync::Arc;

/// What one scrape reads.
pub(super) struct Scrape {
    /// The registry current when the scrape began.
    pub registry: Arc<Registry>,
    pub instruments: Arc<Instruments>,
    /// The store backend's name and whether it answers.
    pub store: (&'static str, bool),
    /// Authorization states waiting for their callback (`None`: in Redis, not counted).
    pub pending: Option<usize>,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// One series of a per-connection counter family: its label besides `connection`, if
/// any, and how to read its value.
struct Series {
    label: Option<(&'static str, &'static str)>,
    read: fn(&Entry) -> u64,
}

/// The series whose label `name` is `value`, read by `read`.
fn by(name: &'static str, value: &'static str, read: fn(&Entry) -> u64) -> Series {
    Series {
        label: Some((name, value)),
        read,
    }
}

/// The one series of a family labelled by connection only, read by `read`.
fn each(read: fn(&Entry) -> u64) -> Series {
    Series { label: None, read }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.connection_states(&mut e)?;
        self.tokens(&mut e)?;
        self.requests(&mut e)?;
        self.process(&mut e)
    }
}

impl Scrape {
    /// Each connection's state and when its current token expires.
    fn connection_states(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let conns = &self.registry.connections;
        let mut f = e.encode_descriptor(
            "tokenwarden_connection_state",
            "1 for the connection's current state.",
            None,
            MetricType::Gauge,
        )?;
        for c in conns {
            let now = c.tokens.state_name();
            for state in STATE_NAMES {
                let labels = [("connection", c.conn.key.as_str()), ("state", state)];
                gauge(&mut f, &labels, i64::from(state == now))?;
            }
        }
        let mut f = e.encode_descriptor(
            "tokenwarden_token_expires_at",
            "Unix time the current token expires (absent: none or long-lived).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for c in conns {
            if let Some(at) = c.tokens.token().and_then(|t| t.expires_at) {
                let at = i64::try_from(unix_seconds(Some(at))).unwrap_or(i64::MAX);
                gauge(&mut f, &[("connection", c.conn.key.as_str())], at)?;
            }
        }
        Ok(())
    }

    /// The token families: requests and their durations by outcome, sets adopted from the
    /// shared store.
    fn tokens(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let conns = &self.registry.connections;
        counter(
            e,
            conns,
            "tokenwarden_token_requests",
            "Token requests by outcome.",
            &[
                by("outcome", "ok", |c| c.tokens.counters.ok.get()),
                by("outcome", "error", |c| c.tokens.counters.failed.get()),
            ],
        )?;
        let mut f = e.encode_descriptor(
            "tokenwarden_token_request_duration",
            "How long token requests (refreshes, client credentials, code exchanges) took, by outcome.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for c in conns {
            let counters = &c.tokens.counters;
            for (outcome, h) in [
                ("ok", &counters.ok_durations),
                ("error", &counters.failed_durations),
            ] {
                let labels = [("connection", c.conn.key.as_str()), ("outcome", outcome)];
                histogram(&mut f, &labels, &h.snapshot())?;
            }
        }
        counter(
            e,
            conns,
            "tokenwarden_tokens_adopted",
            "Token sets taken from the shared store (written by another replica).",
            &[each(|c| c.tokens.counters.adopted.get())],
        )?;
        Ok(())
    }

    /// The process's families: open connections, pending authorizations, the store's health.
    fn process(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut f = e.encode_descriptor(
            "tokenwarden_open_connections",
            "Connections open now: from apps (client) and to upstreams (upstream).",
            None,
            MetricType::Gauge,
        )?;
        gauge(
            &mut f,
            &[("side", "client")],
            self.instruments.open_client.get(),
        )?;
        gauge(
            &mut f,
            &[("side", "upstream")],
            self.instruments.open_upstream.get(),
        )?;
        if let Some(pending) = self.pending {
            let mut f = e.encode_descriptor(
                "tokenwarden_pending_authorizations",
                "Authorization states waiting for their callback.",
                None,
                MetricType::Gauge,
            )?;
            f.encode_gauge(&(pending as u64))?;
        }
        let (backend, up) = self.store;
        let mut f = e.encode_descriptor(
            "tokenwarden_store_up",
            "1 while the token store answers (always 1 for the embedded database).",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut f, &[("backend", backend)], i64::from(up))
    }

    /// The request path's families: proxied requests, their durations, upstream connects
    /// and errors, `no_token` refusals.
    fn requests(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let conns = &self.registry.connections;
        counter(
            e,
            conns,
            "tokenwarden_proxied_requests",
            "Requests forwarded with a credential.",
            &[each(|c| c.counters.proxied.get())],
        )?;
        let mut f = e.encode_descriptor(
            "tokenwarden_request_duration",
            "Proxied requests, from their head read to the response head ready (the upstream's, or the proxy's own 502/503/504), by status class.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for c in conns {
            for (i, class) in instrument::STATUS_CLASSES.iter().enumerate() {
                let snapshot = c.counters.requests.durations(i).snapshot();
                // A class the connection never answered with has no series.
                if snapshot.count() > 0 {
                    let labels = [("connection", c.conn.key.as_str()), ("status_class", class)];
                    histogram(&mut f, &labels, &snapshot)?;
                }
            }
        }
        let mut f = e.encode_descriptor(
            "tokenwarden_upstream_connect",
            "Upstream connections opened (TCP, and TLS for https).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for c in conns {
            let snapshot = c.counters.requests.connect.snapshot();
            histogram(&mut f, &[("connection", c.conn.key.as_str())], &snapshot)?;
        }
        let mut f = e.encode_descriptor(
            "tokenwarden_upstream_errors",
            "Requests the upstream failed, by kind (connect, tls, timeout, closed, malformed).",
            None,
            MetricType::Counter,
        )?;
        for c in conns {
            for kind in UpstreamError::ALL {
                let labels = [("connection", c.conn.key.as_str()), ("kind", kind.as_str())];
                count(&mut f, &labels, c.counters.requests.upstream_errors(kind))?;
            }
        }
        let mut f = e.encode_descriptor(
            "tokenwarden_no_token",
            "Requests refused with 503 for want of a usable token, by the state the 503 reported.",
            None,
            MetricType::Counter,
        )?;
        for c in conns {
            for (i, state) in instrument::NO_TOKEN_STATES.iter().enumerate() {
                let labels = [("connection", c.conn.key.as_str()), ("state", state)];
                count(&mut f, &labels, c.counters.requests.no_tokens(i))?;
            }
        }
        let mut f = e.encode_descriptor(
            "tokenwarden_unauthorized_refreshes",
            "Upstream 401s to requests that carried a token, by what came of them (refreshed, reused, limited, failed, not_refreshable).",
            None,
            MetricType::Counter,
        )?;
        for c in conns {
            for outcome in unauthorized::Outcome::ALL {
                let labels = [
                    ("connection", c.conn.key.as_str()),
                    ("outcome", outcome.as_str()),
                ];
                count(&mut f, &labels, c.counters.unauthorized.get(outcome))?;
            }
        }
        Ok(())
    }
}

/// A counter family `name` (samples `name_total`): per connection, one sample per series.
fn counter(
    e: &mut DescriptorEncoder,
    conns: &[Arc<Entry>],
    name: &str,
    help: &str,
    series: &[Series],
) -> fmt::Result {
    let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for c in conns {
        for s in series {
            let labels = [
                ("connection", c.conn.key.as_str()),
                s.label.unwrap_or_default(),
            ];
            let labels = &labels[..if s.label.is_some() { 2 } else { 1 }];
            count(&mut f, &labels, (s.read)(c))?;
        }
    }
    Ok(())
}

/// One counter sample.
fn count(f: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    f.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One gauge sample.
fn gauge(f: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: i64) -> fmt::Result {
    f.encode_family(labels)?.encode_gauge(&value)
}

/// One histogram's samples (`_sum`, `_count`, cumulative `_bucket`s).
fn histogram(f: &mut MetricEncoder, labels: &impl EncodeLabelSet, s: &Snapshot) -> fmt::Result {
    f.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        s.sum_seconds(),
        s.count(),
        &s.buckets_in_seconds(),
        None,
    )
}
