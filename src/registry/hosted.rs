//! [`Hosted`]: the connections on one host, in listing order. Most hosts have one or a few
//! (a customer's own Salesforce domain); some have thousands (every customer on one API
//! host). A few are a shared slice: read without a lock or an allocation, copied on a
//! change (at most [`FEW`] entries). More are a persistent map: a change copies a path of
//! its tree, not the list. (A map for every host would cost 10,000 distinct hosts a
//! preallocated tree node each.)

use super::{Entry, Place};
use std::sync::Arc;

/// The most connections a host keeps as a slice.
const FEW: usize = 16;

#[derive(Clone)]
pub(super) enum Hosted {
    Few(Arc<[(Place, Arc<Entry>)]>),
    Many(imbl::OrdMap<Place, Arc<Entry>>),
}

/// An iterator over either form's connections.
pub(super) enum Values<A, B> {
    Few(A),
    Many(B),
}

impl<'a, A, B> Iterator for Values<A, B>
where
    A: Iterator<Item = &'a Arc<Entry>>,
    B: Iterator<Item = &'a Arc<Entry>>,
{
    type Item = &'a Arc<Entry>;

    fn next(&mut self) -> Option<&'a Arc<Entry>> {
        match self {
            Values::Few(a) => a.next(),
            Values::Many(b) => b.next(),
        }
    }
}

impl Hosted {
    /// `entries`, sorted by place.
    pub(super) fn of(entries: Vec<(Place, Arc<Entry>)>) -> Hosted {
        if entries.len() <= FEW {
            Hosted::Few(entries.into())
        } else {
            Hosted::Many(entries.into_iter().collect())
        }
    }

    /// With `entry` at `place` (in place of what was there).
    pub(super) fn with(&self, place: Place, entry: Arc<Entry>) -> Hosted {
        match self {
            Hosted::Few(few) => {
                let mut list: Vec<(Place, Arc<Entry>)> =
                    few.iter().filter(|(p, _)| *p != place).cloned().collect();
                let at = list.partition_point(|(p, _)| *p < place);
                list.insert(at, (place, entry));
                Hosted::of(list)
            }
            Hosted::Many(many) => Hosted::Many(many.update(place, entry)),
        }
    }

    /// Without the connection at `place`; None when none is left.
    pub(super) fn without(&self, place: Place) -> Option<Hosted> {
        let rest = match self {
            Hosted::Few(few) => {
                let list: Vec<_> = few.iter().filter(|(p, _)| *p != place).cloned().collect();
                Hosted::Few(list.into())
            }
            Hosted::Many(many) if many.len() <= FEW + 1 => {
                let list = many.without(&place).into_iter().collect();
                Hosted::of(list)
            }
            Hosted::Many(many) => Hosted::Many(many.without(&place)),
        };
        (rest.len() > 0).then_some(rest)
    }

    /// The connections in listing order.
    pub(super) fn values(
        &self,
    ) -> Values<impl Iterator<Item = &Arc<Entry>>, impl Iterator<Item = &Arc<Entry>>> {
        match self {
            Hosted::Few(few) => Values::Few(few.iter().map(|(_, e)| e)),
            Hosted::Many(many) => Values::Many(many.values()),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Hosted::Few(few) => few.len(),
            Hosted::Many(many) => many.len(),
        }
    }
}
