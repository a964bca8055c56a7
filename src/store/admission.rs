//! Which label sets new to a store take series of their own when the store
//! shares its cap on series with others: the processes of one multi-process
//! directory admit the same first `max_series` label sets of each family.

use crate::schema::family::FamilyId;

/// Decides, for a store's label sets past its own map, whether one is
/// admitted under a cap shared with other stores.
pub trait Admission: Send + Sync {
    /// Whether `family`'s label set `key`, new to this store, is among the
    /// first `max_series` of the family admitted by any sharer (admitting it
    /// now if there is room). Asked on the slow path only: a label set the
    /// store holds already never comes here.
    fn admit(&self, family: FamilyId, key: &[&str], max_series: usize) -> bool;
}
