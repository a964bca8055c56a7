//! How the binding's stores are written to.

use crate::cells::counter::{Coding, Recording, Writers};

/// How the stores of this extension are written to.
///
/// Every recording method runs while holding the GIL (the module declares that
/// it needs the GIL, so even a free-threaded interpreter has one while it is
/// loaded) and calls no Python code once it starts writing, so writes never
/// overlap and plain atomic stores suffice.
pub(super) fn recording(coding: Coding) -> Recording {
    Recording {
        writers: Writers::Serialized,
        coding,
    }
}
