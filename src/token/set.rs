//! [`TokenSet`]: one connection's current tokens, with the `Authorization` value ready to
//! inject and the instants the proxy and the refresher act on.

use super::schedule;
use super::store::StoredToken;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The serial of the next token set built in this process (0 means "no token").
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// The prefix of [`TokenSet`]'s header before the access token.
const BEARER: &str = "Bearer ";

/// Immutable once built; replaced whole in the cache.
pub struct TokenSet {
    /// `Bearer <access token>`, marked sensitive: the only copy of the access token it
    /// holds ([`TokenSet::access_token`] copies it out), since a process may hold 100,000
    /// sets of 1 KB tokens (per-user grants; `benches/grants.rs`).
    header: HeaderValue,
    pub refresh_token: Option<SecretString>,
    /// A boxed `str` rather than a `String`: 8 bytes less in each of many sets.
    pub scope: Option<Box<str>>,
    /// Wall-clock time it was obtained and expires (None: long-lived).
    pub obtained_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    /// Injected until this instant (expiry minus a safety margin).
    usable_until: Option<Instant>,
    /// When the refresher renews it.
    pub refresh_at: Option<Instant>,
    /// Unique in this process (never 0): which token a request carried, so an upstream's
    /// 401 can be matched to the cache's current token ([`crate::proxy::unauthorized`]).
    serial: u64,
    /// The identity of the connection definition it was obtained under (None: unknown, a
    /// set an earlier version stored): a set is used only under the same one ([`TokenSet::fits`]).
    definition: Option<[u8; 32]>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"****")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "****"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why an access token cannot become a header.
#[derive(Debug, thiserror::Error)]
#[error("the access token cannot be sent in an Authorization header")]
pub struct BadToken;

impl TokenSet {
    /// A token obtained at `obtained_at` (wall clock) with `lifetime` left at `now`.
    /// `jitter` in `[0, 1)` spreads the refresh time.
    pub fn new(
        access_token: SecretString,
        refresh_token: Option<SecretString>,
        scope: Option<String>,
        obtained_at: SystemTime,
        lifetime: Option<Duration>,
        jitter: f64,
    ) -> Result<TokenSet, BadToken> {
        let mut header = HeaderValue::try_from(format!("{BEARER}{}", access_token.expose_secret()))
            .map_err(|_| BadToken)?;
        header.set_sensitive(true);
        let now = Instant::now();
        let age = SystemTime::now()
            .duration_since(obtained_at)
            .unwrap_or_default();
        let (expires_at, usable_until, refresh_at) = match lifetime {
            None => (None, None, None),
            Some(l) => {
                let remaining = l.saturating_sub(age);
                let usable = remaining.saturating_sub(schedule::safety_margin(l));
                let refresh = schedule::refresh_after(l, jitter).saturating_sub(age);
                (
                    Some(obtained_at + l),
                    Some(now + usable),
                    Some(now + refresh),
                )
            }
        };
        Ok(TokenSet {
            header,
            refresh_token,
            scope: scope.map(String::into_boxed_str),
            obtained_at,
            expires_at,
            usable_until,
            refresh_at,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            definition: None,
        })
    }

    /// This set, marked as obtained under the connection definition `identity`.
    pub fn obtained_under(mut self, identity: [u8; 32]) -> TokenSet {
        self.definition = Some(identity);
        self
    }

    /// Whether this set may be used by a connection whose definition is `identity`: it was
    /// obtained under that one (or under an unknown one, in a set an earlier version stored).
    pub fn fits(&self, identity: [u8; 32]) -> bool {
        self.definition.is_none_or(|d| d == identity)
    }

