//! Raw CPython calls, behind small typed wrappers: the rest of the binding is
//! safe code over `PyO3` types and these.
//!
//! - [`fastcall`]: the arguments CPython passes a `METH_FASTCALL |
//!   METH_KEYWORDS` method, and installing such methods on a class;
//! - [`buffer`]: a numeric buffer's bytes and element format;
//! - [`int`]: an exact `int` read as a `u64` without a method call;
//! - [`bytes`]: a new `bytes` filled without the GIL;
//! - [`string`]: a new `str` written as its code units without the GIL;
//! - [`arrow`]: Arrow's C structs moved out of a producer's capsules.

pub(super) mod arrow;
pub(super) mod buffer;
pub(super) mod bytes;
pub(super) mod fastcall;
pub(super) mod int;
pub(super) mod string;
