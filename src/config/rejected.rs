//! `token_rejected_statuses` of a connection: the upstream statuses that mean "this token was
//! rejected", which start the one-refresh-one-replay recovery (docs/configuration.md,
//! "Upstream 401"). RFC 6750 says 401; some APIs (and Django OAuth Toolkit's stock views) say
//! 403, so a connection may name that too. Kept as a bit set of 4xx codes: the request path's
//! check is one shift.

use super::source::{Problems, Source};

/// A set of 4xx statuses (bit `n` is status `400 + n`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RejectedStatuses(u128);

impl RejectedStatuses {
    /// RFC 6750 §3.1: `401` with `invalid_token`.
    pub const DEFAULT: RejectedStatuses = RejectedStatuses(1 << 1);

    /// Whether the upstream's `status` means the token was rejected.
    #[inline]
    pub fn contains(self, status: u16) -> bool {
        status
            .checked_sub(400)
            .filter(|n| *n < 100)
            .is_some_and(|n| self.0 & (1 << n) != 0)
    }

    /// The configured list (`None`: the default, `[401]`); every entry not in 400–499 is a
    /// problem naming its place.
    pub(super) fn from_config(
        list: Option<&[u16]>,
        src: &Source,
        prefix: &str,
        problems: &mut Problems,
    ) -> RejectedStatuses {
        let Some(list) = list else {
            return RejectedStatuses::DEFAULT;
        };
        let mut set = 0u128;
        for (i, status) in list.iter().enumerate() {
            match status.checked_sub(400).filter(|n| *n < 100) {
                Some(n) => set |= 1 << n,
                None => {
                    let path = format!("{prefix}.token_rejected_statuses[{i}]");
                    let shown = src.quote(&path, &status.to_string());
                    problems.push(src.problem(
                        &path,
                        format!("{shown} is not a 4xx status (a rejected token is answered 401, or 403 by some APIs)"),
                    ));
                }
            }
        }
        RejectedStatuses(set)
    }
}

impl Default for RejectedStatuses {
    fn default() -> Self {
        RejectedStatuses::DEFAULT
    }
}

impl std::fmt::Debug for RejectedStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((400..500).filter(|s| self.contains(*s)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_401_and_only_4xx_are_members() {
        let d = RejectedStatuses::DEFAULT;
        assert!(d.contains(401));
        for other in [0, 200, 400, 403, 499, 500, 528, u16::MAX] {
            assert!(!d.contains(other), "{other}");
        }
        let both = RejectedStatuses((1 << 1) | (1 << 3));
        assert!(both.contains(401) && both.contains(403) && !both.contains(404));
        assert_eq!(format!("{both:?}"), "{401, 403}");
    }
}