    /// Rebuilds a persisted token set; None when the stored token is unusable.
    pub fn from_stored(stored: StoredToken, jitter: f64) -> Result<TokenSet, BadToken> {
        let obtained_at = UNIX_EPOCH + Duration::from_millis(stored.obtained_at_ms);
        let lifetime = stored
            .expires_at_ms
            .map(|e| Duration::from_millis(e.saturating_sub(stored.obtained_at_ms)));
        let mut set = TokenSet::new(
            stored.access_token,
            stored.refresh_token,
            stored.scope,
            obtained_at,
            lifetime,
            jitter,
        )?;
        set.definition = stored.definition;
        Ok(set)
    }

    pub fn to_stored(&self) -> StoredToken {
        let ms = |t: SystemTime| {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        };
        StoredToken {
            access_token: self.access_token(),
            refresh_token: self.refresh_token.clone(),
            expires_at_ms: self.expires_at.map(ms),
            scope: self.scope.as_deref().map(str::to_owned),
            obtained_at_ms: ms(self.obtained_at),
            definition: self.definition,
        }
    }

    /// The header to inject, unless the token is (about to be) expired at `now`.
    #[inline]
    pub fn header_at(&self, now: Instant) -> Option<&HeaderValue> {
        match self.usable_until {
            Some(until) if now >= until => None,
            _ => Some(&self.header),
        }
    }

    /// The header it injects, whatever the time (to recognise the credential in what an
    /// upstream echoes back: `crate::proxy::placeholder`).
    #[inline]
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// A copy of the access token (for `<access_token>` in a refresh request, and the
    /// store), taken from the header: `new` made it of a `String`, so it is UTF-8.
    pub fn access_token(&self) -> SecretString {
        let token = &self.header.as_bytes()[BEARER.len()..];
        SecretString::from(String::from_utf8_lossy(token).into_owned())
    }

    /// This set's serial, unique in this process and never 0.
    #[inline]
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The instant the token stops being injected (None: long-lived).
    pub fn usable_until(&self) -> Option<Instant> {
        self.usable_until
    }
}

/// Unix seconds of an optional wall-clock time, for logs and status (0: none).
pub fn unix_seconds(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn header_stops_before_expiry() {
        let start = Instant::now();
        let t = TokenSet::new(
            "abc".to_string().into(),
            None,
            None,
            SystemTime::now(),
            Some(Duration::from_secs(100)),
            0.0,
        )
        .unwrap();
        assert!(t.header.is_sensitive());
        assert_eq!(t.header_at(Instant::now()).unwrap(), "Bearer abc");
        tokio::time::advance(Duration::from_secs(94)).await;
        assert!(t.header_at(Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.header_at(Instant::now()).is_none(), "5 s safety margin");
        // 100 s: 80 s would leave more than 60 s, so the margin rule gives 40 s, raised to half
        let refresh_in = t.refresh_at.unwrap() - start;
        assert!(
            Duration::from_secs(50) - refresh_in < Duration::from_millis(100),
            "{refresh_in:?}"
        );
    }

    #[test]
    fn long_lived_and_round_trip() {
        let t = TokenSet::new(
            "abc".to_string().into(),
            Some("r".to_string().into()),
            Some("s".into()),
            SystemTime::now(),
            None,
            0.0,
        )
        .unwrap();
        assert!(t.header_at(Instant::now()).is_some());
        assert!(t.refresh_at.is_none());
        assert_eq!(t.access_token().expose_secret(), "abc", "out of the header");
        let back = TokenSet::from_stored(t.to_stored(), 0.0).unwrap();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(
            ms(back.obtained_at),
            ms(t.obtained_at),
            "to the millisecond"
        );
        assert_eq!(back.header, t.header);
        assert!(format!("{back:?}").contains("****") && !format!("{back:?}").contains("abc"));
        assert!(
            back.serial() != t.serial() && t.serial() != 0,
            "every set is new"
        );
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "r");
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_refused() {
        assert!(TokenSet::new(
            "a\nb".to_string().into(),
            None,
            None,
            SystemTime::now(),
            None,
            0.0
        )
        .is_err());
    }
}
