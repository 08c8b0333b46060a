//! The `/metrics` collector: a prometheus-client [`Collector`] over one scrape's view of
//! the sidecar — the registry current at scrape time (a reload swaps it, so connections
//! come and go), its entries' counters and sharded instruments, the process's
//! open-connection gauges, the store's health. It reads and sums; it records nothing.
//! Labels are connection keys, connector types and fixed words, never a token, secret or
//! URL.
//!
//! Series are per [`Group`]: a file connection's own (`connection="key"`), and by default
//! every runtime connection of one connector type together (`connector_type="salesforce"`,
//! counts and histograms summed, states counted), so 10,000 connections created through
//! the API are not 10,000 label sets; `admin.metrics_per_connection` labels them one by
//! one instead. A per-group counter family with one label of fixed values is one
//! [`counter`] call with one [`by`] per value.

use crate::instrument::{
    self, histogram::Snapshot, unauthorized, Instruments, UpstreamError, STATE_NAMES,
};
use crate::registry::{Entry, Registry};
use crate::token::set::unix_seconds;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::collections::HashMap;
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
    /// `admin.metrics_per_connection`: runtime connections labelled one by one.
    pub per_connection: bool,
}

/// Whose series a sample is: one connection's, or every runtime connection of one connector
/// type's (see the module doc).
struct Group<'a> {
    /// `("connection", key)` or `("connector_type", type)`.
    label: (&'static str, &'a str),
    entries: Vec<&'a Entry>,
}

impl Group<'_> {
    /// The sum of `read` over the group's connections.
    fn sum(&self, read: impl Fn(&Entry) -> u64) -> u64 {
        self.entries.iter().map(|e| read(e)).sum()
    }

    /// The group's histograms `read` summed.
    fn snapshot(&self, read: impl Fn(&Entry) -> Snapshot) -> Snapshot {
        let mut total = Snapshot::default();
        for e in &self.entries {
            total.add(&read(e));
        }
        total
    }
}

/// The registry's connections in groups, in listing order.
fn groups(registry: &Registry, per_connection: bool) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = Vec::new();
    let mut by_type: HashMap<&str, usize> = HashMap::new();
    for e in registry.iter() {
        let Some(d) = e.runtime.as_ref().filter(|_| !per_connection) else {
            out.push(Group {
                label: ("connection", e.conn.key.as_str()),
                entries: vec![e],
            });
            continue;
        };
        let kind = d.connector_type.as_str();
        let i = match by_type.get(kind) {
            Some(&i) => i,
            None => {
                out.push(Group {
                    label: ("connector_type", kind),
                    entries: Vec::new(),
                });
                by_type.insert(kind, out.len() - 1);
                out.len() - 1
            }
        };
        out[i].entries.push(e);
    }
    out
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
        let groups = groups(&self.registry, self.per_connection);
        connection_states(&groups, &mut e)?;
        user_grants(&groups, &mut e)?;
        tokens(&groups, &mut e)?;
        requests(&groups, &mut e)?;
        self.process(&mut e)
    }
}

impl Scrape {
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
}

