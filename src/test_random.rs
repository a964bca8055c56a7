//! A fixed-seed pseudo-random generator for the tests (xorshift64): varied
//! inputs that are the same on every run, without a dependency.

/// The generator seeded with `seed` (not 0): each call gives the next value.
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
