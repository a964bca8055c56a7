//! What an export reads: this process's store, or in multi-process mode the
//! sum over the directory's files. Every exposition, push body and snapshot of
//! the sum reads through one [`Source`], so that the choice is made once.

use crate::multiprocess::Aggregate;
use crate::store::visit::{SampleVisitor, SeriesVisitor};
use crate::store::{ReadMode, Store};

/// The values an export shows.
pub(super) enum Source<'s> {
    /// This process's store.
    Store(&'s Store),
    /// The directory's sum, and whether its files keep creation times
    /// (`prometheus_client`'s do not).
    Sum { sum: Aggregate, keeps_created: bool },
}

impl Source<'_> {
    /// Whether `_created` samples are shown when `wanted`: never from files
    /// that do not keep them.
    pub(super) fn created(&self, wanted: bool) -> bool {
        match self {
            Source::Store(_) => wanted,
            Source::Sum { keeps_created, .. } => wanted && *keeps_created,
        }
    }

    /// Walks every family and sample in exposition order (`_created` samples
    /// when `include_created` and the source keeps them).
    pub(super) fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        let include_created = self.created(include_created);
        match self {
            Source::Store(store) => store.visit(include_created, visitor),
            Source::Sum { sum, .. } => sum.visit(include_created, visitor),
        }
    }

    /// Hands every family's series to `visitor` in exposition order.
    pub(super) fn visit_series(&self, visitor: &mut impl SeriesVisitor) {
        match self {
            Source::Store(store) => store.visit_series(ReadMode::Keep, visitor),
            Source::Sum { sum, .. } => sum.visit_series(visitor),
        }
    }
}