/// The grants per-user connections hold in this process, by state (summed over a group;
/// never a series per subject).
fn user_grants(groups: &[Group<'_>], e: &mut DescriptorEncoder) -> fmt::Result {
    let with_grants: Vec<(&Group<'_>, Vec<&crate::grants::Grants>)> = (groups.iter())
        .map(|g| {
            (
                g,
                g.entries
                    .iter()
                    .filter_map(|c| c.grants.as_deref())
                    .collect(),
            )
        })
        .filter(|(_, grants): &(_, Vec<_>)| !grants.is_empty())
        .collect();
    if with_grants.is_empty() {
        return Ok(());
    }
    let mut f = e.encode_descriptor(
        "tokenwarden_grants_in_memory",
        "End users' grants of per-user connections this process holds, by state.",
        None,
        MetricType::Gauge,
    )?;
    for (g, grants) in with_grants {
        let mut counts = [0usize; STATE_NAMES.len()];
        for (state, n) in grants.iter().flat_map(|grants| grants.in_memory()) {
            counts[state as usize] += n;
        }
        // A grant is never `static` or `per_user`: the states a 503 can report.
        for (state, n) in instrument::NO_TOKEN_STATES.iter().zip(counts) {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            gauge(&mut f, &[g.label, ("state", state)], n)?;
        }
    }
    Ok(())
}

/// Each group's states (a connection's: 1 for its state; a connector type's: how many of
/// its connections are in each) and when a connection's current token expires.
fn connection_states(groups: &[Group<'_>], e: &mut DescriptorEncoder) -> fmt::Result {
    let mut f = e.encode_descriptor(
        "tokenwarden_connection_state",
        "1 for the connection's current state; for a connector type, how many of its connections are in it.",
        None,
        MetricType::Gauge,
    )?;
    for g in groups {
        for state in STATE_NAMES {
            let n = g
                .entries
                .iter()
                .filter(|c| c.tokens.state_name() == state)
                .count();
            gauge(
                &mut f,
                &[g.label, ("state", state)],
                i64::try_from(n).unwrap_or(i64::MAX),
            )?;
        }
    }
    let mut f = e.encode_descriptor(
        "tokenwarden_token_expires_at",
        "Unix time the current token expires (absent: none or long-lived).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for g in groups.iter().filter(|g| g.label.0 == "connection") {
        if let Some(at) = g.entries[0].tokens.token().and_then(|t| t.expires_at) {
            let at = i64::try_from(unix_seconds(Some(at))).unwrap_or(i64::MAX);
            gauge(&mut f, &[g.label], at)?;
        }
    }
    Ok(())
}

/// The token families: requests and their durations by outcome, sets adopted from the
/// shared store.
fn tokens(groups: &[Group<'_>], e: &mut DescriptorEncoder) -> fmt::Result {
    counter(
        e,
        groups,
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
    for g in groups {
        let ok = g.snapshot(|c| c.tokens.counters.ok_durations.snapshot());
        histogram(&mut f, &[g.label, ("outcome", "ok")], &ok)?;
        let failed = g.snapshot(|c| c.tokens.counters.failed_durations.snapshot());
        histogram(&mut f, &[g.label, ("outcome", "error")], &failed)?;
    }
    counter(
        e,
        groups,
        "tokenwarden_tokens_adopted",
        "Token sets taken from the shared store (written by another replica).",
        &[each(|c| c.tokens.counters.adopted.get())],
    )
}

/// The request path's families: proxied requests, their durations, upstream connects
/// and errors, `no_token` refusals, upstream 401s.
fn requests(groups: &[Group<'_>], e: &mut DescriptorEncoder) -> fmt::Result {
    counter(
        e,
        groups,
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
    for g in groups {
        for (i, class) in instrument::STATUS_CLASSES.iter().enumerate() {
            let snapshot = g.snapshot(|c| c.counters.requests.durations(i).snapshot());
            // A class the group never answered with has no series.
            if snapshot.count() > 0 {
                histogram(&mut f, &[g.label, ("status_class", class)], &snapshot)?;
            }
        }
    }
    let mut f = e.encode_descriptor(
        "tokenwarden_upstream_connect",
        "Upstream connections opened (TCP, and TLS for https).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for g in groups {
        let snapshot = g.snapshot(|c| c.counters.requests.connect.snapshot());
        histogram(&mut f, &[g.label], &snapshot)?;
    }
    refusals(groups, e)
}

/// The request path's failure families: upstream errors by kind, `no_token` refusals by
/// state, upstream 401s by outcome.
fn refusals(groups: &[Group<'_>], e: &mut DescriptorEncoder) -> fmt::Result {
    let mut f = e.encode_descriptor(
        "tokenwarden_upstream_errors",
        "Requests the upstream failed, by kind (connect, tls, timeout, closed, malformed).",
        None,
        MetricType::Counter,
    )?;
    for g in groups {
        for kind in UpstreamError::ALL {
            let n = g.sum(|c| c.counters.requests.upstream_errors(kind));
            count(&mut f, &[g.label, ("kind", kind.as_str())], n)?;
        }
    }
    let mut f = e.encode_descriptor(
        "tokenwarden_no_token",
        "Requests refused with 503 for want of a usable token, by the state the 503 reported.",
        None,
        MetricType::Counter,
    )?;
    for g in groups {
        for (i, state) in instrument::NO_TOKEN_STATES.iter().enumerate() {
            let n = g.sum(|c| c.counters.requests.no_tokens(i));
            count(&mut f, &[g.label, ("state", state)], n)?;
        }
    }
    let mut f = e.encode_descriptor(
        "tokenwarden_unauthorized_refreshes",
        "Upstream 401s to requests that carried a token, by what came of them (refreshed, reused, limited, failed, not_refreshable).",
        None,
        MetricType::Counter,
    )?;
    for g in groups {
        for outcome in unauthorized::Outcome::ALL {
            let n = g.sum(|c| c.counters.unauthorized.get(outcome));
            count(&mut f, &[g.label, ("outcome", outcome.as_str())], n)?;
        }
    }
    Ok(())
}

/// A counter family `name` (samples `name_total`): per group, one sample per series, its
/// connections' values summed.
fn counter(
    e: &mut DescriptorEncoder,
    groups: &[Group<'_>],
    name: &str,
    help: &str,
    series: &[Series],
) -> fmt::Result {
    let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for g in groups {
        for s in series {
            let value = g.sum(s.read);
            match s.label {
                Some(label) => count(&mut f, &[g.label, label], value)?,
                None => count(&mut f, &[g.label], value)?,
            }
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
